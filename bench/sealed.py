"""Sealed rooms against plaintext rooms: what encrypting the relay costs (section 5).

    python -m bench.sealed                   # the full run: about a minute on 2 cores
    python -m bench.sealed --smoke           # seconds (the test suite's run)
    python -m bench.sealed --rounds 5 --markdown out.md --json out.json
    python -m bench.sealed --kinds plain     # the plaintext half (a server without TLS)

One real ``ocm server`` process on 127.0.0.1, started once as bench/tunnel.py starts it
(pinned to CPU 0, this process to the last CPU, where there are two), with
``--allow-plaintext`` (a server with TLS refuses plaintext members without it) and a
``--data-dir`` of its own (``bench.run.server_flags``). The members are raw UDP sockets
in this process, driven by one ``selectors`` loop, not the client library. Every member
asks for ``delivery`` and speaks extended datagrams (section 3); in a *sealed* room
every member also asks for ``sealed``, on a TCRP connection upgraded with STARTTLS (TLS
1.3, the server's key not checked: the bench trusts the server it started), takes its
keys from the COMPLETE, and seals every datagram with its member key; the server seals
everything it sends the room once, with the room key. Every member registers with a PING
(its STATUS answer proves the path, and the keys, work) before anything is measured.

The receivers must keep up with 100,000 datagrams a second, so they do not open every
one: a CHAT of the sender's is recognised by its size (only the sender speaks, every
text the same length), counted, and one in ``--check-every`` is opened and checked
(sender and text; a datagram that does not open, or opens to something else, is
counted as *bad*). Everything else (STATUS, DEPARTED, ERROR, CLOSED) is opened whole.

Two measurements, each round (``--rounds``, interleaved; the kinds' order alternates by
round; a new room for each):

* **Throughput.** One sender, ``--receivers`` receivers. The sender keeps at most
  ``--window`` messages in flight, as the delivery client does; a message counts as
  confirmed when the sender's own CHAT copy comes back (counted, in order: loopback
  neither loses nor reorders while nothing overflows). After ``--warmup`` seconds the
  receivers' deliveries are counted for ``--duration`` seconds, with the CPU time of
  the server and of this process (Linux, /proc). Per kind: the median round by
  deliveries a second, and the server's CPU per message. A run during which other jobs
  kept a fifth of a CPU busy is measured again (twice at most), as bench/run.py does;
  one still disturbed then is shown, but not used where undisturbed ones exist.
* **Latency at a fixed load.** The same room; the sender sends ``--rate`` messages a
  second for ``--seconds`` seconds on an absolute schedule (``--rate`` times
  ``--receivers`` deliveries a second: 100,000 by default). Receiver *i* opens the
  CHATs whose place in its stream is *i* modulo the receivers, so each message is timed
  once: the time it was read off the receiver's socket minus the time its DATA was
  written (``time.monotonic_ns()``, one process, one clock). p50 and p99 per kind,
  the rounds pooled. How late the sender was on its schedule is reported too: a
  sender that fell behind offered less than the load it claims, and is measured again
  as a disturbed run is (above); the figures come from the rounds that were not.

The targets (the issue's): sealed throughput at least 0.8 of plaintext, and sealed p99
under 2 ms at 100,000 deliveries a second. On loopback a sender's system call also does
the receiving side's kernel work, so the server's CPU is most of what a copy costs, not
all of it: the report gives this process's CPU as well; above 90 % of its CPU the bench,
not the server, may be what limits a figure, and the report says so. Everything is
bounded: every loop has a deadline, every socket call a timeout, the server a timeout
on its stop.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.run import BenchError, machine, running, write_reports
from bench.tunnel import NO_GENERATOR, SERVER, _call, _num, _quantiles, _range, _reply, _source
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    TcrpReader,
    encode_request,
)
from ocm.wire.delivery import (
    DELIVERY,
    Chat,
    Data,
    Departed,
    Leave,
    Ping,
    Received,
    Status,
    decode_received,
    encode_extended,
)
from ocm.wire.sealed import (
    DOWN_OVERHEAD,
    SEALED,
    SEALED_KIND,
    Opener,
    Refusal,
    Sealer,
    room_opener,
    up_prefix,
)
from ocm.wire.tcrp import Request, StartTls, TlsReady

__all__ = ["KINDS", "Plan", "main", "measure"]

HOST = "127.0.0.1"
KINDS = ("plain", "sealed")
FEATURES = {"plain": (DELIVERY,), "sealed": (DELIVERY, SEALED)}
SOCKET_TIMEOUT = 10.0  # every blocking socket call: TCRP, TLS
READY_TIMEOUT = 5.0  # every member's PING answered
LEAVE_TIMEOUT = 1.0  # the host's LEAVE answered (the room is closed either way)
STALL = 1.0  # no own copy back for this long: the window is given up on, and counted
UDP_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it at net.core.rmem_max
DRAIN_BURST = 64  # datagrams read off one socket before the others get a turn
SENDER = "m0"
# The targets.
THROUGHPUT_TARGET = 0.8  # sealed deliveries/s over plaintext's, at least
P99_TARGET_MS = 2.0  # sealed p99 at the fixed load, below
# A run during which other jobs kept this much of a CPU busy (in %) is measured again,
# at most RETRIES more times; a bench process this busy may be the bottleneck.
BUSY_MACHINE = 20.0
RETRIES = 2
BENCH_BOUND = 90.0
LATE_LIMIT_MS = 0.5  # a sender this late (p99) on its schedule did not offer the load

_CHAT_HEADER = 6 + len(SENDER) + 4  # Kind, Seq, SenderSize, sender, MsgNo
_CHAT = 5  # Kind of a CHAT (docs/protocol.md, section 3)
_STATUS = 6
_DEPARTED = 9
_ERROR = 4
_CLOSED = 3


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    receivers: int = 10  # besides the sender, in every room
    window: int = 32  # throughput: the sender's messages in flight at most
    warmup: float = 0.5  # throughput: seconds before counting
    duration: float = 3.0  # throughput: seconds counted
    rate: float = 10_000.0  # latency: messages a second (times receivers: deliveries/s)
    seconds: float = 3.0  # latency: seconds of sending
    drain: float = 1.0  # after the last send, at most, for the last copies
    text_size: int = 100
    check_every: int = 64  # throughput: one CHAT in this many is opened and checked
    kinds: tuple[str, ...] = KINDS
    latency: bool = True
    throughput: bool = True


FULL = Plan()
SMOKE = Plan(rounds=1, receivers=4, warmup=0.1, duration=0.4, rate=1000.0, seconds=0.4, drain=0.5)


# ---------------------------------------------------------------------------
# TCRP, STARTTLS, entering a room
# ---------------------------------------------------------------------------


NO_TLS = (
    "sealed rooms need a server with TLS (STARTTLS, docs/protocol.md section 5), and this "
    "one {why}; run the plaintext half alone with --kinds plain"
)


def start_tls(sock: socket.socket) -> ssl.SSLSocket:
    """STARTTLS (operation 7): its ACK and COMPLETE in clear, then a TLS 1.3 handshake on
    the same connection. The server's key is not checked: we started the server."""
    framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
    sock.sendall(encode_request(StartTls()))
    ack = _reply(sock, framer)
    if not isinstance(ack, Ack) or not ack.ok:
        why = ack.message if isinstance(ack, Ack) else str(ack)
        error = ack.error if isinstance(ack, Ack) else "?"
        raise BenchError(NO_TLS.format(why=f"refused STARTTLS ({error}: {why})"))
    done = _reply(sock, framer)
    if not isinstance(done, TlsReady) or framer.take_rest():
        raise BenchError(f"STARTTLS answered {done}, or with bytes after its COMPLETE")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context.wrap_socket(sock)


@dataclass(eq=False)
class Peer:
    """One member: its token, its UDP socket, and in a sealed room its keys."""

    name: str
    token: str
    sock: socket.socket
    boot: bytes
    idle_timeout: float | None
    sealer: Sealer | None = None
    opener: Opener | None = None
    chats: int = 0  # CHATs of the sender's read (counted by size, opened or not)
    check_every: int = 0  # open and check the CHATs whose count is ``phase`` modulo this
    phase: int = 0
    statuses: int = 0
    departed: bool = False
    errors: int = 0
    closed: int = 0
    bad: int = 0  # a datagram that did not open, or opened to something unexpected
    not_sent: int = 0  # a datagram the socket refused

    def send(self, inner: bytes) -> None:
        data = inner if self.sealer is None else self.sealer.seal(inner)
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.not_sent += 1

    def ping(self, nonce: int) -> None:
        self.send(encode_extended(Ping(self.token, nonce, self.boot)))

    def open(self, data: bytes) -> Received | None:
        """A server datagram, opened when sealed; None if it is not one we can read."""
        if self.opener is not None:
            if data[:1] != bytes((SEALED_KIND,)):
                inner: bytes | Refusal = data  # in clear: an ERROR about our Session
            else:
                inner = self.opener.open(data)
            if isinstance(inner, Refusal):
                return None
            data = inner
        try:
            return decode_received(data)
        except Exception:
            return None

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


def enter(kind: str, room: str, name: str, host: bool, tcp_port: int) -> Peer:
    """Create or join ``room`` as ``name``; in a sealed room over TLS, with its keys."""
    conn: socket.socket = socket.create_connection((HOST, tcp_port), timeout=SOCKET_TIMEOUT)
    try:
        if kind == "sealed":
            conn = start_tls(conn)
        framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)
        features = FEATURES[kind]
        request: Request = (
            CreateRoom(room, name, features=features)
            if host
            else JoinRoom(room, name, features=features)
        )
        admission = _call(conn, framer, request)
    finally:
        conn.close()
    if not isinstance(admission, Admission) or DELIVERY not in admission.features:
        raise BenchError(f"{name}: the delivery extension was not granted: {admission}")
    if admission.boot is None:
        raise BenchError(f"{name}: no boot id in the COMPLETE")
    sealer = opener = None
    if kind == "sealed":
        keys = admission.sealed
        if SEALED not in admission.features or keys is None:
            raise BenchError(
                NO_TLS.format(why=f"did not grant sealed over TLS (granted {admission.features})")
            )
        sealer = Sealer(keys.key, up_prefix(keys.session))
        opener = room_opener(keys.room_key)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with suppress(OSError):
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
    udp.bind((HOST, 0))
    udp.connect((HOST, admission.udp_port))
    udp.setblocking(False)
    boot = bytes.fromhex(admission.boot)
    return Peer(name, admission.token, udp, boot, admission.idle_timeout, sealer, opener)


# ---------------------------------------------------------------------------
# A room: the members and one loop reading all of them
# ---------------------------------------------------------------------------

# Called for each CHAT a member opened: (member, MsgNo, read time in ns).
OnChat = Callable[[Peer, int, int], None]


def _ignore(peer: Peer, msg_no: int, now: int) -> None:
    pass


class Room:
    def __init__(self, kind: str, name: str, peers: list[Peer], text_size: int) -> None:
        self.kind = kind
        self.name = name
        self.peers = peers
        self.on_chat: OnChat = _ignore
        # The size of every CHAT of the sender's: counted by it, without opening it.
        self.chat_size = _CHAT_HEADER + text_size + (DOWN_OVERHEAD if kind == "sealed" else 0)
        self.text = b"x" * text_size
        self._selector = selectors.DefaultSelector()
        for peer in peers:
            self._selector.register(peer.sock, selectors.EVENT_READ, peer)
        timeouts = [p.idle_timeout for p in peers if p.idle_timeout]
        self._keepalive = min(10.0, *(t / 3 for t in timeouts)) if timeouts else 10.0
        self._next_keepalive = time.monotonic() + self._keepalive
        self._nonce = 0

    @classmethod
    @contextmanager
    def open(cls, kind: str, name: str, size: int, tcp_port: int, text_size: int) -> Iterator[Room]:
        """The room, its first member the sender and host; every member registered. The
        host leaves at the end, which closes the room (the server holds only so many per
        address)."""
        peers: list[Peer] = []
        try:
            for index in range(size):
                peers.append(enter(kind, name, f"m{index}", index == 0, tcp_port))
            room = cls(kind, name, peers, text_size)
            try:
                room.register()
                yield room
            finally:
                room.leave()
        finally:
            for peer in peers:
                peer.close()

    def register(self) -> None:
        """A PING from each member until each has had a STATUS: its path works, its
        keys too, and the server has its address."""
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
        for peer in self.peers:
            peer.chats = peer.bad = 0  # a NOTICE the size of a CHAT is not one

    def leave(self) -> None:
        host = self.peers[0]
        with suppress(OSError, BenchError):
            host.send(encode_extended(Leave(host.token)))
            deadline = time.monotonic() + LEAVE_TIMEOUT
            while not host.departed and time.monotonic() < deadline:
                self.pump(0.05)
        self._selector.close()

    def pump(self, timeout: float) -> None:
        """Read whatever is ready, waiting at most ``timeout`` seconds for something."""
        ready = self._selector.select(max(0.0, timeout))
        for key, _ in ready:
            peer: Peer = key.data
            recv = peer.sock.recv
            for _ in range(DRAIN_BURST):
                try:
                    data = recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    peer.errors += 1  # an ICMP error: the server is gone
                    break
                self._datagram(peer, data, time.monotonic_ns())
        if time.monotonic() >= self._next_keepalive:
            self.keepalive()

    def _datagram(self, peer: Peer, data: bytes, now: int) -> None:
        if len(data) == self.chat_size and data[0] in (_CHAT, SEALED_KIND):
            peer.chats += 1
            if not peer.check_every or peer.chats % peer.check_every != peer.phase:
                return  # counted, not opened: a receiver must keep up with 100,000 a second
            chat = peer.open(data)
            if (
                isinstance(chat, Chat)
                and chat.sender == SENDER
                and len(chat.text) == len(self.text)
            ):
                self.on_chat(peer, chat.msg_no, now)
            else:
                peer.bad += 1
            return
        match peer.open(data):
            case Status():
                peer.statuses += 1
            case Departed():
                peer.departed = True
            case Chat():
                peer.bad += 1  # a CHAT of another size: nobody else speaks
            case None:
                peer.bad += 1
            case other if getattr(other, "kind", None) == _ERROR:
                peer.errors += 1
            case other if getattr(other, "kind", None) == _CLOSED:
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
            "bad": sum(p.bad for p in self.peers),
            "not_sent": sum(p.not_sent for p in self.peers),
        }


# ---------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------


@dataclass
class Cpu:
    at: float
    server: float | None
    own: float
    busy: float | None

    @classmethod
    def now(cls, server_pid: int) -> Cpu:
        return cls(
            time.monotonic(),
            procstat.cpu_seconds(server_pid),
            time.process_time(),
            procstat.busy_seconds(),
        )


def cpu_figures(first: Cpu, last: Cpu) -> dict[str, Any]:
    """The server's and this process's CPU between the two (% of one CPU), and what
    other jobs kept busy meanwhile."""
    elapsed = last.at - first.at
    figures: dict[str, Any] = {
        "seconds": elapsed,
        "bench_cpu_pct": (last.own - first.own) / elapsed * 100,
        "server_cpu_pct": None,
        "other_load_pct": None,
    }
    if first.server is not None and last.server is not None:
        server = last.server - first.server
        figures["server_cpu_pct"] = server / elapsed * 100
        if first.busy is not None and last.busy is not None:
            other = last.busy - first.busy - server - (last.own - first.own)
            figures["other_load_pct"] = max(0.0, other / elapsed * 100)
    return figures


# ---------------------------------------------------------------------------
# Throughput: one sender with a window, N receivers
# ---------------------------------------------------------------------------


def measure_throughput(
    kind: str, plan: Plan, tcp_port: int, server_pid: int, room_name: str
) -> dict[str, Any]:
    with Room.open(kind, room_name, plan.receivers + 1, tcp_port, plan.text_size) as room:
        sender, receivers = room.peers[0], room.peers[1:]
        for index, peer in enumerate(room.peers):
            peer.check_every, peer.phase = plan.check_every, index % plan.check_every
        checked = [0]

        def on_chat(peer: Peer, msg_no: int, now: int) -> None:
            checked[0] += 1

        room.on_chat = on_chat
        data = [b""]  # the DATA by MsgNo (sealed when sent, as a client seals them)
        token = sender.token
        text = room.text.decode()
        stalls = 0
        next_no = 1
        last_progress, last_confirmed = time.monotonic(), 0
        started = time.monotonic()
        measure_from, end = started + plan.warmup, started + plan.warmup + plan.duration
        first: tuple[Cpu, int] | None = None
        offset = 0  # own copies given up on (a stall)
        while (now := time.monotonic()) < end:
            if first is None and now >= measure_from:
                first = Cpu.now(server_pid), sum(p.chats for p in receivers)
            confirmed = sender.chats + offset
            while next_no - 1 - confirmed < plan.window:
                while len(data) <= next_no:
                    data.append(encode_extended(Data(token, len(data), text)))
                sender.send(data[next_no])
                next_no += 1
            room.pump(0.01)
            confirmed = sender.chats + offset
            if confirmed != last_confirmed:
                last_progress, last_confirmed = now, confirmed
            elif now - last_progress > STALL:
                stalls += 1  # an own copy was lost: forget the window, carry on
                offset = next_no - 1 - sender.chats
                last_progress = now
        last = Cpu.now(server_pid), sum(p.chats for p in receivers)
        assert first is not None
        sent = next_no - 1
        deadline = time.monotonic() + plan.drain
        while time.monotonic() < deadline and any(p.chats < sent for p in receivers):
            room.pump(0.02)
        lost = sum(sent - p.chats for p in receivers)
        problems = room.problems()
    figures = cpu_figures(first[0], last[0])
    delivered = last[1] - first[1]
    messages = delivered / plan.receivers
    row: dict[str, Any] = {
        "kind": kind,
        "receivers": plan.receivers,
        "sent": sent,
        "deliveries_per_s": delivered / figures["seconds"],
        "messages_per_s": messages / figures["seconds"],
        "server_us_per_message": None,
        "server_us_per_copy": None,
        "checked": checked[0],
        "lost": lost,
        "stalls": stalls,
        **figures,
        **problems,
    }
    if figures["server_cpu_pct"] is not None and messages:
        server_seconds = figures["server_cpu_pct"] / 100 * figures["seconds"]
        row["server_us_per_message"] = server_seconds / messages * 1e6
        row["server_us_per_copy"] = server_seconds / (messages * (plan.receivers + 1)) * 1e6
    rss = procstat.memory_kib(server_pid)
    row["server_rss_mib"] = None if rss is None else rss / 1024
    return row


# ---------------------------------------------------------------------------
# Latency: one sender at a fixed rate, each message timed by one receiver
# ---------------------------------------------------------------------------


def measure_latency(
    kind: str, plan: Plan, tcp_port: int, server_pid: int, room_name: str
) -> tuple[list[int], dict[str, Any]]:
    """Latencies in ns, one per message (each timed by one receiver), and the run's
    figures: how late the sender was, the CPU, what went wrong."""
    samples: list[int] = []
    with Room.open(kind, room_name, plan.receivers + 1, tcp_port, plan.text_size) as room:
        sender, receivers = room.peers[0], room.peers[1:]
        for index, peer in enumerate(receivers):
            # The k-th CHAT a receiver reads is message k: receiver i opens k = i mod n.
            peer.check_every, peer.phase = plan.receivers, (index + 1) % plan.receivers
        sender.check_every, sender.phase = plan.check_every, 0
        count = max(1, round(plan.rate * plan.seconds))
        text = room.text.decode()
        data = [b""] + [encode_extended(Data(sender.token, n, text)) for n in range(1, count + 1)]
        sent_ns = [0] * (count + 1)

        def on_chat(peer: Peer, msg_no: int, now: int) -> None:
            if peer is not sender and 0 < msg_no <= count:
                samples.append(now - sent_ns[msg_no])

        room.on_chat = on_chat
        late_ns: list[int] = []
        first = Cpu.now(server_pid)
        start = time.monotonic_ns() + 50_000_000
        interval = 1e9 / plan.rate
        pump = room.pump
        for msg_no in range(1, count + 1):
            due = start + int((msg_no - 1) * interval)
            while (now := time.monotonic_ns()) < due:
                pump(0.0)  # a busy wait: epoll sleeps in whole milliseconds
            late_ns.append(now - due)
            sent_ns[msg_no] = time.monotonic_ns()
            sender.send(data[msg_no])
            pump(0.0)
        last = Cpu.now(server_pid)
        deadline = time.monotonic() + plan.drain
        while time.monotonic() < deadline and any(p.chats < count for p in receivers):
            room.pump(0.02)
        lost = sum(count - p.chats for p in receivers)
        problems = room.problems()
    late_ns.sort()
    figures = {
        "kind": kind,
        "messages": count,
        "offered_deliveries_per_s": plan.rate * plan.receivers,
        "achieved_deliveries_per_s": (
            (count - 1) * plan.receivers / ((sent_ns[count] - sent_ns[1]) / 1e9)
            if count > 1
            else None
        ),
        "late_p99_ms": late_ns[min(len(late_ns) - 1, int(0.99 * len(late_ns)))] / 1e6,
        "lost": lost,
        **cpu_figures(first, last),
        **problems,
    }
    return samples, figures


# ---------------------------------------------------------------------------
# The run, the report
# ---------------------------------------------------------------------------


def preflight(kinds: tuple[str, ...], tcp_port: int) -> None:
    """A room of each kind, entered and left: a server that cannot seal says so now,
    before a minute of measuring."""
    for kind in kinds:
        with Room.open(kind, f"preflight-{kind}", 1, tcp_port, 1):
            pass


def measure(
    plan: Plan, logs: Path, pin: bool = True, retry: bool = True
) -> tuple[dict[str, list[int]], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every round on one server: (latency samples by kind, pooled; latency rows by
    round; throughput rows by round; facts about the run)."""
    where = machine()  # before pinning: it counts the CPUs this process may use
    cpus = procstat.cpu_count()
    server_cpu: int | None = None
    pinning = "no CPU pinning"
    if pin and cpus >= 2 and procstat.pin(os.getpid(), cpus - 1):
        server_cpu = 0
        pinning = f"server pinned to CPU 0, the members (this process) to CPU {cpus - 1}"
    latency_samples: list[tuple[str, bool, list[int]]] = []  # kind, disturbed, values
    latency_rows: list[dict[str, Any]] = []
    throughput_rows: list[dict[str, Any]] = []
    measured_again = 0
    with running(SERVER, NO_GENERATOR, logs, server_cpu) as server:
        preflight(plan.kinds, server.tcp_port)
        for round_number in range(plan.rounds):
            # Alternate which kind goes first: a drift over the run favours neither.
            kinds = plan.kinds if round_number % 2 == 0 else plan.kinds[::-1]
            for kind in kinds if plan.latency else ():
                for attempt in range(1 + (RETRIES if retry else 0)):
                    print(f"sealed: round {round_number + 1}, {kind} latency ...", file=sys.stderr)
                    values, row = measure_latency(
                        kind,
                        plan,
                        server.tcp_port,
                        server.pid,
                        f"lat-{kind}-{round_number}-{attempt}",
                    )
                    row["round"], row["attempts"] = round_number, attempt + 1
                    # A p99 is what other jobs disturb first, and a sender held up (by
                    # them, or by the hypervisor, which /proc/stat does not show) did not
                    # offer the load: such a run is measured again.
                    row["disturbed"] = (row["other_load_pct"] or 0.0) > BUSY_MACHINE or row[
                        "late_p99_ms"
                    ] > LATE_LIMIT_MS
                    if not row["disturbed"]:
                        break
                    if attempt < RETRIES and retry:
                        measured_again += 1
                        print("sealed: the run was disturbed; measuring again", file=sys.stderr)
                latency_samples.append((kind, row["disturbed"], values))
                latency_rows.append({**row, **_quantiles(values)})
            for kind in kinds if plan.throughput else ():
                for attempt in range(1 + (RETRIES if retry else 0)):
                    print(
                        f"sealed: round {round_number + 1}, {kind} throughput ...", file=sys.stderr
                    )
                    row = measure_throughput(
                        kind,
                        plan,
                        server.tcp_port,
                        server.pid,
                        f"tp-{kind}-{round_number}-{attempt}",
                    )
                    row["round"], row["attempts"] = round_number, attempt + 1
                    if (row["other_load_pct"] or 0.0) <= BUSY_MACHINE:
                        break
                    if attempt < RETRIES and retry:
                        measured_again += 1
                        print("sealed: another job was running; measuring again", file=sys.stderr)
                row["disturbed"] = (row["other_load_pct"] or 0.0) > BUSY_MACHINE
                throughput_rows.append(row)
        facts = {
            "machine": where,
            "loop": server.loop,
            "pinning": pinning,
            "server_flags": server.flags,
            "measured_again": measured_again,
        }
    # The figures come from the runs other jobs left alone, where there are any: a
    # disturbed run says how busy the machine was, not what sealing costs.
    pooled: dict[str, list[int]] = {}
    for kind in plan.kinds if plan.latency else ():
        clean = [v for k, disturbed, v in latency_samples if k == kind and not disturbed]
        every = [v for k, _, v in latency_samples if k == kind]
        pooled[kind] = [sample for values in (clean or every) for sample in values]
    return pooled, latency_rows, throughput_rows, facts


def summarise_latency(
    pooled: dict[str, list[int]], rounds: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for kind, values in pooled.items():
        mine = [r for r in rounds if r["kind"] == kind]
        row: dict[str, Any] = {"kind": kind, **_quantiles(values)}
        row["runs"] = len(mine)
        used = [r for r in mine if not r["disturbed"]] or mine
        row["runs_used"] = len(used)
        row["late_p99_ms_used"] = max(r["late_p99_ms"] for r in used)
        for key in ("p50_ms", "p99_ms", "late_p99_ms", "bench_cpu_pct", "other_load_pct"):
            row[f"{key}_by_round"] = [r[key] for r in mine]
        row["achieved_deliveries_per_s"] = min(
            (r["achieved_deliveries_per_s"] for r in mine), default=None
        )
        row["lost"] = sum(r["lost"] for r in mine)
        row["bad"] = sum(r["bad"] for r in mine)
        rows.append(row)
    return rows


def summarise_throughput(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kind, the median round by deliveries/s of those other jobs left alone (of all
    if none was), whole, with every round's figures alongside."""
    rows = []
    for kind in KINDS:
        mine = [r for r in runs if r["kind"] == kind]
        if not mine:
            continue
        used = [r for r in mine if not r["disturbed"]] or mine
        ranked = sorted(used, key=lambda r: r["deliveries_per_s"])
        row = dict(ranked[len(ranked) // 2])
        row["runs"], row["runs_used"] = len(mine), len(used)
        row["deliveries_by_round"] = [r["deliveries_per_s"] for r in mine]
        row["server_us_per_message_by_round"] = [r["server_us_per_message"] for r in mine]
        known = [r["server_us_per_message"] for r in used if r["server_us_per_message"]]
        row["server_us_per_message_median"] = statistics.median(known) if known else None
        rows.append(row)
    return rows


def verdict(latency: list[dict[str, Any]], throughput: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, where this run measured what they need."""
    result: dict[str, Any] = {"throughput_ratio": None, "throughput_met": None}
    result |= {"sealed_p99_ms": None, "p99_met": None, "cpu_ratio": None}
    tp = {row["kind"]: row for row in throughput}
    if "plain" in tp and "sealed" in tp and tp["plain"]["deliveries_per_s"]:
        ratio = tp["sealed"]["deliveries_per_s"] / tp["plain"]["deliveries_per_s"]
        result["throughput_ratio"], result["throughput_met"] = ratio, ratio >= THROUGHPUT_TARGET
        a = tp["plain"]["server_us_per_message_median"]
        b = tp["sealed"]["server_us_per_message_median"]
        if a and b:
            result["cpu_ratio"] = b / a
    lat = {row["kind"]: row for row in latency}
    if "sealed" in lat and lat["sealed"]["p99_ms"] is not None:
        result["sealed_p99_ms"] = lat["sealed"]["p99_ms"]
        result["p99_met"] = lat["sealed"]["p99_ms"] < P99_TARGET_MS
    return result


def _met(value: bool | None) -> str:
    return "not measured" if value is None else ("met" if value else "**not met**")


def render(
    latency: list[dict[str, Any]], throughput: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    plan = meta["plan"]
    flags = " ".join(meta["server_flags"]) or "no flags"
    lines = [
        f"Sealed rooms against plaintext rooms, {meta['date']}: {meta['machine']}",
        f"Command: `{meta['command']}`; server: {meta['server']} ({flags}), {meta['loop']} "
        f"loop; {meta['pinning']}; {plan['rounds']} rounds.",
    ]
    if plan["latency"]:
        offered = plan["rate"] * plan["receivers"]
        lines += [
            "",
            f"Latency at a fixed load: one sender at {plan['rate']:,.0f} messages/s to "
            f"{plan['receivers']} receivers ({offered:,.0f} deliveries/s offered) for "
            f"{plan['seconds']:g} s, {plan['text_size']}-byte texts; from writing the DATA to "
            "reading the CHAT off the receiver's socket (one clock), each message timed by "
            "one receiver; the rounds pooled. A run that other jobs disturbed was measured "
            "again (as below), and so was one whose sender fell behind its schedule "
            f"(late p99 over {LATE_LIMIT_MS:g} ms); the figures are those of the rounds used: "
            "the undisturbed ones, all if none was. Sender late p99: how far behind its schedule "
            "the sender sent (the load was offered only if that is small).",
            "",
            "| kind | rounds used | samples | p50 ms | p99 ms | max ms | p50 by round "
            "| p99 by round | deliveries/s achieved | sender late p99 ms | bench CPU % "
            "| other load % | lost | bad |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in latency:
            lines.append(
                f"| {row['kind']} | {row['runs_used']} of {row['runs']} | {row['samples']:,} "
                f"| {_num(row['p50_ms'], 3)} "
                f"| {_num(row['p99_ms'], 3)} | {_num(row['max_ms'], 2)} "
                f"| {_range(row['p50_ms_by_round'], 3)} | {_range(row['p99_ms_by_round'], 3)} "
                f"| {_num(row['achieved_deliveries_per_s'])} "
                f"| {_range(row['late_p99_ms_by_round'], 3)} "
                f"| {_range(row['bench_cpu_pct_by_round'])} "
                f"| {_range(row['other_load_pct_by_round'])} | {row['lost']:,} | {row['bad']} |"
            )
    if plan["throughput"]:
        lines += [
            "",
            f"Throughput: one sender, {plan['receivers']} receivers, a window of "
            f"{plan['window']} (confirmed by the sender's own copy), {plan['text_size']}-byte "
            f"texts, {plan['duration']:g} s counted after {plan['warmup']:g} s; the median "
            "round used by deliveries/s (a copy to a receiver; the server also sends the "
            f"sender its own). Runs that other jobs disturbed (over {BUSY_MACHINE:g} % of a "
            f"CPU) were measured again: {meta['measured_again']}; rounds still disturbed "
            "after that are not used where others are.",
            "",
            "| kind | rounds used | deliveries/s | all rounds | messages/s | server CPU % "
            "| server µs/message | all rounds | server µs/copy | bench CPU % | other load % "
            "| server RSS MiB | checked | lost | stalls | bad |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in throughput:
            lines.append(
                f"| {row['kind']} | {row['runs_used']} of {row['runs']} "
                f"| {_num(row['deliveries_per_s'])} "
                f"| {_range(row['deliveries_by_round'])} | {_num(row['messages_per_s'])} "
                f"| {_num(row['server_cpu_pct'])} | {_num(row['server_us_per_message'], 1)} "
                f"| {_range(row['server_us_per_message_by_round'], 1)} "
                f"| {_num(row['server_us_per_copy'], 2)} | {_num(row['bench_cpu_pct'])} "
                f"| {_num(row['other_load_pct'])} | {_num(row['server_rss_mib'], 1)} "
                f"| {row['checked']:,} | {row['lost']:,} | {row['stalls']} | {row['bad']} |"
            )
    result = meta["verdict"]
    lines += ["", "Targets:"]
    if result["throughput_ratio"] is not None:
        cpu = result["cpu_ratio"]
        lines.append(
            f"- sealed throughput {result['throughput_ratio']:.2f}x plaintext (target ≥ "
            f"{THROUGHPUT_TARGET:g}x): {_met(result['throughput_met'])}"
            + (f"; server CPU per message {cpu:.2f}x plaintext's" if cpu else "")
        )
    else:
        lines.append(f"- sealed throughput ≥ {THROUGHPUT_TARGET:g}x plaintext: not measured")
    if result["sealed_p99_ms"] is not None:
        lines.append(
            f"- sealed p99 {result['sealed_p99_ms']:.3f} ms at "
            f"{plan['rate'] * plan['receivers']:,.0f} deliveries/s (target < {P99_TARGET_MS:g} "
            f"ms): {_met(result['p99_met'])}"
        )
    else:
        lines.append(f"- sealed p99 < {P99_TARGET_MS:g} ms: not measured")
    # A busy-waiting sender keeps this process at 100 % during the latency runs: there
    # its lateness says whether it kept up; in throughput runs its CPU does.
    behind = [row["kind"] for row in latency if row["late_p99_ms_used"] > LATE_LIMIT_MS]
    if behind:
        lines.append(
            f"- the sender fell behind its schedule (late p99 over {LATE_LIMIT_MS:g} ms) in the "
            f"{', '.join(behind)} latency runs: less than the load claimed was offered"
        )
    busy = [row["kind"] for row in throughput if (row["bench_cpu_pct"] or 0) > BENCH_BOUND]
    if busy:
        lines.append(
            f"- the bench process was over {BENCH_BOUND:g} % of its CPU in the "
            f"{', '.join(busy)} throughput runs: there the bench, not the server, may have "
            "set the figure"
        )
    problems = [
        f"{row['kind']}: {key} = {row[key]}"
        for row in (*latency, *throughput)
        for key in ("errors", "closed", "bad", "not_sent", "stalls")
        if row.get(key)
    ]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    return "\n".join(lines) + "\n"


def _kinds(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names or any(name not in KINDS for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"comma-separated, from: {', '.join(KINDS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sealed",
        description="Throughput, server CPU and latency of sealed rooms against plaintext.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts, seconds in all")
    parser.add_argument("--rounds", type=int, help="rounds, interleaving everything (3)")
    parser.add_argument("--receivers", type=int, help="receivers in every room (10)")
    parser.add_argument("--window", type=int, help="throughput: messages in flight (32)")
    parser.add_argument("--duration", type=float, help="throughput: seconds counted (3)")
    parser.add_argument("--rate", type=float, help="latency: messages a second (10000)")
    parser.add_argument("--seconds", type=float, help="latency: seconds of sending (3)")
    parser.add_argument("--text-size", type=int, help="bytes of each text (100)")
    parser.add_argument("--check-every", type=int, help="throughput: open 1 CHAT in N (64)")
    parser.add_argument("--kinds", type=_kinds, help="plain, sealed or both (default: both)")
    parser.add_argument(
        "--latency", action=argparse.BooleanOptionalAction, help="measure latency (yes)"
    )
    parser.add_argument(
        "--throughput", action=argparse.BooleanOptionalAction, help="measure throughput (yes)"
    )
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = SMOKE if args.smoke else FULL
    keys = (
        "rounds",
        "receivers",
        "window",
        "duration",
        "rate",
        "seconds",
        "text_size",
        "check_every",
        "kinds",
        "latency",
        "throughput",
    )
    plan = replace(plan, **{k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    if not (
        1 <= plan.rounds <= 9
        and 2 <= plan.receivers <= 30  # the server allows 32 members from one address
        and 1 <= plan.window <= 1000
        and 0 < plan.duration <= 60
        and 1 <= plan.rate <= 50_000
        and 0 < plan.seconds <= 60
        and 1 <= plan.text_size <= 3000
        and 1 <= plan.check_every <= 10_000
        and (plan.latency or plan.throughput)
    ):
        raise BenchError(
            "--rounds 1-9, --receivers 2-30, --window 1-1000, --duration 0-60, "
            "--rate 1-50000, --seconds 0-60, --text-size 1-3000, --check-every 1-10000, "
            "and latency or throughput"
        )
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = make_plan(args)
        server = _source(None)
        with tempfile.TemporaryDirectory(prefix="ocm-sealed-") as tmp:
            pooled, latency_rounds, runs, facts = measure(
                plan, Path(tmp), pin=not args.no_pin, retry=not args.smoke
            )
    except (BenchError, OSError, ssl.SSLError) as error:
        print(f"sealed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    latency = summarise_latency(pooled, latency_rounds) if plan.latency else []
    throughput = summarise_throughput(runs)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.sealed" + "".join(f" {a}" for a in sys.argv[1:]),
        "plan": plan.__dict__,
        "server": server,
        "smoke": args.smoke,
        **facts,
    }
    meta["verdict"] = verdict(latency, throughput)
    report = render(latency, throughput, meta)
    print(report)
    document = {
        "meta": meta,
        "latency": latency,
        "latency_rounds": latency_rounds,
        "throughput": throughput,
        "throughput_runs": runs,
    }
    return write_reports("sealed", report, document, args.markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
