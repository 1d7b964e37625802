"""What the server remembers for the delivery extension (docs/protocol.md, section 3).

Three small bounded structures, pure and with time passed in:

* :class:`History` -- a room's last datagrams by Seq (at most N of them and M bytes), so
  a member can ask for what it missed (REPAIR);
* :class:`RelayedLog` -- which message numbers one member has had relayed, so a DATA that
  arrives again is confirmed (ACCEPTED) instead of relayed twice, and one that arrives
  early waits for those before it;
* :class:`Budget` -- a token bucket, here the repair datagrams one member may get.

Nothing here knows about sockets or members; the registry and the relay own them.
"""

from __future__ import annotations

from collections import deque

from ocm.wire.constants import SEQ_CYCLE

__all__ = [
    "HELD_BYTES",
    "HELD_MESSAGES",
    "PENDING",
    "REFUSED",
    "RELAYED_WINDOW",
    "Budget",
    "History",
    "RelayedLog",
]

# Message numbers a member's log remembers exactly (their Seq, to confirm a resend).
# OCM's client keeps at most 32 messages in flight, so a retransmission is never more
# than 32 numbers old; 128 leaves room for a client with a bigger window, in a ring
# of about 1 KiB per member.
RELAYED_WINDOW = 128
# Early arrivals one member may have waiting for the messages before them: OCM's window
# in count, and 16 KiB (four long lines; short lines are the usual case), so a member
# pins at most that; the registry caps all members together too (MAX_HELD_TOTAL).
HELD_MESSAGES = 32
HELD_BYTES = 16 * 1024
# The Seq recorded for a message the server refused (too long, not UTF-8): a resend of
# it is refused again, never confirmed.
REFUSED = -1
# The Seq recorded for a message handed to a cluster's bus, not yet numbered: a resend
# of it is dropped unanswered (the sender sends it again; by then it has its Seq).
PENDING = -2


class History:
    """The last datagrams of one room, oldest first, by Seq.

    Bounded by ``max_messages`` and ``max_bytes`` (whichever is reached first drops the
    oldest). Seqs are consecutive (section 2), so a datagram is found by its offset from
    the oldest one kept: no index to maintain.
    """

    __slots__ = ("_datagrams", "bytes", "first_seq", "max_bytes", "max_messages")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._datagrams: deque[bytes] = deque()
        self.first_seq = 1  # the Seq of the oldest datagram kept (or of the next one)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._datagrams)

    def append(self, seq: int, datagram: bytes) -> None:
        """Keep ``datagram``, sent as ``seq`` (the one after the newest kept)."""
        datagrams = self._datagrams
        if not datagrams:
            self.first_seq = seq
        datagrams.append(datagram)
        self.bytes += len(datagram)
        while len(datagrams) > self.max_messages or (
            self.bytes > self.max_bytes and len(datagrams) > 1
        ):
            self.bytes -= len(datagrams.popleft())
            self.first_seq = self.first_seq % SEQ_CYCLE + 1

    def get(self, seq: int) -> bytes | None:
        """The datagram sent as ``seq``, or None if it is not (or no longer) kept."""
        offset = (seq - self.first_seq) % SEQ_CYCLE
        return self._datagrams[offset] if offset < len(self._datagrams) else None


class RelayedLog:
    """One member's messages, relayed in its own order: message number ``next`` is the
    lowest not yet dealt with (relayed, or refused); a DATA that arrives before those
    ahead of it waits in ``held`` until they come, so the room sees each member's lines
    in the order they were written, whatever the network did to them.

    Remembers as which Seq each of the newest :data:`RELAYED_WINDOW` numbers was
    relayed, to confirm a retransmission (ACCEPTED); older ones answer 0.
    """

    __slots__ = ("_seqs", "held", "held_bytes", "next")

    def __init__(self) -> None:
        self.next = 1
        # The Seq of message n at n % RELAYED_WINDOW, for the newest RELAYED_WINDOW
        # numbers: a ring, so recording one is one store.
        self._seqs: list[int] = [0] * RELAYED_WINDOW
        # Early arrivals: msg_no -> text (None: refused, to be skipped over).
        self.held: dict[int, bytes | None] = {}
        self.held_bytes = 0

    def seen(self, msg_no: int) -> int | None:
        """The Seq ``msg_no`` was relayed as (0 when it was too long ago to say,
        :data:`REFUSED` when the server refused it), or None if it was not dealt with
        yet."""
        if msg_no >= self.next:
            return None
        if self.next - msg_no > RELAYED_WINDOW:
            return 0
        return self._seqs[msg_no % RELAYED_WINDOW]

    def hold(self, msg_no: int, text: bytes | None) -> bool:
        """Keep ``msg_no`` (ahead of ``next``) until its turn; False when there is no
        room for it (the sender will send it again)."""
        size = len(text) if text else 0
        if (
            msg_no in self.held
            or msg_no - self.next > HELD_MESSAGES
            or len(self.held) >= HELD_MESSAGES
            or self.held_bytes + size > HELD_BYTES
        ):
            return False
        self.held[msg_no] = text
        self.held_bytes += size
        return True

    def dealt_with(self, seq: int) -> None:
        """Message ``next`` was relayed as ``seq`` (or :data:`REFUSED`); move on."""
        self._seqs[self.next % RELAYED_WINDOW] = seq
        self.next += 1

    def settle(self, msg_no: int, seq: int) -> None:
        """Message ``msg_no``, :data:`PENDING` until now, was numbered ``seq``."""
        if 0 < self.next - msg_no <= RELAYED_WINDOW:
            slot = msg_no % RELAYED_WINDOW
            if self._seqs[slot] == PENDING:
                self._seqs[slot] = seq

    def pending(self) -> bool:
        """Whether a message is handed to the cluster's store and not numbered yet
        (the store may still refuse it: the room closed elsewhere, Redis said no)."""
        return PENDING in self._seqs

    def take_held(self) -> tuple[bool, bytes | None]:
        """Whether message ``next`` is waiting, and its text (None: it was refused)."""
        if self.next not in self.held:
            return False, None
        text = self.held.pop(self.next)
        self.held_bytes -= len(text) if text else 0
        return True, text


class Budget:
    """A token bucket: ``rate`` a second, at most ``burst`` saved up."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, wanted: int, now: float) -> int:
        """Take up to ``wanted`` tokens at ``now``; return how many were granted."""
        if now > self._at:  # a clock never goes back, but be safe if one does
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted
