"""Attacks 1 and 2: random input, and input crafted to break the decoders."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ocm.wire import (
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    ListRooms,
    Request,
    encode_client_datagram,
    encode_header,
    encode_request,
)
from tests.hostile.context import (
    Context,
    fake_token,
    fmt,
    span,
    summarize_streams,
    tcp_answers,
    timed,
)
from tests.hostile.harness import (
    Attack,
    Exchange,
    SuiteLimits,
    bounded_gather,
    enter,
    exchange,
    mutate,
    random_size,
)
from tests.hostile.room import ROOM

# ---------------------------------------------------------------------------
# 1. Random datagrams and random TCP byte streams
# ---------------------------------------------------------------------------

DATAGRAMS = 20_000
STREAMS = 2_000
STREAM_HOSTS = ("127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15")
STREAMS_PER_HOST_AT_ONCE = 16


def junk_requests(rng: random.Random, token: str) -> list[Request]:
    """Valid requests about the attacker's own rooms, as seeds for mutation."""
    n = rng.randrange(10**6)
    requests: list[Request] = [
        CreateRoom(f"junk-{n}", "mallory"),
        JoinRoom("junkyard", f"minion-{n}"),
        ListRooms(),
        LeaveRoom("junkyard", token),
        LeaveRoom(f"junk-{n}", fake_token(rng)),
    ]
    if rng.random() < 0.05:  # a few with passwords: the server hashes them (slowly)
        requests.append(CreateRoom(f"junk-{n}", "mallory", "hunter2"))
    return requests


@timed
async def attack_1_random_input(ctx: Context) -> Attack:
    rng = ctx.rng(1)
    ip = "127.0.0.11"
    own = await enter(ctx.server.tcp_port, CreateRoom("junkyard", "mallory"), local_host=ip)
    ctx.helpers.append(own)  # kept alive, so that mutations that stay valid are relayed
    seeds = [
        encode_client_datagram(ClientDatagram("junkyard", own.token, text))
        for text in ("", "hi", "x" * 300, "héllo ✓")
    ] + [encode_client_datagram(ClientDatagram(ROOM, fake_token(rng), "let me in"))]
    # Generated as they are sent: the test's event loop must not stall for seconds.
    datagrams = (
        rng.randbytes(random_size(rng)) if i % 2 else mutate(rng, rng.choice(seeds))
        for i in range(DATAGRAMS)
    )
    attacker = await ctx.attacker(ip)

    async def streams() -> list[Exchange]:
        def stream(host: str, number: int) -> Callable[[], Awaitable[Exchange]]:
            async def run() -> Exchange:
                own_rng = random.Random(ctx.seed * 100_000 + number)  # made when it starts
                if own_rng.random() < 0.5:
                    data = own_rng.randbytes(random_size(own_rng))
                else:
                    requests = junk_requests(own_rng, own.token)
                    picks = own_rng.sample(requests, own_rng.randint(1, 3))
                    data = mutate(own_rng, b"".join(encode_request(r) for r in picks))
                return await exchange(host, ctx.server.tcp_port, data)

            return run

        per_host = STREAMS // len(STREAM_HOSTS)
        lanes = [
            [stream(host, lane * per_host + n) for n in range(per_host)]
            for lane, host in enumerate(STREAM_HOSTS)
        ]
        done = await asyncio.gather(
            *(bounded_gather(lane, STREAMS_PER_HOST_AT_ONCE) for lane in lanes)
        )
        return [item for lane in done for item in lane]

    flood_task = asyncio.create_task(ctx.flood(attacker, datagrams, rate=10_000))
    exchanges = await streams()
    seconds = await flood_task
    attacker.close()
    record = attacker.record
    tcp = summarize_streams(exchanges)
    endings: Counter[str] = Counter(item.ending for item in exchanges)
    error_acks = sum(len(item.error_codes) for item in exchanges)
    facts = {
        "datagrams": record.sent,
        "datagram_bytes": record.sent_bytes,
        "errors": record.errors,
        "errors_max_per_second": record.max_per_second(),
        "relayed_to_own_room": record.relayed,
        "flood_seconds": round(seconds, 2),
        **tcp,
    }
    return Attack(
        1,
        "Random datagrams and random TCP byte streams",
        tried=f"{fmt(record.sent)} datagrams (half random bytes, half mutated valid ones, "
        f"0-9,000 bytes) from one host; {fmt(STREAMS)} TCP streams (same mix) from 4 hosts, "
        f"{len(STREAM_HOSTS) * STREAMS_PER_HOST_AT_ONCE} at a time",
        outcome=f"{fmt(record.errors)} ERRORs back (rate cap: at most "
        f"{record.max_per_second()} in any second); its own room relayed "
        f"{fmt(record.relayed)} datagrams back to it (mutations that stayed valid, its "
        f"minions' joins), none reached another room; streams: "
        f"{fmt(error_acks)} error ACKs, {fmt(tcp_answers(exchanges))} ok ACKs, "
        f"{fmt(endings['closed'] + endings['reset'])} closed by the server, "
        f"{endings['hung']} hung (slowest {tcp['slowest']} s)",
        facts=facts,
    )


# ---------------------------------------------------------------------------
# 2. Truncated headers, sizes past the end, OperationPayloadSize near 2**232
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Crafted:
    label: str
    data: bytes
    expect: str  # an error code, "closed" (no reply) or "cut" (closed at the message timeout)
    eof: bool = True


def crafted_tcrp(limits: SuiteLimits) -> list[Crafted]:
    listing = encode_request(ListRooms())
    header = encode_header(10, 1, 0, 100)
    cases = [Crafted(f"header cut at {n} bytes", listing[:n], "closed") for n in (1, 2, 3, 16, 31)]
    cases += [
        Crafted(f"header cut at {n} bytes, then silence", listing[:n], "cut", eof=False)
        for n in (1, 31)
    ]
    cases += [
        Crafted("sizes point past the end", header + b"x" * 20, "closed"),
        Crafted("sizes point past the end, then silence", header + b"x" * 20, "cut", eof=False),
        Crafted("room size 255, nothing after", encode_header(255, 2, 0, 0), "closed"),
    ]
    for label, size in (
        ("2**232 - 1", 2**232 - 1),
        ("2**232 - 2**200", 2**232 - 2**200),
        ("2**231", 2**231),
        ("2**64", 2**64),
        ("2**32", 2**32),
        ("max payload + 1", limits.max_payload + 1),
    ):
        cases.append(
            Crafted(f"payload size {label}", encode_header(0, 3, 0, size), "too_large", eof=False)
        )
    deep = b"[" * (limits.max_payload - 2)
    cases += [
        Crafted(
            "payload of exactly max payload, not JSON",
            encode_header(0, 3, 0, limits.max_payload) + b"x" * limits.max_payload,
            "bad_request",
        ),
        Crafted("JSON nested 65,000 deep", encode_header(0, 3, 0, len(deep)) + deep, "bad_request"),
        Crafted(
            "a 60,000-digit number",
            _request(1, "r", b'{"username": 1' + b"1" * 60_000 + b"}"),
            "bad_request",
        ),
        Crafted("a lone surrogate", _request(1, "r", b'{"username": "\\ud800"}'), "bad_request"),
        Crafted("room name not UTF-8", encode_header(2, 2, 0, 2) + b"\xff\xfe{}", "bad_request"),
        Crafted(
            "control character in a name",
            _request(1, "r\x1b[2J", b'{"username":"m"}'),
            "bad_request",
        ),
        Crafted("operation 0", encode_header(0, 0, 0, 2) + b"{}", "unknown_operation"),
        Crafted("operation 255", encode_header(0, 255, 0, 2) + b"{}", "unknown_operation"),
        Crafted("state ACK from a client", encode_header(0, 3, 1, 2) + b"{}", "bad_request"),
        Crafted("state 255", encode_header(0, 3, 255, 2) + b"{}", "bad_request"),
        Crafted("JSON array payload", _request(3, "", b"[1, 2]"), "bad_request"),
        Crafted("username of numbers", _request(1, "r", b'{"username": 7}'), "bad_request"),
        Crafted("a valid request, then garbage", listing + b"\xff" * 40, "bad_request"),
    ]
    return cases


def _request(operation: int, room: str, payload: bytes) -> bytes:
    name = room.encode()
    return encode_header(len(name), operation, 0, len(payload)) + name + payload


def crafted_datagrams(token: str) -> list[tuple[str, bytes]]:
    room = ROOM.encode()
    return [
        ("empty", b""),
        ("one byte", b"\x01"),
        ("sizes only", b"\xff\xff"),
        ("sizes 1 and 1, nothing after", b"\x01\x01"),
        ("room size past the end", b"\xff\x01" + b"x" * 10),
        ("token size past the end", bytes((len(room), 255)) + room + b"x" * 5),
        ("room size 0", b"\x00\x05abcdeffff"),
        ("token size 0", bytes((len(room), 0)) + room + b"hello"),
        ("token not ASCII", bytes((len(room), 4)) + room + b"\xff\xfe\xfd\xfchi"),
        ("a 255-byte token", bytes((len(room), 255)) + room + b"t" * 255 + b"hi"),
        ("text not UTF-8", bytes((len(room), len(token))) + room + token.encode() + b"\xff"),
        ("4,097 bytes", b"\x06\x20" + b"x" * 4095),
        ("9,000 bytes", b"\x06\x20" + b"x" * 8998),
        ("65,000 bytes", b"\x06\x20" + b"x" * 64_998),
    ]


@timed
async def attack_2_malformed(ctx: Context) -> Attack:
    limits = ctx.limits
    cases = crafted_tcrp(limits)
    timeout = limits.message_timeout + 3.0

    async def run(case: Crafted) -> Exchange:
        return await exchange(
            "127.0.0.21", ctx.server.tcp_port, case.data, eof=case.eof, timeout=timeout
        )

    attacker = await ctx.attacker("127.0.0.22", sockets=1)
    datagrams = crafted_datagrams(fake_token(ctx.rng(2)))
    results, _ = await asyncio.gather(
        asyncio.gather(*(run(case) for case in cases)),
        ctx.flood(attacker, [data for _, data in datagrams]),
    )
    attacker.close()
    mismatches: list[str] = []
    cut_times: list[float] = []
    outcome: Counter[str] = Counter()
    for case, result in zip(cases, results, strict=True):
        if case.expect == "cut":
            cut_times.append(result.seconds)
            good = result.ending in ("closed", "reset") and not result.replies
            good = good and limits.message_timeout - 0.1 <= result.seconds <= timeout - 1
        elif case.expect == "closed":
            good = result.ending in ("closed", "reset") and not result.replies
        else:
            good = case.expect in result.error_codes and result.ending in ("closed", "reset")
        outcome[case.expect] += 1
        if not good:
            mismatches.append(f"{case.label}: expected {case.expect}, got {result}")
    record = attacker.record
    facts = {
        "tcrp_cases": len(cases),
        "tcrp_expected": dict(outcome),
        "mismatches": mismatches,
        "cut_seconds": [round(t, 2) for t in cut_times],
        "datagram_cases": len(datagrams),
        "datagram_errors": record.errors,
        "datagram_relayed": record.relayed,
        "larger_than_datagram": record.larger_than_datagram,
    }
    answered = sum(n for code, n in outcome.items() if code not in ("closed", "cut"))
    return Attack(
        2,
        "Truncated headers, sizes past the end, OperationPayloadSize near 2**232",
        tried=f"{len(cases)} crafted TCRP messages (cut headers, bodies shorter than their "
        f"sizes, payload sizes from max+1 to 2**232-1, 65,000-deep JSON, bad UTF-8, "
        f"unknown operation and state); {len(datagrams)} crafted datagrams (0 to 65,000 "
        "bytes, sizes past the end)",
        outcome=f"{len(cases) - len(mismatches)} of {len(cases)} as expected: {answered} "
        f"got the right error ACK (too_large: {outcome['too_large']}) and were closed, "
        f"{outcome['closed']} closed without a reply, {outcome['cut']} silent ones cut at "
        f"the message timeout ({span(cut_times)}); datagrams: "
        f"{record.errors} ERRORs, none larger than its datagram, {record.relayed} relayed",
        facts=facts,
    )
