"""The client's sans-I/O core for the delivery extension (section 3 of docs/protocol.md).

:class:`DeliveryState` owns one member's room once the server granted the extension in
the admission (:func:`delivery_granted`): every Seq once and in order, gaps repaired
(REPAIR) and reported only when the server no longer has them (LOST), our messages
resent (DATA) until confirmed (CHAT or ACCEPTED), PINGs answered by STATUS that time the
round trip and reveal trailing loss, a silent or restarted server noticed, and the
room's recent history on request. It makes the datagrams to send itself
(:meth:`DeliveryState.datagrams_to_send`), as aioquic's connection does. What version 1
shares with it (the member list from NOTICE texts, the heartbeat interval) comes from
:mod:`ocm.client.session`.

Like that module it must not know how bytes travel or what time it is: no asyncio, no
socket, no clock read and no random numbers of its own (``now`` and ``random`` are passed
in); :mod:`ocm.client.chat` is the asyncio adapter around it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocm.client.events import DROPPED, Closed, ErrorReply, Event, Gap, Notice, Undelivered
from ocm.client.session import DEFAULT_HEARTBEAT_INTERVAL, chat_message, follow_notice
from ocm.errors import ProtocolError
from ocm.wire.constants import SEQ_CYCLE, SERVER_HEADER_SIZE
from ocm.wire.datagrams import Kind, ServerDatagram
from ocm.wire.delivery import (
    DELIVERY,
    MAX_REPAIR_COUNT,
    MAX_REPAIR_RANGES,
    RELAYED,
    Accepted,
    Chat,
    Data,
    DeliveryKind,
    Departed,
    Leave,
    Lost,
    Ping,
    Repair,
    Restarted,
    Status,
    decode_received,
    encode_extended,
)
from ocm.wire.sealed import SEALED
from ocm.wire.texts import UnknownToken, parse_refusal
from ocm.wire.tunnel import RESUME, TUNNEL

if TYPE_CHECKING:
    from ocm.wire.tcrp import Admission

__all__ = [
    "CHECK_INTERVALS",
    "CLOSE_GRACE",
    "FEATURES",
    "HEAD_RTO",
    "INITIAL_RTO",
    "LIVENESS_INTERVALS",
    "MAX_HELD",
    "MAX_RECOVERIES",
    "MAX_RTO",
    "MIN_RTO",
    "NO_ANSWER",
    "PATH_GRACE",
    "PING_FAST_RETRIES",
    "PING_JITTER",
    "REFUSED_HERE",
    "REORDER_HOLD",
    "REPAIR_INTERVAL",
    "STOPPED_ANSWERING",
    "TAIL_PROBE",
    "DeliveryState",
    "delivery_granted",
    "restarted_reason",
]

# The features OCM's client asks for in CREATE_ROOM / JOIN_ROOM: section 4's tunnel and
# resume build on delivery.
# Section 5's sealed datagrams too: the server grants them only over TLS.
FEATURES = (DELIVERY, RELAYED, TUNNEL, RESUME, SEALED)
# Section 4: a path that heard nothing from the server this long after it was taken
# (or two heartbeat intervals, if shorter: the TCP check's interval follows) is taken
# for blocked: many networks drop UDP and pass TCP. Seconds, so a person waits little;
# several round trips of a bad mobile link, and eleven PINGs (PING_FAST_RETRIES below).
PATH_GRACE = 3.0
# Recoveries in a row after which nothing but refusals came back: the adapter stops
# trying (a path that only seems restored must not cycle for ever).
MAX_RECOVERIES = 3
# Why the path is in doubt (DeliveryState.path_trouble), for the adapter.
NO_ANSWER = "no answer on this path"
REFUSED_HERE = "the server refuses our token from this address"
# A datagram after a gap waits this long before the gap is asked for (REPAIR): UDP may
# deliver a datagram just after the one that overtook it, and then no repair is needed.
REORDER_HOLD = 0.050
# A repair not answered is asked again after this long, or after two round trips if
# that is longer: the answer may still be on its way, and repairs are paced by the server.
REPAIR_INTERVAL = 0.250
# A DATA is resent after 4 round trips, within these bounds, the timeout doubling at
# each resend up to MAX_RTO; before the first round trip is measured, INITIAL_RTO (the
# first PING's STATUS usually measures one before anything is typed).
MIN_RTO = 0.2
MAX_RTO = 2.0
INITIAL_RTO = 0.5
# PINGs go out every heartbeat interval minus a random 0-20%, so that clients that
# joined together do not beat in step; an unanswered one again every quarter interval.
PING_JITTER = 0.2
PING_RETRIES_PER_INTERVAL = 4
# But first, PING_FAST_RETRIES times a tenth of the interval or of PATH_GRACE apart,
# whichever is shorter: a quarter of the default 15 s interval (3.75 s) is longer than
# PATH_GRACE, and one lost PING or STATUS would take UDP for blocked. Each PING comes
# back with probability 0.8 * 0.8 at 20% loss each way, so a new path hears nothing
# within PATH_GRACE with probability (1 - 0.8 * 0.8)^10 ≈ 3.7e-5 (a PING and ten
# retries, the last of which may come too late for its answer), and so does a quiet
# member in the two silent intervals before its doubt (CHECK_INTERVALS), in which a
# PING and ten retries go out (then quarter intervals, if any are left). Bounded: ten extra
# PINGs per unanswered PING, in one interval or 3 s, then four an interval. Only with
# section 4 (recoverable), whose doubts these are: without, nothing happens before
# LIVENESS_INTERVALS, in which the quarter intervals send plenty; and over a tunnel
# (reliable) TCP resends.
PING_FAST_RETRIES = 10
# Nothing at all from the server for this many heartbeat intervals: it is gone.
LIVENESS_INTERVALS = 3
# With section 4 (recoverable) the adapter first asks over TCP whether only the path is
# gone, which takes this many intervals at most: the doubt comes that much sooner, so
# the verdict still comes within LIVENESS_INTERVALS of the server's last word.
CHECK_INTERVALS = 1
# Datagrams held after a gap at most. A gap that holds up more than this is given up
# (reported as a Gap): memory stays bounded however long a repair takes.
MAX_HELD = 4096
# The REPAIR datagrams of one round at most (each asks for up to 64 ranges): the rest
# of a huge gap is asked in the next round, once the server's answers shrank it.
MAX_REPAIRS_PER_ROUND = 4
# A CLOSED that arrives after a gap waits this long for the gap to be repaired, then
# the room ends anyway: a closed room's server may not answer repairs any more.
CLOSE_GRACE = 0.5
# A tail probe: this long (or two retransmission timeouts) after the last datagram of a
# burst, one PING asks for the room's latest Seq, so a lost last message is found in
# about a second, not at the next heartbeat (up to 15 s later). One per burst.
TAIL_PROBE = 0.5
# The most our oldest unconfirmed message waits between two sends (the others back off
# to MAX_RTO): the server holds our later messages until it has this one, so its
# backing off would delay them all. One datagram every half second is no flood.
HEAD_RTO = 0.5
# Unanswered PING nonces remembered (to time the round trip of a late STATUS).
MAX_PINGS_REMEMBERED = 16
STOPPED_ANSWERING = "the server stopped answering"


def delivery_granted(admission: Admission) -> bool:
    """Whether ``admission`` lets the member speak the delivery extension: the server
    granted it and said where the member starts (``seq``) and which incarnation it is
    (``boot``). Anything less is a version 1 member."""
    return DELIVERY in admission.features and admission.seq is not None and bool(admission.boot)


def restarted_reason(room: str) -> str:
    return f"the server restarted; room {room} no longer exists"


@dataclass(slots=True)
class _Missing:
    """Seqs ``first .. last`` (positions, see :class:`DeliveryState`) not received,
    to be asked for (again) at ``due``."""

    first: int
    last: int
    due: float


@dataclass(slots=True)
class _Outgoing:
    """One of our messages in flight: its DATA, resent at ``due`` until confirmed."""

    text: str
    data: bytes
    sent_at: float
    due: float
    rto: float
    sends: int = 1


_Item = Chat | ServerDatagram  # what a Seq carries: CHAT, MESSAGE, NOTICE or CLOSED
_NUMBERED_KINDS = frozenset({Kind.MESSAGE, Kind.NOTICE, Kind.CLOSED, DeliveryKind.CHAT})


class DeliveryState:
    """One member's room under the delivery extension: every Seq once, in order, our
    messages resent until confirmed, the server's liveness watched.

    Sans-I/O like :class:`~ocm.client.session.RoomState`, in the manner of aioquic:
    feed it what happens (:meth:`datagram_received`, :meth:`send`, :meth:`handle_timer`,
    :meth:`leave`, all with ``now`` on the caller's clock), send what
    :meth:`datagrams_to_send` returns, and call :meth:`handle_timer` at
    :meth:`next_deadline`. Each returns the events for the application. The first PING
    (and the history REPAIR) is waiting in :meth:`datagrams_to_send` as soon as the
    object exists.

    Seqs are kept as *positions*: integers that keep counting where the wire's Seq wraps
    from 2**32 - 1 to 1 (position ``p`` is Seq ``(p - 1) % SEQ_CYCLE + 1``), so order
    and ranges are plain integer comparisons. ``delivered`` is the last position handed
    to the application; datagrams after it wait in ``_held`` until the Seqs before them
    arrive or are lost, ``_gaps`` are the missing ranges to repair, ``_lost`` the ranges
    the server answered LOST (or that were given up) not yet reached.

    The server is taken for gone after ``LIVENESS_INTERVALS`` heartbeat intervals
    without a datagram from it, not counting the time :meth:`handle_timer` was late for
    (the process was suspended or blocked, and could not hear anything either). With
    ``recoverable`` the path is in doubt ``CHECK_INTERVALS`` sooner, so that the
    adapter's look over TCP ends within those intervals too.

    ``random`` (returning a float in [0, 1)) jitters the PING schedule; the default, no
    jitter, keeps tests deterministic.
    """

    def __init__(
        self,
        name: str,
        host: str,
        members: Sequence[str],
        *,
        room: str,
        token: str,
        seq: int,
        boot: bytes,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        now: float = 0.0,
        history: int = 0,
        random: Callable[[], float] = lambda: 0.0,
        max_held: int = MAX_HELD,
        relayed: bool = False,
    ) -> None:
        self.name = name
        self.host = host
        self.room = room
        self.token = token
        self.boot = boot
        self.members: list[str] = list(members)
        self.heartbeat_interval = heartbeat_interval
        self.max_held = max_held
        self.ended: Closed | None = None
        self.leaving = False  # we sent LEAVE
        # Granted ``relayed``: the server's word that we are out says how far it relayed
        # our messages, so those in flight at the leave wait for it.
        self.tells_relayed = relayed
        # The server said we are out: DEPARTED, the room's CLOSED, RESTARTED or an
        # unknown-token ERROR (the leave needs no fallback then).
        self.out = False
        self.undelivered = 0
        self.malformed = 0
        self.srtt: float | None = None  # the smoothed round trip, once measured
        # Section 4. With ``recoverable`` (the adapter can resume and tunnel), a path
        # that goes quiet or is refused is not the end: ``path_trouble`` says why it is
        # in doubt, and the adapter tries TCP, then calls path_restored() or end().
        self.recoverable = False
        self.path_trouble: str | None = None
        # The path is reliable (a TCP tunnel): DATA is not resent on a timer, only when
        # a new path is taken (path_restored).
        self.reliable = False
        # Paths restored since the server last sent anything but a refusal.
        self.recoveries = 0
        self._path_heard = False  # anything from the server on the current path
        self._path_since = now
        self._random = random
        self._outbox: list[bytes] = []
        self._last_heard = now
        # Receiving, in positions. The history (K Seqs up to ``seq``, never before Seq 1
        # and never more than can be held) is delivered first.
        start = max(0, seq - min(max(0, history), max_held))
        self.delivered = start
        self._history_end = seq  # positions up to here are history
        self._latest = seq
        self._held: dict[int, _Item] = {}
        self._gaps: list[_Missing] = []
        self._lost: list[tuple[int, int]] = []
        self._closed_at: int | None = None  # a held CLOSED's position
        self._close_by: float | None = None
        self._probe_at: float | None = None  # the tail probe's PING, once a burst ends
        # Sending.
        self._outgoing: dict[int, _Outgoing] = {}  # by MsgNo, oldest first
        self._msg_no = 0
        self._leave_due: float | None = None
        self._leave_rto = INITIAL_RTO
        # Heartbeats.
        self._nonce = 0
        self._pings: dict[int, float] = {}  # unanswered nonce -> when sent
        self._next_ping = now
        self._unanswered_at: float | None = None  # the last PING, while unanswered
        self._retries = 0  # of the unanswered PING, so far
        self._send_ping(now)
        if start < seq:  # the history: asked at once, no reorder to wait for
            self._gaps.append(_Missing(start + 1, seq, now))
            self._send_repairs(now)

    # -- what the adapter reads -----------------------------------------------------

    @property
    def unconfirmed(self) -> int:
        """Our messages in flight: sent, neither their CHAT nor ACCEPTED back yet."""
        return len(self._outgoing)

    @property
    def held(self) -> int:
        """Datagrams received after a gap, waiting for it."""
        return len(self._held)

    def rto(self) -> float:
        """The retransmission timeout: 4 round trips within [MIN_RTO, MAX_RTO]."""
        if self.srtt is None:
            return INITIAL_RTO
        return min(MAX_RTO, max(MIN_RTO, 4 * self.srtt))

    def repair_interval(self) -> float:
        return max(REPAIR_INTERVAL, 2 * self.srtt) if self.srtt is not None else REPAIR_INTERVAL

    def datagrams_to_send(self) -> list[bytes]:
        """The datagrams to send now, in order; each is returned once."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` is next due: a reorder hold or repair, a resend,
        a PING, the liveness limit, a leave to resend. None once the room is over."""
        if self.ended is not None:
            return None
        if self.leaving:
            return self._leave_due
        deadlines = [self._ping_due()]
        if self.path_trouble is None:  # (while the adapter looks into it: nothing due)
            deadlines.append(self._last_heard + self._silence_limit())
            if self.recoverable and not self._path_heard:
                deadlines.append(self._path_since + self.path_grace)
        if self._gaps:
            deadlines.append(min(gap.due for gap in self._gaps))
        if self._outgoing and not self.reliable:
            deadlines.append(min(out.due for out in self._outgoing.values()))
        if self._close_by is not None:
            deadlines.append(self._close_by)
        if self._probe_at is not None:
            deadlines.append(self._probe_at)
        return min(deadlines)

    # -- what the application does ------------------------------------------------

    def send(self, text: str, now: float) -> int:
        """Send ``text`` (non-empty, within the text limit): its DATA is queued, and
        resent until confirmed. Returns its MsgNo (1, 2, ...). A text that does not fit
        in a DATA is refused (LocalProtocolError) and uses up no MsgNo."""
        msg_no = self._msg_no + 1
        data = encode_extended(Data(self.token, msg_no, text))
        self._msg_no = msg_no
        rto = self.rto()
        self._outgoing[msg_no] = _Outgoing(text, data, now, now + rto, rto)
        self._outbox.append(data)
        return msg_no

    def leave(self, now: float) -> list[Event]:
        """Leave the room: LEAVE is queued, and resent every RTO (not doubling: the
        adapter waits about a second, and a lossy path needs every try) until DEPARTED;
        giving up is the adapter's call. Messages still in flight are no longer resent.
        With ``relayed`` they wait for :meth:`departed` (DEPARTED, or the COMPLETE of the
        adapter's LEAVE_ROOM), which says which of them the server relayed; else, or
        when the adapter gives up (:meth:`give_up_outgoing`), they are reported
        Undelivered, not certain. No Closed: the application ended it."""
        if self.ended is not None or self.leaving:
            return []
        if self._closed_at is not None:
            # A CLOSED is in, waiting for the gap before it: the room is over already, and
            # a LEAVE would only be answered with that CLOSED. Give up the gap and end.
            return self._release_the_closed()
        self.leaving = True
        events = [] if self.tells_relayed else self.give_up_outgoing()
        self._leave_rto = self.rto()
        self._leave_due = now + self._leave_rto
        self._outbox.append(encode_extended(Leave(self.token)))
        return events

    def end(self, reason: str) -> list[Event]:
        """The room is over for us (locally decided): Undelivered for each message in
        flight, then the Closed, once. Silent while leaving."""
        if self.ended is not None:
            return []
        if self.leaving:
            self.ended = Closed("left the room")
            return []
        if self._closed_at is not None:
            # The room's CLOSED is in, waiting for the gap before it: that is how the
            # room ended, whatever ends our wait (the server, gone after its shutdown,
            # stopped answering; its tunnel closed).
            events = self._release_the_closed()
            if self.ended is not None:
                return events
        events = self.give_up_outgoing()
        self.ended = Closed(reason)
        events.append(self.ended)
        return events

    # -- time -----------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Event]:
        """Do what is due at ``now``: resend, repair, ping, or end the room."""
        if self.ended is not None:
            return []
        due = self.next_deadline()
        if due is not None and now > due + self.heartbeat_interval:
            # Called a whole interval late: this process did not run (a suspended
            # laptop). Time we could not listen is not the server's silence. (Smaller
            # lateness, a busy loop, is not discounted: else a busy application would
            # never notice a dead server.)
            self._last_heard += now - due
        if self.leaving:
            if self._leave_due is not None and now >= self._leave_due:
                self._outbox.append(encode_extended(Leave(self.token)))
                self._leave_due = now + self._leave_rto
            return []
        if self.path_trouble is None:
            if (
                self.recoverable
                and not self._path_heard
                and now >= self._path_since + self.path_grace
            ):
                self.path_trouble = NO_ANSWER  # blocked here? the adapter tries TCP
            elif now >= self._last_heard + self._silence_limit():
                if not self.recoverable:
                    return self.end(STOPPED_ANSWERING)
                self.path_trouble = STOPPED_ANSWERING  # the path, or the server?
        events: list[Event] = []
        if self._close_by is not None and now >= self._close_by and self._closed_at is not None:
            # The CLOSED waited long enough: what is still missing before it is lost.
            events += self._release_the_closed()
            if self.ended is not None:
                return events
        self._send_repairs(now)
        head = min(self._outgoing, default=0)
        for msg_no, out in self._outgoing.items():
            if now >= out.due and not self.reliable:
                self._outbox.append(out.data)
                out.sends += 1
                # The oldest message holds up our later ones at the server (it relays
                # each member's messages in order): it backs off to HEAD_RTO at most.
                cap = max(HEAD_RTO, self.rto()) if msg_no == head else MAX_RTO
                out.rto = min(cap, 2 * out.rto)
                out.due = now + out.rto
        if self._probe_at is not None and now >= self._probe_at:
            self._probe_at = None
            self._send_ping(now)  # the burst is over: was its last datagram lost?
        if now >= self._ping_due():
            self._send_ping(now)
        return events

    @property
    def path_grace(self) -> float:
        """How long a new path may stay silent before it is taken for blocked."""
        return min(PATH_GRACE, self._silence_limit())

    def _silence_limit(self) -> float:
        """How long the server may be silent: then it is gone, or (``recoverable``) the
        path is in doubt, early enough for the adapter's look over TCP to end within
        LIVENESS_INTERVALS too."""
        intervals = LIVENESS_INTERVALS - CHECK_INTERVALS if self.recoverable else LIVENESS_INTERVALS
        return intervals * self.heartbeat_interval

    def path_lost(self, why: str) -> None:
        """The adapter's path broke (a tunnel's connection closed): ``path_trouble``,
        unless a doubt is being looked into already."""
        if self.recoverable and self.ended is None:
            self.path_trouble = self.path_trouble or why

    def path_restored(self, now: float, *, reliable: bool = False) -> None:
        """The adapter resumed over TCP and has a path again (a new socket, or a
        tunnel if ``reliable``): ask for the room's latest Seq, resend what is in flight
        and repair what was missed, now, and give the new path its grace."""
        self.path_trouble = None
        self.reliable = reliable
        self.recoveries += 1
        self._path_heard = False
        self._path_since = self._last_heard = now
        self._unanswered_at = None  # a new path: its own fast retries
        self._send_ping(now)
        for out in self._outgoing.values():
            self._outbox.append(out.data)
            out.sends += 1
            out.due = now + out.rto
        for gap in self._gaps:
            gap.due = now
        if self.leaving:
            self._leave_due = now

    def _send_ping(self, now: float) -> None:
        self._nonce = self._nonce % 0xFFFFFFFF + 1
        self._pings[self._nonce] = now
        while len(self._pings) > MAX_PINGS_REMEMBERED:
            del self._pings[next(iter(self._pings))]
        self._outbox.append(encode_extended(Ping(self.token, self._nonce, self.boot)))
        self._next_ping = now + self.heartbeat_interval * (1 - PING_JITTER * self._random())
        self._retries = 0 if self._unanswered_at is None else self._retries + 1
        self._unanswered_at = now

    def _ping_due(self) -> float:
        """When the next PING goes out: the heartbeat, or the unanswered one's retry.
        (Worked out when asked: the adapter sets ``recoverable`` and ``reliable``
        after the first PING.)"""
        if self._unanswered_at is None:
            return self._next_ping
        if self._retries < PING_FAST_RETRIES and self.recoverable and not self.reliable:
            retry = min(self.heartbeat_interval, PATH_GRACE) / PING_FAST_RETRIES
            if self.srtt is not None:  # a slow path: its answers are late, not lost
                retry = min(self.heartbeat_interval / 4, max(retry, 1.5 * self.srtt))
        else:
            retry = self.heartbeat_interval / PING_RETRIES_PER_INTERVAL
        return self._unanswered_at + retry

    def _send_repairs(self, now: float) -> None:
        """Ask for every missing range that is due (up to MAX_REPAIRS_PER_ROUND
        datagrams); each is asked again one repair interval later."""
        ranges: list[tuple[int, int]] = []
        limit = MAX_REPAIRS_PER_ROUND * MAX_REPAIR_RANGES
        again = now + self.repair_interval()
        for gap in self._gaps:
            if gap.due > now:
                continue
            gap.due = again
            for wire_range in _wire_ranges(gap.first, gap.last):
                if len(ranges) >= limit:
                    break
                ranges.append(wire_range)
        for start in range(0, len(ranges), MAX_REPAIR_RANGES):
            chunk = tuple(ranges[start : start + MAX_REPAIR_RANGES])
            self._outbox.append(encode_extended(Repair(self.token, chunk)))

    # -- what the server sends ------------------------------------------------------

    def datagram_received(self, data: bytes, now: float) -> list[Event]:
        """One datagram from the server: the events it releases, in Seq order."""
        self._last_heard = now
        self._path_heard = True
        if self.ended is not None:
            return []
        try:
            datagram = decode_received(data)
        except ProtocolError:
            self.malformed += 1
            return self._unreadable(data, now)
        if not (
            isinstance(datagram, ServerDatagram)
            and datagram.kind is Kind.ERROR
            and isinstance(parse_refusal(datagram.text), UnknownToken)
        ):
            self.recoveries = 0  # the path works: the server took us for us
        match datagram:
            case Chat(seq, sender, msg_no, _):
                # Ours, unless from the history: a CHAT from before we entered is an
                # earlier member's of our name, and its MsgNo means nothing to us.
                mine = sender.casefold() == self.name.casefold()
                if mine and self._position(seq) > self._history_end:
                    self._confirmed(msg_no)
                return self._arrived(seq, datagram, now)
            case ServerDatagram(kind=Kind.ERROR):
                return self._error(datagram)
            case ServerDatagram(seq=seq):
                return self._arrived(seq, datagram, now)
            case Status(seq, nonce):
                sent = self._pings.pop(nonce, None)
                if sent is not None:
                    self._rtt_sample(now - sent)
                    self._pings.clear()
                    self._unanswered_at = None
                if not self.leaving:
                    self._reveal(self._position(seq), now)
                return []
            case Accepted(seq, msg_no):
                self._confirmed(msg_no)
                if seq and not self.leaving:  # that Seq exists: we should have it
                    self._reveal(self._position(seq), now)
                return []
            case Lost(first, count):
                start = self._position(first)
                for run in self._take_missing(start, start + count - 1):
                    bisect.insort(self._lost, run)
                return self._release()
            case Departed(relayed):
                self.out = True
                if self.leaving:
                    self.ended = Closed("left the room")
                    return self.departed(relayed)
                # Out of the room without asking (another client with our token left
                # for us): over for us, as an unknown token is.
                events = self.departed(relayed)
                return events + self.end(f"{DROPPED} (the server says: departed)")
            case Restarted():
                self.out = True
                return self.end(restarted_reason(self.room))
        return []  # pragma: no cover (every kind is matched above)

    def _error(self, datagram: ServerDatagram) -> list[Event]:
        if isinstance(parse_refusal(datagram.text), UnknownToken):
            if self.recoverable:
                # Our address changed (a new network) or we were dropped: RESUME says
                # which. While leaving the adapter's fallback asks (RESUME, then
                # LEAVE_ROOM): the token may only be bound to our old address.
                if not self.leaving:
                    self.path_trouble = self.path_trouble or REFUSED_HERE
                return []
            self.out = True
            return self.end(f"{DROPPED} (the server says: {datagram.text})")
        if datagram.seq:  # the MsgNo of the DATA it refused
            refused = self._outgoing.pop(datagram.seq, None)
            return [] if refused is None else [ErrorReply(datagram.text)]
        return [ErrorReply(datagram.text)]

    def _confirmed(self, msg_no: int) -> None:
        # No round-trip sample here, even for a message sent once: its copy may have
        # waited at the server behind an earlier lost one (each member's messages are
        # relayed in order), which is not the network's round trip and would inflate
        # the RTO and the repair interval. PING and STATUS measure it.
        self._outgoing.pop(msg_no, None)

    def _rtt_sample(self, rtt: float) -> None:
        rtt = max(0.0, rtt)
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt

    def departed(self, relayed: int | None) -> list[Event]:
        """The server's word that we left (DEPARTED, or LEAVE_ROOM's COMPLETE): with
        ``relayed`` (the feature), our messages up to that number were relayed, and
        those after it are Undelivered for certain; without it nobody can tell."""
        if relayed is None:
            return self.give_up_outgoing()
        for msg_no in [n for n in self._outgoing if n <= relayed]:
            self._confirmed(msg_no)
        return self.give_up_outgoing(certain=True)

    def give_up_outgoing(self, *, certain: bool = False) -> list[Event]:
        """Undelivered for each message still in flight (``certain``: the server said
        it never relayed them), which are then forgotten."""
        events: list[Event] = [Undelivered(out.text, certain) for out in self._outgoing.values()]
        self.undelivered += len(events)
        self._outgoing.clear()
        return events

    # -- Seq order ------------------------------------------------------------------

    def _position(self, seq: int) -> int:
        """The position of wire ``seq``: the nearest to ``delivered`` (within half the
        cycle either way)."""
        ahead = (seq - self.delivered) % SEQ_CYCLE
        if ahead > SEQ_CYCLE // 2:
            ahead -= SEQ_CYCLE
        return self.delivered + ahead

    def _arrived(self, seq: int, item: _Item, now: float) -> list[Event]:
        position = self._position(seq)
        if position <= self.delivered or position in self._held:
            return []  # a duplicate, or one given up already
        self._unlose(position)  # a server that said LOST and then had it after all
        self._held[position] = item
        self._probe_at = now + max(TAIL_PROBE, 2 * self.rto())
        closing = isinstance(item, ServerDatagram) and item.kind is Kind.CLOSED
        if closing and (self._closed_at is None or position < self._closed_at):
            self._closed_at = position
            self._close_by = now + CLOSE_GRACE
        if position > self._latest:
            self._reveal(position - 1, now)
            self._latest = position
        else:
            self._take_missing(position, position)
        return self._release()

    def _unreadable(self, data: bytes, now: float) -> list[Event]:
        """A datagram we cannot decode that still has a Seq (its header is readable):
        a repair would bring the same bytes, so that Seq is lost to us. Reported as a
        Gap at once, rather than holding up every Seq after it."""
        if len(data) < SERVER_HEADER_SIZE or data[0] not in _NUMBERED_KINDS:
            return []
        position = self._position(int.from_bytes(data[1:5], "big"))
        if position <= self.delivered or position in self._held:
            return []
        if position > self._latest:
            self._reveal(position - 1, now)
            self._latest = position
            lost = [(position, position)]
        else:
            lost = self._take_missing(position, position)
        for run in lost:
            bisect.insort(self._lost, run)
        return self._release()

    def _reveal(self, position: int, now: float) -> None:
        """Seqs up to ``position`` exist (a later one arrived, or a STATUS says so):
        those not seen yet are missing, asked for after the reorder hold."""
        if position > self._latest:
            self._gaps.append(_Missing(self._latest + 1, position, now + REORDER_HOLD))
            self._latest = position

    def _take_missing(self, first: int, last: int) -> list[tuple[int, int]]:
        """Remove ``first .. last`` from the missing ranges; return what was missing."""
        taken: list[tuple[int, int]] = []
        kept: list[_Missing] = []
        for gap in self._gaps:
            if gap.last < first or gap.first > last:
                kept.append(gap)
                continue
            low, high = max(gap.first, first), min(gap.last, last)
            taken.append((low, high))
            if gap.first < low:
                kept.append(_Missing(gap.first, low - 1, gap.due))
            if high < gap.last:
                kept.append(_Missing(high + 1, gap.last, gap.due))
        self._gaps = kept
        return taken

    def _unlose(self, position: int) -> None:
        for index, (first, last) in enumerate(self._lost):
            if first <= position <= last:
                parts = [(a, b) for a, b in ((first, position - 1), (position + 1, last)) if a <= b]
                self._lost[index : index + 1] = parts
                return

    def _give_up_through(self, position: int) -> None:
        """Everything missing up to ``position`` is lost to us."""
        for lost in self._take_missing(self.delivered + 1, position):
            bisect.insort(self._lost, lost)

    def _release_the_closed(self) -> list[Event]:
        """Give up what is still missing before the held CLOSED, and hand out everything
        up to it; the CLOSED ends the room (and is held no longer)."""
        assert self._closed_at is not None
        self._close_by = None
        self._give_up_through(self._closed_at - 1)
        return self._release()

    def _release(self) -> list[Event]:
        """Hand out what is next in order: held datagrams, and lost runs as Gaps; then,
        if more is held after the oldest gap than memory allows, give that gap up."""
        events = self._release_in_order()
        # Held datagrams, and the missing and lost runs between them (a server could
        # cut one gap into many with LOSTs): bounded, the oldest gap going first.
        while self.ended is None and self._gaps and self._over_bound():
            self._give_up_through(self._gaps[0].last)
            events += self._release_in_order()
        return events

    def _over_bound(self) -> bool:
        return len(self._held) > self.max_held or len(self._gaps) + len(self._lost) > 2 * (
            self.max_held + 1
        )

    def _release_in_order(self) -> list[Event]:
        events: list[Event] = []
        while self.ended is None:
            following = self.delivered + 1
            item = self._held.pop(following, None)
            if item is not None:
                self.delivered = following
                events += self._deliver(item, following)
                continue
            if not self._lost or self._lost[0][0] != following:
                break
            last = self._lost.pop(0)[1]
            while self._lost and self._lost[0][0] <= last + 1:
                last = max(last, self._lost.pop(0)[1])
            self.delivered = last
            first = max(following, self._history_end + 1)
            if first <= last:  # history that is gone is just skipped
                events.append(Gap(_wire(first), _wire(last + 1)))
        return events

    def _deliver(self, item: _Item, position: int) -> list[Event]:
        history = position <= self._history_end
        seq = _wire(position)
        match item:
            case Chat(_, sender, _, text):
                return [chat_message(sender, text, seq, history)]
            case ServerDatagram(kind=Kind.MESSAGE, sender=sender, text=text):
                return [chat_message(sender, text, seq, history)]
            case ServerDatagram(kind=Kind.NOTICE, text=text):
                if not history:  # the admission's member list already counts the past
                    follow_notice(self.members, text)
                return [Notice(text, seq, history)]
            case ServerDatagram(kind=Kind.CLOSED, text=text) if not history:
                self.out = True
                self._closed_at = self._close_by = None
                if self.leaving:  # the CLOSED our own (host's) leave caused: not news
                    if not (self.tells_relayed and self._outgoing):
                        self.ended = Closed(text)
                    # else our DEPARTED, which says what of ours was relayed, is due
                    return []
                return self.end(text)
        return []  # a CLOSED from the history (of a room of the same name): skipped


def _wire(position: int) -> int:
    """The wire Seq of a position: 1 .. 2**32 - 1, then 1 again."""
    return (position - 1) % SEQ_CYCLE + 1


def _wire_ranges(first: int, last: int) -> Iterator[tuple[int, int]]:
    """Positions ``first .. last`` as REPAIR ranges (First, Count): at most
    MAX_REPAIR_COUNT each, cut where the Seq wraps."""
    while first <= last:
        seq = _wire(first)
        count = min(last - first + 1, MAX_REPAIR_COUNT, SEQ_CYCLE - seq + 1)
        yield seq, count
        first += count
