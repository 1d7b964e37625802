"""Attack 10: guessing the resume secret of a token seen on the UDP path.

henry, an honest member that asked for ``resume`` (section 4 of docs/protocol.md), chats
from 127.0.0.1 in a protected room of his own all along. His token is in every datagram
he sends; the secret that moves it to another address never travels in one. Attackers
who know the token send RESUME with wrong secrets, one after another and all at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

from ocm.wire import CreateRoom, JoinRoom, Kind, ServerDatagram, encode_header
from ocm.wire.delivery import Chat, Data, Leave, decode_received, encode_extended
from ocm.wire.tcrp import Operation, Resume, Resumed, Tunnel
from tests.hostile.context import Context, fake_token, timed
from tests.hostile.harness import Attack, exchange, widen_receive_buffer
from tests.hostile.room import ROOM
from tests.kit import LOOPBACK, MS, UdpPeer, admit, call

HAVEN = "haven"
HAVEN_PASSWORD = "henry's own"
PARALLEL_RESUMES = 20
HENRY_INTERVAL = 20 * MS
HENRY_AFTER = 10  # lines henry says after the attack, resumed


def code(ack_error: object) -> str:
    return str(ack_error or "ok")


def one_changed(rng: random.Random, secret: str) -> str:
    index = rng.randrange(len(secret))
    other = "A" if secret[index] != "A" else "B"
    return secret[:index] + other + secret[index + 1 :]


def raw_resume(payload: dict[str, Any]) -> bytes:
    body, name = json.dumps(payload).encode(), HAVEN.encode()
    return encode_header(len(name), Operation.RESUME, 0, len(body)) + name + body


class Henry:
    """The honest member: a DATA every HENRY_INTERVAL over UDP, and what comes back."""

    def __init__(self, peer: UdpPeer, token: str) -> None:
        self.peer = peer
        self.token = token
        self.sent = 0
        self.received: list[object] = []
        self._reader = asyncio.create_task(self._read())
        self._talker: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            self.received.append(decode_received(await self.peer.received.get()))

    def say(self) -> None:
        self.sent += 1
        self.peer.send_raw(encode_extended(Data(self.token, self.sent, f"henry #{self.sent}")))

    def start(self) -> None:
        async def talk() -> None:
            while True:
                self.say()
                await asyncio.sleep(HENRY_INTERVAL)

        self._talker = asyncio.create_task(talk())

    async def stop(self) -> None:
        if self._talker is not None:
            self._talker.cancel()
            await asyncio.gather(self._talker, return_exceptions=True)

    def echoed(self) -> list[int]:
        return [d.msg_no for d in self.received if isinstance(d, Chat) and d.sender == "henry"]

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every line said has come back."""
        deadline = time.monotonic() + timeout
        while len(self.echoed()) < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(20 * MS)

    def errors(self) -> list[str]:
        return [
            d.text for d in self.received if isinstance(d, ServerDatagram) and d.kind is Kind.ERROR
        ]

    async def close(self) -> None:
        await self.stop()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.peer.close()


@timed
async def attack_10_resume_guessing(ctx: Context) -> Attack:
    rng = ctx.rng(10)
    port = ctx.server.tcp_port
    admission = await admit(
        port, CreateRoom(HAVEN, "henry", HAVEN_PASSWORD, ("delivery", "resume"))
    )
    secret, token = admission.resume, admission.token
    assert secret is not None, admission
    peer = await UdpPeer.open(admission.udp_port, local_host=LOOPBACK)
    widen_receive_buffer(peer)
    henry = Henry(peer, token)
    henry.start()
    try:
        await asyncio.sleep(100 * MS)
        alice = ctx.room.host.token
        # Refused, and not counted (section 4): tokens are too long to guess, so only a
        # wrong secret for a token of the room named is a guess.
        uncounted = [
            Resume(HAVEN, fake_token(rng), fake_token(rng)),  # an unknown token
            Resume(ROOM, token, secret),  # henry's token and secret, named with another room
            Resume(HAVEN, alice, fake_token(rng)),  # alice's token, named with henry's room
        ]
        # Wrong secrets for a token of the room named: guesses, counted.
        wrong = [
            Resume(ROOM, alice, fake_token(rng)),  # alice's: she has no secret to match
            Resume(HAVEN, token, fake_token(rng)),
            Resume(HAVEN, token, secret[::-1]),
            Resume(HAVEN, token, one_changed(rng, secret)),
            Resume(HAVEN, token, secret[:-1]),
            Resume(HAVEN, token, secret + "A"),
            Resume(HAVEN, token, fake_token(rng)),
            Resume(HAVEN, token, fake_token(rng)),
        ]

        async def one_by_one() -> dict[str, Any]:
            ip = "127.0.0.101"

            async def codes(requests: list[Resume]) -> list[str]:
                return [code((await call(port, r, local_host=ip))[0].error) for r in requests]

            not_counted, counted = await codes(uncounted), await codes(wrong)
            right, _ = await call(port, Resume(HAVEN, token, secret), local_host=ip)
            join, _ = await call(port, JoinRoom(HAVEN, "intruder", HAVEN_PASSWORD), local_host=ip)
            tunnel, _ = await call(port, Tunnel(HAVEN, token), local_host=ip)
            return {
                "uncounted": not_counted,
                "sequential": counted,
                "right_secret_from_guesser": code(right.error),
                "right_password_from_guesser": code(join.error),
                "tunnel_from_guesser": code(tunnel.error),
            }

        async def all_at_once() -> Counter[str]:
            async def guess() -> str:
                resume = Resume(HAVEN, token, fake_token(rng))
                return code((await call(port, resume, local_host="127.0.0.102"))[0].error)

            return Counter(await asyncio.gather(*(guess() for _ in range(PARALLEL_RESUMES))))

        async def malformed() -> list[str]:
            payloads: list[dict[str, Any]] = [
                {"token": token},
                {"token": token, "secret": ""},
                {"token": token, "secret": "s" * 256},
                {"token": token, "secret": "é" * 32},
                {"token": token, "secret": 12345},
            ]
            results = await asyncio.gather(
                *(exchange("127.0.0.103", port, raw_resume(p)) for p in payloads)
            )
            return [",".join(r.error_codes) or f"{r.ok_acks} ok" for r in results]

        sequence, parallel, bad = await asyncio.gather(one_by_one(), all_at_once(), malformed())
        # The owner, from his own address, is not locked out by the guessers.
        ack, resumed = await call(port, Resume(HAVEN, token, secret))
        owner = code(ack.error)
        # Each secret moves the token once: the one just used is worthless now.
        old, _ = await call(port, Resume(HAVEN, token, secret), local_host="127.0.0.103")
        for _ in range(HENRY_AFTER):
            await asyncio.sleep(HENRY_INTERVAL)
        await henry.stop()
        await henry.settle()
        echoed = henry.echoed()
        henry.peer.send_raw(encode_extended(Leave(token)))  # closes his room
    finally:
        await henry.close()
    facts = {
        **sequence,
        "parallel": dict(parallel),
        "malformed": bad,
        "owner_resume": owner,
        "owner_new_secret": isinstance(resumed, Resumed) and resumed.secret != secret,
        "used_secret_again": code(old.error),
        "henry_sent": henry.sent,
        "henry_echoed": len(echoed),
        "henry_in_order": echoed == list(range(1, henry.sent + 1)),
        "henry_errors": henry.errors(),
    }
    allowed = ctx.limits.max_password_failures
    return Attack(
        10,
        "Resume guessing",
        tried=f"henry's token (visible in his datagrams) in RESUME from one IP: "
        f"{len(uncounted)} refusals that are no guess (an unknown token, tokens named with "
        f"the wrong room), then {len(wrong)} wrong secrets one after another, then his right "
        f"secret, his room's password and a TUNNEL; {PARALLEL_RESUMES} wrong secrets at once "
        f"from another IP; {len(bad)} malformed RESUMEs from a third, while henry chats",
        outcome=f"the {len(uncounted)} non-guesses: "
        f"{', '.join(sorted(set(sequence['uncounted'])))}, not counted; the wrong secrets: "
        f"invalid_token {sequence['sequential'].count('invalid_token')} times, then "
        f"rate_limited {sequence['sequential'].count('rate_limited')} times "
        f"(--max-password-failures {allowed}), and then the right secret too "
        f"({sequence['right_secret_from_guesser']}), the right password "
        f"({sequence['right_password_from_guesser']}: one limiter), the TUNNEL "
        f"({sequence['tunnel_from_guesser']}); all at once: "
        f"{parallel.get('invalid_token', 0)} invalid_token, "
        f"{parallel.get('rate_limited', 0)} rate_limited; malformed: "
        f"{', '.join(sorted(set(bad)))}; "
        f"henry never moved: all {len(echoed)} of his {henry.sent} lines relayed back to "
        f"him in order, {len(facts['henry_errors'])} ERRORs; his own RESUME from his "
        f"address: {owner}, and that secret used again: {facts['used_secret_again']}",
        facts=facts,
    )
