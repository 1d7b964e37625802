"""Attack 12: garbage sealed datagrams at a sealed room (section 5 of docs/protocol.md).

ann and ben chat in "cloak", a sealed room (TLS, the library clients), from 127.0.0.1
all along. Attackers who see the path know ben's Session (it is in clear in each of his
datagrams) and hold copies of his datagrams, but none of his keys. They send:

* sealed datagrams under random Sessions that carry this server's boot prefix (.121):
  answered ``unknown token`` in clear, at the ERROR rate, never larger than they are;
* random Sessions of another server (.123): answered RESTARTED, at its own rate;
* ben's Session with random ciphertext, from another IP (.122): a Session is bound to
  its member's IP, so this is an unknown Session too;
* ben's Session with random ciphertext from ben's IP (127.0.0.1, other ports): forged,
  dropped without a word;
* ben's own datagrams again, from his IP and from his very socket: replayed, dropped
  without a word.

The room must keep relaying every line, in order, and neither member may see a datagram
it cannot open (nothing forged or replayed reaches them). The server's own counts of
each refusal are checked in process, in tests/test_encryption.py.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from ocm.client import ChatClient, Gap, Message, Security
from ocm.server.relay import RESTARTED_RATE
from ocm.wire.delivery import Restarted, encode_received
from ocm.wire.sealed import SESSION_PREFIX_SIZE, SESSION_SIZE, UP_OVERHEAD, is_sealed_up
from ocm.wire.texts import RESTARTED_TEXT
from tests.hostile.context import Context, fmt, timed
from tests.hostile.harness import Attack, UdpAttacker, UdpRecord
from tests.kit import LOOPBACK, MS

SEALED_ROOM = "cloak"
RANDOM_SESSIONS = 1_000
FOREIGN_SESSIONS = 300
STOLEN_SESSION = 1_000
FORGED = 1_000
REPLAYS = 500
LINE_INTERVAL = 20 * MS
MAX_LINES = 500  # each member's, at most (the floods may wait their turn on the lane)
SMALLEST = UP_OVERHEAD + 30  # every garbage datagram is at least this long
RESTARTED_SIZE = len(encode_received(Restarted(RESTARTED_TEXT)))


def garbage(rng: random.Random, session: bytes) -> bytes:
    """A datagram shaped like a sealed one: Marker 0, Type 5, ``session``, a Counter,
    then random bytes for the ciphertext and tag."""
    counter = rng.randrange(1, 2**32).to_bytes(8, "big")
    return bytes((0, 5)) + session + counter + rng.randbytes(rng.randrange(SMALLEST, 300) - 18)


def record_facts(record: UdpRecord, seconds: float) -> dict[str, Any]:
    return {
        "sent": record.sent,
        "errors": record.errors,
        "others": record.relayed,  # replies other than ERROR (RESTARTED here)
        "larger_than_datagram": record.larger_than_datagram,
        "max_per_second": record.max_per_second(),
        "seconds": round(seconds, 2),
    }


class Talker:
    """One member saying a numbered line every LINE_INTERVAL until told to stop."""

    def __init__(self, chat: ChatClient) -> None:
        self.chat = chat
        self.sent = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set() and self.sent < MAX_LINES:
            await self.chat.send(f"{self.chat.name} {self.sent}")
            self.sent += 1
            await asyncio.sleep(LINE_INTERVAL)


async def heard(chat: ChatClient, count: int, timeout: float = 10.0) -> list[Any]:
    """Events until ``count`` Messages (or the timeout)."""
    events: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in chat:
                events.append(event)
                if sum(isinstance(e, Message) for e in events) == count:
                    break
    except TimeoutError:
        pass
    return events


def problems(name: str, events: list[Any], sent: dict[str, int]) -> list[str]:
    found = [f"{name} saw {e!r}" for e in events if isinstance(e, Gap)]
    for sender, count in sent.items():
        lines = [e.text for e in events if isinstance(e, Message) and e.sender == sender]
        if lines != [f"{sender} {n}" for n in range(count)]:
            found.append(f"{name} heard {len(lines)} of {sender}'s {count} lines, or out of order")
    return found


@timed
async def attack_12_sealed_garbage(ctx: Context) -> Attack:
    rng = ctx.rng(12)
    with tempfile.TemporaryDirectory(prefix="ocm-attack-12-") as home:
        security = Security(known_servers=Path(home) / "known_servers")
        where = (LOOPBACK, ctx.server.tcp_port)
        ann = await ChatClient.create(where, SEALED_ROOM, "ann", security=security)
        ben = await ChatClient.join(where, SEALED_ROOM, "ben", security=security)
        try:
            return await _attack(ctx, rng, ann, ben)
        finally:
            await ben.close()
            await ann.close()


async def _attack(ctx: Context, rng: random.Random, ann: ChatClient, ben: ChatClient) -> Attack:
    assert ann.encrypted and ben.encrypted
    transport = ben._transport
    assert transport is not None
    send = transport.sendto
    bens: list[bytes] = []

    def recording(data: Any, addr: Any = None) -> None:
        bens.append(bytes(data))
        send(data, addr)

    transport.sendto = recording  # type: ignore[method-assign]
    talkers = [Talker(ann), Talker(ben)]
    talking = [asyncio.create_task(t.run()) for t in talkers]
    try:
        while len(bens) < 3:  # ben's first lines, to take his Session and to replay
            await asyncio.sleep(LINE_INTERVAL)
        session = bens[0][2 : 2 + SESSION_SIZE]
        assert all(is_sealed_up(d) and d[2 : 2 + SESSION_SIZE] == session for d in bens)
        prefix = session[:SESSION_PREFIX_SIZE]

        def ours() -> bytes:  # a Session this server might have given out
            return prefix + rng.randbytes(SESSION_SIZE - SESSION_PREFIX_SIZE)

        def foreign() -> bytes:  # one of another server's (or an earlier one's)
            other = rng.randbytes(SESSION_PREFIX_SIZE)
            return (other if other != prefix else bytes(4)) + rng.randbytes(4)

        parts: dict[str, tuple[UdpAttacker, list[bytes]]] = {
            "random_sessions": (
                await ctx.attacker("127.0.0.121"),
                [garbage(rng, ours()) for _ in range(RANDOM_SESSIONS)],
            ),
            "foreign_sessions": (
                await ctx.attacker("127.0.0.123"),
                [garbage(rng, foreign()) for _ in range(FOREIGN_SESSIONS)],
            ),
            "stolen_session": (
                await ctx.attacker("127.0.0.122"),
                [garbage(rng, session) for _ in range(STOLEN_SESSION)],
            ),
            "forged": (
                await ctx.attacker(LOOPBACK),
                [garbage(rng, session) for _ in range(FORGED)],
            ),
            "replayed": (
                await ctx.attacker(LOOPBACK),
                [bens[n % len(bens)] for n in range(REPLAYS)],
            ),
        }
        facts: dict[str, Any] = {}
        for name, (attacker, datagrams) in parts.items():
            seconds = await ctx.flood(attacker, datagrams)
            facts[name] = record_facts(attacker.record, seconds)
        # ben's own datagrams again, from his very socket.
        own_replays = list(bens)
        for data in own_replays:
            send(data)
        await asyncio.sleep(100 * MS)
        for attacker, _ in parts.values():
            attacker.close()
    finally:
        for talker in talkers:
            talker.stop.set()
        await asyncio.gather(*talking)
    assert await ann.flush(5) and await ben.flush(5)
    sent = {t.chat.name: t.sent for t in talkers}
    total = sum(sent.values())
    ann_heard, ben_heard = await asyncio.gather(heard(ann, total), heard(ben, total))
    refused = {
        chat.name: {str(why): n for why, n in chat.sealed_refused.items() if n}
        for chat in (ann, ben)
    }
    facts |= {
        "room_lines": sent,
        "room_problems": problems("ann", ann_heard, sent) + problems("ben", ben_heard, sent),
        "clients_refused": refused,
        "own_socket_replays": len(own_replays),
        "restarted_size": RESTARTED_SIZE,
        "smallest_datagram": SMALLEST,
        "restarted_rate": RESTARTED_RATE,
    }
    garbage_sent = sum(facts[name]["sent"] for name in parts)
    silent = facts["forged"]["errors"] + facts["forged"]["others"]
    silent += facts["replayed"]["errors"] + facts["replayed"]["others"]
    return Attack(
        12,
        "Sealed garbage",
        tried=f"{fmt(garbage_sent)} sealed-looking datagrams at the server while ann and ben "
        f"chat in a sealed room: {fmt(RANDOM_SESSIONS)} under random Sessions of this server, "
        f"{fmt(FOREIGN_SESSIONS)} under another server's, {fmt(STOLEN_SESSION)} under ben's "
        f"Session from another IP and {fmt(FORGED)} from his IP (random ciphertext), "
        f"{fmt(REPLAYS)} copies of his real datagrams from his IP and "
        f"{len(own_replays)} from his own socket",
        outcome=f"unknown Sessions: {facts['random_sessions']['errors']} + "
        f"{facts['stolen_session']['errors']} unknown-token ERRORs, "
        f"{facts['foreign_sessions']['others']} RESTARTED ({RESTARTED_SIZE} bytes), none larger "
        f"than its datagram; forged and replayed: {silent} replies; the room relayed all "
        f"{total} lines in order ({len(facts['room_problems'])} problems), and neither member "
        f"was handed a datagram it could not open",
        facts=facts,
    )
