"""The well-behaved room: three members who keep chatting while the attacks run.

Each member sends a numbered line every ``CHAT_INTERVAL`` (which also serves as its
heartbeat) and records every datagram it receives. :meth:`ChatRoom.verify` then checks
the promise of the protocol: every line reached every member, once, in the order it was
sent, with one room-wide run of consecutive Seq numbers, and nothing else arrived. It also
times each line from its sending to its arrival at each member: :meth:`ChatRoom.delays`
is how late the lines of a stretch of time were (an attack asks about its own).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from ocm.wire import CreateRoom, JoinRoom, Kind, ServerDatagram, decode_server_datagram
from tests.hostile.harness import enter
from tests.kit import MS, Member

ROOM = "lounge"
PASSWORD = "correct horse battery staple"
NAMES = ("alice", "bob", "carol")
CHAT_INTERVAL = 20 * MS
# A bound on each member's loop, far above what the suite needs (about 10 s of chat).
MAX_LINES = 3000


@dataclass(slots=True)
class RoomReport:
    sent: dict[str, int]
    received: dict[str, int]  # MESSAGE datagrams per member
    problems: list[str] = field(default_factory=list)
    first_seq: int = 0
    last_seq: int = 0
    # From a line's sending to its arrival, over every line and member: milliseconds.
    latency_ms: dict[str, float] = field(default_factory=dict)  # median, p99, max

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


class ChatRoom:
    """alice hosts a password-protected room; bob and carol join; all three chat."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.sent: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.inbox: dict[str, list[ServerDatagram]] = {name: [] for name in NAMES}
        self.sent_at: dict[str, list[float]] = {name: [] for name in NAMES}  # by line number
        self.arrived_at: dict[str, list[float]] = {name: [] for name in NAMES}  # by inbox entry
        self._readers: list[asyncio.Task[None]] = []
        self._talkers: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def host(self) -> Member:
        return self.members[NAMES[0]]

    async def open(self, tcp_port: int) -> None:
        self.members[NAMES[0]] = await enter(tcp_port, CreateRoom(ROOM, NAMES[0], PASSWORD))
        for name in NAMES[1:]:
            self.members[name] = await enter(tcp_port, JoinRoom(ROOM, name, PASSWORD))
        # Let the join NOTICEs arrive, then start from a clean inbox: only chat counts.
        await asyncio.sleep(50 * MS)
        for member in self.members.values():
            while not member.peer.received.empty():
                member.peer.received.get_nowait()
        for name, member in self.members.items():
            self._readers.append(asyncio.create_task(self._read(name, member)))

    def start(self) -> None:
        for name, member in self.members.items():
            self._talkers.append(asyncio.create_task(self._talk(name, member)))

    async def _talk(self, name: str, member: Member) -> None:
        next_at = time.monotonic()
        for number in range(MAX_LINES):
            if self._stop.is_set():
                return
            member.say(f"{name} #{number}")
            self.sent_at[name].append(time.monotonic())
            self.sent[name] = number + 1
            next_at += CHAT_INTERVAL
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _read(self, name: str, member: Member) -> None:
        while True:
            datagram = decode_server_datagram(await member.peer.received.get())
            self.arrived_at[name].append(time.monotonic())
            self.inbox[name].append(datagram)

    def _arrivals(self, name: str) -> dict[tuple[str, int], float]:
        """When each line (sender, number) reached ``name``."""
        arrivals: dict[tuple[str, int], float] = {}
        for datagram, when in zip(self.inbox[name], self.arrived_at[name], strict=True):
            sender, _, number = datagram.text.rpartition(" #")
            if datagram.kind is Kind.MESSAGE and sender == datagram.sender and number.isdigit():
                arrivals.setdefault((sender, int(number)), when)
        return arrivals

    def delays(self, since: float, until: float) -> list[float]:
        """How late each line sent between ``since`` and ``until`` (monotonic seconds)
        reached each member: seconds; a line not arrived yet counts as late as it is now."""
        now = time.monotonic()
        delays: list[float] = []
        for name in NAMES:
            arrivals = self._arrivals(name)
            for sender, times in self.sent_at.items():
                for number, sent in enumerate(times):
                    if since <= sent <= until:
                        delays.append(arrivals.get((sender, number), now) - sent)
        return delays

    async def stop(self, settle: float = 2000 * MS) -> None:
        """Stop talking, then wait (bounded) until every line sent has arrived everywhere."""
        self._stop.set()
        await asyncio.gather(*self._talkers)
        total = sum(self.sent.values())
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            if all(len(box) >= total for box in self.inbox.values()):
                break
            await asyncio.sleep(20 * MS)
        await asyncio.sleep(50 * MS)  # anything extra would show up now
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def close(self) -> None:
        for member in self.members.values():
            member.peer.close()

    def verify(self) -> RoomReport:
        report = RoomReport(dict(self.sent), {name: len(box) for name, box in self.inbox.items()})
        views: dict[str, list[tuple[int, str, str]]] = {}
        for name, box in self.inbox.items():
            for datagram in box:
                if datagram.kind is not Kind.MESSAGE:
                    report.problems.append(f"{name} got {datagram.kind.name}: {datagram.text!r}")
            views[name] = [(d.seq, d.sender, d.text) for d in box if d.kind is Kind.MESSAGE]
        reference = views[NAMES[0]]
        for name, view in views.items():
            if view != reference:
                report.problems.append(f"{name} saw a different stream than {NAMES[0]}")
            seqs = [seq for seq, _, _ in view]
            if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                report.problems.append(f"{name}: Seq numbers are not consecutive")
            for sender in NAMES:
                lines = [text for _, who, text in view if who == sender]
                expected = [f"{sender} #{n}" for n in range(self.sent[sender])]
                if lines != expected:
                    missing = len(set(expected) - set(lines))
                    foreign = len(set(lines) - set(expected))
                    report.problems.append(
                        f"{name} has {len(lines)} of {sender}'s {len(expected)} lines "
                        f"({missing} missing, {foreign} foreign, the rest out of order)"
                    )
            foreign_senders = {who for _, who, _ in view} - set(NAMES)
            if foreign_senders:
                report.problems.append(f"{name} got lines from {sorted(foreign_senders)}")
        if reference:
            report.first_seq, report.last_seq = reference[0][0], reference[-1][0]
        delays = sorted(self.delays(0.0, float("inf")))
        if delays:
            report.latency_ms = {
                "median": round(delays[len(delays) // 2] * 1000, 1),
                "p99": round(delays[int(len(delays) * 0.99)] * 1000, 1),
                "max": round(delays[-1] * 1000, 1),
            }
        return report
