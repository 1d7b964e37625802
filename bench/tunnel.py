"""A tunnelled member against a UDP member in the same room: latency, throughput, cost.

    python -m bench.tunnel                   # the full run: 1 to 2 minutes on 2 cores
    python -m bench.tunnel --smoke           # seconds (the test suite's run)
    python -m bench.tunnel --rounds 5 --markdown out.md --json out.json
    python -m bench.tunnel --configs udp,half --no-latency   # some throughput rooms only
    python -m bench.tunnel --server-src /tmp/ocm-base/src   # the server of another checkout

One real ``ocm server`` process on 127.0.0.1, started once as bench/run.py starts it
(pinned to CPU 0, this process to the last CPU, where there are two). The members are
raw sockets in this process, driven by one ``selectors`` loop, not the client library:
each asks for the ``delivery``, ``tunnel`` and ``resume`` features (sections 3 and 4 of
docs/protocol.md) and sends extended datagrams (DATA, PING, LEAVE). A *UDP member* sends
them from a UDP socket of its own; a *tunnelled member* sends TUNNEL on the TCP
connection it joined on and from then on writes each datagram as a frame there (uint16
length, datagram) and reads the server's frames back. Every member registers with a PING
(its STATUS answer proves the path works) before anything is measured.

Two measurements, each round (``--rounds``, interleaved; a new room for each):

* **Latency.** A room of four: two UDP members and two tunnelled members. One UDP
  member sends ``--rate`` messages a second for ``--seconds`` seconds (paced on an
  absolute schedule), then one tunnelled member does the same. Each receiver (the other
  three; the sender's own copy is not counted) takes the time it read the CHAT off its
  socket minus the time the DATA was written (``time.monotonic_ns()``, one process, one
  clock): p50 and p99 for each pair of paths, every round pooled.
* **Throughput.** A room of one sender and ``--receivers`` receivers, all UDP, half
  tunnelled, all tunnelled, and everyone (the sender too) tunnelled. The sender keeps at
  most ``--window`` messages in flight, as the delivery client does: a message counts as
  confirmed when the sender's own CHAT copy comes back. After half a second the
  receivers' deliveries are counted for ``--duration`` seconds, with the CPU time of the
  server and of this process (Linux, /proc). The report gives, per configuration, the
  median round by deliveries a second, and the server's CPU per message and per copy
  (a message goes to the receivers and back to its sender). A run during which other
  jobs kept a fifth of a CPU busy is measured again (twice at most), as bench/run.py
  does: on a shared machine other jobs move these figures most.

On loopback a sender's system call also does the receiving side's kernel work (UDP: the
copy into the receiver's socket queue; TCP: the receiver's segment processing), and a
tunnel's receiver sends ACKs that the server's socket processes in the receiver's system
call. So the server's CPU is most of what a copy costs, not all of it: the report gives
this process's CPU as well. Everything is bounded: every loop has a deadline, every
socket call a timeout, the server a timeout on its stop.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.run import (
    BenchError,
    Generator,
    Target,
    describe_source,
    machine,
    running,
    write_reports,
)
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    Reply,
    TcrpReader,
    encode_request,
    parse_reply,
)
from ocm.wire.delivery import DELIVERY, Data, Leave, Ping, encode_extended
from ocm.wire.tcrp import Request, Tunnel, Tunnelled
from ocm.wire.tunnel import RESUME, TUNNEL, FrameReader, encode_frame

__all__ = ["Plan", "main", "measure"]

HOST = "127.0.0.1"
SERVER = Target("ocm", "ocm", "OCM")
OTHER_SERVER = Target("ocm-src", "ocm", "OCM (--server-src)", before=True)
NO_GENERATOR = Generator("none", ())  # the members are this process's own sockets
FEATURES = (DELIVERY, TUNNEL, RESUME)
PATHS = ("udp", "tunnel")
SOCKET_TIMEOUT = 10.0  # every blocking socket call: TCRP, a tunnel's full send buffer
READY_TIMEOUT = 5.0  # every member's PING answered
LEAVE_TIMEOUT = 1.0  # the host's LEAVE answered (the room is closed either way)
STALL = 1.0  # no own copy back for this long: the window is given up on, and counted
UDP_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max

_CHAT = 5  # Kind of a CHAT (docs/protocol.md, section 3)
_STATUS = 6
_DEPARTED = 9
_ERROR = 4
_CLOSED = 3


@dataclass(frozen=True)
class Config:
    """Who is tunnelled in a throughput room."""

    name: str
    label: str  # of the receivers
    tunnelled_receivers: float  # the fraction of the receivers
    tunnelled_sender: bool = False


CONFIGS = (
    Config("udp", "all UDP", 0.0),
    Config("half", "half tunnelled", 0.5),
    Config("tunnel", "all tunnelled", 1.0),
    Config("everyone", "all tunnelled", 1.0, tunnelled_sender=True),
)
# A throughput run during which other jobs kept this much of a CPU busy (in %) is
# measured again, at most RETRIES more times (bench/run.py does the same).
BUSY_MACHINE = 20.0
RETRIES = 2


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    rate: float = 200.0  # latency: messages a second
    seconds: float = 4.0  # latency: seconds of sending, per sender
    receivers: int = 10  # throughput: receivers in the room, besides the sender
    window: int = 32  # throughput: the sender's messages in flight at most
    warmup: float = 0.5  # throughput: seconds before counting
    duration: float = 3.0  # throughput: seconds counted
    drain: float = 1.0  # after the last send, at most, for the last copies
    text_size: int = 100
    latency: bool = True  # measure latency at all
    configs: tuple[str, ...] = tuple(c.name for c in CONFIGS)  # the throughput rooms


FULL = Plan()
SMOKE = Plan(rounds=1, seconds=0.5, receivers=4, warmup=0.1, duration=0.4, drain=0.5)


# ---------------------------------------------------------------------------
# Members: raw sockets
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class Peer:
    """One member: its token and its path to the server (a UDP socket or a tunnel)."""

    name: str
    token: str
    path: str  # "udp" or "tunnel"
    sock: socket.socket
    boot: bytes
    idle_timeout: float | None
    frames: FrameReader | None = None  # a tunnel's incoming frames
    name_bytes: bytes = b""
    statuses: int = 0
    departed: bool = False
    errors: int = 0
    closed: int = 0  # CLOSED datagrams (the room ended)
    gone: bool = False  # the tunnel's connection closed under us
    not_sent: int = 0  # a UDP datagram the socket refused

    def __post_init__(self) -> None:
        self.name_bytes = self.name.encode("ascii")

    def send(self, datagram: bytes) -> None:
        if self.frames is None:
            try:
                self.sock.send(datagram)
            except BlockingIOError:
                self.not_sent += 1
        else:
            _send_all(self.sock, encode_frame(datagram))

    def ping(self, nonce: int) -> None:
        self.send(encode_extended(Ping(self.token, nonce, self.boot)))

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data`` to a non-blocking socket, waiting (bounded) while it is full."""
    view = memoryview(data)
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while view:
        try:
            view = view[sock.send(view) :]
            continue
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("a tunnel's send buffer stayed full: the server stopped reading")
        with selectors.DefaultSelector() as waiting:
            waiting.register(sock, selectors.EVENT_WRITE)
            waiting.select(left)


def _call(sock: socket.socket, framer: TcrpReader, request: Request) -> Reply:
    """One TCRP request: its ok ACK, then its COMPLETE (returned)."""
    sock.sendall(encode_request(request))
    ack = _reply(sock, framer)
    if not isinstance(ack, Ack) or not ack.ok:
        raise BenchError(f"the server refused {type(request).__name__}: {ack}")
    return _reply(sock, framer)


def _reply(sock: socket.socket, framer: TcrpReader) -> Reply:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while (message := framer.next_message()) is None:
        if time.monotonic() >= deadline:
            raise BenchError("the server was too slow to answer a TCRP request")
        data = sock.recv(65536)
        if not data:
            raise BenchError("the server closed a TCRP connection")
        framer.feed(data)
    return parse_reply(message)


def enter(room: str, name: str, path: str, host: bool, tcp_port: int) -> Peer:
    """Create or join ``room`` as ``name``; over UDP, or tunnelled on the TCRP connection."""
    conn = socket.create_connection((HOST, tcp_port), timeout=SOCKET_TIMEOUT)
    try:
        framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
        request: Request = (
            CreateRoom(room, name, features=FEATURES)
            if host
            else JoinRoom(room, name, features=FEATURES)
        )
        admission = _call(conn, framer, request)
        if not isinstance(admission, Admission) or DELIVERY not in admission.features:
            raise BenchError(f"{name}: the delivery extension was not granted: {admission}")
        if admission.boot is None:
            raise BenchError(f"{name}: no boot id in the COMPLETE")
        boot = bytes.fromhex(admission.boot)
        if path == "udp":
            conn.close()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            udp.bind((HOST, 0))
            udp.connect((HOST, admission.udp_port))
            udp.setblocking(False)
            return Peer(name, admission.token, path, udp, boot, admission.idle_timeout)
        if TUNNEL not in admission.features:
            raise BenchError(f"{name}: the tunnel feature was not granted: {admission.features}")
        done = _call(conn, framer, Tunnel(room, admission.token))
        if not isinstance(done, Tunnelled):
            raise BenchError(f"{name}: TUNNEL answered {done}")
        # As the client library's streams do: a frame goes out as soon as it is written.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)  # a socket with a timeout polls before every call
        frames = FrameReader(framer.take_rest())
        return Peer(name, admission.token, path, conn, boot, admission.idle_timeout, frames)
    except BaseException:
        conn.close()
        raise


# ---------------------------------------------------------------------------
# A room: the members and one loop reading all of them
# ---------------------------------------------------------------------------

# Called for each CHAT a member reads: (member, sender's name, MsgNo, read time in ns).
OnChat = Callable[[Peer, bytes, int, int], None]


def _ignore(peer: Peer, sender: bytes, msg_no: int, now: int) -> None:
    pass


class Room:
    def __init__(self, name: str, peers: list[Peer]) -> None:
        self.name = name
        self.peers = peers
        self.on_chat: OnChat = _ignore
        self._selector = selectors.DefaultSelector()
        for peer in peers:
            self._selector.register(peer.sock, selectors.EVENT_READ, peer)
        timeouts = [p.idle_timeout for p in peers if p.idle_timeout]
        self._keepalive = min(10.0, *(t / 3 for t in timeouts)) if timeouts else 10.0
        self._next_keepalive = time.monotonic() + self._keepalive
        self._nonce = 0

    @classmethod
    @contextmanager
    def open(cls, name: str, paths: list[str], tcp_port: int) -> Iterator[Room]:
        """The room, its first member the host; every member registered. The host leaves
        at the end, which closes the room (the server holds at most 20 per address)."""
        peers: list[Peer] = []
        try:
            for index, path in enumerate(paths):
                peers.append(enter(name, f"m{index}", path, index == 0, tcp_port))
            room = cls(name, peers)
            try:
                room.register()
                yield room
            finally:
                room.leave()
        finally:
            for peer in peers:
                peer.close()

    def register(self) -> None:
        """A PING from each member until each has had a STATUS: its path works, and the
        server has its address (a UDP socket's or the tunnel's)."""
        deadline = time.monotonic() + READY_TIMEOUT
        next_ping = 0.0
        while not all(peer.statuses for peer in self.peers):
            now = time.monotonic()
            if now >= deadline:
                late = [p.name for p in self.peers if not p.statuses]
                raise BenchError(f"no STATUS for {', '.join(late)} in {READY_TIMEOUT:g} s")
            if now >= next_ping:
                for peer in self.peers:
                    if not peer.statuses:
                        self._nonce += 1
                        peer.ping(self._nonce)
                next_ping = now + 0.2
            self.pump(min(0.05, deadline - now))

    def leave(self) -> None:
        host = self.peers[0]
        if host.gone:
            return
        with suppress(OSError, BenchError):
            host.send(encode_extended(Leave(host.token)))
            deadline = time.monotonic() + LEAVE_TIMEOUT
            while not host.departed and time.monotonic() < deadline:
                self.pump(0.05)
        self._selector.close()

    def pump(self, timeout: float) -> None:
        """Read whatever is ready, waiting at most ``timeout`` seconds for something."""
        ready = self._selector.select(max(0.0, timeout))
        on_chat = self.on_chat
        for key, _ in ready:
            peer: Peer = key.data
            now = time.monotonic_ns()
            frames = peer.frames
            try:
                data = peer.sock.recv(65536)  # a datagram, or what a tunnel has for us
            except BlockingIOError:
                continue
            except OSError:
                data = b""  # a UDP socket's ICMP error, a reset tunnel
            if frames is None and data:
                self._datagram(peer, data, now, on_chat)
                continue
            if frames is None or not data:
                peer.gone = True
                self._selector.unregister(peer.sock)
                continue
            frames.feed(data)
            while (frame := frames.next_frame()) is not None:
                self._datagram(peer, frame, now, on_chat)
        if time.monotonic() >= self._next_keepalive:
            self.keepalive()

    @staticmethod
    def _datagram(peer: Peer, data: bytes, now: int, on_chat: OnChat) -> None:
        kind = data[0]
        if kind == _CHAT:
            end = 6 + data[5]
            on_chat(peer, data[6:end], int.from_bytes(data[end : end + 4]), now)
        elif kind == _STATUS:
            peer.statuses += 1
        elif kind == _DEPARTED:
            peer.departed = True
        elif kind == _ERROR:
            peer.errors += 1
        elif kind == _CLOSED:
            peer.closed += 1

    def keepalive(self) -> None:
        """A PING from every member now and then, so a long run outlives the idle timeout."""
        for peer in self.peers:
            self._nonce += 1
            with suppress(OSError):
                peer.ping(self._nonce)
        self._next_keepalive = time.monotonic() + self._keepalive

    def problems(self) -> dict[str, int]:
        return {
            "errors": sum(p.errors for p in self.peers),
            "closed": sum(p.closed for p in self.peers),
            "tunnels_lost": sum(p.gone for p in self.peers),
            "not_sent": sum(p.not_sent for p in self.peers),
        }


def text_of(size: int) -> str:
    return "x" * size


# ---------------------------------------------------------------------------
# Latency: one sender at a steady rate, every pair of paths
# ---------------------------------------------------------------------------


def measure_latency(
    plan: Plan, tcp_port: int, server_pid: int, room_name: str
) -> tuple[dict[str, list[int]], float | None]:
    """Latencies in ns by "sender path>receiver path", from a room of 2 + 2 members, and
    the other jobs' load meanwhile (% of a CPU)."""
    samples: dict[str, list[int]] = {f"{s}>{r}": [] for s in PATHS for r in PATHS}
    with Room.open(room_name, ["udp", "udp", "tunnel", "tunnel"], tcp_port) as room:
        before = _cpu(server_pid)
        for sender in (room.peers[0], room.peers[2]):  # a UDP member, a tunnelled one
            sent_ns: list[int] = [0]  # by MsgNo
            own = sender.name_bytes
            prefix = sender.path + ">"

            def on_chat(
                peer: Peer,
                name: bytes,
                msg_no: int,
                now: int,
                sent_ns: list[int] = sent_ns,
                own: bytes = own,
                sender: Peer = sender,
                prefix: str = prefix,
            ) -> None:
                if name == own and peer is not sender and msg_no < len(sent_ns):
                    samples[prefix + peer.path].append(now - sent_ns[msg_no])

            room.on_chat = on_chat
            count = max(1, round(plan.rate * plan.seconds))
            text = text_of(plan.text_size)
            start = time.monotonic() + 0.05
            for msg_no in range(1, count + 1):
                due = start + (msg_no - 1) / plan.rate
                while (wait := due - time.monotonic()) > 0:
                    room.pump(wait)
                datagram = encode_extended(Data(sender.token, msg_no, text))
                sent_ns.append(time.monotonic_ns())
                sender.send(datagram)
            expected = {f"{prefix}{p.path}": 0 for p in room.peers if p is not sender}
            for p in room.peers:
                if p is not sender:
                    expected[prefix + p.path] += count
            deadline = time.monotonic() + plan.drain
            while time.monotonic() < deadline and any(
                len(samples[key]) < total for key, total in expected.items()
            ):
                room.pump(0.02)
        other = _other_load(before, _cpu(server_pid))
        problems = room.problems()
    if any(problems.values()):
        raise BenchError(f"latency room {room_name}: {problems}")
    return samples, other


def _cpu(server_pid: int) -> tuple[float, float | None, float, float | None]:
    """(now, the server's CPU seconds, ours, the whole machine's busy seconds)."""
    return (
        time.monotonic(),
        procstat.cpu_seconds(server_pid),
        time.process_time(),
        procstat.busy_seconds(),
    )


def _other_load(
    first: tuple[float, float | None, float, float | None],
    last: tuple[float, float | None, float, float | None],
) -> float | None:
    """What other jobs kept busy between the two, in % of one CPU."""
    elapsed = last[0] - first[0]
    if first[1] is None or last[1] is None or first[3] is None or last[3] is None:
        return None
    ours = (last[1] - first[1]) + (last[2] - first[2])
    return max(0.0, (last[3] - first[3] - ours) / elapsed * 100) if elapsed > 0 else None


# ---------------------------------------------------------------------------
# Throughput: one sender with a window, N receivers
# ---------------------------------------------------------------------------


@dataclass
class Counts:
    """What the receivers got and the CPU spent, at one moment."""

    at: float
    delivered: int
    confirmed: int
    server_cpu: float | None
    own_cpu: float
    busy: float | None


@dataclass
class Throughput:
    sender: Peer
    receivers: list[Peer]
    delivered: dict[Peer, int] = field(default_factory=dict)
    confirmed: int = 0  # the sender's highest MsgNo whose own copy came back

    def on_chat(self, peer: Peer, name: bytes, msg_no: int, now: int) -> None:
        if peer is self.sender:
            if msg_no > self.confirmed and name == peer.name_bytes:
                self.confirmed = msg_no
        else:
            self.delivered[peer] += 1

    def counts(self, server_pid: int) -> Counts:
        return Counts(
            time.monotonic(),
            sum(self.delivered.values()),
            self.confirmed,
            procstat.cpu_seconds(server_pid),
            time.process_time(),
            procstat.busy_seconds(),
        )


def measure_throughput(
    config: Config, plan: Plan, tcp_port: int, server_pid: int, room_name: str
) -> dict[str, Any]:
    tunnelled = round(plan.receivers * config.tunnelled_receivers)
    receiver_paths = ["tunnel"] * tunnelled + ["udp"] * (plan.receivers - tunnelled)
    paths = ["tunnel" if config.tunnelled_sender else "udp", *receiver_paths]
    with Room.open(room_name, paths, tcp_port) as room:
        sender, receivers = room.peers[0], room.peers[1:]
        state = Throughput(sender, receivers, {peer: 0 for peer in receivers})
        room.on_chat = state.on_chat
        text = text_of(plan.text_size)
        token = sender.token
        next_no = 1
        stalls = 0
        last_progress, last_confirmed = time.monotonic(), 0
        started = time.monotonic()
        measure_from, end = started + plan.warmup, started + plan.warmup + plan.duration
        first: Counts | None = None
        while (now := time.monotonic()) < end:
            if first is None and now >= measure_from:
                first = state.counts(server_pid)
            while next_no - 1 - state.confirmed < plan.window:
                sender.send(encode_extended(Data(token, next_no, text)))
                next_no += 1
            room.pump(0.01)
            if state.confirmed != last_confirmed:
                last_progress, last_confirmed = now, state.confirmed
            elif now - last_progress > STALL:
                stalls += 1  # our own copy was lost: forget the window, carry on
                state.confirmed = last_confirmed = next_no - 1
                last_progress = now
        last = state.counts(server_pid)
        assert first is not None
        sent = next_no - 1
        deadline = time.monotonic() + plan.drain
        while time.monotonic() < deadline and any(n < sent for n in state.delivered.values()):
            room.pump(0.02)
        lost = sum(sent - n for n in state.delivered.values())
        problems = room.problems()
    elapsed = last.at - first.at
    delivered = last.delivered - first.delivered
    messages = delivered / plan.receivers
    copies = messages * (plan.receivers + 1)  # and the sender's own copy
    server_cpu = (
        None
        if first.server_cpu is None or last.server_cpu is None
        else last.server_cpu - first.server_cpu
    )
    own_cpu = last.own_cpu - first.own_cpu
    busy = None if first.busy is None or last.busy is None else last.busy - first.busy
    row: dict[str, Any] = {
        "config": config.name,
        "label": config.label,
        "receivers": plan.receivers,
        "tunnelled_receivers": tunnelled,
        "sender": paths[0],
        "seconds": elapsed,
        "sent": sent,
        "deliveries_per_s": delivered / elapsed,
        "messages_per_s": messages / elapsed,
        "lost": lost,
        "stalls": stalls,
        "bench_cpu_pct": own_cpu / elapsed * 100,
        "server_cpu_pct": None,
        "server_us_per_message": None,
        "server_us_per_copy": None,
        "both_us_per_copy": None,
        "other_load_pct": None,
        "server_rss_mib": None,
        **problems,
    }
    if server_cpu is not None and messages:
        row["server_cpu_pct"] = server_cpu / elapsed * 100
        row["server_us_per_message"] = server_cpu / messages * 1e6
        row["server_us_per_copy"] = server_cpu / copies * 1e6
        row["both_us_per_copy"] = (server_cpu + own_cpu) / copies * 1e6
        if busy is not None:
            row["other_load_pct"] = max(0.0, (busy - server_cpu - own_cpu) / elapsed * 100)
    rss = procstat.memory_kib(server_pid)
    row["server_rss_mib"] = None if rss is None else rss / 1024
    return row


# ---------------------------------------------------------------------------
# The run, the report
# ---------------------------------------------------------------------------


def measure(
    plan: Plan, logs: Path, server_src: Path | None = None, pin: bool = True, retry: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every round on one server: (latency samples pooled, latency rows by round,
    throughput rows by round, facts about the run)."""
    where = machine()  # before pinning: it counts the CPUs this process may use
    cpus = procstat.cpu_count()
    server_cpu: int | None = None
    pinning = "no CPU pinning"
    if pin and cpus >= 2 and procstat.pin(os.getpid(), cpus - 1):
        server_cpu = 0
        pinning = f"server pinned to CPU 0, the members (this process) to CPU {cpus - 1}"
    target = SERVER if server_src is None else OTHER_SERVER
    pooled: dict[str, list[int]] = {f"{s}>{r}": [] for s in PATHS for r in PATHS}
    latency_rows: list[dict[str, Any]] = []
    throughput_rows: list[dict[str, Any]] = []
    measured_again = 0
    with running(target, NO_GENERATOR, logs, server_cpu, server_src) as server:
        for round_number in range(plan.rounds):
            samples: dict[str, list[int]] = {}
            other: float | None = None
            if plan.latency:
                print(f"tunnel: round {round_number + 1}, latency ...", file=sys.stderr)
                samples, other = measure_latency(
                    plan, server.tcp_port, server.pid, f"latency-{round_number}"
                )
            for key, values in samples.items():
                pooled[key] += values
                latency_rows.append(
                    {
                        "round": round_number,
                        "pair": key,
                        "other_load_pct": other,
                        **_quantiles(values),
                    }
                )
            for config in (c for c in CONFIGS if c.name in plan.configs):
                for attempt in range(1 + (RETRIES if retry else 0)):
                    print(
                        f"tunnel: round {round_number + 1}, {config.label} receivers"
                        f"{', tunnelled sender' if config.tunnelled_sender else ''} ...",
                        file=sys.stderr,
                    )
                    row = measure_throughput(
                        config,
                        plan,
                        server.tcp_port,
                        server.pid,
                        f"{config.name}-{round_number}-{attempt}",
                    )
                    row["round"], row["attempts"] = round_number, attempt + 1
                    if (row["other_load_pct"] or 0.0) <= BUSY_MACHINE:
                        break
                    if attempt < RETRIES and retry:
                        measured_again += 1
                        print("tunnel: another job was running; measuring again", file=sys.stderr)
                throughput_rows.append(row)
        facts = {
            "machine": where,
            "loop": server.loop,
            "pinning": pinning,
            "target": target.label,
            "measured_again": measured_again,
        }
    return pooled, latency_rows, throughput_rows, facts


def _quantiles(values: list[int]) -> dict[str, Any]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # ms

    return {
        "samples": len(ordered),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else None,
    }


def summarise_latency(
    pooled: dict[str, list[int]], by_round: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for key, values in pooled.items():
        sender, receiver = key.split(">")
        row = {"sender": sender, "receiver": receiver, **_quantiles(values)}
        row["p50_by_round"] = [r["p50_ms"] for r in by_round if r["pair"] == key]
        row["p99_by_round"] = [r["p99_ms"] for r in by_round if r["pair"] == key]
        row["other_load_by_round"] = [r["other_load_pct"] for r in by_round if r["pair"] == key]
        rows.append(row)
    return rows


def summarise_throughput(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration, the median round by deliveries/s, whole, with every round's
    figures alongside."""
    rows = []
    for config in CONFIGS:
        mine = [r for r in runs if r["config"] == config.name]
        if not mine:
            continue
        ranked = sorted(mine, key=lambda r: r["deliveries_per_s"])
        row = dict(ranked[len(ranked) // 2])
        row["runs"] = len(mine)
        row["deliveries_by_round"] = [r["deliveries_per_s"] for r in mine]
        row["server_us_per_copy_by_round"] = [r["server_us_per_copy"] for r in mine]
        copies = [r["server_us_per_copy"] for r in mine if r["server_us_per_copy"] is not None]
        row["server_us_per_copy_median"] = statistics.median(copies) if copies else None
        rows.append(row)
    return rows


def _num(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _range(values: list[Any], digits: int = 0) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"{min(known):,.{digits}f}-{max(known):,.{digits}f}"


def extra_cost(rows: list[dict[str, Any]]) -> float | None:
    """What one tunnelled copy costs the server beyond a UDP copy, in µs: all tunnelled
    against all UDP receivers, the medians of server CPU per message, per receiver."""
    by_name = {row["config"]: row for row in rows}
    udp, tunnel = by_name.get("udp"), by_name.get("tunnel")
    if udp is None or tunnel is None:
        return None
    a, b = udp["server_us_per_message"], tunnel["server_us_per_message"]
    if a is None or b is None:
        return None
    return float(b - a) / int(udp["receivers"])


def render(
    latency: list[dict[str, Any]], throughput: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    plan = meta["plan"]
    paths = {"udp": "UDP", "tunnel": "tunnel"}
    lines = [
        f"A tunnelled member against a UDP member, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; server: {meta['server']}, {meta['loop']} loop; "
        f"{meta['pinning']}; {plan['rounds']} rounds.",
    ]
    if plan["latency"]:
        lines += [
            "",
            f"Latency: a room of 2 UDP and 2 tunnelled members; one sender at "
            f"{plan['rate']:g} messages/s for {plan['seconds']:g} s, {plan['text_size']}-byte "
            "texts; from writing the DATA to reading the CHAT off the receiver's socket (one "
            "clock); the sender's own copy not counted; every round pooled.",
            "",
            "| sender | receiver | copies | p50 ms | p99 ms | max ms | p50 by round "
            "| p99 by round | other load % |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
    for row in latency if plan["latency"] else []:
        lines.append(
            f"| {paths[row['sender']]} | {paths[row['receiver']]} | {row['samples']:,} "
            f"| {_num(row['p50_ms'], 3)} | {_num(row['p99_ms'], 3)} | {_num(row['max_ms'], 2)} "
            f"| {_range(row['p50_by_round'], 3)} | {_range(row['p99_by_round'], 3)} "
            f"| {_range(row['other_load_by_round'])} |"
        )
    lines += [
        "",
        f"Throughput: one sender, {plan['receivers']} receivers, a window of {plan['window']} "
        f"(confirmed by the sender's own copy), {plan['text_size']}-byte texts, "
        f"{plan['duration']:g} s counted after {plan['warmup']:g} s; the median round by "
        "deliveries/s (a copy to a receiver; the server also sends the sender its own). "
        "CPU per copy: the server's CPU over every copy it sent, the receivers' and the "
        f"sender's. Runs that other jobs disturbed (over {BUSY_MACHINE:g} % of a CPU) were "
        f"measured again: {meta['measured_again']}.",
        "",
        "| receivers | sender | deliveries/s | all rounds | messages/s | server CPU % "
        "| server µs/message | server µs/copy | all rounds | server + bench µs/copy "
        "| bench CPU % | other load % | server RSS MiB | lost | stalls |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in throughput:
        lines.append(
            f"| {row['label']} ({row['tunnelled_receivers']} of {row['receivers']} tunnelled) "
            f"| {paths[row['sender']]} | {_num(row['deliveries_per_s'])} "
            f"| {_range(row['deliveries_by_round'])} | {_num(row['messages_per_s'])} "
            f"| {_num(row['server_cpu_pct'])} | {_num(row['server_us_per_message'], 1)} "
            f"| {_num(row['server_us_per_copy'], 2)} "
            f"| {_range(row['server_us_per_copy_by_round'], 2)} "
            f"| {_num(row['both_us_per_copy'], 2)} | {_num(row['bench_cpu_pct'])} "
            f"| {_num(row['other_load_pct'])} | {_num(row['server_rss_mib'], 1)} "
            f"| {row['lost']:,} | {row['stalls']} |"
        )
    extra = extra_cost(throughput)
    if extra is not None:
        lines += [
            "",
            f"A tunnelled receiver costs the server {extra:+.2f} µs per message beyond a UDP "
            "receiver (all tunnelled against all UDP, server µs/message over the receivers).",
        ]
    by_name = {row["config"]: row for row in throughput}
    if all(
        by_name.get(c) and by_name[c]["server_us_per_message"] is not None
        for c in ("udp", "half", "tunnel")
    ):
        half = by_name["half"]["server_us_per_message"]
        mean = by_name["udp"]["server_us_per_message"]
        mean += by_name["tunnel"]["server_us_per_message"]
        lines += [
            "",
            f"Half tunnelled: {half:.1f} µs of server CPU per message, against {mean / 2:.1f} "
            "for the mean of all UDP and all tunnelled (what the mix would cost if each copy "
            "cost what it costs in a room of one kind).",
        ]
    problems = [
        f"{row['config']}: {key} = {row[key]}"
        for row in throughput
        for key in ("errors", "closed", "tunnels_lost", "not_sent", "stalls")
        if row.get(key)
    ]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def _configs(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    known = [c.name for c in CONFIGS]
    if not names or any(name not in known for name in names):
        raise argparse.ArgumentTypeError(f"comma-separated, from: {', '.join(known)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tunnel",
        description="Latency and throughput of tunnelled members against UDP members.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, seconds in all")
    parser.add_argument("--rounds", type=int, help="rounds, interleaving everything (3)")
    parser.add_argument("--rate", type=float, help="latency: messages a second (200)")
    parser.add_argument("--seconds", type=float, help="latency: seconds per sender (4)")
    parser.add_argument("--receivers", type=int, help="throughput: receivers (10)")
    parser.add_argument("--window", type=int, help="throughput: messages in flight (32)")
    parser.add_argument("--duration", type=float, help="throughput: seconds counted (3)")
    parser.add_argument("--text-size", type=int, help="bytes of each text (100)")
    parser.add_argument(
        "--configs",
        type=_configs,
        help="throughput rooms, comma-separated: udp, half, tunnel, everyone (default: all)",
    )
    parser.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        help="measure latency (default: yes)",
    )
    parser.add_argument("--server-src", type=Path, help="run the server of this src/ instead")
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = SMOKE if args.smoke else FULL
    given = {
        key: getattr(args, key)
        for key in (
            "rounds",
            "rate",
            "seconds",
            "receivers",
            "window",
            "duration",
            "text_size",
            "latency",
            "configs",
        )
        if getattr(args, key) is not None
    }
    plan = replace(plan, **given)
    if not (
        1 <= plan.rounds <= 9
        and 1 <= plan.rate <= 5000
        and 0 < plan.seconds <= 60
        and 2 <= plan.receivers <= 30  # the server allows 32 connections per address
        and 1 <= plan.window <= 1000
        and 0 < plan.duration <= 60
        and 1 <= plan.text_size <= 3000
    ):
        raise BenchError(
            "--rounds 1-9, --rate 1-5000, --seconds 0-60, --receivers 2-30, "
            "--window 1-1000, --duration 0-60, --text-size 1-3000"
        )
    return plan


def _source(server_src: Path | None) -> str:
    if server_src is not None:
        return describe_source(server_src)
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "this checkout"
    changed = [line[3:] for line in dirty if line.strip()]
    if not commit:
        return "this checkout"
    return f"this checkout, {commit}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = make_plan(args)
        server = _source(args.server_src)
        with tempfile.TemporaryDirectory(prefix="ocm-tunnel-") as tmp:
            pooled, latency_rounds, runs, facts = measure(
                plan, Path(tmp), args.server_src, pin=not args.no_pin, retry=not args.smoke
            )
    except (BenchError, OSError) as error:
        print(f"tunnel: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    latency = summarise_latency(pooled, latency_rounds)
    throughput = summarise_throughput(runs)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.tunnel" + "".join(f" {a}" for a in sys.argv[1:]),
        "plan": plan.__dict__,
        "server": server,
        "smoke": args.smoke,
        **facts,
    }
    report = render(latency, throughput, meta)
    print(report)
    document = {
        "meta": meta,
        "latency": latency,
        "latency_rounds": latency_rounds,
        "throughput": throughput,
        "throughput_runs": runs,
        "extra_us_per_tunnelled_copy": extra_cost(throughput),
    }
    return write_reports("tunnel", report, document, args.markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
