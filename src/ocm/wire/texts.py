"""The fixed texts of the protocol: what the server writes, and how a client reads it.

Version 1 carries some facts as text: NOTICE datagrams say who came and went
("bob joined", "bob left", "bob timed out"), CLOSED datagrams say why the room ended,
and ERROR datagrams say why a datagram was refused. The server writes them and clients
read them back (to follow the member list, to tell a refused message from a lost one),
so each is declared here once, as a formatter and its parser, and both ends use the
pair. A parser returns None for a text it does not recognise (another server may word
things its own way); it never raises.

One convention lives inside the chat text itself, between clients: an action (``/me
waves``) travels as IRC's CTCP ACTION, ``"\x01ACTION waves\x01"`` (:func:`format_action`,
:func:`parse_action`). A server relays it unchanged, as any other text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACTION_END",
    "ACTION_START",
    "RESTARTED_TEXT",
    "SHUTDOWN_REASON",
    "ClosedReason",
    "HostGone",
    "Malformed",
    "MemberEvent",
    "NotUtf8",
    "Presence",
    "Refusal",
    "ServerShutdown",
    "TooLong",
    "UnknownToken",
    "format_action",
    "format_closed",
    "format_notice",
    "format_refusal",
    "parse_action",
    "parse_closed",
    "parse_notice",
    "parse_refusal",
]


class Presence(StrEnum):
    """What a NOTICE says happened to a member (and how a host ended its room)."""

    JOINED = "joined"
    LEFT = "left"
    TIMED_OUT = "timed out"


# ---------------------------------------------------------------------------
# NOTICE: "<name> joined", "<name> left", "<name> timed out"
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberEvent:
    name: str
    what: Presence


# Names may contain spaces, so the name is everything before the last known suffix.
_NOTICE = re.compile(r"(?P<name>.+) (?P<what>joined|left|timed out)", re.DOTALL)


def format_notice(event: MemberEvent) -> str:
    return f"{event.name} {event.what}"


def parse_notice(text: str) -> MemberEvent | None:
    match = _NOTICE.fullmatch(text)
    return None if match is None else MemberEvent(match["name"], Presence(match["what"]))


# ---------------------------------------------------------------------------
# CLOSED: "host <name> left; the room is closed", "server shutting down"
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostGone:
    """The host left or timed out, which closes the room."""

    name: str
    what: Presence  # LEFT or TIMED_OUT


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """The server is stopping (SIGINT, SIGTERM)."""


ClosedReason = HostGone | ServerShutdown

SHUTDOWN_REASON = "server shutting down"
_HOST_GONE = re.compile(
    r"host (?P<name>.+) (?P<what>left|timed out); the room is closed", re.DOTALL
)


def format_closed(reason: ClosedReason) -> str:
    match reason:
        case HostGone(name, what):
            return f"host {name} {what}; the room is closed"
        case ServerShutdown():
            return SHUTDOWN_REASON
    raise AssertionError("unreachable")  # pragma: no cover


def parse_closed(text: str) -> ClosedReason | None:
    if text == SHUTDOWN_REASON:
        return ServerShutdown()
    match = _HOST_GONE.fullmatch(text)
    return None if match is None else HostGone(match["name"], Presence(match["what"]))


# ---------------------------------------------------------------------------
# ERROR: why the relay refused a datagram
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownToken:
    """No member with this token in this room from this IP: the room closed, the member
    was dropped, or the server restarted."""


@dataclass(frozen=True, slots=True)
class TooLong:
    """A chat line whose relayed copy would exceed 4096 bytes; ``limit`` is the most
    this member may send."""

    limit: int


@dataclass(frozen=True, slots=True)
class NotUtf8:
    """A chat line that is not valid UTF-8."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A member's extended datagram (section 3) whose body breaks its layout."""


Refusal = UnknownToken | TooLong | NotUtf8 | Malformed

# The text of RESTARTED (section 3), which a client shows as it likes.
RESTARTED_TEXT = "the server restarted"

_UNKNOWN_TOKEN = "unknown token for this room"
# An ERROR to a sender the server does not know is cut to the size of the datagram it
# answers (no amplification), so only this much of the text is sure to arrive.
_UNKNOWN_TOKEN_PREFIX = "unknown token"
_TOO_LONG = re.compile(r"message too long: max (\d+) bytes")
_NOT_UTF8 = "message text is not valid UTF-8"
_MALFORMED = "malformed extended datagram"


def format_refusal(refusal: Refusal) -> str:
    match refusal:
        case UnknownToken():
            return _UNKNOWN_TOKEN
        case TooLong(limit):
            return f"message too long: max {limit} bytes"
        case NotUtf8():
            return _NOT_UTF8
        case Malformed():
            return _MALFORMED
    raise AssertionError("unreachable")  # pragma: no cover


def parse_refusal(text: str) -> Refusal | None:
    if text.startswith(_UNKNOWN_TOKEN_PREFIX):
        return UnknownToken()
    if text == _NOT_UTF8:
        return NotUtf8()
    if text == _MALFORMED:
        return Malformed()
    match = _TOO_LONG.fullmatch(text)
    return None if match is None else TooLong(int(match[1]))


# ---------------------------------------------------------------------------
# Chat text: an action, "\x01ACTION waves\x01" (IRC's CTCP ACTION)
# ---------------------------------------------------------------------------

# IRC's convention, so an action is one thing for every client (a bot, a pipe, a
# terminal) and recognisable to anyone who has bridged IRC: a plain "/me waves" would be
# a command to one reader and chat text to the next. docs/protocol.md, section 2.
ACTION_START = "\x01ACTION "
ACTION_END = "\x01"


def format_action(words: str) -> str:
    """The chat text of the action ``words`` (``/me waves``: ``"waves"``)."""
    return f"{ACTION_START}{words}{ACTION_END}"


def parse_action(text: str) -> str | None:
    """The words of an action, or None for plain chat text.

    The closing ``\x01`` may be missing (IRC clients leave it out, and a text cut to
    fit the limit loses it); ``"\x01ACTION\x01"`` is an action without words.
    """
    if text in (ACTION_START.rstrip() + ACTION_END, ACTION_START.rstrip()):
        return ""
    if not text.startswith(ACTION_START):
        return None
    return text[len(ACTION_START) :].removesuffix(ACTION_END)
