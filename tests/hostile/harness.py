"""Plumbing for the hostile-client suite: the server process, paced attackers, records.

Everything here talks to a real ``ocm server`` process over loopback with raw sockets,
byte-exact to the protocol (the same way tests/kit.py does), so a client bug cannot hide
a server bug. Each loopback address (127.0.0.x) stands for one host on the internet.

Floods are paced by a :class:`Pacer`: a member of a room of its own whose chat echo
proves the server has read every datagram sent before it (the server reads one socket,
in order). The suite measures how the server treats hostile input, not how big a kernel
buffer is: a flood faster than the server can read loses datagrams in the kernel, chat
included, and no server can prevent that (docs/security.md says so).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from ocm.errors import ProtocolError
from ocm.server.limits import Limits
from ocm.server.limits import flags as limit_flags
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    TCRP_HEADER_SIZE,
    Ack,
    CreateRoom,
    JoinRoom,
    Kind,
    TcrpReader,
    decode_server_datagram,
    encode_request,
    parse_reply,
)
from ocm.wire.delivery import DeliveryKind, Ping, encode_extended
from ocm.wire.tcrp import Tunnel, Tunnelled
from ocm.wire.tunnel import FrameReader, encode_frame
from tests.kit import LOOPBACK, MS, Member, UdpPeer, admit

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# Receive buffers of the suite's own sockets: a busy test process must not drop what the
# server sends to the well-behaved room (the kernel caps it at net.core.rmem_max).
CLIENT_RECEIVE_BUFFER = 1 << 20

T = TypeVar("T")


DEFAULTS = Limits()


@dataclass(frozen=True, slots=True)
class SuiteLimits:
    """The server flags of the suite: defaults, except the timeouts, shortened to run fast.

    Each field is the field of :class:`~ocm.server.limits.Limits` of the same name, and
    its flag (``idle_timeout`` is ``--idle-timeout``).
    """

    idle_timeout: float = 2.0  # attack 8 waits for it twice
    message_timeout: float = 2.0  # slow senders are cut after it
    tcp_idle_timeout: float = 3.0  # the 500 idle connections
    max_connections_per_ip: int = DEFAULTS.max_connections_per_ip
    max_payload: int = DEFAULTS.max_payload
    error_replies_per_second: int = DEFAULTS.error_replies_per_second
    # per --failure-window, a minute by default
    max_password_failures: int = DEFAULTS.max_password_failures
    tunnel_buffer: int = DEFAULTS.tunnel_buffer  # unsent bytes before a tunnel is cut

    def flags(self) -> list[str]:
        ours = {f.name for f in fields(self)}
        return [f"{f.option}={getattr(self, f.name)}" for f in limit_flags() if f.name in ours]


@dataclass(slots=True)
class Attack:
    """One attack: what was tried, what happened (one line each), the numbers behind it."""

    number: int
    name: str
    tried: str = ""
    outcome: str = ""
    seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)


def raise_fd_limit(wanted: int = 4096) -> None:
    """500 idle connections plus the rest need more than a 1024 soft limit (children inherit)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def widen_receive_buffer(peer: UdpPeer) -> None:
    assert peer.transport is not None
    sock = peer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER)


def server_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(SRC) + (os.pathsep + path if path else "")}


# ---------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------

_LISTENING = re.compile(r"listening on .*TCP port (\d+), UDP port (\d+)")


class ServerProcess:
    """``python -m ocm server`` on 127.0.0.1, port 0; its log goes to a file we read."""

    def __init__(self, limits: SuiteLimits, log_path: Path) -> None:
        self.limits = limits
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ocm",
                "server",
                "--host",
                LOOPBACK,
                "--port",
                "0",
                "--allow-plaintext",  # the attackers and the room speak raw version 1
                *limits.flags(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=server_env(),
        )
        self.tcp_port = 0
        self.udp_port = 0

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait for the "listening" log line (as test_server's SIGTERM test does)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                self.tcp_port, self.udp_port = int(match[1]), int(match[2])
                return
            if self.process.poll() is not None:
                break
            await asyncio.sleep(20 * MS)
        raise AssertionError(f"the server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def memory_kib(self) -> dict[str, int] | None:
        """VmRSS and VmHWM (peak RSS) of the server in KiB, or None without /proc."""
        status = Path(f"/proc/{self.process.pid}/status")
        if not status.exists():
            return None
        values: dict[str, int] = {}
        for line in status.read_text(encoding="ascii").splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values

    def udp_drops(self) -> int | None:
        """Datagrams the kernel dropped at the server's UDP socket (Linux /proc/net/udp)."""
        table = Path("/proc/net/udp")
        if not table.exists():
            return None
        wanted = f"0100007F:{self.udp_port:04X}"
        for line in table.read_text(encoding="ascii").splitlines()[1:]:
            columns = line.split()
            if columns[1] == wanted:
                return int(columns[-1])
        return None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (the server exits 0 on SIGTERM)."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()


# ---------------------------------------------------------------------------
# Members, keep-alive and pacing
# ---------------------------------------------------------------------------


async def enter(
    tcp_port: int, request: CreateRoom | JoinRoom, *, local_host: str = LOOPBACK
) -> Member:
    """Create or join over TCRP, open a UDP peer on the same host and register it."""
    admission = await admit(tcp_port, request, local_host=local_host)
    peer = await UdpPeer.open(admission.udp_port, local_host=local_host)
    widen_receive_buffer(peer)
    member = Member(admission, peer)
    member.heartbeat()
    return member


async def keep_alive(members: list[Member], stop: asyncio.Event, every: float) -> None:
    """Heartbeat each member every ``every`` seconds until ``stop`` (section 2).

    ``members`` is read afresh each round: attacks add the members they create.
    """
    while not stop.is_set():
        for member in members:
            member.heartbeat()
        try:
            async with asyncio.timeout(every):
                await stop.wait()
        except TimeoutError:
            pass


class Pacer:
    """Flow control for floods: waits until the server has read all that was sent."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.rounds = 0
        self.lost = 0  # syncs that never came back: a sign the kernel dropped datagrams

    async def sync(self) -> None:
        for _ in range(5):
            self.rounds += 1
            mark = f"sync {self.rounds}"
            self.member.say(mark)
            try:
                async with asyncio.timeout(2000 * MS):
                    while True:
                        reply = decode_server_datagram(await self.member.peer.received.get())
                        if reply.kind is Kind.MESSAGE and reply.text == mark:
                            return
            except TimeoutError:
                self.lost += 1
        raise AssertionError("the pacer's room stopped echoing: is the server alive?")


# ---------------------------------------------------------------------------
# UDP attackers
# ---------------------------------------------------------------------------


class AttackSocket(asyncio.DatagramProtocol):
    """One attacker socket. A reply is matched to the last datagram this socket sent:
    the flood sends one datagram per socket per paced batch, so the match is exact."""

    def __init__(self, record: UdpRecord) -> None:
        self.record = record
        self.last_sent = 0
        self.replies = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies += 1
        self.record.reply(data, self.last_sent)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.last_sent = len(data)
        self.record.sent += 1
        self.record.sent_bytes += len(data)
        self.transport.sendto(data)


@dataclass(slots=True)
class UdpRecord:
    """What one attacking host sent and what came back."""

    ip: str
    sent: int = 0
    sent_bytes: int = 0
    errors: int = 0  # ERROR replies
    error_bytes: int = 0
    relayed: int = 0  # MESSAGE/NOTICE/CLOSED: only for datagrams that were valid
    larger_than_datagram: int = 0  # ERROR replies longer than the datagram they answer
    error_times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # reply bytes / datagram bytes

    def reply(self, data: bytes, answered: int) -> None:
        if data and data[0] == Kind.ERROR:
            self.errors += 1
            self.error_bytes += len(data)
            self.error_times.append(time.monotonic())
            self.ratios.append(len(data) / answered if answered else float("inf"))
            if len(data) > answered:
                self.larger_than_datagram += 1
        else:
            self.relayed += 1

    def max_per_second(self) -> int:
        """The most ERRORs in any one-second window."""
        times, best, start = self.error_times, 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best


class UdpAttacker:
    """One attacking host: ``sockets`` UDP sockets on ``ip`` sending round-robin."""

    def __init__(self, ip: str, record: UdpRecord | None = None) -> None:
        self.ip = ip
        self.record = record or UdpRecord(ip)
        self.sockets: list[AttackSocket] = []

    async def open(self, server_udp_port: int, sockets: int = 16) -> UdpAttacker:
        loop = asyncio.get_running_loop()
        for _ in range(sockets):
            _, protocol = await loop.create_datagram_endpoint(
                lambda: AttackSocket(self.record),
                local_addr=(self.ip, 0),
                remote_addr=(LOOPBACK, server_udp_port),
            )
            self.sockets.append(protocol)
        return self

    async def flood(
        self, datagrams: Iterable[bytes], pacer: Pacer, *, rate: float | None = None
    ) -> float:
        """Send every datagram, one per socket per batch, syncing after each batch.

        ``rate`` (datagrams per second) stretches the flood in time, so per-second caps
        can be measured. Returns the seconds it took.
        """
        start = time.monotonic()
        batch = len(self.sockets)
        for sent, data in enumerate(datagrams, 1):
            self.sockets[sent % batch].send(data)
            if sent % batch == 0:
                await pacer.sync()
                if rate is not None:
                    ahead = start + sent / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await pacer.sync()
        return time.monotonic() - start

    def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()


# ---------------------------------------------------------------------------
# TCP exchanges
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """How one TCP connection went: replies seen, how it ended and when."""

    replies: tuple[tuple[int, int, dict[str, Any]], ...]  # (operation, state, payload)
    ending: str  # "closed" (EOF), "reset", "refused" (connect failed) or "hung"
    seconds: float  # from the connection's establishment to its end
    leftover: int = 0  # trailing bytes that were not a whole reply

    @property
    def error_codes(self) -> list[str]:
        return [str(p.get("code")) for _, state, p in self.replies if state == 1 and p.get("code")]

    @property
    def ok_acks(self) -> int:
        return sum(1 for _, state, p in self.replies if state == 1 and p.get("status") == "ok")


def split_replies(data: bytes) -> tuple[list[tuple[int, int, dict[str, Any]]], int]:
    """A byte stream of server replies as (operation, state, payload), cut by the wire's
    framer in raw mode (the operation byte may be unknown: an error ACK echoes it), and
    the count of trailing bytes that were no whole reply."""
    replies: list[tuple[int, int, dict[str, Any]]] = []
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    framer.feed(data)
    with suppress(ProtocolError):  # a size over the cap: the rest is left over
        while (raw := framer.next_raw()) is not None:
            body = raw[TCRP_HEADER_SIZE + raw[0] :]
            replies.append((raw[1], raw[2], json.loads(body) if body else {}))
    return replies, len(framer.take_rest())


async def exchange(
    ip: str,
    port: int,
    data: bytes,
    *,
    eof: bool = True,
    timeout: float = 5.0,
) -> Exchange:
    """Connect from ``ip``, send ``data`` (then EOF unless told not to), read to the end."""
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(ip, 0))
    except OSError:
        return Exchange((), "refused", 0.0)
    start = time.monotonic()
    received = b""
    ending = "closed"
    try:
        async with asyncio.timeout(timeout):
            try:
                if data:
                    writer.write(data)
                    await writer.drain()
                if eof:
                    writer.write_eof()
            except OSError:
                pass  # the server may close before we finish: read what it said
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        ending = "hung"
    except OSError:
        ending = "reset"
    finally:
        writer.transport.abort()
    replies, leftover = split_replies(received)
    return Exchange(tuple(replies), ending, time.monotonic() - start, leftover)


async def bounded_gather(jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Run ``jobs`` with at most ``concurrency`` at a time; results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


# ---------------------------------------------------------------------------
# Tunnels (section 4 of docs/protocol.md)
# ---------------------------------------------------------------------------

# What a member asks for to be allowed a tunnel: tunnels carry extended datagrams.
TUNNEL_FEATURES = ("delivery", "tunnel")


async def connect_from(ip: str, port: int, *, receive_buffer: int | None = None) -> socket.socket:
    """A non-blocking TCP socket from ``ip`` to the server; ``receive_buffer`` is set
    before connecting, so the window it offers is small from the start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((ip, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def tunnel_handshake(
    sock: socket.socket, room: str, token: str, behind: bytes = b"", timeout: float = 5.0
) -> tuple[Ack, bytes]:
    """Send TUNNEL (with ``behind`` in the same write); return its ACK and the bytes the
    server sent after its COMPLETE (the first frames'), or b"" if it was refused."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, encode_request(Tunnel(room, token)) + behind)
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    ack: Ack | None = None
    async with asyncio.timeout(timeout):
        while True:
            # One message at a time: after the COMPLETE the bytes are frames, not TCRP.
            message = framer.next_message()
            if message is None:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    raise ConnectionError("the server closed the connection during TUNNEL")
                framer.feed(data)
                continue
            reply = parse_reply(message)
            if isinstance(reply, Ack):
                if not reply.ok:
                    return reply, b""
                ack = reply
            else:
                assert ack is not None and reply == Tunnelled(room), reply
                return ack, framer.take_rest()


def ping(token: str, nonce: int, boot: bytes) -> bytes:
    return encode_extended(Ping(token, nonce, boot))


class TunnelClient:
    """A member's open tunnel, read all along: each frame the server sends is counted by
    its Kind and queued; :attr:`ending` says how the server ended it, and when."""

    def __init__(self, sock: socket.socket, rest: bytes = b"") -> None:
        self.sock = sock
        self.frames = FrameReader(rest)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.log: list[bytes] = []  # every frame received (the attacks' are few and small)
        self.kinds: Counter[int] = Counter()  # the same, counted by Kind (the first byte)
        self.ending: str | None = None  # "closed" (EOF), "reset", or "bad frame"
        self.ended_at: float | None = None
        self._ended = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, ip: str, port: int, room: str, token: str, *, behind: bytes = b""
    ) -> TunnelClient:
        sock = await connect_from(ip, port)
        try:
            ack, rest = await tunnel_handshake(sock, room, token, behind)
            assert ack.ok, f"TUNNEL refused: {ack}"
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while (datagram := self.frames.next_frame()) is not None:
                    self.log.append(datagram)
                    self.kinds[datagram[0]] += 1
                    self.queue.put_nowait(datagram)
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    self._end("closed")
                    return
                self.frames.feed(data)
        except ProtocolError:
            self._end("bad frame")
        except OSError:
            self._end("reset")

    def _end(self, how: str) -> None:
        self.ending, self.ended_at = how, time.monotonic()
        self._ended.set()

    async def send_raw(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def send(self, datagram: bytes) -> None:
        await self.send_raw(encode_frame(datagram))

    async def ping(self, token: str, nonce: int, boot: bytes, timeout: float = 2.0) -> bool:
        """Whether a PING for ``token`` is answered with its STATUS (other frames are
        taken off the queue on the way, counted already)."""
        try:
            await self.send(ping(token, nonce, boot))
            async with asyncio.timeout(timeout):
                while True:
                    datagram = await self.queue.get()
                    if datagram[0] == DeliveryKind.STATUS and datagram[-4:] == nonce.to_bytes(4):
                        return True
        except (TimeoutError, OSError):
            return False

    async def ended(self, timeout: float) -> bool:
        """Wait until the server ends the tunnel; whether it did within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._ended.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        self.sock.close()


# ---------------------------------------------------------------------------
# Random and mutated input
# ---------------------------------------------------------------------------


def random_size(rng: random.Random) -> int:
    """Mostly small, sometimes up to the datagram limit, rarely past it."""
    roll = rng.random()
    if roll < 0.70:
        return rng.randrange(0, 200)
    if roll < 0.95:
        return rng.randrange(200, 1500)
    if roll < 0.99:
        return rng.randrange(1500, 4097)
    return rng.randrange(4097, 9000)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1-4 random edits of a valid message: the inputs that reach a decoder's deep branches."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        position = rng.randrange(len(out) + 1)
        if choice == 0 and out:
            out[min(position, len(out) - 1)] = rng.randrange(256)
        elif choice == 1:
            out[position:position] = rng.randbytes(rng.randrange(1, 16))
        elif choice == 2:
            del out[position : position + rng.randrange(1, 16)]
        elif choice == 3:
            del out[position:]
        elif choice == 4:
            out += data[: rng.randrange(len(data) + 1)]
        elif out:
            # a size field set to an extreme: RoomNameSize/TokenSize or a size byte
            out[rng.randrange(min(len(out), TCRP_HEADER_SIZE))] = rng.choice((0, 1, 0x7F, 0xFF))
    return bytes(out)
