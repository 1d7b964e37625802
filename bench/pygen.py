"""The load generator in Python: the fallback for bench/loadgen.c where it cannot be built.

Same command line (``run`` only: there is no Python twin of the C relay), same members
file (delivery members included), same text layout, same JSON report; see loadgen.c for
what each mode means and how a delivery member speaks. One
selector watches every member socket. On 2 cores it cannot outrun a relay, so its
figures are the generator's ceiling rather than the relay's, and the report says
which generator ran. Portable: no Linux-only call outside bench/procstat.py.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from bench import procstat

__all__ = ["main"]

MAX_DATAGRAM = 4096
TEXT_HEAD = 33  # "M", send time (16 hex), sender (8 hex), message number (8 hex)
STALL_NS = 500_000_000
RECV_BURST = 64
# The delivery extension (docs/protocol.md, section 3).
DATA, PING = 1, 2
MESSAGE, NOTICE, CLOSED, ERROR, CHAT, STATUS, ACCEPTED, LAST_KIND = 1, 2, 3, 4, 5, 6, 7, 10
_U32 = struct.Struct("!I")


@dataclass
class Member:
    sock: socket.socket
    room: int
    sender: int  # index into senders, or -1
    prefix: bytes  # RoomNameSize, TokenSize, room, token: a heartbeat
    registered: bool = False
    boot: bytes | None = None  # a delivery member: the server's boot id (for PING)
    token: bytes = b""
    msg_no: int = 0  # the MsgNo of its last DATA (chat lines and probes alike)
    nonce: int = 0

    def chat_datagram(self, text: bytes) -> bytes:
        """A version 1 chat datagram, or a DATA with the member's next MsgNo."""
        if self.boot is None:
            return self.prefix + text
        self.msg_no += 1
        head = bytes((0, DATA, len(self.token))) + self.token
        return head + _U32.pack(self.msg_no) + text

    def heartbeat(self) -> bytes:
        """A version 1 heartbeat, or a PING."""
        if self.boot is None:
            return self.prefix
        self.nonce += 1
        return bytes((0, PING, len(self.token))) + self.token + _U32.pack(self.nonce) + self.boot


@dataclass
class Sender:
    member: int
    sent: int = 0
    echoed: int = 0


@dataclass
class Stats:
    sent_window: int = 0
    expected: int = 0
    delivered: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    notices: int = 0
    closed: int = 0
    errors: int = 0
    malformed: int = 0
    heartbeats: int = 0
    stalls: int = 0
    send_failures: int = 0
    statuses: int = 0
    accepted: int = 0


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bare = args.format == "bare"
        self.selector = selectors.DefaultSelector()
        self.members: list[Member] = []
        self.senders: list[Sender] = []
        self.room_sizes: dict[int, int] = {}
        self.room_first: dict[int, int] = {}
        self.room_registered: dict[int, int] = {}
        self.registered = 0
        self.inflight = 0
        self.win_start = self.win_end = 2**63
        self.last_receive = 0
        self.padding = b"x" * (args.text_size - TEXT_HEAD)
        self.stats = Stats()

    # -- setup ---------------------------------------------------------------------

    def load(self) -> None:
        with open(self.args.members, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                room_text, sender_text, ip, room_hex, token, *rest = line.split()
                room, name = int(room_text), bytes.fromhex(room_hex)
                token_bytes = token.encode("ascii")
                prefix = bytes((len(name), len(token_bytes))) + name + token_bytes
                boot = bytes.fromhex(rest[0]) if rest and rest[0] != "-" else None
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((ip, 0))
                sock.connect(("127.0.0.1", self.args.server))
                sock.setblocking(False)
                index = len(self.members)
                sender = -1
                if sender_text == "1":
                    sender = len(self.senders)
                    self.senders.append(Sender(index))
                self.members.append(
                    Member(sock, room, sender, prefix, boot=boot, token=token_bytes)
                )
                self.room_sizes[room] = self.room_sizes.get(room, 0) + 1
                self.room_first.setdefault(room, index)
                self.room_registered.setdefault(room, 0)
                self.selector.register(sock, selectors.EVENT_READ, index)

    def close(self) -> None:
        for member in self.members:
            member.sock.close()
        self.selector.close()

    # -- sending -------------------------------------------------------------------

    def send(self, member: Member, data: bytes) -> bool:
        try:
            member.sock.send(data)
        except OSError:
            self.stats.send_failures += 1
            return False
        return True

    def heartbeat(self, member: Member) -> None:
        if self.send(member, member.heartbeat()):
            self.stats.heartbeats += 1

    def chat(self, index: int) -> None:
        sender = self.senders[index]
        member = self.members[sender.member]
        now = time.monotonic_ns()
        head = f"M{now:016x}{index:08x}{sender.sent + 1:08x}".encode("ascii")
        if not self.send(member, member.chat_datagram(head + self.padding)):
            return
        sender.sent += 1
        self.inflight += 1
        if self.win_start <= now < self.win_end:
            self.stats.sent_window += 1
            self.stats.expected += self.room_sizes[member.room]

    # -- receiving -----------------------------------------------------------------

    def poll(self, timeout_ns: int) -> None:
        for key, _ in self.selector.select(max(0, timeout_ns) / 1e9):
            index = key.data
            sock = self.members[index].sock
            for _ in range(RECV_BURST):
                try:
                    data = sock.recv(MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self.stats.malformed += 1
                    break
                self.last_receive = now = time.monotonic_ns()
                self.datagram(index, data, now)

    def datagram(self, index: int, data: bytes, now: int) -> None:
        member, stats = self.members[index], self.stats
        if self.bare:
            if len(data) < 2:
                stats.malformed += 1
                return
            offset = 2 + data[0] + data[1]
        else:
            kind = data[0] if len(data) >= 6 else 0
            if not MESSAGE <= kind <= LAST_KIND:
                stats.malformed += 1
                return
            if kind not in (MESSAGE, CHAT):
                stats.notices += kind == NOTICE
                stats.closed += kind == CLOSED
                stats.statuses += kind == STATUS
                stats.accepted += kind == ACCEPTED
                # ERROR; LOST, DEPARTED and RESTARTED, never asked for
                stats.errors += kind == ERROR or kind > ACCEPTED
                return
            offset = 6 + data[5] + (4 if kind == CHAT else 0)  # a CHAT's MsgNo, then text
        text = data[offset:]
        if offset > len(data):
            stats.malformed += 1
            return
        if not text:
            return  # a heartbeat forwarded by a bare relay
        try:
            if text[:1] == b"P":
                if int(text[1:9], 16) == member.room and not member.registered:
                    member.registered = True
                    self.room_registered[member.room] += 1
                    self.registered += 1
                return
            if text[:1] != b"M" or len(text) < TEXT_HEAD:
                return
            sent_at, sender, number = (
                int(text[1:17], 16),
                int(text[17:25], 16),
                int(text[25:33], 16),
            )
        except ValueError:
            return
        if self.win_start <= sent_at < self.win_end:
            stats.delivered += 1
            stats.latencies_ns.append(max(0, now - sent_at))
        if sender < len(self.senders) and self.senders[sender].member == index:
            echoed = self.senders[sender]
            if number > echoed.echoed:
                self.inflight -= number - echoed.echoed
                echoed.echoed = number

    # -- phases --------------------------------------------------------------------

    def register(self, only_unregistered: bool) -> None:
        rate, started, done = self.args.register_rate, time.monotonic_ns(), 0
        for member in self.members:
            if only_unregistered and member.registered:
                continue
            self.heartbeat(member)
            done += 1
            self.pace(started, int(done / rate * 1e9))

    def pace(self, started: int, due_ns: int) -> None:
        """Receive until ``due_ns`` after ``started`` (poll returns on any datagram)."""
        while (elapsed := time.monotonic_ns() - started) < due_ns:
            self.poll(due_ns - elapsed)

    def verify(self, rounds: int = 8) -> None:
        for round_number in range(rounds):
            if self.registered == len(self.members):
                return
            if round_number:
                self.register(only_unregistered=True)
            self.poll(10_000_000)
            started, done = time.monotonic_ns(), 0
            for room, size in self.room_sizes.items():
                if self.room_registered[room] < size:
                    first = self.members[self.room_first[room]]
                    self.send(first, first.chat_datagram(f"P{room:08x}".encode("ascii")))
                    done += size
                    self.pace(started, int(done / self.args.register_rate * 1e9))
            until = time.monotonic_ns() + 300_000_000
            while self.registered < len(self.members) and time.monotonic_ns() < until:
                self.poll(5_000_000)

    def run(self) -> dict[str, object]:
        args, stats = self.args, self.stats
        self.load()
        self.register(only_unregistered=False)
        self.verify()
        unregistered = len(self.members) - self.registered
        self.poll(20_000_000)

        t0 = time.monotonic_ns()
        self.win_start = t0 + int(args.warmup * 1e9)
        self.win_end = self.win_start + int(args.duration * 1e9)
        server0: float | None = None
        in_window = False
        self_cpu0 = 0.0
        hb_ns = int(args.heartbeat * 1e9)
        hb_sent = rate_sent = next_sender = 0
        last_progress, last_inflight = t0, 0
        per_sender = -(-args.window // max(1, len(self.senders)))
        heartbeats_before = stats.heartbeats
        while True:
            now = time.monotonic_ns()
            if not in_window and now >= self.win_start:
                server0, in_window = procstat.cpu_seconds(args.server_pid), True
                self_cpu0 = time.process_time()
            if now >= self.win_end:
                break
            wake = self.win_end if in_window else min(self.win_end, self.win_start)
            if hb_ns and not self.bare:
                due = (now - t0) * len(self.members) // hb_ns
                while hb_sent < due:
                    self.heartbeat(self.members[hb_sent % len(self.members)])
                    hb_sent += 1
                wake = min(wake, t0 + (hb_sent + 1) * hb_ns // len(self.members))
            if args.mode == "window" and self.senders:
                if self.inflight != last_inflight or self.inflight < args.window:
                    last_progress = now
                if self.inflight >= args.window and now - last_progress > STALL_NS:
                    for sender in self.senders:
                        sender.echoed = sender.sent
                    self.inflight = 0
                    stats.stalls += 1
                tries = 0
                while self.inflight < args.window and tries < len(self.senders):
                    for _ in range(min(per_sender, args.window - self.inflight)):
                        self.chat(next_sender)
                    next_sender = (next_sender + 1) % len(self.senders)
                    tries += 1
                last_inflight = self.inflight
                wake = min(wake, now + 5_000_000)
            elif args.mode == "rate" and self.senders:
                due = int((now - t0) * 1e-9 * args.rate)
                while rate_sent < due:
                    self.chat(next_sender)
                    next_sender = (next_sender + 1) % len(self.senders)
                    rate_sent += 1
                wake = min(wake, t0 + int((rate_sent + 1) / args.rate * 1e9))
            self.poll(0 if args.spin else wake - time.monotonic_ns())
        server1 = procstat.cpu_seconds(args.server_pid)
        self_cpu = time.process_time() - self_cpu0
        window_heartbeats = stats.heartbeats - heartbeats_before

        drain_end = time.monotonic_ns() + int(args.drain * 1e9)
        self.last_receive = time.monotonic_ns()
        while time.monotonic_ns() < drain_end and time.monotonic_ns() - self.last_receive < 1e8:
            self.poll(10_000_000)

        duration = args.duration
        latencies = sorted(stats.latencies_ns)

        def quantile(q: float) -> float:
            if not latencies:
                return -1.0
            return latencies[int(q * (len(latencies) - 1))] / 1000

        server_cpu = -1.0
        if server0 is not None and server1 is not None:
            server_cpu = (server1 - server0) / duration * 100
        expected = stats.expected
        return {
            "members": len(self.members),
            "rooms": len(self.room_sizes),
            "senders": len(self.senders),
            "unregistered": unregistered,
            "window_s": duration,
            "sent": stats.sent_window,
            "offered_per_s": stats.sent_window / duration,
            "expected": expected,
            "delivered": stats.delivered,
            "delivered_per_s": stats.delivered / duration,
            "loss_pct": 100 * (1 - stats.delivered / expected) if expected else 0.0,
            "p50_us": quantile(0.5),
            "p99_us": quantile(0.99),
            "max_us": latencies[-1] / 1000 if latencies else -1.0,
            "server_cpu_pct": server_cpu,
            "generator_cpu_pct": self_cpu / duration * 100,
            "heartbeats_per_s": window_heartbeats / duration,
            "notices": stats.notices,
            "closed": stats.closed,
            "errors": stats.errors,
            "malformed": stats.malformed,
            "stalls": stats.stalls,
            "send_failures": stats.send_failures,
            "delivery_members": sum(m.boot is not None for m in self.members),
            "statuses": stats.statuses,
            "accepted": stats.accepted,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pygen", description=__doc__)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--server", type=int, required=True, help="the relay's UDP port")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--members", required=True)
    parser.add_argument("--format", choices=["ocm", "bare"], default="ocm")
    parser.add_argument("--mode", choices=["window", "rate", "idle"], default="window")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--text-size", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=0.5)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--register-rate", type=float, default=20000.0)
    parser.add_argument("--spin", type=int, default=0, help="busy-poll while measuring")
    args = parser.parse_args(argv)
    if not TEXT_HEAD <= args.text_size <= MAX_DATAGRAM - 512:
        parser.error("--text-size out of range")
    if args.window < 1 or args.rate <= 0 or not 0 < args.duration <= 600:
        parser.error("bad --window, --rate or --duration")
    return args


def main(argv: list[str] | None = None) -> int:
    generator = Generator(parse_args(argv))
    try:
        report = generator.run()
    except OSError as error:
        print(f"pygen: {error}", file=sys.stderr)
        return 2
    finally:
        generator.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
