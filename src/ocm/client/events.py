"""What a member of a room hears: the events :class:`~ocm.client.ChatClient` yields.

Frozen dataclasses, one per thing that can happen: a :class:`Message`, a :class:`Notice`,
the end (:class:`Closed`), and the client's own findings (:class:`Gap`,
:class:`Undelivered`, :class:`Overflow`, :class:`ErrorReply`). ``Event`` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocm.wire.constants import SEQ_CYCLE

__all__ = [
    "COULD_NOT_RESUME",
    "DROPPED",
    "NETWORK_GONE",
    "Closed",
    "ErrorReply",
    "Event",
    "Gap",
    "Message",
    "Notice",
    "Overflow",
    "PathChanged",
    "Undelivered",
]


@dataclass(frozen=True, slots=True)
class Message:
    """Chat text from ``sender`` (our own messages come back too: the server's copy
    is the delivery confirmation). ``history`` is True for a message from before we
    entered, asked for with the ``history`` option (the delivery extension only).
    ``action`` is True for an action (``/me waves``, sent with
    :meth:`~ocm.client.ChatClient.send_action`): ``text`` is then its words
    (``"waves"``), shown as ``* bob waves``; on the wire it is
    :func:`~ocm.wire.texts.format_action`'s text."""

    sender: str
    text: str
    seq: int
    history: bool = False
    action: bool = False


@dataclass(frozen=True, slots=True)
class Notice:
    """A server line about the room: ``"bob joined"``, ``"bob left"``, ``"bob timed out"``.
    ``history`` as for :class:`Message`: a line from before we entered."""

    text: str
    seq: int
    history: bool = False


# How the client's own verdicts in a Closed begin, when the room may well go on without
# us: the server no longer knows our token (it dropped us after a silence), our network
# went away, or the server refused to move our token to where we are now.
DROPPED = "no longer in the room"
NETWORK_GONE = "our network went away"
COULD_NOT_RESUME = "could not resume"


@dataclass(frozen=True, slots=True)
class Closed:
    """The room is over for us; always the last event. ``reason`` is the server's text
    (``"host alice left; the room is closed"``, ``"server shutting down"``) or says why
    the client concluded it (token no longer valid, ``"the server stopped answering"``,
    ``"the server restarted; room lobby no longer exists"``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The server rejected one of our datagrams; ``text`` says why. With the delivery
    extension an ERROR names the message it refused, which is then no longer in flight."""

    text: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Datagrams were lost: we expected Seq ``expected`` and got ``got`` (``missed`` of
    them). Version 1 reports every hole in the Seqs it sees. With the delivery extension
    the client asks the server for the missing Seqs again, and a Gap means only that the
    server no longer has them (it answered LOST), or that the client gave up on them to
    bound its memory or because the room closed: each Seq is reported once, in order,
    and never delivered afterwards."""

    expected: int
    got: int

    @property
    def missed(self) -> int:
        return (self.got - self.expected) % SEQ_CYCLE


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Our message ``text`` (as sent: an action in its wire form,
    :func:`~ocm.wire.texts.format_action`) was not confirmed.

    ``certain``: the server said it never relayed it, and never will: nobody in the
    room saw it. That is known when we leave a room with the delivery extension (the
    server's DEPARTED says how far it relayed our messages, section 3).

    Otherwise nobody can tell whether it reached the room. Version 1: its copy did not
    come back within the confirm timeout, most likely lost on the way (UDP does not
    retransmit). With the delivery extension the client resends a message until the
    server confirms it, so this is reported only for messages still unconfirmed when
    the room ends for us without the server's word on them (it stopped answering, it
    restarted, the room closed)."""

    text: str
    certain: bool = False


@dataclass(frozen=True, slots=True)
class Overflow:
    """The reader fell behind: the ``dropped`` oldest events were discarded unread."""

    dropped: int


@dataclass(frozen=True, slots=True)
class PathChanged:
    """The client changed how it reaches the server and kept its place in the room
    (section 4 of docs/protocol.md): ``"UDP blocked here; chatting over TCP"``, or
    ``"the network changed; still in the room"``. Nothing was lost: what was missed
    meanwhile is repaired."""

    text: str


Event = Message | Notice | Closed | ErrorReply | Gap | Undelivered | Overflow | PathChanged
