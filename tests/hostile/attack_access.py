"""Attacks 4-7: who gets in, and what comes back to a stranger.

Guessed tokens (4), password guessing (5), a real token replayed from another IP (6),
and reflection (7), which also accounts for every datagram the other attacks sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ocm.wire import (
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    encode_client_datagram,
)
from tests.hostile.context import (
    Context,
    fake_token,
    fmt,
    timed,
)
from tests.hostile.harness import (
    Attack,
    UdpAttacker,
    enter,
    random_size,
)
from tests.hostile.room import ROOM
from tests.kit import OTHER_HOST, call

# ---------------------------------------------------------------------------
# 4. Guessed tokens
# ---------------------------------------------------------------------------

GUESSES = 10_000


@timed
async def attack_4_guessed_tokens(ctx: Context) -> Attack:
    rng = ctx.rng(4)
    guesses = (
        encode_client_datagram(ClientDatagram(ROOM, fake_token(rng), "" if i % 2 else f"pwned {i}"))
        for i in range(GUESSES)
    )
    attacker = await ctx.attacker("127.0.0.41")
    seconds = await ctx.flood(attacker, guesses, rate=5_000)
    attacker.close()
    record = attacker.record
    bound = int(ctx.limits.error_replies_per_second * (1 + seconds)) + 1
    facts = {
        "guesses": record.sent,
        "accepted": record.relayed,
        "errors": record.errors,
        "errors_bound": bound,
        "errors_max_per_second": record.max_per_second(),
        "seconds": round(seconds, 2),
    }
    return Attack(
        4,
        "Guessed tokens",
        tried=f"{fmt(record.sent)} datagrams to the chatting room with random 32-character "
        f"tokens (half chat, half heartbeats) from one IP over {seconds:.1f} s",
        outcome=f"0 accepted (nothing reached the room, {record.relayed} replies other than "
        f"ERROR); the guesser got {record.errors} ERRORs back, at most "
        f"{record.max_per_second()} in any second",
        facts=facts,
    )


# ---------------------------------------------------------------------------
# 5. Password guessing
# ---------------------------------------------------------------------------

VAULT = "vault"
VAULT_PASSWORD = "the real one"
SEQUENTIAL_GUESSES = 12
PARALLEL_GUESSES = 30


@timed
async def attack_5_password_guessing(ctx: Context) -> Attack:
    port = ctx.server.tcp_port
    host = await enter(port, CreateRoom(VAULT, "victor", VAULT_PASSWORD))
    ctx.helpers.append(host)

    sequential: list[str] = []
    for n in range(SEQUENTIAL_GUESSES):
        ack, _ = await call(
            port, JoinRoom(VAULT, f"guess{n}", f"password{n}"), local_host="127.0.0.51"
        )
        sequential.append(str(ack.error or "ok"))
    right, _ = await call(port, JoinRoom(VAULT, "guesser", VAULT_PASSWORD), local_host="127.0.0.51")

    async def guess(n: int) -> str:
        ack, _ = await call(port, JoinRoom(VAULT, f"crowd{n}", f"pw{n}"), local_host="127.0.0.52")
        return str(ack.error or "ok")

    parallel = Counter(await asyncio.gather(*(guess(n) for n in range(PARALLEL_GUESSES))))

    start = time.monotonic()
    honest, _ = await call(port, JoinRoom(VAULT, "wendy", VAULT_PASSWORD), local_host=OTHER_HOST)
    honest_seconds = time.monotonic() - start
    facts = {
        "sequential": sequential,
        "right_password_from_guesser": str(right.error or "ok"),
        "parallel": dict(parallel),
        "honest_join": str(honest.error or "ok"),
        "honest_join_seconds": round(honest_seconds, 3),
    }
    wrong = sequential.count("wrong_password")
    return Attack(
        5,
        "Password guessing",
        tried=f"{SEQUENTIAL_GUESSES} wrong passwords one after another from one IP, then "
        f"the right one; {PARALLEL_GUESSES} wrong passwords at once from another IP; then "
        f"an honest join from a third IP ({OTHER_HOST})",
        outcome=f"wrong_password {wrong} times, then rate_limited "
        f"{sequential.count('rate_limited')} times, and the right password too "
        f"({facts['right_password_from_guesser']}); all at once: "
        f"{parallel.get('wrong_password', 0)} wrong_password, "
        f"{parallel.get('rate_limited', 0)} rate_limited; {OTHER_HOST} joined "
        f"({facts['honest_join']}) in {honest_seconds * 1000:.0f} ms",
        facts=facts,
    )


# ---------------------------------------------------------------------------
# 6. A real token replayed from another IP
# ---------------------------------------------------------------------------

REPLAYS = 200


@timed
async def attack_6_token_replay(ctx: Context) -> Attack:
    victim = ctx.room.host  # alice, who keeps chatting all along
    token = victim.token
    chats = [
        encode_client_datagram(ClientDatagram(ROOM, token, f"replayed {i}")) for i in range(REPLAYS)
    ]
    beats = [encode_client_datagram(ClientDatagram(ROOM, token))] * REPLAYS
    attacker = await ctx.attacker(OTHER_HOST)
    mixed = [d for pair in zip(chats, beats, strict=True) for d in pair]
    seconds = await ctx.flood(attacker, mixed)
    attacker.close()
    leave, _ = await call(ctx.server.tcp_port, LeaveRoom(ROOM, token), local_host=OTHER_HOST)
    record = attacker.record
    facts = {
        "flood_seconds": round(seconds, 2),
        "datagrams": record.sent,
        "accepted": record.relayed,
        "errors": record.errors,
        "leave": str(leave.error or "ok"),
    }
    return Attack(
        6,
        f"A real token replayed from {OTHER_HOST}",
        tried=f"alice's token (she is chatting in the room) in {REPLAYS} chat datagrams and "
        f"{REPLAYS} heartbeats from 16 ports of {OTHER_HOST}, and in a LEAVE_ROOM",
        outcome=f"0 accepted: no line posted, alice's address not taken over (she received "
        f"every line), {record.errors} ERRORs back (rate cap); LEAVE_ROOM refused: "
        f"{facts['leave']}",
        facts=facts,
    )


# ---------------------------------------------------------------------------
# 7. Reflection
# ---------------------------------------------------------------------------

PROBE_HOSTS = 64
PROBES_PER_HOST = 5  # within the ERROR limiter's burst: every probe is answered


@timed
async def attack_7_reflection(ctx: Context) -> Attack:
    """One datagram per socket from 64 IPs: each reply is matched to its probe exactly.

    Then the accounting of every other UDP attack of the suite (every ERROR matched to
    the datagram it answered), and the per-source rate caps.
    """
    rng = ctx.rng(7)
    sizes = [*range(13), 16, 33, 34, 38, 40, 64, 100, 1000, 4095, 4096, 4097, 9000, 65_000]
    while len(sizes) < PROBE_HOSTS * PROBES_PER_HOST:
        sizes.append(random_size(rng))
    probes: list[bytes] = []
    for size in sizes:
        if rng.random() < 0.5 or size < 3:
            probes.append(rng.randbytes(size))
        else:  # shaped like a real datagram for the room, with a guessed token
            head = bytes((len(ROOM), 32)) + ROOM.encode() + fake_token(rng).encode()
            probes.append((head + rng.randbytes(size))[:size])
    hosts = [
        await UdpAttacker(f"127.0.7.{n + 1}").open(ctx.server.udp_port, PROBES_PER_HOST)
        for n in range(PROBE_HOSTS)
    ]
    sockets = [sock for host in hosts for sock in host.sockets]
    async with ctx.udp_lane:
        for index, (sock, probe) in enumerate(zip(sockets, probes, strict=True)):
            sock.send(probe)
            if index % 16 == 15 or index == len(sockets) - 1:
                await ctx.pacer.sync()
    for host in hosts:
        host.close()
    unanswered = [
        len(p) for s, p in zip(sockets, probes, strict=True) if not s.replies and len(p) >= 6
    ]
    answered_tiny = [
        len(p) for s, p in zip(sockets, probes, strict=True) if s.replies and len(p) < 6
    ]
    probe_records = [host.record for host in hosts]
    larger = sum(r.larger_than_datagram for r in probe_records)

    everything = ctx.udp_records + probe_records
    sent = sum(r.sent for r in everything)
    sent_bytes = sum(r.sent_bytes for r in everything)
    errors = sum(r.errors for r in everything)
    error_bytes = sum(r.error_bytes for r in everything)
    worst_ratio = max((x for r in everything for x in r.ratios), default=0.0)
    flood_records = [r for r in ctx.udp_records if r.sent >= 1000]
    per_second = max((r.max_per_second() for r in flood_records), default=0)
    facts = {
        "probes": len(probes),
        "probe_replies": sum(r.errors for r in probe_records),
        "probe_larger_than_datagram": larger,
        "probes_unanswered": unanswered,
        "tiny_probes_answered": answered_tiny,
        "all_datagrams": sent,
        "all_bytes": sent_bytes,
        "all_errors": errors,
        "all_error_bytes": error_bytes,
        "all_larger_than_datagram": sum(r.larger_than_datagram for r in everything),
        "worst_ratio": round(worst_ratio, 3),
        "max_errors_per_second_one_source": per_second,
    }
    return Attack(
        7,
        "Reflection",
        tried=f"{len(probes)} probes of 0-65,000 bytes, one per socket from {PROBE_HOSTS} IPs "
        f"(so each reply is matched to its probe), plus every datagram of attacks 1, 2, 4 "
        f"and 6: {fmt(sent)} unauthenticated datagrams, {fmt(sent_bytes)} bytes",
        outcome=f"every probe of 6+ bytes answered with at most its own size, probes under "
        f"6 bytes not answered; over all {fmt(sent)}: {fmt(errors)} ERRORs, {fmt(error_bytes)} "
        f"bytes back ({error_bytes / sent_bytes:.4%} of what was sent), largest reply "
        f"{worst_ratio:.2f}x its datagram; one source got at most {per_second} ERRORs in "
        "any second",
        facts=facts,
    )
