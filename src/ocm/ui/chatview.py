"""How chat looks: lines, colours, commands and names, with no terminal attached.

Pure functions over :mod:`ocm.client` events, shared by the two front ends:

* the interactive UI (:mod:`ocm.ui.terminal`) gets styled fragments, ``[(style, text)]``
  lists that prompt_toolkit prints as they are (this module does not import it);
* the pipe mode (:mod:`ocm.ui.pipe`, stdin not a terminal) gets one plain line per event,
  in the stable format :func:`pipe_line` documents.

Everything that comes from the network goes through :func:`sanitize` here first: a
server or a member must never be able to move the cursor, retitle the window or clear
the screen of whoever reads the room.

The exit statuses of ``ocm create`` and ``ocm join`` are here too (:func:`exit_status`),
with the one sentence that says how a chat ended (:func:`ending`): both front ends end a
chat the same way. So is what a typed line asks for (:func:`parse_input` on a terminal,
:func:`pipe_input` in pipe mode), with one rule for both: ``/me TEXT`` is an action,
``exit`` and ``/exit`` leave, ``/say TEXT`` sends TEXT as it is and a leading ``//``
drops one slash.

Terminal lines are laid out for a ``width`` when one is given: wrapped at spaces, each
continuation indented under the text column (after the time and the name), as irssi and
weechat do.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ocm.client import (
    COULD_NOT_RESUME,
    DROPPED,
    NETWORK_GONE,
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
from ocm.wire.texts import (
    HostGone,
    Presence,
    ServerShutdown,
    format_action,
    parse_action,
    parse_closed,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_LEFT",
    "EXIT_ROOM_CLOSED",
    "EXIT_SERVER_LOST",
    "EXIT_USAGE",
    "HELP",
    "HELP_COMMANDS",
    "HELP_KEYS",
    "HISTORY_PREFIX",
    "HISTORY_STAMP",
    "MIN_TEXT_COLUMNS",
    "NOT_LEFT",
    "PALETTE",
    "Command",
    "Ending",
    "Fragments",
    "Roster",
    "cells",
    "closed_line",
    "closed_lines",
    "closing",
    "djb2",
    "ending",
    "event_lines",
    "exit_status",
    "help_lines",
    "info_line",
    "info_lines",
    "left_lines",
    "mentions",
    "name_style",
    "one_line",
    "parse_input",
    "pipe_input",
    "pipe_line",
    "sanitize",
    "toolbar",
    "who_lines",
]

Fragments = list[tuple[str, str]]  # prompt_toolkit's (style, text) fragments

# Nine hues at least 30 degrees apart (HSV), of middling luminance, so that each reads
# on a dark and on a light background alike (a contrast of 3:1 or more against both
# black and white) and no two are taken for each other: the 16 ANSI colours paired names
# that look alike (alice in bright green, carol in green) and gave some white, black or
# bright yellow, unreadable on one background or the other. Red is left out (it marks
# errors). Colours of xterm's 256-colour cube, which prompt_toolkit's default colour
# depth shows exactly. Names are spread over them by hash, like weechat's nick colours.
PALETTE = (
    "#d75f00",  # orange
    "#878700",  # olive
    "#008700",  # green
    "#00875f",  # sea green
    "#0087af",  # teal blue
    "#5f87ff",  # cornflower
    "#875fff",  # violet
    "#d700ff",  # purple
    "#d70087",  # raspberry
)

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
EXIT_ROOM_CLOSED = 3  # the room closed by the server's word: the host left or timed out, shutdown
# We lost the room, which may go on: the server stopped answering or restarted, our network
# went away, the server dropped us after a silence; or the leave went unanswered.
EXIT_SERVER_LOST = 4

# Said when leaving was not confirmed (no DEPARTED, LEAVE_ROOM failed too).
NOT_LEFT = "could not confirm that you left; the server will drop you after its idle timeout"

# The commands and keys of the terminal, as /help shows them (:func:`help_lines`): what
# to type, and what it does.
HELP_COMMANDS = (
    ("/who", "list the members, the host marked"),
    ("/me TEXT", "send an action, shown as * NAME TEXT"),
    ("/say TEXT", "send TEXT as it is, even exit or /who"),
    ("//TEXT", "send /TEXT: a leading // drops one slash"),
    ("/exit, exit", "leave the room (the host's leave closes it)"),
    ("/help", "show this table"),
)
HELP_KEYS = (
    ("Enter", "send the line"),
    ("Tab", "complete a member's name in the line, recent speakers first; Tab again for the next"),
    ("Up, Down", "walk your earlier lines"),
    ("Ctrl-C", "clear the line; on an empty line, press it twice to leave"),
    ("Ctrl-D", "on an empty line, press it twice to leave"),
)
_HELP_COLUMN = 2 + max(len(key) for key, _ in HELP_COMMANDS + HELP_KEYS)
# The same table as plain lines, for a front end that prints text.
HELP = (
    "commands:",
    *(f"  {key:<{_HELP_COLUMN}}{what}" for key, what in HELP_COMMANDS),
    "keys:",
    *(f"  {key:<{_HELP_COLUMN}}{what}" for key, what in HELP_KEYS),
)

# Wrapping: the time column ("12:05 "), and the least room for text under a hanging
# indent. A long name on a narrow terminal would leave a sliver for the words, so the
# continuation lines then start under the name instead.
_STAMP_COLUMNS = len("00:00 ")
MIN_TEXT_COLUMNS = 20


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


def cells(text: str) -> int:
    """The terminal columns ``text`` takes, counted as prompt_toolkit counts them when
    it draws (``wcwidth``; this module does not import it): two for a wide character
    (CJK, most emoji), none for a mark, a format character (zero-width space and
    joiner, a variation selector: ``❤️`` takes one) or a Hangul jamo that joins the
    one before, one for the rest. Characters newer than Python's Unicode tables may
    still count differently."""
    return sum(_char_cells(char) for char in text)


# Zero columns: marks (combining, enclosing, spacing: wcwidth counts those as part of
# the character before), format and line/paragraph separator characters...
_NO_CELLS = frozenset({"Mn", "Me", "Mc", "Cf", "Cc", "Zl", "Zp"})
# ... but for the format characters that are drawn: the soft hyphen and the prepended
# concatenation marks (the Arabic number sign ...).
_SHOWN_FORMAT = frozenset("\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891")
_SHOWN_FORMAT |= frozenset("\u08e2\U000110bd\U000110cd")
# Hangul jamo that join the syllable before (medial vowels, final consonants), fillers.
_JOINING_HANGUL = frozenset(
    [*map(chr, range(0x1160, 0x1200)), *map(chr, range(0xD7B0, 0xD800)), "\u3164", "\uffa0"]
)


def _char_cells(char: str) -> int:
    if unicodedata.category(char) in _NO_CELLS and char not in _SHOWN_FORMAT:
        return 0
    if char in _JOINING_HANGUL:
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _typed(text: str) -> str:
    """Our own chat text as the user typed it: an action as ``/me WORDS``."""
    words = parse_action(text)
    return text if words is None else f"/me {words}"


# ---------------------------------------------------------------------------
# How a chat ended
# ---------------------------------------------------------------------------

# The client's own verdicts (ocm.client) that end a chat without the room closing: the
# server no longer has our token (it dropped us after a silence, its idle timeout), or
# we lost our way to it (our network went away, or a RESUME was refused).
_DROPPED = DROPPED
_PATH_LOST = (NETWORK_GONE, COULD_NOT_RESUME)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a chat ended without our leave: one sentence (``text``, without the ``!!``
    or ``!`` a front end puts first) and the exit status (:data:`EXIT_ROOM_CLOSED` or
    :data:`EXIT_SERVER_LOST`)."""

    text: str
    status: int


def ending(
    closed: Closed, *, me: str = "", is_host: bool = False, server_lost: bool = False
) -> Ending:
    """What the :class:`Closed` that ended the chat means, in one sentence.

    The server's word (``host alice left; the room is closed``, ``server shutting
    down``) closes the room for everyone: ``room closed: the host alice left``, status
    :data:`EXIT_ROOM_CLOSED`. A dropped member (``me``, not the host: ``is_host``) is
    told the room goes on without it; the host that the server dropped is told that
    this closed the room. A lost server (``server_lost``, what
    :attr:`~ocm.client.ChatClient.server_lost` says) or network is said as the client
    found it, ``the server stopped answering — the chat is over``. All but the room
    closing are :data:`EXIT_SERVER_LOST`: the room may well go on.
    """
    reason = sanitize(closed.reason)
    said = parse_closed(closed.reason)
    mine = me.casefold()
    match said:
        case HostGone(name, Presence.LEFT) if name.casefold() == mine:
            return Ending("you left; the room is closed for everyone", EXIT_ROOM_CLOSED)
        case HostGone(name, Presence.TIMED_OUT) if name.casefold() == mine:
            text = "room closed: the server dropped you, its host, after too long a silence"
            return Ending(text, EXIT_ROOM_CLOSED)
        case HostGone(name, what):
            return Ending(f"room closed: the host {sanitize(name)} {what}", EXIT_ROOM_CLOSED)
        case ServerShutdown():
            return Ending("room closed: the server is shutting down", EXIT_ROOM_CLOSED)
    if server_lost or closed.reason.startswith(_PATH_LOST):
        return Ending(f"{reason} — the chat is over", EXIT_SERVER_LOST)
    if closed.reason.startswith(_DROPPED):
        if is_host:
            text = "you were dropped after too long a silence, which closed your room"
        else:
            text = "you were dropped after too long a silence; the room goes on without you"
        return Ending(text, EXIT_SERVER_LOST)
    return Ending(f"room closed: {reason}", EXIT_ROOM_CLOSED)  # another server's words


def closing(event: Event) -> Closed | None:
    """``event`` if it is the :class:`Closed` that ends the stream (the room ended on
    its own, not by our leave), else None."""
    return event if isinstance(event, Closed) else None


def exit_status(closed: Closed | None, *, server_lost: bool, left: bool, lines_lost: bool) -> int:
    """How ``ocm create`` / ``ocm join`` ends a chat, on a terminal and in pipe mode.

    ``closed`` is the :class:`Closed` the stream ended with (None: we left), and
    ``server_lost`` whether it meant the server was lost; ``left`` is what
    :meth:`~ocm.client.ChatClient.close` returned; ``lines_lost`` whether a line was
    refused or not confirmed. How the chat ended comes first: :data:`EXIT_ROOM_CLOSED`
    when the room closed, :data:`EXIT_SERVER_LOST` when we lost it otherwise (the
    server, our network, or the server dropped us: :func:`ending`); then (we left)
    :data:`EXIT_SERVER_LOST` if the leave was not confirmed, :data:`EXIT_ERROR` for
    lost lines, else :data:`EXIT_LEFT`.
    """
    if closed is not None:
        return ending(closed, server_lost=server_lost).status
    if not left:
        return EXIT_SERVER_LOST
    return EXIT_ERROR if lines_lost else EXIT_LEFT


# ---------------------------------------------------------------------------
# Pipe mode
# ---------------------------------------------------------------------------


def pipe_line(
    event: Event, *, me: str = "", is_host: bool = False, server_lost: bool = False
) -> str:
    """One stdout line per event when stdin is not a terminal (documented in README)::

    alice: hello            a message (ours too: the server's copy)
    * alice waves           an action (/me waves)
    * bob joined            a notice from the server
    ! error: TEXT           the server rejected one of our datagrams
    ! missed 3 messages     messages we will never get (see Gap)
    ! not delivered: TEXT   the server says it never relayed our message
    ! not confirmed: TEXT   the server never confirmed it: it may or may not have been
    ! skipped 5 events      they came faster than they were read
    ! UDP blocked here; ... the client changed its way to the server (PathChanged)
    ! room closed: ...      the last line, one sentence: how the chat ended (ending())
    history alice: hello    a message or notice from before we entered, asked for
    history * bob joined    with the history option (HISTORY_PREFIX, then as above)

    ``me``, ``is_host`` and ``server_lost`` word the last line (:func:`ending`).
    """
    if isinstance(event, Message | Notice) and event.history:
        return HISTORY_PREFIX + _pipe_line(event)
    if isinstance(event, Closed):
        return "! " + ending(event, me=me, is_host=is_host, server_lost=server_lost).text
    return _pipe_line(event)


def _pipe_line(event: Event) -> str:
    match event:
        case Message(sender, text, action=True):
            return f"* {one_line(sender)} {one_line(text)}"
        case Message(sender, text):
            return f"{one_line(sender)}: {one_line(text)}"
        case Notice(text, _):
            return f"* {one_line(text)}"
        case ErrorReply(text):
            return f"! error: {one_line(text)}"
        case Gap():
            return f"! missed {_count(event.missed, 'message')}"
        case Undelivered(text, certain):
            verdict = "not delivered" if certain else "not confirmed"
            return f"! {verdict}: {one_line(_typed(text))}"
        case Overflow(dropped):
            return f"! skipped {_count(dropped, 'event')}"
        case PathChanged(text):
            return f"! {one_line(text)}"
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


# ---------------------------------------------------------------------------
# Terminal lines
# ---------------------------------------------------------------------------


def _stamp(now: datetime) -> Fragments:
    return [("class:time", now.strftime("%H:%M")), ("", " ")]


def _hang(indent: int, width: int | None) -> int:
    """The indent of every line after the first, under a head of ``indent`` columns: the
    text column, or under the name (after the time) when that leaves a sliver of less
    than :data:`MIN_TEXT_COLUMNS`, or none when even that leaves nothing."""
    if width is None:
        return indent
    if width - indent < MIN_TEXT_COLUMNS:
        indent = min(indent, _STAMP_COLUMNS)
    return 0 if indent >= width else indent


def _wrap(prefix: Fragments, body: Fragments, width: int | None, indent: int) -> list[Fragments]:
    """``prefix`` then ``body``, cut into lines of at most ``width`` columns at spaces;
    the lines after the first start with ``indent`` spaces (less than ``width``) and
    never with a space. A word goes whole to the next line when it fits there; only a
    word longer than a whole line (``width - indent``) is cut, where a line ends. The
    prefix wraps the same way when it alone is too wide (a very long name). No line is
    left with spaces only. No ``width``: one line, as it is."""
    if width is None or cells(_plain(prefix) + _plain(body)) <= width:
        return [prefix + body]
    room = width - indent
    lines: list[Fragments] = []
    line: Fragments = []
    column = 0
    worded = False  # the line holds more than spaces
    pending = False  # spaces that did not fit: the next word starts a new line

    def add(parts: Fragments, word: bool) -> None:
        nonlocal column, worded
        for style, text in parts:
            if not text:
                continue
            if line and line[-1][0] == style:
                line[-1] = (style, line[-1][1] + text)
            else:
                line.append((style, text))
            column += cells(text)
        worded = worded or word

    def new_line() -> None:
        """End the line (one of spaces only is dropped) and start an indented one."""
        nonlocal line, column, worded
        if worded:
            while line and not line[-1][1].rstrip(" "):
                line.pop()  # no trailing spaces where a line breaks
            line[-1] = (line[-1][0], line[-1][1].rstrip(" "))
            lines.append(line)
        line, column, worded = ([("", " " * indent)] if indent else []), indent, False

    for is_space, parts in _tokens(prefix + body):
        size = cells(_plain(parts))
        fresh = column == indent and not worded
        if is_space:
            if lines and fresh:
                continue  # a continuation starts with a word
            if pending or column + size > width:
                pending = True
            else:
                add(parts, False)
            continue
        if pending or (column + size > width and size <= room and not fresh):
            new_line()  # the word fits on a line of its own: not cut
        pending = False
        while column + size > width:  # longer than a whole line: cut where the line ends
            fresh = column == indent and not worded
            # On a fresh line a character wider than what is left goes anyway: no loop.
            piece, parts = _cut(parts, max(width - column, 2) if fresh else width - column)
            if not _plain(piece):
                new_line()
                continue
            add(piece, True)
            size = cells(_plain(parts))
        add(parts, True)
    if worded or not lines:
        lines.append(line)
    return lines


def _tokens(fragments: Fragments) -> list[tuple[bool, Fragments]]:
    """Words and runs of spaces, ``(is_space, parts)``: a word is every character
    between two spaces, across fragments (``<`` ``alice`` ``>``)."""
    tokens: list[tuple[bool, Fragments]] = []
    for style, text in fragments:
        for run in re.findall(r" +|[^ ]+", text):
            is_space = run.startswith(" ")
            if tokens and tokens[-1][0] == is_space:
                tokens[-1][1].append((style, run))
            else:
                tokens.append((is_space, [(style, run)]))
    return tokens


def _cut(parts: Fragments, columns: int) -> tuple[Fragments, Fragments]:
    """``parts`` cut in two: the longest start that takes at most ``columns`` (a
    zero-width character stays with the one before it), and the rest."""
    used = 0
    for index, (style, text) in enumerate(parts):
        for at, char in enumerate(text):
            used += _char_cells(char)
            if used > columns:
                return [*parts[:index], (style, text[:at])], [
                    (style, text[at:]),
                    *parts[index + 1 :],
                ]
    return list(parts), []


def _plain(fragments: Fragments) -> str:
    return "".join(text for _, text in fragments)


def _layout(head: Fragments, bodies: Sequence[Fragments], width: int | None) -> list[Fragments]:
    """A head (time, name ...) and the text's lines under it: the later lines, and
    every line the wrapping makes, are indented under the text column (:func:`_hang`)."""
    indent = _hang(cells(_plain(head)), width)
    pad: Fragments = [("", " " * indent)]
    lines = _wrap(head, bodies[0], width, indent)
    for body in bodies[1:]:
        lines += _wrap(pad, body, width, indent)
    return lines


def info_line(text: str, now: datetime, style: str = "class:info") -> Fragments:
    """A line from the client itself (warnings, ...), timestamped, not wrapped."""
    return [*_stamp(now), (style, "-- " + sanitize(text))]


def info_lines(
    text: str, now: datetime, style: str = "class:info", *, width: int | None = None
) -> list[Fragments]:
    """:func:`info_line`, wrapped to ``width`` under the text."""
    return _marked(_stamp(now), style, "-- ", text, width)


def left_lines(
    room: str, now: datetime, *, is_host: bool, width: int | None = None
) -> list[Fragments]:
    """The last line when we left (and the server confirmed it): a host is told that
    this closed the room for everyone."""
    if is_host:
        text = f'you left "{room}"; the room is closed for everyone'
        return info_lines(text, now, "class:warning", width=width)
    return info_lines(f'you left "{room}"', now, width=width)


def help_lines(now: datetime, *, width: int | None = None) -> list[Fragments]:
    """The answer to /help: a table of the commands and keys (:data:`HELP_COMMANDS`,
    :data:`HELP_KEYS`), each description wrapped under its column."""
    lines: list[Fragments] = []
    for title, rows in (("commands", HELP_COMMANDS), ("keys", HELP_KEYS)):
        lines.append([*_stamp(now), ("class:info", f"-- {title}")])
        for key, what in rows:
            head = [
                *_stamp(now),
                ("class:info", "--   "),
                ("class:info bold", key.ljust(_HELP_COLUMN)),
            ]
            lines += _layout(head, [[("class:info", what)]], width)
    return lines


def event_lines(
    event: Event,
    now: datetime,
    me: str,
    *,
    delivery: bool = False,
    width: int | None = None,
) -> list[Fragments]:
    """The terminal lines for one event: timestamp, coloured name, styled by kind.

    A message with line breaks gives several lines, the later ones indented under the
    text; with ``width`` (the terminal's columns) every line longer than that is
    wrapped at spaces, indented the same way. A message that mentions ``me`` (from
    someone else) is highlighted; an action is ``* alice waves``. A message or notice
    from before we entered (``history``) is dimmed whole, its time column
    :data:`HISTORY_STAMP`. ``delivery`` (the client has the delivery extension) words a
    :class:`Gap` as what it then means: messages the server no longer had.
    """
    if isinstance(event, Message | Notice) and event.history:
        stamp: Fragments = [("class:history", HISTORY_STAMP), ("", " ")]
        lines = _event_lines(event, stamp, me, delivery, width)
        return [[("class:history", text) for _, text in line] for line in lines]
    return _event_lines(event, _stamp(now), me, delivery, width)


def _event_lines(
    event: Event, stamp: Fragments, me: str, delivery: bool, width: int | None
) -> list[Fragments]:
    match event:
        case Message(sender, text, action=action):
            name = sanitize(sender)
            own = sender.casefold() == me.casefold()
            name_fragment = (name_style(sender) + (" underline" if own else ""), name)
            plain_style = "class:action" if action else "class:text"
            body_style = "class:mention" if not own and mentions(text, me) else plain_style
            head: Fragments
            if action:
                head = [*stamp, ("class:action", "* "), name_fragment, ("class:action", " ")]
            else:
                head = [*stamp, ("class:bracket", "<"), name_fragment, ("class:bracket", "> ")]
            bodies = [[(body_style, sanitize(line))] for line in text.split("\n")]
            return _layout(head, bodies, width)
        case Notice(text, _):
            return _marked(stamp, "class:notice", "-- ", text, width)
        case ErrorReply(text):
            return _marked(
                stamp, "class:error", "!! ", "the server refused a message: " + text, width
            )
        case Gap():
            lost = _count(event.missed, "message")
            if delivery:
                why = f"{lost} missing: the server no longer had them; the chat goes on"
            else:
                why = f"{lost} lost on the way (UDP); the chat goes on"
            return _marked(stamp, "class:error", "!! ", why, width)
        case Undelivered(text, certain):
            verdict = "not delivered: " if certain else "not confirmed (it may have been): "
            return _marked(stamp, "class:error", "!! ", verdict + one_line(_typed(text)), width)
        case Overflow(dropped):
            skipped = _count(dropped, "event")
            return _marked(
                stamp, "class:error", "!! ", f"{skipped} skipped: they came too fast to show", width
            )
        case PathChanged(text):
            return _marked(stamp, "class:info", "-- ", text, width)
        case Closed():
            return _marked(stamp, "class:closed", "!! ", ending(event).text, width)
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def _marked(
    stamp: Fragments, style: str, mark: str, text: str, width: int | None
) -> list[Fragments]:
    """A line of one style after the time: ``-- bob joined``, ``!! ...``."""
    return _layout([*stamp, (style, mark)], [[(style, sanitize(text))]], width)


def closed_line(
    closed: Closed,
    now: datetime,
    *,
    server_lost: bool = False,
    me: str = "",
    is_host: bool = False,
) -> Fragments:
    """The last line of a chat that ended on its own, not wrapped: one sentence
    (:func:`ending`), ``!! room closed: the host alice left`` or ``!! the server
    stopped answering — the chat is over``."""
    text = ending(closed, me=me, is_host=is_host, server_lost=server_lost).text
    return [*_stamp(now), ("class:closed", "!! " + text)]


def closed_lines(
    closed: Closed,
    now: datetime,
    *,
    server_lost: bool = False,
    me: str = "",
    is_host: bool = False,
    width: int | None = None,
) -> list[Fragments]:
    """:func:`closed_line`, wrapped to ``width`` under the text."""
    text = ending(closed, me=me, is_host=is_host, server_lost=server_lost).text
    return _marked(_stamp(now), "class:closed", "!! ", text, width)


def toolbar(
    room: str,
    members: Sequence[str],
    host: str,
    me: str,
    unconfirmed: int = 0,
    *,
    over_tcp: bool = False,
    e2e: bool = False,
    encrypted: bool = True,
) -> Fragments:
    """The bottom toolbar: room, member count, host, how to get help, how many of our
    messages are on their way (sent, the server's copy not back yet), whether the
    chat goes over TCP (UDP blocked here), and ``not encrypted`` for a client that talks
    to the server in plaintext (``--insecure``). ``e2e``: the room is end-to-end
    encrypted (section 5), marked ``e2e`` right after its name."""
    you_host = host.casefold() == me.casefold()
    host_text = "you are the host" if you_host else f"host: {sanitize(host)}"
    fragments = [
        ("class:bottom-toolbar.room", f" {sanitize(room)} "),
        *([("class:bottom-toolbar.e2e", " e2e ")] if e2e else []),
        ("", f" {_count(len(members), 'member')} · {host_text} · /help"),
    ]
    if unconfirmed:
        fragments.append(("class:bottom-toolbar.sending", f" · {unconfirmed} sending"))
    if over_tcp:
        fragments.append(("", " · over TCP"))
    if not encrypted:
        fragments.append(("", " · not encrypted"))
    return fragments


def who_lines(
    members: Sequence[str], host: str, now: datetime, *, width: int | None = None
) -> list[Fragments]:
    """The answer to /who: every member, the host marked, wrapped to ``width``."""
    names: Fragments = []
    for index, member in enumerate(members):
        if index:
            names.append(("class:info", ", "))
        names.append((name_style(member), sanitize(member)))
        if member.casefold() == host.casefold():
            names.append(("class:info", " (host)"))
    head = [*_stamp(now), ("class:info", f"-- {_count(len(members), 'member')}: ")]
    return _layout(head, [names], width)


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """What a typed line asks for. ``kind`` is one of: ``send`` (``text`` is the chat
    text to send, an action already in its wire form), ``who``, ``help``, ``exit``,
    ``empty``, ``unknown`` (``text`` is the command)."""

    kind: str
    text: str = ""


def parse_input(line: str) -> Command:
    """Interpret one line typed in the interactive UI.

    ``exit`` and ``/exit`` (``/quit``, ``/leave``) leave; ``/me TEXT`` is an action;
    ``/say TEXT`` sends TEXT as it is; a leading ``//`` drops one slash (``//exit``
    sends ``/exit``); ``/who`` and ``/help`` ask; any other ``/word`` is unknown.
    """
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
            words = rest.lstrip()  # "/me  waves": the action is "waves"
            return Command("send", format_action(words)) if words else Command("help")
        case "/say":
            said = line.lstrip()[len(word) + 1 :]  # as typed after "/say ", spaces too
            return Command("send", said) if said.strip() else Command("help")
    return Command("unknown", word)


def pipe_input(line: str) -> Command:
    """Interpret one stdin line in pipe mode: ``send``, ``exit`` or ``empty``.

    The same rule as on a terminal (:func:`parse_input`) for ``exit``, ``/exit``, ``/me
    TEXT``, ``/say TEXT`` and ``//``; any other line is sent as it is, ``/who`` or
    ``/etc/hosts`` too: a script's lines are its messages. ``/me`` or ``/say`` with no
    words, which show the help on a terminal, send nothing (``empty``).
    """
    command = parse_input(line)
    if command.kind == "help" and line.split(maxsplit=1)[0].lower() in ("/me", "/say"):
        return Command("empty")
    if command.kind in ("who", "help", "unknown"):
        return Command("send", line)
    return command


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
