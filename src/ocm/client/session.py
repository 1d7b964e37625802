"""The client's sans-I/O core: what one member knows about its room.

Datagram bytes in, typed events out. Two cores, chosen at entry, share this module's
helpers:

* :class:`RoomState`, version 1 (section 2 of docs/protocol.md): orders the room's
  datagrams by Seq (:class:`SeqTracker`: gaps reported, duplicates dropped, late ones
  still delivered), matches the server's copies of our messages against those in flight
  (and gives up on the overdue ones, as :class:`Undelivered`), says when the next
  heartbeat is due;
* :class:`~ocm.client.delivery.DeliveryState`, the delivery extension (section 3), lives
  in :mod:`ocm.client.delivery` and builds on what is here.

Both keep the member list from the server's NOTICE texts (:func:`follow_notice`) and
know when the room has ended for us. :class:`EventQueue` holds the events until the
reader takes them, within a bound, and :func:`encode_text` refuses a text the relay
would refuse (:func:`text_limit`, for either core), before it is sent.

This module must not know how bytes travel or what time it is: it imports no asyncio
and no socket, reads no clock and draws no random numbers of its own. The caller passes
``now`` on its own clock and arms one timer for ``next_deadline()`` (aioquic's
``get_timer``); :mod:`ocm.client.chat` is the asyncio adapter that does. All bytes are
read and written with :mod:`ocm.wire`; our own text that cannot be sent is refused with
:class:`~ocm.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from ocm.client.events import (
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Overflow,
    Undelivered,
)
from ocm.errors import ErrorCode, LocalProtocolError, ProtocolError
from ocm.wire.constants import (
    CLIENT_HEADER_SIZE,
    MAX_DATAGRAM,
    SEQ_CYCLE,
    SERVER_HEADER_SIZE,
)
from ocm.wire.datagrams import Kind, decode_server_datagram, next_seq
from ocm.wire.delivery import EXTENDED_HEADER_SIZE, MSG_NO_SIZE
from ocm.wire.texts import (
    Presence,
    TooLong,
    UnknownToken,
    parse_action,
    parse_notice,
    parse_refusal,
)

__all__ = [
    "BASELINE_SLACK",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "MAX_REMEMBERED_MISSING",
    "EventQueue",
    "RoomState",
    "SeqTracker",
    "chat_message",
    "encode_text",
    "fit_text",
    "follow_notice",
    "text_limit",
]

# Section 2 asks for a heartbeat at least every idle_timeout / 3. Without word from the
# server the client assumes the default 60 s and beats every 15 s: three heartbeats in a
# row can be lost before the server drops us. A server that sends its idle timeout in the
# admission (an OCM extension) gets a heartbeat every idle_timeout / 3 if that is sooner.
DEFAULT_HEARTBEAT_INTERVAL = 15.0
# Missing Seqs remembered so a datagram that arrives late (UDP may reorder) is still
# delivered instead of being taken for a duplicate.
MAX_REMEMBERED_MISSING = 1024
# The first Seq a member sees is its baseline, but the datagram sent just before it may
# arrive just after it. Every datagram we get was sent after we joined, so a number a
# little below the baseline is such a late one, never a duplicate: this many are taken.
BASELINE_SLACK = 32


# ---------------------------------------------------------------------------
# Seq order and the room state
# ---------------------------------------------------------------------------


def _previous_seq(seq: int, back: int) -> int:
    return (seq - back - 1) % SEQ_CYCLE + 1


class SeqTracker:
    """Orders one room's Seq numbers: in order, gap, late, or duplicate.

    The first Seq seen is the baseline (a member who joins late never sees Seq 1). The
    :data:`BASELINE_SLACK` numbers below it count as missing, so one that was overtaken
    by the baseline is delivered late rather than dropped as a duplicate.
    """

    def __init__(self, max_missing: int = MAX_REMEMBERED_MISSING) -> None:
        self.last: int | None = None
        self.max_missing = max_missing
        self._missing: dict[int, None] = {}  # insertion-ordered set: oldest first

    def accept(self, seq: int) -> tuple[bool, Gap | None]:
        """Whether to deliver a datagram with ``seq``, and the gap it reveals if any."""
        last = self.last
        if last is None:
            self.last = seq
            self._remember(_previous_seq(seq, back) for back in range(BASELINE_SLACK, 0, -1))
            return True, None
        ahead = (seq - last) % SEQ_CYCLE
        if ahead == 0:
            return False, None  # the same datagram again
        if ahead > SEQ_CYCLE // 2:  # behind us: a duplicate, or a late one we missed
            if seq in self._missing:
                del self._missing[seq]
                return True, None
            return False, None
        self.last = seq
        if ahead == 1:
            return True, None
        # Remember the newest missing numbers only: a huge gap must not grow memory.
        skipped = range(max(1, ahead - self.max_missing), ahead)
        self._remember((last + offset - 1) % SEQ_CYCLE + 1 for offset in skipped)
        return True, Gap(next_seq(last), seq)

    def _remember(self, missing: Iterable[int]) -> None:
        """Note Seqs that may still arrive late, oldest first; forget the oldest beyond
        ``max_missing``."""
        for seq in missing:
            self._missing[seq] = None
        while len(self._missing) > self.max_missing:
            del self._missing[next(iter(self._missing))]


class RoomState:
    """What one member knows about its room, updated by every datagram it receives.

    ``members`` starts from the admission and follows the NOTICE texts; ``pending`` holds
    our messages whose copy has not come back yet, each with the time (on the adapter's
    clock) after which :meth:`expire` reports it :class:`Undelivered`.
    """

    def __init__(
        self,
        name: str,
        host: str,
        members: Sequence[str],
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        now: float = 0.0,
    ) -> None:
        self.name = name
        self.host = host
        self.members: list[str] = list(members)
        self.ended: Closed | None = None
        self.leaving = False  # we sent LEAVE_ROOM
        # The server said we are out: the room's CLOSED or an unknown-token ERROR.
        self.out = False
        self.pending: deque[tuple[str, float]] = deque()  # (text, deadline), oldest first
        self.undelivered = 0  # messages reported Undelivered so far
        self.seq = SeqTracker()
        self.malformed = 0  # datagrams we could not decode (the server broke the protocol)
        # Section 2: the server drops a member it has not heard from for its idle
        # timeout, and any datagram of ours counts. The adapter sends the first
        # heartbeat on entering, at ``now``.
        self.heartbeat_interval = heartbeat_interval
        self._next_heartbeat = now + heartbeat_interval

    @property
    def unconfirmed(self) -> int:
        return len(self.pending)

    def sent(self, text: str, deadline: float) -> None:
        """We sent ``text``; its copy should be back by ``deadline``."""
        self.pending.append((text, deadline))

    def datagram_sent(self, now: float) -> None:
        """Any datagram of ours reached the wire at ``now``: the server hears from us,
        so the next heartbeat is due one interval later."""
        self._next_heartbeat = now + self.heartbeat_interval

    def heartbeat_due(self, now: float) -> bool:
        """Whether to send a heartbeat at ``now`` (never once the room is over)."""
        return self.ended is None and now >= self._next_heartbeat

    def expire(self, now: float) -> list[Event]:
        """Our messages whose copy is overdue at ``now``: given up for lost."""
        events: list[Event] = []
        # Deadlines grow in sending order (one timeout for all), so the overdue come first.
        while self.pending and self.pending[0][1] <= now and self.ended is None:
            self.undelivered += 1
            events.append(Undelivered(self.pending.popleft()[0]))
        return events

    def next_deadline(self) -> float | None:
        """When the adapter should next call :meth:`expire` and :meth:`heartbeat_due`:
        the first overdue copy or the next heartbeat, whichever is sooner; None once the
        room is over."""
        if self.ended is not None:
            return None
        if not self.pending:
            return self._next_heartbeat
        return min(self.pending[0][1], self._next_heartbeat)

    def end(self, reason: str) -> list[Event]:
        """The room is over (locally decided): the last event, once."""
        if self.ended is not None:
            return []
        self.ended = Closed(reason)
        return [self.ended]

    def datagram_received(self, data: bytes) -> list[Event]:
        if self.ended is not None:
            return []
        try:
            datagram = decode_server_datagram(data)
        except ProtocolError:
            self.malformed += 1
            return []
        if datagram.kind is Kind.ERROR:
            refusal = parse_refusal(datagram.text)
            if isinstance(refusal, UnknownToken):
                self.out = True
                return self.end(f"no longer in the room (the server says: {datagram.text})")
            if isinstance(refusal, TooLong):
                self._refused_too_long(refusal.limit)
            return [ErrorReply(datagram.text)]
        events: list[Event] = []
        if datagram.seq:  # section 2: only ERROR carries 0; be lenient and deliver it
            deliver, gap = self.seq.accept(datagram.seq)
            if not deliver:
                return []
            if gap is not None:
                events.append(gap)
        match datagram.kind:
            case Kind.MESSAGE:
                if datagram.sender.casefold() == self.name.casefold():
                    self._confirmed(datagram.text)
                events.append(chat_message(datagram.sender, datagram.text, datagram.seq))
            case Kind.NOTICE:
                self._follow(datagram.text)
                events.append(Notice(datagram.text, datagram.seq))
            case Kind.CLOSED:
                self.out = True
                if self.leaving:  # the CLOSED our own (host's) leave caused: not news
                    self.ended = Closed(datagram.text)
                    return []
                events += self.end(datagram.text)
        return events

    def _refused_too_long(self, limit: int) -> None:
        """The relay refused one of our chat lines as longer than ``limit`` bytes,
        without saying which: that fits only a text over ``limit``, and every such text
        is refused, so drop the oldest. Other refusals cannot be told apart ("not valid
        UTF-8" never fits a text we encoded), so the rest is left to the timeout
        (reported Undelivered) rather than drop a good message in its place."""
        for index, (text, _) in enumerate(self.pending):
            if len(text.encode("utf-8")) > limit:
                del self.pending[index]
                return

    def _confirmed(self, text: str) -> None:
        # Matched by text, not taken in order: when one message is lost, the next copy
        # must not confirm it in its place. A copy that comes after its message was
        # given up for lost matches nothing.
        for index, (sent, _) in enumerate(self.pending):
            if sent == text:
                del self.pending[index]
                return

    def _follow(self, text: str) -> None:
        follow_notice(self.members, text)


def chat_message(sender: str, text: str, seq: int, history: bool = False) -> Message:
    """The :class:`Message` a MESSAGE's ``text`` makes (either core): an action
    (:func:`~ocm.wire.texts.parse_action`) as its words with ``action=True``, so a bot
    reads ``"waves"``, never the wire's ``"\x01ACTION waves\x01"``."""
    words = parse_action(text)
    if words is None:
        return Message(sender, text, seq, history)
    return Message(sender, words, seq, history, action=True)


def follow_notice(members: list[str], text: str) -> None:
    """Update ``members`` from a NOTICE text (``NAME joined``, ``left``, ``timed out``;
    names compared case-insensitively, as the server does). Other texts change nothing."""
    event = parse_notice(text)
    if event is None:
        return
    name = event.name
    folded = name.casefold()
    present = [m for m in members if m.casefold() == folded]
    if event.what is Presence.JOINED:
        if not present:
            members.append(name)
    else:
        for member in present:
            members.remove(member)


# ---------------------------------------------------------------------------
# What may be sent
# ---------------------------------------------------------------------------


def text_limit(room: str, token: str, name: str, *, delivery: bool = False) -> int:
    """The longest text (UTF-8 bytes) member ``name`` with ``token`` may send in ``room``.

    Two limits: our datagram and the relayed one must each fit in 4096 bytes. Version 1
    (section 2): 2 + room + token + text, and 6 + sender name + text. The delivery
    extension (section 3): a DATA of 3 + token + MsgNo (4) + text, relayed as a CHAT of
    6 + sender name + MsgNo (4) + text.
    """
    if delivery:
        ours = MAX_DATAGRAM - EXTENDED_HEADER_SIZE - len(token.encode()) - MSG_NO_SIZE
        relayed = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(name.encode()) - MSG_NO_SIZE
        return min(ours, relayed)
    ours = MAX_DATAGRAM - CLIENT_HEADER_SIZE - len(room.encode()) - len(token.encode())
    relayed = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(name.encode())
    return min(ours, relayed)


def fit_text(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-8 bytes, cut on a character
    boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def encode_text(text: str, limit: int) -> bytes:
    """The UTF-8 of ``text`` if it may be sent (``limit`` bytes at most); else
    LocalProtocolError (``bad_request`` for empty or unencodable text, ``too_large``).

    Too-long text is refused, never split: splitting would interleave the parts with
    other members' messages and cut words or characters.
    """
    if not text:
        raise LocalProtocolError(ErrorCode.BAD_REQUEST, "an empty message cannot be sent")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            ErrorCode.BAD_REQUEST, "the message is not valid Unicode"
        ) from None
    if len(data) > limit:
        raise LocalProtocolError(
            ErrorCode.TOO_LARGE,
            f"message too long: {len(data)} bytes, at most {limit} (not sent)",
        )
    return data


# ---------------------------------------------------------------------------
# Events waiting for the reader
# ---------------------------------------------------------------------------


class EventQueue:
    """Events waiting for their reader, ``limit`` at most.

    A reader that falls behind (a send-only bot never reads) loses the oldest: memory
    stays bounded however busy the room. The loss is reported, before what is left, as
    one :class:`Overflow`. The newest event, such as the final :class:`Closed`, is never
    the one dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: deque[Event] = deque()
        self._dropped = 0  # events dropped since the reader last took one

    def __len__(self) -> int:
        """Events :meth:`take` will return, the Overflow report included."""
        return len(self._events) + (1 if self._dropped else 0)

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            if len(self._events) >= self.limit:
                self._events.popleft()
                self._dropped += 1
            self._events.append(event)

    def take(self) -> Event | None:
        """The next event for the reader, oldest first, or None when there is none."""
        if self._dropped:  # the dropped were the oldest: report them first
            dropped, self._dropped = self._dropped, 0
            return Overflow(dropped)
        return self._events.popleft() if self._events else None
