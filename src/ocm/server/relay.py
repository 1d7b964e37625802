"""The relay core: what the server does with each UDP datagram (sections 2 and 3).

Bytes and a source address in, datagrams out, time passed in. It checks every datagram
on its own (size, layout, token, room, source IP, UTF-8), so one malformed datagram
costs its sender an ERROR and nobody else anything.

Version 1 datagrams take the fast path: one chat line, one datagram to the room. A
delivery member's extended datagrams (first byte 0) are DATA (relayed once per message
number, as CHAT to delivery members and MESSAGE to version 1 members), PING (answered
with STATUS), REPAIR (answered from the room's history, within the member's budget)
and LEAVE (answered with DEPARTED). Every chat line, NOTICE and CLOSED of a room goes
into its history.

Section 5: a sealed member's datagrams arrive sealed with its own key (Marker 0, Type 5,
its Session): opened, each Counter once, they are extended datagrams like any other,
and whatever answers them goes out sealed once with the room key, the same bytes to
every member. A sealed member's token counts only inside its own sealed datagrams. A
sealed datagram that does not open (forged or altered), or comes again (replayed), is
dropped without an answer and counted in :attr:`RelayCore.sealed_refused`; one whose
Session the server does not know (it restarted, or the member is long gone) is answered
like an unknown token, with an ERROR no longer than what came; one that an earlier
incarnation gave out (its first bytes are not this boot id's) with RESTARTED.

Reflection: an unauthenticated datagram is never answered with more bytes than it
carried, and each source IP gets at most ``Limits.error_replies_per_second`` ERRORs a
second (RESTARTED, the answer to a PING from before a restart: 100 a second, since a
whole office behind one address may be asking at once).

Each refused datagram is counted in :attr:`RelayCore.refused` under one :class:`Refused`
reason (the ``reason`` label of ``ocm_datagrams_dropped_total``, see
:mod:`ocm.server.metrics`), so the reasons add up to :attr:`RelayCore.rejected`: one
dict increment, off the relay's fast path. Each is also a DEBUG line (its source IP and
why: unknown token, too long, ...), ten at once and one a second at most: a flood of bad
datagrams must not flood the log. Never its token, nor its text.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from ocm.errors import ErrorCode, ProtocolError
from ocm.server.cluster.entries import Entry, Op
from ocm.server.guards import ErrorReplyLimiter, LogLimiter, held_back
from ocm.server.history import PENDING, REFUSED
from ocm.server.registry import MAX_HELD_TOTAL, Address, Member, Outgoing, RoomRegistry
from ocm.wire.constants import CLIENT_HEADER_SIZE, MAX_DATAGRAM, SEQ_CYCLE, SERVER_HEADER_SIZE
from ocm.wire.datagrams import Kind, server_datagram_prefix, split_client_datagram
from ocm.wire.delivery import (
    BOOT_SIZE,
    CHAT_OVERHEAD,
    EXTENDED_HEADER_SIZE,
    SERVER_HEADER,
    Accepted,
    ClientType,
    DeliveryKind,
    Lost,
    Restarted,
    Status,
    chat_prefix,
    data_body,
    encode_received,
    leave_body,
    ping_body,
    repair_body,
    split_extended,
)
from ocm.wire.sealed import SEALED_TYPE, SESSION_SIZE, Opener, Refusal
from ocm.wire.texts import (
    RESTARTED_TEXT,
    Malformed,
    NotUtf8,
    TooLong,
    UnknownToken,
    format_refusal,
)

__all__ = ["Answer", "Answers", "Refused", "RelayCore"]

logger = logging.getLogger("ocm.server.relay")  # ``log`` here is a member's RelayedLog

# What the relay sends for one datagram: one datagram, to each of these addresses; or,
# for the few datagrams that need more than one (a chat line in a room of both kinds of
# member, a REPAIR), a list of them.
Answer = tuple[bytes, tuple[Address, ...]]
Answers = Answer | list[Answer]
# RESTARTED replies per source IP per second (and as many in a burst).
RESTARTED_RATE = 100.0

_MESSAGE = Kind.MESSAGE
_ERROR_PREFIX = server_datagram_prefix(Kind.ERROR, 0)
_UNKNOWN_TOKEN = format_refusal(UnknownToken())
_NOT_UTF8 = format_refusal(NotUtf8())
_MALFORMED = format_refusal(Malformed())
_DATA = int(ClientType.DATA)  # plain ints: the fast path compares and packs them
_CHAT = int(DeliveryKind.CHAT)
_EXTENDED_HEADER = EXTENDED_HEADER_SIZE
_RESTARTED = encode_received(Restarted(RESTARTED_TEXT))


class Refused(StrEnum):
    """Why the relay refused a datagram: a label value, so a short snake_case word."""

    UNKNOWN_TOKEN = "unknown_token"  # no such member (room, token, source IP), in clear
    UNKNOWN_SESSION = "unknown_session"  # sealed, with a Session this server does not know
    RESTARTED = "restarted"  # from a member of an earlier incarnation (answered RESTARTED)
    TOO_LARGE = "too_large"  # a datagram over MAX_DATAGRAM bytes
    TOO_LONG = "too_long"  # a chat line whose relayed copy would be over MAX_DATAGRAM
    NOT_UTF8 = "not_utf8"
    MALFORMED = "malformed"  # its layout is broken (sizes past the end, a bad body)
    SEALED_FORGED = "sealed_forged"  # does not open: altered, or not sealed with the key
    SEALED_REPLAYED = "sealed_replayed"  # a Counter seen before, or older than the window
    SEALED_MALFORMED = "sealed_malformed"  # too short to open, or no extended datagram inside


_SEALED_REFUSED = {
    Refusal.FORGED: Refused.SEALED_FORGED,
    Refusal.REPLAYED: Refused.SEALED_REPLAYED,
    Refusal.MALFORMED: Refused.SEALED_MALFORMED,
    Refusal.UNKNOWN: Refused.UNKNOWN_SESSION,  # (the opener never says it; for safety)
}


class RelayCore:
    """Turns client datagrams into relayed MESSAGEs and ERROR replies."""

    def __init__(
        self,
        registry: RoomRegistry,
        errors: ErrorReplyLimiter | None = None,
        restarts: ErrorReplyLimiter | None = None,
    ) -> None:
        self.registry = registry
        self.errors = errors or ErrorReplyLimiter()
        self.restarts = restarts or ErrorReplyLimiter(RESTARTED_RATE)
        # Counters for logs and tests: what was dropped and why.
        self.relayed = 0
        self.rejected = 0
        self.duplicates = 0  # DATA that arrived again: confirmed, not relayed
        self.repaired = 0  # datagrams sent again on request
        self.unknown = 0  # extended datagrams of a Type this server does not know
        # Early DATA dropped unanswered, with no room left to wait (the sender sends it
        # again): neither relayed nor refused.
        self.not_held = 0
        # Every refused datagram (``rejected``), by why: the reasons add up to it.
        self.refused: dict[Refused, int] = dict.fromkeys(Refused, 0)
        # Section 5: sealed datagrams dropped, by why (forged, replayed, ...).
        self.sealed_refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)
        self._refusal_lines = LogLimiter()

    def datagram_received(self, data: bytes, address: Address, now: float) -> list[Outgoing]:
        """Handle one client datagram from ``address``; return what to send."""
        answer = self.answer(data, address, now)
        if answer is None:
            return []
        if isinstance(answer, tuple):
            return [Outgoing(*answer)]
        return [Outgoing(*item) for item in answer]

    def answer(self, data: bytes, address: Address, now: float) -> Answers | None:
        """:meth:`datagram_received` for the UDP adapter's hot path.

        The relay answers most datagrams with at most one datagram (to the room, or an
        ERROR to the sender), so it returns that pair, or None, and a relayed chat line
        allocates nothing but the datagram itself; the few that need more get a list.
        """
        size = len(data)
        if size and not data[0]:
            if size > 1 and data[1] == SEALED_TYPE:
                return self._sealed(data, address, now)
            return self._extended(data, address, now, None)
        # Fast path, inlined from wire.datagrams.split_client_datagram: a chat datagram
        # is parsed with two index reads and three slices.
        if CLIENT_HEADER_SIZE <= size <= MAX_DATAGRAM and data[0] and data[1]:
            room_end = CLIENT_HEADER_SIZE + data[0]
            token_end = room_end + data[1]
            if token_end <= size:
                member = self.registry.authenticate(
                    data[CLIENT_HEADER_SIZE:room_end], data[room_end:token_end], address[0]
                )
                if member is None or member.opener is not None:  # sealed: only sealed
                    return self._refuse(address, now, size, Refused.UNKNOWN_TOKEN, _UNKNOWN_TOKEN)
                self.registry.touch(member, address, now)
                if token_end == size:
                    return None  # a heartbeat: registered, not relayed
                text = data[token_end:]
                room = member.room
                relayed_size = SERVER_HEADER_SIZE + len(member.name_bytes) + len(text)
                if relayed_size > MAX_DATAGRAM:
                    limit = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(member.name_bytes)
                    too_long = format_refusal(TooLong(limit))
                    return self._refuse(address, now, None, Refused.TOO_LONG, too_long)
                # ASCII is valid UTF-8 and much cheaper to recognise than to decode.
                if not text.isascii():
                    try:
                        text.decode("utf-8")
                    except UnicodeDecodeError:
                        return self._refuse(address, now, None, Refused.NOT_UTF8, _NOT_UTF8)
                if room.bus is not None:  # a cluster's room: numbered by the cluster
                    if room.bus.publish(room, Op.SAY, Entry(_MESSAGE, text, member.name_bytes)):
                        self.relayed += 1
                    else:
                        self.not_held += 1
                    return None
                self.relayed += 1
                seq = room.next_seq()
                message = server_datagram_prefix(_MESSAGE, seq, member.name_bytes) + text
                if room.history is not None:  # kept once a delivery member is in
                    room.history.append(seq, message)
                # Delivery members read MESSAGE too: a version 1 member's line reaches
                # everyone as one datagram (a CHAT would be 4 bytes longer, and a line at
                # the version 1 limit would not fit).
                return message, room.addresses
        try:
            split_client_datagram(data)
        except ProtocolError as error:
            return self._refuse(address, now, size, _layout(error), error.message)
        raise AssertionError("fast path and decoder disagree")  # pragma: no cover

    # -- the delivery extension (section 3) ---------------------------------------------

    def _sealed(self, data: bytes, address: Address, now: float) -> Answers | None:
        """Section 5: open a sealed member's datagram, answer what is inside, and seal
        the answers with its room's key."""
        registry = self.registry
        session = data[2 : 2 + SESSION_SIZE]
        member = registry.sealed_member(session, address[0], now)
        if member is None:
            self.sealed_refused[Refusal.UNKNOWN] += 1
            if len(session) == SESSION_SIZE and not session.startswith(registry.session_prefix):
                # Given out by an earlier incarnation: say RESTARTED, in clear (the key
                # died with it); the client believes it only once RESUME is refused.
                return self._restarted(address, now, len(data))
            return self._refuse(address, now, len(data), Refused.UNKNOWN_SESSION, _UNKNOWN_TOKEN)
        opener = member.opener
        assert opener is not None
        inner = opener.open(data)
        if isinstance(inner, Refusal):
            self._drop_sealed(inner)
            return None
        if not inner or inner[0]:  # a sealed member speaks extended datagrams only
            self._drop_sealed(Refusal.MALFORMED)
            return None
        answer = self._extended(inner, address, now, opener)
        sealer = member.room.sealer
        if answer is None or sealer is None:
            return answer
        if isinstance(answer, tuple):
            return sealer.seal(answer[0]), answer[1]
        return [(sealer.seal(datagram), addresses) for datagram, addresses in answer]

    def _extended(
        self, data: bytes, address: Address, now: float, opener: Opener | None
    ) -> Answers | None:
        """An extended datagram (section 3); ``opener`` is the key it came sealed with
        (section 5), whose member alone its token may name, or None: not sealed."""
        size = len(data)
        # Fast path, as version 1's: a DATA that is its member's next message, with none
        # waiting, from the token's own IP, is parsed with index reads and slices and
        # relayed without building a datagram object. Anything else takes the full path.
        if size > 8 and data[1] == _DATA and data[2] and size <= MAX_DATAGRAM:
            token_end = _EXTENDED_HEADER + data[2]
            number_end = token_end + 4
            member = self.registry.by_token.get(data[_EXTENDED_HEADER:token_end])
            log = None if member is None else member.relayed
            if (
                log is not None
                and member.opener is opener  # type: ignore[union-attr]
                and not log.held
                and member.room.bus is None  # type: ignore[union-attr]
                and number_end < size
                and member.ip == address[0]  # type: ignore[union-attr]
                and int.from_bytes(data[token_end:number_end]) == log.next
            ):
                assert member is not None
                text = data[number_end:]
                name = member.name_bytes
                if CHAT_OVERHEAD + len(name) + len(text) <= MAX_DATAGRAM and (
                    text.isascii() or _is_utf8(text)
                ):
                    self.registry.touch(member, address, now)
                    self.relayed += 1
                    room = member.room
                    seq = room.next_seq()
                    log.dealt_with(seq)
                    chat = SERVER_HEADER.pack(_CHAT, seq, len(name)) + name + data[token_end:]
                    history = room.history
                    assert history is not None  # a delivery member is in the room
                    history.append(seq, chat)
                    if not room.v1_addresses:
                        return chat, room.delivery_addresses
                    message = server_datagram_prefix(_MESSAGE, seq, name) + text
                    return [(chat, room.delivery_addresses), (message, room.v1_addresses)]
        try:
            kind, token, body = split_extended(data)
        except ProtocolError as error:
            return self._refuse(address, now, size, _layout(error), error.message)
        member = self.registry.authenticate_token(token, address[0])
        if member is not None and member.opener is not opener:
            member = None  # a sealed member's token in clear, or in another's datagram
        if member is None or member.relayed is None:
            return self._stranger(kind, token, body, address, now, size, opener)
        self.registry.touch(member, address, now)
        try:
            match kind:
                case ClientType.DATA:
                    return self._data(member, body, address, now)
                case ClientType.PING:
                    nonce, _ = ping_body(body)
                    return encode_received(Status(member.room.seq, nonce)), (address,)
                case ClientType.REPAIR:
                    return self._repair(member, repair_body(body), address, now)
                case ClientType.LEAVE:
                    leave_body(body)
                    return self._leave(member, address, now)
        except ProtocolError:
            return self._refuse(address, now, None, Refused.MALFORMED, _MALFORMED)
        # Shared PROTOCOL.md section 3: an unknown kind is dropped and counted.
        self.unknown += 1
        return None

    def _stranger(
        self,
        kind: int,
        token: bytes,
        body: bytes,
        address: Address,
        now: float,
        size: int,
        opener: Opener | None,
    ) -> Answer | None:
        """An extended datagram whose token is not a delivery member's (from that IP);
        ``opener``: the key it came sealed with, as for :meth:`_extended`."""
        restarted = kind == ClientType.PING and len(body) == 4 + BOOT_SIZE
        if restarted and body[4:] != self.registry.boot:
            # Joined an earlier incarnation: every room of that one is gone.
            return self._restarted(address, now, size)
        reply = self.registry.gone_reply(token, address[0], now, opener)
        if reply is not None:  # its room closed, or it left: say so again
            return reply, (address,)
        return self._refuse(address, now, size, Refused.UNKNOWN_TOKEN, _UNKNOWN_TOKEN)

    def _data(self, member: Member, body: bytes, address: Address, now: float) -> Answers | None:
        """Relay a DATA once, in its sender's order (an early one waits for those before
        it, see :class:`~ocm.server.history.RelayedLog`); confirm a repeat with ACCEPTED;
        refuse a text that cannot be relayed with an ERROR carrying its MsgNo."""
        log = member.relayed
        assert log is not None
        msg_no, text_bytes = data_body(body)
        refusal = self._check_text(member, text_bytes)
        text: bytes | None = text_bytes
        seq = log.seen(msg_no)
        if seq == PENDING:  # handed to the cluster, not numbered yet: it will be confirmed
            self.duplicates += 1
            return None
        if seq is not None and seq != REFUSED:  # a retransmission or a network duplicate
            self.duplicates += 1
            return encode_received(Accepted(seq, msg_no)), (address,)
        if refusal is not None and seq == REFUSED:  # refused before; its ERROR was lost
            return self._refuse(address, now, None, *refusal, msg_no)
        if refusal is not None:
            text = None  # dealt with once its turn comes: the ones after need not wait
        if msg_no != log.next:
            if msg_no in log.held:
                self.duplicates += 1
                return None
            registry = self.registry
            size = len(text) if text else 0
            if registry.held_bytes + size > MAX_HELD_TOTAL or not log.hold(msg_no, text):
                # No room to wait: say nothing (not even a refusal), so the sender sends
                # it again, by when the ones before it will have come.
                self.not_held += 1
                return None
            registry.held_bytes += size
            if refusal is None:
                return None
            return self._refuse(address, now, None, *refusal, msg_no)
        answers: list[Answer] = []
        waiting = True
        while waiting:
            if text is None:
                log.dealt_with(REFUSED)
            elif not self._relay_data(member, log.next, text, answers):
                break  # the cluster's queue is full: the sender sends it again
            waiting, text = log.take_held()
            self.registry.held_bytes -= len(text) if text else 0
        if refusal is not None:
            error = self._refuse(address, now, None, *refusal, msg_no)
            if error is not None:
                answers.append(error)
        return answers[0] if len(answers) == 1 else answers or None

    def _check_text(self, member: Member, text: bytes) -> tuple[Refused, str] | None:
        """Why ``text`` cannot be relayed as a CHAT of ``member``'s (the reason and the
        ERROR's text), or None."""
        if CHAT_OVERHEAD + len(member.name_bytes) + len(text) > MAX_DATAGRAM:
            limit = MAX_DATAGRAM - CHAT_OVERHEAD - len(member.name_bytes)
            return Refused.TOO_LONG, format_refusal(TooLong(limit))
        if not text.isascii():
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                return Refused.NOT_UTF8, _NOT_UTF8
        return None

    def _relay_data(self, member: Member, msg_no: int, text: bytes, into: list[Answer]) -> bool:
        """Relay message ``msg_no`` of ``member``: CHAT to delivery members, MESSAGE to
        version 1 members, into the history. In a cluster's room, hand it to the bus
        instead (False: it could not take it now)."""
        log = member.relayed
        assert log is not None
        room = member.room
        if room.bus is not None:
            entry = Entry(_CHAT, text, member.name_bytes, msg_no)
            if not room.bus.publish(room, Op.SAY, entry):
                self.not_held += 1
                return False
            self.relayed += 1
            log.dealt_with(PENDING)
            return True
        self.relayed += 1
        seq = room.next_seq()
        log.dealt_with(seq)
        chat = chat_prefix(seq, member.name_bytes, msg_no) + text
        history = room.history
        assert history is not None  # a delivery member is in the room
        history.append(seq, chat)
        into.append((chat, room.delivery_addresses))
        if room.v1_addresses:
            message = server_datagram_prefix(_MESSAGE, seq, member.name_bytes) + text
            into.append((message, room.v1_addresses))
        return True

    def _repair(
        self, member: Member, ranges: tuple[tuple[int, int], ...], address: Address, now: float
    ) -> Answers | None:
        """The Seqs asked for, as first sent, within the member's budget; one LOST for the
        part of a range older than the history; nothing for Seqs not sent yet.

        The work is bounded by the budget, not by what was asked: the ranges are cut by
        arithmetic (the history holds the newest Seqs, consecutive), then only the
        granted datagrams are looked up.
        """
        room = member.room
        latest = room.seq
        history = room.history
        assert history is not None  # a delivery member is in the room
        kept = len(history)  # the Seqs latest - kept + 1 .. latest
        plan: list[tuple[int, int, int]] = []  # (first, lost, available) per range
        wanted = 0
        for first, count in ranges:
            behind = (latest - first) % SEQ_CYCLE  # how many Seqs before the newest
            if latest == 0 or behind >= SEQ_CYCLE // 2:
                continue  # not sent yet: the whole range is in the future
            count = min(count, behind + 1)
            lost = min(count, max(0, behind - kept + 1))
            plan.append((first, lost, count - lost))
            wanted += (1 if lost else 0) + count - lost
        budget = member.repairs
        assert budget is not None
        left = budget.take(wanted, now)
        self.repaired += left
        to = (address,)
        answers: list[Answer] = []
        for first, lost, available in plan:
            if lost and left:
                answers.append((encode_received(Lost(first, lost)), to))
                left -= 1
            start = first + lost
            for offset in range(min(available, left)):
                datagram = history.get((start + offset - 1) % SEQ_CYCLE + 1)
                assert datagram is not None  # within the newest ``kept``
                answers.append((datagram, to))
            left -= min(available, left)
        return answers or None

    def _leave(self, member: Member, address: Address, now: float) -> Answers:
        outgoing = self.registry.leave_member(member, now)
        reply = self.registry.gone_reply(member.token_bytes, address[0], now, member.opener)
        assert reply is not None  # leave_member just remembered it
        return [(reply, (address,)), *((out.datagram, out.addresses) for out in outgoing)]

    def _count(self, reason: Refused) -> None:
        self.rejected += 1
        self.refused[reason] += 1

    def _drop_sealed(self, refusal: Refusal) -> None:
        """A sealed datagram dropped without an answer, counted under ``refusal``."""
        self.sealed_refused[refusal] += 1
        self._count(_SEALED_REFUSED[refusal])

    def _restarted(self, address: Address, now: float, size: int) -> Answer | None:
        """RESTARTED to a member of an earlier incarnation: counted, a few a second to
        one address, and never longer than the ``size`` bytes that came."""
        self._count(Refused.RESTARTED)
        if len(_RESTARTED) > size or not self.restarts.allow(address[0], now):
            return None
        return _RESTARTED, (address,)

    def _refuse(
        self,
        address: Address,
        now: float,
        cap: int | None,
        reason: Refused,
        why: str,
        msg_no: int = 0,
    ) -> Answer | None:
        """An ERROR saying ``why`` to ``address``, counted under ``reason``; ``cap``
        bounds its size for unauthenticated senders."""
        self._count(reason)
        allowed = self.errors.allow(address[0], now)
        if logger.isEnabledFor(logging.DEBUG):
            held = self._refusal_lines.allow(now)
            if held is not None:
                logger.debug(
                    "refused a datagram from %s: %s%s%s",
                    address[0],
                    why,
                    "" if allowed else " (no ERROR sent: too many to that IP)",
                    held_back(held),
                )
        if not allowed:
            return None
        # Section 3: an ERROR that answers a DATA carries its MsgNo where Seq would be.
        prefix = _ERROR_PREFIX if not msg_no else server_datagram_prefix(Kind.ERROR, msg_no)
        reply = prefix + why.encode("utf-8")
        if cap is not None:
            if cap < SERVER_HEADER_SIZE:
                return None  # even a bare header would be more than we received
            reply = reply[:cap]
        return reply, (address,)


def _layout(error: ProtocolError) -> Refused:
    """The reason a datagram the decoder refused is counted under."""
    return Refused.TOO_LARGE if error.code == ErrorCode.TOO_LARGE else Refused.MALFORMED


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
