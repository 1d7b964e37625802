"""How chat looks: lines, colours, commands and names, with no terminal attached.

Pure functions over :mod:`ocm.client` events, shared by the two front ends:

* the interactive UI (:mod:`ocm.ui.terminal`) gets styled fragments, ``[(style, text)]``
  lists that prompt_toolkit prints as they are (this module does not import it);
* the pipe mode (:mod:`ocm.ui.pipe`, stdin not a terminal) gets one plain line per event,
  in the stable format :func:`pipe_line` documents.

Everything that comes from the network goes through :func:`sanitize` here first: a
server or a member must never be able to move the cursor, retitle the window or clear
the screen of whoever reads the room.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ocm.client import Closed, ErrorReply, Event, Gap, Message, Notice, Overflow, Undelivered

__all__ = [
    "HELP",
    "PALETTE",
    "Command",
    "Fragments",
    "Roster",
    "djb2",
    "event_lines",
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
    ! missed 3 messages     Seq showed a gap
    ! not delivered: TEXT   our message's copy never came back (lost)
    ! skipped 5 events      they came faster than they were read
    ! room closed: REASON   the last line
    """
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


def event_lines(event: Event, now: datetime, me: str) -> list[Fragments]:
    """The terminal lines for one event: timestamp, coloured name, styled by kind.

    A message with line breaks gives several lines, the later ones indented; a message
    that mentions ``me`` (from someone else) is highlighted.
    """
    stamp = _stamp(now)
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
            return [[*stamp, ("class:error", f"!! {lost} lost on the way (UDP); the chat goes on")]]
        case Undelivered(text):
            return [[*stamp, ("class:error", "!! not delivered: " + one_line(text))]]
        case Overflow(dropped):
            skipped = _count(dropped, "event")
            return [[*stamp, ("class:error", f"!! {skipped} skipped: they came too fast to show")]]
        case Closed(reason):
            return [[*stamp, ("class:closed", "!! room closed: " + sanitize(reason))]]
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def toolbar(
    room: str, members: Sequence[str], host: str, me: str, unconfirmed: int = 0
) -> Fragments:
    """The bottom toolbar: room, member count, host, how to get help, and how many of
    our messages are on their way (sent, the server's copy not back yet)."""
    you_host = host.casefold() == me.casefold()
    host_text = "you are the host" if you_host else f"host: {sanitize(host)}"
    fragments = [
        ("class:bottom-toolbar.room", f" {sanitize(room)} "),
        ("", f" {_count(len(members), 'member')} · {host_text} · /help"),
    ]
    if unconfirmed:
        fragments.append(("class:bottom-toolbar.sending", f" · {unconfirmed} sending"))
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
