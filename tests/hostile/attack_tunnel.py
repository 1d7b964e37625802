"""Attacks 9 and 11: tunnels (section 4 of docs/protocol.md) fed garbage, and tunnels
that never read.

Every attacker here is a member of a room of its own, with a token it got honestly and
the ``tunnel`` feature: what the server must survive is what a member may send once its
connection carries frames. Nothing here uses UDP, so none of it takes a turn on the
UDP lane.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ocm.wire import (
    MAX_DATAGRAM,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    ServerDatagram,
    encode_client_datagram,
    encode_header,
)
from ocm.wire.delivery import (
    Chat,
    Data,
    DeliveryKind,
    Leave,
    Repair,
    decode_received,
    encode_extended,
    encode_received,
)
from ocm.wire.tcrp import Operation
from ocm.wire.tunnel import MAX_FRAME, encode_frame
from tests.hostile.context import Context, fake_token, fmt, span, timed
from tests.hostile.harness import (
    TUNNEL_FEATURES,
    Attack,
    Exchange,
    TunnelClient,
    connect_from,
    enter,
    exchange,
    mutate,
    ping,
    tunnel_handshake,
)
from tests.hostile.room import ROOM
from tests.kit import MS, admit

# ---------------------------------------------------------------------------
# 9. Tunnel garbage
# ---------------------------------------------------------------------------

TUNNELYARD = "tunnelyard"
RANDOM_FRAMES = 2_000
MUTATED_FRAMES = 400
# Bad Lengths: each on a tunnel of its own, after a PING that shows the tunnel works.
BAD_LENGTHS = {
    "length 0": b"\x00\x00",
    "over MAX_FRAME": (MAX_FRAME + 1).to_bytes(2, "big"),
    "length 0xFFFF": b"\xff\xff",
}
# A PING frame (49 bytes) a byte at a time: whole in half a second (well within the
# message timeout), or a byte every quarter second (it would take 12 s).
TRICKLE_FAST = 10 * MS
TRICKLE_SLOW = 250 * MS
# How long past the message timeout the slow trickle is kept up before we give up.
TRICKLE_GRACE = 1.5
# A bad Length ends its tunnel "at once": within this of its sending, on a busy 2-core
# machine (the least any timeout of the suite would take is 2 s).
AT_ONCE = 1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    label: str
    data: bytes
    expect: str  # the error code of the ACK


def raw_tunnel_request(room: str, payload: bytes) -> bytes:
    name = room.encode()
    return encode_header(len(name), Operation.TUNNEL, 0, len(payload)) + name + payload


def tunnel_request(room: str, token: Any) -> bytes:
    return raw_tunnel_request(room, json.dumps({"token": token}).encode())


def refusals(
    rng: random.Random, alice: str, elsewhere: str, plain: str, halfway: str, own: str
) -> list[Refusal]:
    """TUNNEL requests that must be refused, from 127.0.0.94: ``plain`` is a version 1
    member there, ``halfway`` one granted delivery but not tunnel, ``own`` a tunnel member
    there, ``elsewhere`` one bound to another IP."""
    invalid = "invalid_token"
    return [
        Refusal("a guessed token", tunnel_request(TUNNELYARD, fake_token(rng)), invalid),
        Refusal("alice's token, her room", tunnel_request(ROOM, alice), invalid),
        Refusal("alice's token, our room", tunnel_request(TUNNELYARD, alice), invalid),
        Refusal("a token bound to another IP", tunnel_request(TUNNELYARD, elsewhere), invalid),
        Refusal("a version 1 member's own token", tunnel_request(TUNNELYARD, plain), invalid),
        Refusal("a member not granted tunnel", tunnel_request(TUNNELYARD, halfway), invalid),
        Refusal("our token, another room", tunnel_request(ROOM, own), invalid),
        Refusal("our token, no such room", tunnel_request("nowhere", own), invalid),
        Refusal("an empty token", tunnel_request(TUNNELYARD, ""), "bad_request"),
        Refusal("a 256-byte token", tunnel_request(TUNNELYARD, "t" * 256), "bad_request"),
        Refusal("a token not ASCII", tunnel_request(TUNNELYARD, "ü" * 32), "bad_request"),
        Refusal("a token of numbers", tunnel_request(TUNNELYARD, 7), "bad_request"),
        Refusal("no token", raw_tunnel_request(TUNNELYARD, b"{}"), "bad_request"),
        Refusal("a payload not JSON", raw_tunnel_request(TUNNELYARD, b"\xff{"), "bad_request"),
    ]


def refused_as_expected(case: Refusal, result: Exchange) -> bool:
    return (
        case.expect in result.error_codes
        and result.ok_acks == 0
        and result.ending in ("closed", "reset")
    )


def is_own_leave(datagram: bytes, token: bytes) -> bool:
    """Whether ``datagram`` is a LEAVE the relay would take for ``token``'s member."""
    return datagram[:3] == bytes((0, 4, len(token))) and datagram[3:] == token


def crafted_frames(
    rng: random.Random, own: str, boot: bytes, foreign: dict[str, tuple[str, str]]
) -> list[bytes]:
    """Datagrams for frames: malformed extended ones with our own token (never a valid
    LEAVE: the member must stay to show its tunnel still works), and valid-looking ones
    with other members' tokens (``foreign``: name -> (room, token)), all 1-4096 bytes."""
    token = own.encode()

    def ext(kind: int, body: bytes, tok: bytes = token) -> bytes:
        return bytes((0, kind, len(tok))) + tok + body

    v1_head = bytes((len(TUNNELYARD), len(token))) + TUNNELYARD.encode() + token
    crafted = [
        ext(0, b"type 0"),
        ext(5, b"type 5"),
        ext(255, b"type 255"),
        b"\x00\x01\x00" + b"token size 0",
        b"\x00\x01\xff" + token,  # token size past the end
        ext(2, b"\x00" * 11),  # a PING a byte short
        ext(2, b"\x00" * 13),  # a PING a byte long
        ext(3, b""),  # a REPAIR of no ranges
        ext(3, b"\x00\x00\x00\x01\x00\x01" * 65),  # 65 ranges
        ext(3, b"\x00\x00\x00\x01\x00\x00"),  # a range of 0 Seqs
        ext(3, b"\x00\x00\x00\x00\x00\x05"),  # a range from Seq 0
        encode_extended(Repair(own, ((1, 0xFFFF),))),  # valid: paced by the repair budget
        ext(1, b"\x00\x00\x00\x00hi"),  # DATA number 0
        ext(1, b"\x00\x00\x00\x07"),  # DATA without text
        ext(1, b"\x00\x00\x00\x01\xff\xfe"),  # text not UTF-8
        ext(1, b"\x00\x00\x00\x01" + b"x" * (MAX_DATAGRAM - len(token) - 7)),  # too long
        encode_extended(Data(own, 0xFFFFFFFF, "the last number")),  # held, early
        ext(4, b"x"),  # a LEAVE with a body
        v1_head + b"\xff\xfe",  # version 1 layout, text not UTF-8
    ]
    seeds = [
        encode_extended(Data(own, 1, "seed")),
        ping(own, 3, boot),
        encode_extended(Repair(own, ((1, 5), (9, 2)))),
        v1_head + b"seed",
    ]
    for name, (room, other) in foreign.items():
        theirs = [
            encode_extended(Data(other, 1, f"I am {name}")),
            encode_extended(Leave(other)),
            ping(other, 9, boot),
            encode_extended(Repair(other, ((1, 100),))),
            encode_client_datagram(ClientDatagram(room, other)),  # a heartbeat: her address
            encode_client_datagram(ClientDatagram(room, other, f"pwned by a tunnel, {name}")),
        ]
        crafted += theirs
        seeds += theirs[:1] + theirs[-1:]
    target = len(crafted) + MUTATED_FRAMES
    while len(crafted) < target:
        datagram = mutate(rng, rng.choice(seeds))
        if 0 < len(datagram) <= MAX_DATAGRAM and not is_own_leave(datagram, token):
            crafted.append(datagram)
    return crafted


async def trickle(
    tunnel: TunnelClient, data: bytes, every: float, give_up: float
) -> tuple[float, int]:
    """Send ``data`` a byte every ``every`` seconds (on a schedule: a late timer sends
    what is due at once) until sent, the server ends the tunnel, or ``give_up`` seconds
    have passed. Returns (when the first byte went, bytes sent)."""
    start = time.monotonic()
    sent = 0
    for index, byte in enumerate(data):
        due = start + index * every - time.monotonic()
        if due > 0 and await tunnel.ended(due):
            break
        if tunnel.ending is not None or time.monotonic() - start >= give_up:
            break
        try:
            await tunnel.send_raw(bytes((byte,)))
        except OSError:
            break
        sent += 1
    return start, sent


@timed
async def attack_9_tunnel_garbage(ctx: Context) -> Attack:
    rng = ctx.rng(9)
    port = ctx.server.tcp_port
    limits = ctx.limits
    # The room's host heartbeats over UDP with the suite's helpers, all suite long.
    host = await enter(
        port, CreateRoom(TUNNELYARD, "trash", None, TUNNEL_FEATURES), local_host="127.0.0.91"
    )
    ctx.helpers.append(host)
    boot = bytes.fromhex(host.admission.boot or "")

    async def member(name: str, ip: str, features: tuple[str, ...] = TUNNEL_FEATURES) -> Admission:
        return await admit(port, JoinRoom(TUNNELYARD, name, None, features), local_host=ip)

    noise = await member("noise", "127.0.0.91")  # (a)
    crafter = await member("crafter", "127.0.0.91")  # (b)
    breaker = await member("breaker", "127.0.0.92")  # (c)
    bystander = await member("bystander", "127.0.0.92")  # (b): a token bound elsewhere
    trickler = await member("trickler", "127.0.0.93")  # (d)
    plain = await member("plain", "127.0.0.94", ())  # version 1: no tunnel
    halfway = await member("halfway", "127.0.0.94", ("delivery",))  # asked for no tunnel
    own = await member("asker", "127.0.0.94")

    # (a) random frames, the first few pipelined right behind TUNNEL.
    async def random_frames() -> dict[str, Any]:
        def frame() -> bytes:
            return encode_frame(rng.randbytes(rng.randint(1, MAX_DATAGRAM)))

        first = b"".join(frame() for _ in range(8))
        tunnel = await TunnelClient.open("127.0.0.91", port, TUNNELYARD, noise.token, behind=first)
        try:
            sent_bytes = len(first)
            for _ in range((RANDOM_FRAMES - 8) // 16):
                batch = b"".join(frame() for _ in range(16))
                sent_bytes += len(batch)
                await tunnel.send_raw(batch)
            alive = await tunnel.ping(noise.token, 1, boot)
            return {
                "frames": RANDOM_FRAMES,
                "bytes": sent_bytes,
                "alive_after": alive,
                "kinds": dict(tunnel.kinds),
                "ending": tunnel.ending,
            }
        finally:
            await tunnel.close()

    # (b) malformed extended datagrams and other members' tokens.
    async def crafted() -> dict[str, Any]:
        foreign = {name: (ROOM, honest.token) for name, honest in ctx.room.members.items()} | {
            "pacer": ("pacer", ctx.pacer.member.token),
            "bystander": (TUNNELYARD, bystander.token),
        }
        frames = crafted_frames(rng, crafter.token, boot, foreign)
        tunnel = await TunnelClient.open("127.0.0.91", port, TUNNELYARD, crafter.token)
        try:
            for start in range(0, len(frames), 16):
                await tunnel.send_raw(b"".join(encode_frame(f) for f in frames[start : start + 16]))
            alive = await tunnel.ping(crafter.token, 2, boot)
            # The tunnel is crafter's address in the room: whatever was relayed there
            # came to it, and only crafter's own lines (mutations that stayed valid) may.
            senders = Counter(
                d.sender
                for d in map(decode_received, tunnel.log)
                if isinstance(d, Chat) or (isinstance(d, ServerDatagram) and d.kind is Kind.MESSAGE)
            )
            return {
                "frames": len(frames),
                "foreign_tokens": sorted(foreign),
                "alive_after": alive,
                "kinds": dict(tunnel.kinds),
                "relayed_by_sender": dict(senders),
                "ending": tunnel.ending,
            }
        finally:
            await tunnel.close()

    # (c) a Length of 0, MAX_FRAME + 1 and 0xFFFF, each after a PING on a tunnel of its own,
    # while a sibling tunnel of the same member stays open.
    async def bad_lengths() -> dict[str, Any]:
        sibling = await TunnelClient.open("127.0.0.92", port, TUNNELYARD, breaker.token)

        async def one(nonce: int, header: bytes) -> dict[str, Any]:
            tunnel = await TunnelClient.open("127.0.0.92", port, TUNNELYARD, breaker.token)
            try:
                answered = await tunnel.ping(breaker.token, nonce, boot)
                # The room's own traffic (other attackers' lines and joins) may still
                # reach this tunnel, breaker's address: only an ERROR would answer.
                errors_before = tunnel.kinds[Kind.ERROR]
                sent = time.monotonic()
                await tunnel.send_raw(header)
                ended = await tunnel.ended(limits.message_timeout + 2.0)
                return {
                    "ping_answered": answered,
                    "ending": tunnel.ending if ended else "hung",
                    "seconds": round((tunnel.ended_at or time.monotonic()) - sent, 2),
                    "errors_after": tunnel.kinds[Kind.ERROR] - errors_before,
                }
            finally:
                await tunnel.close()

        try:
            results = await asyncio.gather(
                *(one(10 + n, header) for n, header in enumerate(BAD_LENGTHS.values()))
            )
            alive = await sibling.ping(breaker.token, 20, boot)
        finally:
            await sibling.close()
        return {"cases": dict(zip(BAD_LENGTHS, results, strict=True)), "sibling_alive": alive}

    # (d) a PING frame a byte at a time, on two tunnels at once: quickly enough (it is
    # answered), and too slowly (the tunnel must end at the message timeout).
    async def trickles() -> dict[str, Any]:
        frame = encode_frame(ping(trickler.token, 30, boot))
        fast = await TunnelClient.open("127.0.0.93", port, TUNNELYARD, trickler.token)
        slow = await TunnelClient.open("127.0.0.93", port, TUNNELYARD, trickler.token)
        give_up = limits.message_timeout + TRICKLE_GRACE

        async def quickly() -> tuple[float, bool]:
            start, _ = await trickle(fast, frame, TRICKLE_FAST, limits.message_timeout)
            seconds = time.monotonic() - start
            # Its STATUS and the next PING's: the trickled frame was whole and answered.
            answered = await fast.ping(trickler.token, 31, boot)
            return seconds, answered and fast.kinds[DeliveryKind.STATUS] == 2

        async def slowly() -> tuple[float, int]:
            start, sent = await trickle(slow, frame, TRICKLE_SLOW, give_up)
            await slow.ended(max(0.0, start + give_up - time.monotonic()))
            return start, sent

        try:
            (fast_seconds, fast_answered), (slow_start, slow_sent) = await asyncio.gather(
                quickly(), slowly()
            )
        finally:
            await fast.close()
            await slow.close()
        cut_after = None if slow.ended_at is None else round(slow.ended_at - slow_start, 2)
        return {
            "frame_bytes": len(frame),
            "fast_seconds": round(fast_seconds, 2),
            "fast_answered": fast_answered,
            "slow_bytes_sent": slow_sent,
            "slow_cut_after": cut_after,
            "slow_ending": slow.ending or "hung",
            "slow_frames_back": sum(slow.kinds.values()),
        }

    # (e) TUNNEL requests that must be refused.
    async def refused() -> dict[str, Any]:
        alice = ctx.room.host.token
        cases = refusals(rng, alice, noise.token, plain.token, halfway.token, own.token)
        results = await asyncio.gather(*(exchange("127.0.0.94", port, c.data) for c in cases))
        mismatches = [
            f"{case.label}: expected {case.expect}, got {result}"
            for case, result in zip(cases, results, strict=True)
            if not refused_as_expected(case, result)
        ]
        return {
            "cases": len(cases),
            "codes": sorted({code for r in results for code in r.error_codes}),
            "mismatches": mismatches,
        }

    random_part, crafted_part, bad_part, trickle_part, refusal_part = await asyncio.gather(
        random_frames(), crafted(), bad_lengths(), trickles(), refused()
    )
    # One ERROR budget for 127.0.0.91: both garbage tunnels come from there.
    errors = random_part["kinds"].get(Kind.ERROR, 0) + crafted_part["kinds"].get(Kind.ERROR, 0)
    facts = {
        "random": random_part,
        "crafted": crafted_part,
        "bad_lengths": bad_part,
        "trickle": trickle_part,
        "refusals": refusal_part,
        "errors_from_91": errors,
    }
    bad = bad_part["cases"].values()
    cut = trickle_part["slow_cut_after"]
    garbage_alive = random_part["alive_after"] and crafted_part["alive_after"]
    relayed = crafted_part["relayed_by_sender"]

    def served(ok: bool) -> str:
        return "answered" if ok else "did NOT answer"

    def max_ms(cases: Any) -> str:
        return f"{max(c['seconds'] for c in cases) * 1000:.0f}"

    return Attack(
        9,
        "Tunnel garbage",
        tried=f"members' own tunnels fed {fmt(RANDOM_FRAMES)} random frames (1-4,096 random "
        f"bytes, {fmt(random_part['bytes'])} bytes, the first 8 pipelined behind TUNNEL) and "
        f"{fmt(crafted_part['frames'])} crafted ones (malformed extended datagrams, mutations, "
        f"and {len(crafted_part['foreign_tokens'])} other members' tokens: alice's, bob's, "
        "carol's, the pacer's, one bound to another IP); Lengths 0, 4,097 and 0xFFFF; a PING "
        f"frame a byte at a time, in {trickle_part['fast_seconds']:.1f} s and at "
        f"{TRICKLE_SLOW * 1000:.0f} ms a byte; {refusal_part['cases']} TUNNEL requests "
        "with guessed, foreign, version 1, not granted and malformed tokens",
        outcome=f"both garbage tunnels {served(garbage_alive)} a PING after it, {errors} "
        f"ERRORs back (rate cap), and of all that was relayed to them only crafter's own "
        f"lines ({sum(relayed.values())}, mutations that stayed valid) came from a member; "
        f"each bad Length ended its tunnel within {max_ms(bad)} ms, with nothing sent "
        f"back, and the member's other tunnel {served(bad_part['sibling_alive'])} a PING "
        f"after; the quick trickle was {'' if trickle_part['fast_answered'] else 'NOT '}"
        "answered, the slow one "
        + (
            f"was ended {cut:.1f} s after its first byte "
            f"(--message-timeout {limits.message_timeout:g})"
            if cut is not None
            else f"was NOT ended: still open when we stopped after "
            f"{limits.message_timeout + TRICKLE_GRACE:g} s (--message-timeout "
            f"{limits.message_timeout:g})"
        )
        + f"; TUNNEL refused as expected {refusal_part['cases'] - len(refusal_part['mismatches'])}"
        f" of {refusal_part['cases']} times ({', '.join(refusal_part['codes'])})",
        facts=facts,
    )


# ---------------------------------------------------------------------------
# 11. Tunnels that never read
# ---------------------------------------------------------------------------

FLOODGATE = "floodgate"
STALLED = 4
FEED_TEXT = "f" * 4000  # each line a ~4 KB frame to every member of the room
MAX_FEED = 1_000  # lines: 4 MB to each stalled tunnel, ten times what fills one
AFTER_CUT = 20  # lines fed after the last cut, to see the room go on
WINDOW = 8  # lines the feeder may have unconfirmed at once
STALLED_RECEIVE_BUFFER = 4096  # the stalled side offers a small window
WATCH_EVERY = 20 * MS  # the stalled members PING (never reading the STATUS)
FEED_TIMEOUT = 10.0


class Stalled:
    """A tunnel that PINGs and never reads, so the server's frames for it pile up.

    The server cuts it with ``transport.abort()``; with nothing unread on its side that
    is a FIN queued behind the frames our closed window holds back, so we learn of the
    cut from the reset our next PING draws: PINGs go every WATCH_EVERY, and the cut is
    seen within about that.
    """

    def __init__(self, sock: socket.socket, frame: bytes) -> None:
        self.sock = sock
        self.frame = frame
        self.cut_at: float | None = None

    def check(self, now: float) -> None:
        if self.cut_at is not None:
            return
        try:
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.cut_at = now  # the server's reset
            else:
                self.sock.send(self.frame)
        except BlockingIOError:
            pass
        except OSError:
            self.cut_at = now


async def watch(stalled: list[Stalled], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for item in stalled:
            item.check(time.monotonic())
        try:
            async with asyncio.timeout(WATCH_EVERY):
                await stop.wait()
        except TimeoutError:
            pass


@timed
async def attack_11_stalled_tunnels(ctx: Context) -> Attack:
    port = ctx.server.tcp_port
    feeder_ip, stalled_ip = "127.0.0.111", "127.0.0.112"
    sluice = await admit(
        port, CreateRoom(FLOODGATE, "sluice", None, TUNNEL_FEATURES), local_host=feeder_ip
    )
    boot = bytes.fromhex(sluice.boot or "")
    feeder = await TunnelClient.open(feeder_ip, port, FLOODGATE, sluice.token)
    stalled: list[Stalled] = []
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        assert await feeder.ping(sluice.token, 1, boot), "the feeder's tunnel does not answer"
        for n in range(STALLED):
            clog = await admit(
                port, JoinRoom(FLOODGATE, f"clog{n}", None, TUNNEL_FEATURES), local_host=stalled_ip
            )
            sock = await connect_from(stalled_ip, port, receive_buffer=STALLED_RECEIVE_BUFFER)
            frame = encode_frame(ping(clog.token, 1, boot))
            stalled.append(Stalled(sock, frame))
            ack, _ = await tunnel_handshake(sock, FLOODGATE, clog.token, behind=frame)
            assert ack.ok, ack
            # From here on nothing is read from it: its STATUS and all the rest wait.
        watcher = asyncio.create_task(watch(stalled, stop))
        await asyncio.sleep(50 * MS)  # the PINGs made the tunnels the members' addresses
        while not feeder.queue.empty():
            feeder.queue.get_nowait()  # the joins' NOTICEs

        sent_at: dict[int, float] = {}
        echo: list[float] = []
        out_of_order = 0
        limit = MAX_FEED
        next_no, echoed, fed_until_cut = 1, 0, None
        start = time.monotonic()
        try:
            async with asyncio.timeout(FEED_TIMEOUT):
                while echoed < limit:
                    while next_no <= limit and next_no - echoed <= WINDOW:
                        await feeder.send(encode_extended(Data(sluice.token, next_no, FEED_TEXT)))
                        sent_at[next_no] = time.monotonic()
                        next_no += 1
                    datagram = decode_received(await feeder.queue.get())
                    if isinstance(datagram, Chat) and datagram.sender == "sluice":
                        echoed += 1
                        out_of_order += datagram.msg_no != echoed
                        echo.append(time.monotonic() - sent_at[datagram.msg_no])
                    if fed_until_cut is None and all(s.cut_at is not None for s in stalled):
                        fed_until_cut = next_no - 1
                        limit = min(MAX_FEED, fed_until_cut + AFTER_CUT)
        except TimeoutError:
            pass
        end = time.monotonic()
        await asyncio.sleep(100 * MS)  # the room's lines of the last moment arrive
        room_delays = ctx.room.delays(start, end)
        await feeder.send(encode_extended(Leave(sluice.token)))  # closes the room
        departed = False
        try:
            async with asyncio.timeout(2.0):
                while not departed:
                    departed = (await feeder.queue.get())[0] == DeliveryKind.DEPARTED
        except TimeoutError:
            pass
    finally:
        stop.set()
        if watcher is not None:
            await watcher
        await feeder.close()
        for item in stalled:
            item.sock.close()
    cuts = [round(s.cut_at - start, 2) for s in stalled if s.cut_at is not None]
    log_cuts = ctx.server.log().count(f"cutting the tunnel of {stalled_ip}")
    # What each line is to a stalled tunnel: a CHAT of the feeder's, in a frame.
    frame_bytes = len(encode_frame(encode_received(Chat(1, "sluice", 1, FEED_TEXT))))
    facts = {
        "stalled": STALLED,
        "cut": len(cuts),
        "cut_after": cuts,
        "log_cuts": log_cuts,
        "fed": next_no - 1,
        "fed_until_cut": fed_until_cut,
        "bytes_until_cut": None if fed_until_cut is None else fed_until_cut * frame_bytes,
        "echoed": echoed,
        "out_of_order": out_of_order,
        "echo_ms_max": round(max(echo, default=0.0) * 1000, 1),
        "room_lines_meanwhile": len(room_delays),
        "room_delay_ms_max": round(max(room_delays, default=0.0) * 1000, 1),
        "feeder_departed": departed,
        "feed_seconds": round(end - start, 2),
    }
    return Attack(
        11,
        "Tunnels that never read",
        tried=f"{STALLED} members tunnel from one IP, PING every {WATCH_EVERY * 1000:.0f} ms and "
        f"never read (a {STALLED_RECEIVE_BUFFER:,}-byte receive window), while a fifth "
        f"floods their room with 4 KB lines over its own tunnel, {WINDOW} unconfirmed at "
        f"once, until all {STALLED} are cut, then {AFTER_CUT} more",
        outcome=f"{len(cuts)} of {STALLED} cut, seen {span(cuts)} into the flood, once "
        + (
            f"{fmt(fed_until_cut)} lines (~{fed_until_cut * frame_bytes / 1024:,.0f} KiB) had "
            "been sent to each"
            if fed_until_cut is not None
            else "never"
        )
        + f" (--tunnel-buffer {ctx.limits.tunnel_buffer:,}; the server logged {log_cuts} "
        f"cuts); the feeder got all {fmt(echoed)} of its lines back in order, at most "
        f"{facts['echo_ms_max']:.0f} ms after sending; the chatting room's lines meanwhile "
        f"arrived at most {facts['room_delay_ms_max']:.0f} ms after they were sent",
        facts=facts,
    )
