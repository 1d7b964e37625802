"""Attack 3: slow senders, a slow reader and a crowd of idle connections."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

from ocm.wire import (
    TCRP_HEADER_SIZE,
    CreateRoom,
    ListRooms,
    encode_request,
)
from tests.hostile.context import (
    Context,
    fmt,
    span,
    timed,
)
from tests.hostile.harness import (
    Attack,
    enter,
)
from tests.kit import LOOPBACK, MS, call

# ---------------------------------------------------------------------------
# 3. Slow senders, a slow reader, 500 idle connections from one IP
# ---------------------------------------------------------------------------

SLOW_SENDERS = 8
IDLE_CONNECTIONS = 500
# Connections opened at once: a burst of SYNs larger than the listen backlog (the
# kernel's somaxconn may be 128) is dropped and retried a second later, which would
# blur "refused at once" with "kept until the idle timeout".
CONNECT_WAVE = 100
# What the slow reader offers at most: far more than the socket buffers in between hold.
SLOW_READER_BYTES = 8 << 20
# Rooms with 255-byte names make each LIST_ROOMS reply some 5 KB, so the replies the slow
# reader leaves unread fill the socket buffers (up to 4 MiB on Linux) after ~1,000
# requests, however slowly a loaded machine lets the server work through them.
BAIT_ROOMS = 16


async def slow_sender(port: int) -> tuple[float, int, str]:
    """Send a CREATE one byte a second; return (seconds until cut, bytes sent, ending)."""
    data = encode_request(CreateRoom("slowpoke", "sloth"))
    reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=("127.0.0.31", 0))
    start = time.monotonic()
    sent = 0
    try:
        for byte in data:
            writer.write(bytes((byte,)))
            await writer.drain()
            sent += 1
            try:
                async with asyncio.timeout(1.0):
                    if await reader.read(1) == b"":
                        return time.monotonic() - start, sent, "closed"
            except TimeoutError:
                continue
        return time.monotonic() - start, sent, "completed"
    except OSError:
        return time.monotonic() - start, sent, "reset"
    finally:
        writer.transport.abort()


async def slow_reader(port: int, limit: float) -> tuple[float, int, str]:
    """Pipeline LIST_ROOMS requests and never read a reply.

    Returns (seconds from the last byte the server took until it cut us off, requests
    the server took, ending). The server must not hold the connection (and its unsent
    replies) forever: it aborts it once a write has stalled for the message timeout.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Small buffers on our side: the stall comes sooner and less sits in the kernel.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.bind(("127.0.0.33", 0))
    sock.setblocking(False)
    blob = memoryview(encode_request(ListRooms()) * (SLOW_READER_BYTES // TCRP_HEADER_SIZE))
    sent = 0
    try:
        await loop.sock_connect(sock, (LOOPBACK, port))
        stalled_at = time.monotonic()
        deadline = stalled_at + limit
        while time.monotonic() < deadline:
            try:
                if sent < len(blob):
                    sent += sock.send(blob[sent : sent + 65536])
                    stalled_at = time.monotonic()
                    await asyncio.sleep(0)
                    continue
                sock.recv(1, socket.MSG_PEEK)  # only to see the reset when it comes
            except BlockingIOError:
                pass
            except OSError:
                return time.monotonic() - stalled_at, sent // TCRP_HEADER_SIZE, "reset"
            await asyncio.sleep(50 * MS)
        return time.monotonic() - stalled_at, sent // TCRP_HEADER_SIZE, "hung"
    finally:
        sock.close()


@dataclass(slots=True)
class IdleCrowd:
    connections: int = 0
    refused: int = 0  # failed to connect, or closed by the server at once
    kept: list[float] = field(default_factory=list)  # seconds each kept one stayed open
    hung: int = 0  # kept ones still open long after the idle timeout
    connect_seconds: float = 0.0  # how long opening them all took


async def idle_crowd(ip: str, port: int, count: int, idle_timeout: float) -> IdleCrowd:
    """Open ``count`` connections from one IP, send nothing, see which stay and how long.

    Which ones the server refused is read from the stream states once their count has
    been stable for a moment, and before the first kept one can reach the idle timeout:
    not from when our busy event loop got round to noticing each close.
    """
    crowd = IdleCrowd(count)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None:
        try:
            reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(ip, 0))
        except OSError:
            return None
        return reader, writer, time.monotonic()

    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None] = []
    began = time.monotonic()
    for start in range(0, count, CONNECT_WAVE):
        wave = min(CONNECT_WAVE, count - start)
        opened += await asyncio.gather(*(connect() for _ in range(wave)))
    crowd.connect_seconds = time.monotonic() - began

    def still_open() -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]]:
        return [
            item
            for item in opened
            if item is not None and not item[0].at_eof() and item[0].exception() is None
        ]

    alive = still_open()
    stable_since = time.monotonic()
    while time.monotonic() < began + idle_timeout - 0.3:
        await asyncio.sleep(50 * MS)
        now_open = still_open()
        if len(now_open) != len(alive):
            alive, stable_since = now_open, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
    crowd.refused = count - len(alive)

    async def lifetime(reader: asyncio.StreamReader, since: float) -> float | None:
        try:
            async with asyncio.timeout(idle_timeout + 3.0):
                await reader.read()
        except TimeoutError:
            return None
        except OSError:
            pass
        return time.monotonic() - since

    times = await asyncio.gather(*(lifetime(reader, since) for reader, _, since in alive))
    crowd.kept = [t for t in times if t is not None]
    crowd.hung = sum(1 for t in times if t is None)
    for item in opened:
        if item is not None:
            item[1].transport.abort()
    return crowd


@timed
async def attack_3_slow_and_idle(ctx: Context) -> Attack:
    limits = ctx.limits
    port = ctx.server.tcp_port
    ip = "127.0.0.32"
    for n in range(BAIT_ROOMS):
        name = f"bait-{n:02d}-" + "x" * 246
        bait = await enter(port, CreateRoom(name, "angler"), local_host="127.0.0.34")
        ctx.helpers.append(bait)
    slow = asyncio.gather(*(slow_sender(port) for _ in range(SLOW_SENDERS)))
    reader = asyncio.create_task(slow_reader(port, limits.message_timeout + 6.0))
    crowd = await idle_crowd(ip, port, IDLE_CONNECTIONS, limits.tcp_idle_timeout)
    slow_results = await slow
    reader_seconds, reader_requests, reader_ending = await reader
    after, _ = await call(port, ListRooms(), local_host=ip)  # the slots are free again

    kept_times = crowd.kept
    facts = {
        "idle_connections": crowd.connections,
        "refused": crowd.refused,
        "kept": len(crowd.kept) + crowd.hung,
        "kept_hung": crowd.hung,
        "connect_seconds": round(crowd.connect_seconds, 2),
        "kept_closed_after": [
            round(min(kept_times, default=0), 2),
            round(max(kept_times, default=0), 2),
        ],
        "slow_senders": [
            {"seconds": round(s, 2), "bytes": b, "ending": e} for s, b, e in slow_results
        ],
        "slow_reader": {
            "seconds_after_stall": round(reader_seconds, 2),
            "requests_taken": reader_requests,
            "ending": reader_ending,
        },
        "slots_free_after": after.ok,
    }
    cuts = [s for s, _, _ in slow_results]
    return Attack(
        3,
        "Slow senders, a slow reader, 500 idle connections from one IP",
        tried=f"{SLOW_SENDERS} senders at one byte a second; one reader that pipelines "
        f"LIST_ROOMS and never reads; {IDLE_CONNECTIONS} idle connections from one IP",
        outcome=f"slow senders cut after {span(cuts)} "
        f"(--message-timeout {limits.message_timeout:g}) having sent "
        f"{max(b for _, b, _ in slow_results)} bytes at most; the slow reader was reset "
        f"{reader_seconds:.1f} s after the server stopped taking its requests "
        f"({fmt(reader_requests)} taken, replies never read); {facts['kept']} idle connections "
        f"got in (--max-connections-per-ip {limits.max_connections_per_ip}) and were closed "
        f"after {span(kept_times)} "
        f"(--tcp-idle-timeout {limits.tcp_idle_timeout:g}), {crowd.refused} of "
        f"{crowd.connections} refused at once",
        facts=facts,
    )
