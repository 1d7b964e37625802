"""How chat looks: lines, colours, commands and names, with no terminal attached.

Pure functions over :mod:`ocm.client` events, shared by the two front ends:

* the interactive UI (:mod:`ocm.ui.terminal`) gets styled fragments, ``[(style, text)]``
  lists that prompt_toolkit prints as they are (this module does not import it);
* the pipe mode (:mod:`ocm.ui.pipe`, stdin not a terminal) gets one plain line per event,
  in the stable format :func:`pipe_line` documents.

Everything that comes from the network goes through :func:`sanitize` here first: a
server or a member must never be able to move the cursor, retitle the window or clear
the screen of whoever reads the room.

The exit statuses of ``ocm create`` and ``ocm join`` are here too (:func:`exit_status`):
both front ends end a chat the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ocm.client import (
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Overflow,
    PathChanged,
    Undelivered,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_LEFT",
    "EXIT_ROOM_CLOSED",
    "EXIT_SERVER_LOST",
    "EXIT_USAGE",
    "HELP",
    "HISTORY_PREFIX",
    "HISTORY_STAMP",
    "NOT_LEFT",
    "PALETTE",
    "Command",
    "Fragments",
    "Roster",
    "closed_line",
    "closing",
    "djb2",
    "event_lines",
    "exit_status",
    "info_line",
    "mentions",
    "name_style",
    "one_line",
    "parse_input",
    "pipe_line",
    "sanitize",
    "toolbar",
]

Fragments = list[tuple[str, str]]  # prompt_toolkit's (style, text) fragments

# Twelve colours every 16-colour terminal has, red left out (it marks errors). Names are
# spread over them by hash, like weechat's nick colours.
PALETTE = (
    "ansicyan",
    "ansimagenta",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansibrightcyan",
    "ansibrightmagenta",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightred",
    "ansiwhite",
)

# /me is sent as text starting with this, so every client (and a pipe) sees it as
# plain text, and the terminal shows it as an action.
ACTION_PREFIX = "/me "
REPLACEMENT = "\ufffd"

# C0 controls, DEL and C1 controls: ESC and CSI start terminal commands, CR rewrites
# the line, BEL rings. Tabs and newlines are handled before this.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Pipe mode: a line from before we entered (the ``history`` option) starts with this.
HISTORY_PREFIX = "history "
# The terminal: the time column of such a line (when it was sent is not known).
HISTORY_STAMP = "--:--"

# The exit statuses of ``ocm create`` and ``ocm join``, on a terminal and in pipe mode.
EXIT_LEFT = 0  # you left (end of input, /exit, Ctrl-C on a terminal), all lines confirmed
EXIT_ERROR = 1  # could not enter; or a line was refused or not confirmed by the server
EXIT_USAGE = 2  # the command line cannot work as given
EXIT_ROOM_CLOSED = 3  # the room ended by the server's word: the host left, shutdown, dropped
EXIT_SERVER_LOST = 4  # the server stopped answering or restarted, or the leave went unanswered

# Said when leaving was not confirmed (no DEPARTED, LEAVE_ROOM failed too).
NOT_LEFT = "could not confirm that you left; the server will drop you after its idle timeout"

HELP = (
    "commands: /who lists members · /me TEXT sends an action · /exit or exit leaves "
    "(the host's leave closes the room) · /help shows this · //TEXT sends /TEXT",
    "keys: Tab completes names · Up and Down walk your history · Ctrl-C or Ctrl-D leaves",
)


def djb2(text: str) -> int:
    """Dan Bernstein's string hash over UTF-8, 32 bits: the same name, the same colour,
    on every run and every machine (Python's ``hash`` is salted per process)."""
    value = 5381
    for byte in text.encode("utf-8", "replace"):
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value


def name_style(name: str) -> str:
    """The prompt_toolkit style of ``name``: one palette colour, bold."""
    return f"bold {PALETTE[djb2(name.casefold()) % len(PALETTE)]}"


def sanitize(text: str) -> str:
    """``text`` safe to print on one terminal line: tabs become a space, every other
    control character (newline, ESC, CR, BEL ...) becomes U+FFFD."""
    return _CONTROL.sub(REPLACEMENT, text.replace("\t", " "))


def one_line(text: str) -> str:
    """Like :func:`sanitize`, but line breaks become a space (pipe mode: one event,
    one line)."""
    return sanitize(text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as a whole word, ignoring case."""
    pattern = rf"(?<![\w]){re.escape(name)}(?![\w])"
    return re.search(pattern, text, re.IGNORECASE) is not None


# ---------------------------------------------------------------------------
# Pipe mode
# ---------------------------------------------------------------------------


def pipe_line(event: Event) -> str:
    """One stdout line per event when stdin is not a terminal (documented in README)::

    alice: hello            a message (ours too: the server's copy)
    * bob joined            a notice from the server
    ! error: TEXT           the server rejected one of our datagrams
    ! missed 3 messages     messages we will never get (see Gap)
    ! not delivered: TEXT   the server never confirmed our message
    ! skipped 5 events      they came faster than they were read
    ! UDP blocked here; ... the client changed its way to the server (PathChanged)
    ! room closed: REASON   the last line
    history alice: hello    a message or notice from before we entered, asked for
    history * bob joined    with the history option (HISTORY_PREFIX, then as above)
    """
    if isinstance(event, Message | Notice) and event.history:
        return HISTORY_PREFIX + _pipe_line(event)
    return _pipe_line(event)


def _pipe_line(event: Event) -> str:
    match event:
        case Message(sender, text, _):
            return f"{one_line(sender)}: {one_line(text)}"
        case Notice(text, _):
            return f"* {one_line(text)}"
        case ErrorReply(text):
            return f"! error: {one_line(text)}"
        case Gap():
            return f"! missed {_count(event.missed, 'message')}"
        case Undelivered(text):
            return f"! not delivered: {one_line(text)}"
        case Overflow(dropped):
            return f"! skipped {_count(dropped, 'event')}"
        case PathChanged(text):
            return f"! {one_line(text)}"
        case Closed(reason):
            return f"! room closed: {one_line(reason)}"
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# ---------------------------------------------------------------------------
# Terminal lines
# ---------------------------------------------------------------------------


def _stamp(now: datetime) -> Fragments:
    return [("class:time", now.strftime("%H:%M")), ("", " ")]


def info_line(text: str, now: datetime, style: str = "class:info") -> Fragments:
    """A line from the client itself (help, /who, warnings), timestamped."""
    return [*_stamp(now), (style, "-- " + sanitize(text))]


def event_lines(event: Event, now: datetime, me: str, *, delivery: bool = False) -> list[Fragments]:
    """The terminal lines for one event: timestamp, coloured name, styled by kind.

    A message with line breaks gives several lines, the later ones indented; a message
    that mentions ``me`` (from someone else) is highlighted. A message or notice from
    before we entered (``history``) is dimmed whole, its time column
    :data:`HISTORY_STAMP`. ``delivery`` (the client has the delivery extension) words a
    :class:`Gap` as what it then means: messages the server no longer had.
    """
    if isinstance(event, Message | Notice) and event.history:
        stamp: Fragments = [("class:history", HISTORY_STAMP), ("", " ")]
        lines = _event_lines(event, stamp, me, delivery)
        return [[("class:history", text) for _, text in line] for line in lines]
    return _event_lines(event, _stamp(now), me, delivery)


def _event_lines(event: Event, stamp: Fragments, me: str, delivery: bool) -> list[Fragments]:
    match event:
        case Message(sender, text, _):
            name = sanitize(sender)
            own = sender.casefold() == me.casefold()
            body_style = "class:mention" if not own and mentions(text, me) else "class:text"
            if text.startswith(ACTION_PREFIX):
                first, *rest = text[len(ACTION_PREFIX) :].split("\n")
                head: Fragments = [
                    *stamp,
                    ("class:action", "* "),
                    (name_style(sender), name),
                    ("class:action", " " + sanitize(first)),
                ]
            else:
                first, *rest = text.split("\n")
                head = [
                    *stamp,
                    ("class:bracket", "<"),
                    (name_style(sender) + (" underline" if own else ""), name),
                    ("class:bracket", "> "),
                    (body_style, sanitize(first)),
                ]
            indent = " " * (len("00:00 <") + len(name) + len("> "))
            return [head] + [[("", indent), (body_style, sanitize(line))] for line in rest]
        case Notice(text, _):
            return [[*stamp, ("class:notice", "-- " + sanitize(text))]]
        case ErrorReply(text):
            return [[*stamp, ("class:error", "!! the server refused a message: " + sanitize(text))]]
        case Gap():
            lost = _count(event.missed, "message")
            if delivery:
                why = f"!! {lost} missing: the server no longer had them; the chat goes on"
            else:
                why = f"!! {lost} lost on the way (UDP); the chat goes on"
            return [[*stamp, ("class:error", why)]]
        case Undelivered(text):
            return [[*stamp, ("class:error", "!! not delivered: " + one_line(text))]]
        case Overflow(dropped):
            skipped = _count(dropped, "event")
            return [[*stamp, ("class:error", f"!! {skipped} skipped: they came too fast to show")]]
        case PathChanged(text):
            return [[*stamp, ("class:info", "-- " + sanitize(text))]]
        case Closed(reason):
            return [[*stamp, ("class:closed", "!! room closed: " + sanitize(reason))]]
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def closed_line(closed: Closed, now: datetime, *, server_lost: bool = False) -> Fragments:
    """The last line of a chat that ended on its own. ``server_lost``: the room did not
    close, we lost the server (it stopped answering or restarted): say that, not "room
    closed"."""
    if server_lost:
        text = f"!! {sanitize(closed.reason)} — the chat is over"
    else:
        text = "!! room closed: " + sanitize(closed.reason)
    return [*_stamp(now), ("class:closed", text)]


def closing(event: Event) -> Closed | None:
    """``event`` if it is the :class:`Closed` that ends the stream (the room ended on
    its own, not by our leave), else None."""
    return event if isinstance(event, Closed) else None


def exit_status(closed: Closed | None, *, server_lost: bool, left: bool, lines_lost: bool) -> int:
    """How ``ocm create`` / ``ocm join`` ends a chat, on a terminal and in pipe mode.

    ``closed`` is the :class:`Closed` the stream ended with (None: we left), and
    ``server_lost`` whether it meant the server was lost; ``left`` is what
    :meth:`~ocm.client.ChatClient.close` returned; ``lines_lost`` whether a line was
    refused or not confirmed. How the chat ended comes first: :data:`EXIT_SERVER_LOST`,
    then :data:`EXIT_ROOM_CLOSED`, then (we left) :data:`EXIT_SERVER_LOST` if the leave
    was not confirmed, :data:`EXIT_ERROR` for lost lines, else :data:`EXIT_LEFT`.
    """
    if closed is not None:
        return EXIT_SERVER_LOST if server_lost else EXIT_ROOM_CLOSED
    if not left:
        return EXIT_SERVER_LOST
    return EXIT_ERROR if lines_lost else EXIT_LEFT


def toolbar(
    room: str,
    members: Sequence[str],
    host: str,
    me: str,
    unconfirmed: int = 0,
    *,
    over_tcp: bool = False,
) -> Fragments:
    """The bottom toolbar: room, member count, host, how to get help, how many of our
    messages are on their way (sent, the server's copy not back yet), and whether the
    chat goes over TCP (UDP blocked here)."""
    you_host = host.casefold() == me.casefold()
    host_text = "you are the host" if you_host else f"host: {sanitize(host)}"
    fragments = [
        ("class:bottom-toolbar.room", f" {sanitize(room)} "),
        ("", f" {_count(len(members), 'member')} · {host_text} · /help"),
    ]
    if unconfirmed:
        fragments.append(("class:bottom-toolbar.sending", f" · {unconfirmed} sending"))
    if over_tcp:
        fragments.append(("", " · over TCP"))
    return fragments


def who_lines(members: Sequence[str], host: str, now: datetime) -> list[Fragments]:
    """The answer to /who: every member, the host marked."""
    names: Fragments = []
    for index, member in enumerate(members):
        if index:
            names.append(("class:info", ", "))
        names.append((name_style(member), sanitize(member)))
        if member.casefold() == host.casefold():
            names.append(("class:info", " (host)"))
    return [[*_stamp(now), ("class:info", f"-- {_count(len(members), 'member')}: "), *names]]


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """What a typed line asks for. ``kind`` is one of: ``send`` (``text`` is what to
    send), ``who``, ``help``, ``exit``, ``empty``, ``unknown`` (``text`` is the command)."""

    kind: str
    text: str = ""


def parse_input(line: str) -> Command:
    """Interpret one line typed in the interactive UI."""
    stripped = line.strip()
    if not stripped:
        return Command("empty")
    if stripped == "exit":  # the seed's way out
        return Command("exit")
    if not stripped.startswith("/"):
        return Command("send", line)
    if stripped.startswith("//"):
        return Command("send", line.lstrip()[1:])
    word, _, rest = stripped.partition(" ")
    match word.lower():
        case "/exit" | "/quit" | "/leave":
            return Command("exit")
        case "/who" | "/names":
            return Command("who")
        case "/help" | "/?":
            return Command("help")
        case "/me":
            return Command("send", ACTION_PREFIX + rest) if rest.strip() else Command("help")
    return Command("unknown", word)


class Roster:
    """Names for tab completion: recent speakers first, then everyone else by name."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._recent: list[str] = []  # most recent last

    def spoke(self, name: str) -> None:
        folded = name.casefold()
        self._recent = [n for n in self._recent if n.casefold() != folded]
        self._recent.append(name)
        del self._recent[:-100]

    def complete(self, prefix: str, members: Iterable[str]) -> list[str]:
        """Members whose name starts with ``prefix`` (any case), ourselves excluded."""
        folded = prefix.casefold()
        present = {m.casefold(): m for m in members if m.casefold() != self.me.casefold()}
        order = [n.casefold() for n in reversed(self._recent) if n.casefold() in present]
        order += sorted((f for f in present if f not in order), key=str.casefold)
        return [present[f] for f in order if f.startswith(folded)]
