"""What a member of a room hears: the events :class:`~ocm.client.ChatClient` yields.

Frozen dataclasses, one per thing that can happen: a :class:`Message`, a :class:`Notice`,
the end (:class:`Closed`), and the client's own findings (:class:`Gap`,
:class:`Undelivered`, :class:`Overflow`, :class:`ErrorReply`). ``Event`` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocm.wire.constants import SEQ_CYCLE

__all__ = [
    "Closed",
    "ErrorReply",
    "Event",
    "Gap",
    "Message",
    "Notice",
    "Overflow",
    "Undelivered",
]


@dataclass(frozen=True, slots=True)
class Message:
    """Chat text from ``sender`` (our own messages come back too: the server's copy
    is the delivery confirmation)."""

    sender: str
    text: str
    seq: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A server line about the room: ``"bob joined"``, ``"bob left"``, ``"bob timed out"``."""

    text: str
    seq: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The room is over for us; always the last event. ``reason`` is the server's text
    (``"host alice left; the room is closed"``, ``"server shutting down"``) or says why
    the client concluded it (token no longer valid, server unreachable)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The server rejected one of our datagrams; ``text`` says why."""

    text: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Datagrams were lost: we expected Seq ``expected`` and got ``got``."""

    expected: int
    got: int

    @property
    def missed(self) -> int:
        return (self.got - self.expected) % SEQ_CYCLE


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Our message ``text`` did not come back from the server within the confirm timeout:
    most likely lost on the way (UDP does not retransmit). Nobody saw it; send it again
    if it matters."""

    text: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """The reader fell behind: the ``dropped`` oldest events were discarded unread."""

    dropped: int


Event = Message | Notice | Closed | ErrorReply | Gap | Undelivered | Overflow
