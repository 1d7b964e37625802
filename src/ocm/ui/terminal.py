"""The interactive terminal client: prompt_toolkit around a :class:`~ocm.client.ChatClient`.

The input line stays at the bottom while chat scrolls above it, the way irssi and
weechat behave: incoming lines are printed above the prompt (prompt_toolkit erases
the prompt, prints, and redraws it with the half-typed text and cursor intact). Each
round trip costs a redraw, so a burst is printed in batches: every event already
waiting, up to :data:`BATCH_LINES` lines, in one go. The terminal's own scrollback
keeps the history. What the lines look like is :mod:`ocm.ui.chatview`'s business; this
module only wires keys, prompts and output.

Only :mod:`ocm.cli.client` imports this module, and only for a terminal, so ``ocm server``
and pipe mode never load prompt_toolkit. Nothing here is POSIX-only: Ctrl-C arrives as a key
(or KeyboardInterrupt), never through ``add_signal_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prompt_toolkit import PromptSession
from prompt_toolkit.application import in_terminal
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, WordCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition, to_filter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import DummyHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout.containers import HSplit, VerticalAlign
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
from prompt_toolkit.output import Output
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.renderer import print_formatted_text as render_fragments
from prompt_toolkit.styles import Style
from prompt_toolkit.validation import ValidationError, Validator

from ocm.client import (
    DEFAULT_HEARTBEAT_INTERVAL,
    ChatClient,
    Closed,
    Event,
    Message,
    Notice,
    Security,
    format_server_address,
    list_rooms,
    parse_server_address,
)
from ocm.errors import ErrorCode, LocalProtocolError, OCMError, ProtocolError, ServerError
from ocm.ui.chatview import (
    NOT_LEFT,
    Fragments,
    Roster,
    closed_lines,
    event_lines,
    exit_status,
    help_lines,
    info_line,
    info_lines,
    left_lines,
    mentions,
    parse_input,
    sanitize,
    toolbar,
    who_lines,
)
from ocm.wire.names import validate_name
from ocm.wire.tcrp import RoomInfo

__all__ = [
    "BATCH_LINES",
    "DEFAULT_HISTORY",
    "FOCUS_REPORTING_OFF",
    "FOCUS_REPORTING_ON",
    "INPUT_ROWS",
    "LEAVE_CONFIRM_SECONDS",
    "STYLE",
    "UNREAD_MARKER",
    "NameCompleter",
    "Prompter",
    "TerminalChat",
    "ask_name",
    "ask_new_password",
    "ask_password",
    "interactive",
]

# The room's last messages shown on entering (dimmed), unless --history says otherwise.
DEFAULT_HISTORY = 20
# Lines printed in one go at most. Each print erases and redraws the prompt and the
# toolbar: one event per print managed some 500 lines a second, so a burst of 5,000
# piled up behind it for ten seconds. Printing what is waiting in one go keeps up with
# any room; the bound keeps one print short enough not to hold up typing.
BATCH_LINES = 1000
# Ctrl-C or Ctrl-D on an empty line leaves only if a second one follows within this many
# seconds: one stray key must not end the chat (nor, for a host, close the room).
LEAVE_CONFIRM_SECONDS = 3.0
# The input line's rows at most: a longer text (a paste) scrolls inside them.
INPUT_ROWS = 5
# xterm's focus reporting (DEC mode 1004): once on, the terminal sends ESC [ I when its
# window gets the focus and ESC [ O when it loses it. A terminal without it ignores the
# request and sends nothing (tmux passes it on with "set -g focus-events on").
FOCUS_REPORTING_ON = "\x1b[?1004h"
FOCUS_REPORTING_OFF = "\x1b[?1004l"
# The line above the first line that came while the window was in the background.
UNREAD_MARKER = "new since you were away --"

STYLE = Style.from_dict(
    {
        "time": "ansibrightblack",
        "bracket": "ansibrightblack",
        "text": "",
        "mention": "bold ansiblack bg:ansiyellow",
        "action": "italic",
        "notice": "italic ansibrightblack",
        "history": "ansibrightblack",
        "info": "ansibrightblack",
        "warning": "bold ansiyellow",
        "error": "ansired",
        "closed": "bold ansired",
        "prompt": "bold",
        "question": "bold",
        "bottom-toolbar": "noreverse bg:ansiblue ansiwhite",
        "bottom-toolbar.room": "bold",
        "bottom-toolbar.e2e": "bold noreverse bg:ansigreen ansiblack",
        "bottom-toolbar.sending": "bold",
        "bottom-toolbar.leaving": "bold noreverse bg:ansiyellow ansiblack",
        "validation-toolbar": "bold bg:ansired ansiwhite",
        "marker": "bold ansiyellow",
    }
)


class _Ended(Exception):
    """Raised out of the prompt when the room ends while the user is typing."""


class NameCompleter(Completer):
    """Tab completes member names: recent speakers first (weechat's order).

    At the start of the line a name is completed as ``"bob: "``, elsewhere as ``"bob "``.
    """

    def __init__(self, roster: Roster, members: Callable[[], Sequence[str]]) -> None:
        self.roster = roster
        self.members = members

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        if not word and not complete_event.completion_requested:
            return
        alone = document.text_before_cursor.strip() == word
        for name in self.roster.complete(word, self.members()):
            yield Completion(
                name + (": " if alone else " "), start_position=-len(word), display=name
            )


@dataclass(slots=True)
class _Cycle:
    """Tab's inline completion in progress: ``matches[index]`` stands at ``start`` in
    ``text``, the cursor right after it."""

    start: int
    matches: list[str]
    index: int
    text: str
    cursor: int


class TerminalChat:
    """The chat screen for one room. ``await TerminalChat(chat).run()`` returns the exit
    status; it always leaves the room (the host's leave closes it).

    ``bell``: ring the terminal's bell when someone else's message names us while we
    are not typing (the input line is empty, or the window is in the background)."""

    def __init__(
        self,
        chat: ChatClient,
        *,
        input: Input | None = None,
        output: Output | None = None,
        clock: Callable[[], datetime] = datetime.now,
        bell: bool = True,
    ) -> None:
        self.chat = chat
        self.clock = clock
        self.bell = bell
        self.roster = Roster(chat.name)
        self.completer = NameCompleter(self.roster, lambda: chat.members)
        self.ended: Closed | None = None
        self._history_shown = False  # the line that introduces the history
        self._day = clock().date()
        self._cycle: _Cycle | None = None  # Tab's completion in progress
        self._leave_until = 0.0  # a second Ctrl-C/D before this (monotonic) time leaves
        self._leave_key = "Ctrl-C"  # the key that asked
        self._away = False  # the terminal said its window lost the focus
        self._marker_due = False  # the unread marker goes above the next line shown
        self.session: PromptSession[str] = PromptSession(
            message=[("class:prompt", f"{sanitize(chat.name)}> ")],
            input=input,
            output=output,
            style=STYLE,
            # Redrawn with every line printed above the prompt, so the count of messages
            # on their way stays current: each copy that comes back is such a line.
            bottom_toolbar=self._toolbar,
            key_bindings=self._key_bindings(),
            # A line too long to send says so under the input as soon as it is too long
            # (a paste, say), and Enter keeps it there: the reason stays in sight with
            # the text, however tall the input line has grown.
            validator=_FunctionValidator(self._check_line),
            validate_while_typing=True,
            # The typed line is erased on Enter; it shows up again when the server's copy
            # comes back, which is the delivery confirmation. Until then the toolbar
            # counts it, and if the copy never comes the client reports it Undelivered
            # ("not delivered: TEXT"), so a lost line never just vanishes.
            erase_when_done=True,
            reserve_space_for_menu=0,
        )
        layout = self.session.layout
        for window in layout.find_all_windows():
            if window.content is layout.current_control:  # the input line
                window.height = self._input_height
                # Never taller than its text: once a long paste is cleared or sent, the
                # prompt is one row again ...
                window.dont_extend_height = to_filter(True)
        if isinstance(layout.container, HSplit):
            # ... and sits at the bottom. prompt_toolkit never shrinks the area it has
            # drawn while the prompt runs: the rows a paste took are blank padding above
            # the prompt (the chat's next lines fill them), never empty rows under it.
            layout.container.align = VerticalAlign.BOTTOM

    @property
    def output(self) -> Output:
        return self.session.app.output

    async def show(self, lines: Iterable[Fragments]) -> None:
        """Print lines above the prompt (or plainly when no prompt is running), in one
        go: one erase and redraw of the prompt for all of them."""
        fragments: Fragments = []
        for line in lines:
            fragments += line
            fragments.append(("", "\n"))
        async with in_terminal():
            render_fragments(self.output, FormattedText(fragments), STYLE)
            self.output.flush()

    async def info(self, text: str, style: str = "class:info") -> None:
        await self.show(info_lines(text, self.clock(), style, width=self.width))

    @property
    def width(self) -> int:
        """The columns lines are wrapped to: the terminal's (read anew for each line,
        so a resized window gets lines of its new width). One less on Windows, whose
        console may wrap a line that fills its last column, then break it again."""
        columns = self.output.get_size().columns
        return columns - 1 if sys.platform == "win32" else columns

    async def run(self) -> int:
        """Chat until the user leaves or the room ends; the exit status of
        :func:`~ocm.ui.chatview.exit_status` (0: you left)."""
        chat = self.chat
        # Only a VT100 terminal is asked to report focus (Windows' console input does
        # not carry it), and only while the chat runs: the questions before do not care.
        reporting = isinstance(self.output, Vt100_Output)

        def stop_reporting() -> None:
            nonlocal reporting
            if reporting:
                reporting = False
                self.output.write_raw(FOCUS_REPORTING_OFF)
                self.output.flush()

        with patch_stdout(raw=True):
            if reporting:
                self.output.write_raw(FOCUS_REPORTING_ON)
            try:
                await self._introduce()
                receiver = asyncio.create_task(self._receive(), name="ocm-terminal-receive")
                try:
                    await self._read_input()
                finally:
                    # Off as soon as nothing reads the keys any more: leaving may take
                    # seconds when the server is gone, and meanwhile each focus change
                    # would type "^[[I" or "^[[O" on the screen (and the shell's line).
                    stop_reporting()
                    left = await chat.close()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiver
            finally:
                stop_reporting()  # every other way out (an error, a cancellation)
            server_lost = self.ended is not None and chat.server_lost
            now = self.clock()
            if self.ended is not None:
                await self.show(
                    closed_lines(
                        self.ended,
                        now,
                        server_lost=server_lost,
                        me=chat.name,
                        is_host=chat.is_host,
                        width=self.width,
                    )
                )
            elif not left:
                await self.info(NOT_LEFT, "class:error")
            else:
                await self.show(left_lines(chat.room, now, is_host=chat.is_host, width=self.width))
        lines_lost = chat.undelivered + chat.unconfirmed > 0
        return exit_status(self.ended, server_lost=server_lost, left=left, lines_lost=lines_lost)

    async def _introduce(self) -> None:
        chat = self.chat
        now = self.clock()
        # Push what the screen holds up into the scrollback, so the input line starts at
        # the bottom, above the toolbar, and stays there.
        self.output.write_raw("\n" * max(0, self.output.get_size().rows - 1))
        where = format_server_address(chat.server)
        role = "host" if chat.is_host else "member"
        width = self.width
        lines = [
            *info_lines(
                f'in room "{chat.room}" on {where} as {chat.name} ({role})', now, width=width
            ),
            *who_lines(chat.members, chat.host, now, width=width),
        ]
        if chat.is_host:
            lines += info_lines(
                "you are the host: when you leave, the room closes for everyone",
                now,
                "class:warning",
                width=width,
            )
        if not chat.delivery:
            lines += info_lines(
                "this server speaks version 1 of the protocol: no history, and lost "
                "messages are reported, not resent",
                now,
                width=width,
            )
        lines += info_lines(
            "type a message and Enter to send; /help for commands", now, width=width
        )
        await self.show(lines)

    async def _receive(self) -> None:
        chat = self.chat
        async for first in chat:
            # This event and every one already waiting behind it, up to a batch.
            lines: list[Fragments] = []
            closed: Closed | None = None
            ring = False
            events = [first]
            while events and closed is None:
                for event in events:
                    if isinstance(event, Closed):
                        closed = event  # always the last event
                        break
                    lines += self._lines(event)
                    ring = ring or self._calls_us(event)
                if len(lines) >= BATCH_LINES:
                    break
                events = chat.ready_events(BATCH_LINES - len(lines))
            if lines:
                if self._marker_due:
                    self._marker_due = False
                    lines.insert(0, info_line(UNREAD_MARKER, self.clock(), "class:marker"))
                await self.show(self._dated(lines))
            if ring and self.bell and (self._away or not self.session.default_buffer.text):
                self.output.bell()
            if closed is not None:
                self._end(closed)  # printed once the prompt is gone, as the last line
                break
        self._end(None)

    def _calls_us(self, event: Event) -> bool:
        """Whether ``event`` is someone else's message, sent now, that names us."""
        me = self.chat.name
        return (
            isinstance(event, Message)
            and not event.history
            and event.sender.casefold() != me.casefold()
            and mentions(event.text, me)
        )

    def _lines(self, event: Event) -> list[Fragments]:
        if isinstance(event, Message):
            self.roster.spoke(event.sender)
        now = self.clock()
        lines = event_lines(
            event, now, self.chat.name, delivery=self.chat.delivery, width=self.width
        )
        if isinstance(event, Message | Notice) and event.history and not self._history_shown:
            self._history_shown = True
            lines.insert(0, info_line("earlier in the room:", now))
        return lines

    def _dated(self, lines: list[Fragments]) -> list[Fragments]:
        now = self.clock()
        if now.date() == self._day:
            return lines
        self._day = now.date()
        return [info_line(now.strftime("day changed to %A %d %B %Y"), now), *lines]

    def _end(self, closed: Closed | None) -> None:
        if closed is not None and self.ended is None:
            self.ended = closed
        self._exit_prompt()

    def _exit_prompt(self) -> None:
        app = self.session.app
        if app.future is not None and not app.future.done():
            app.exit(exception=_Ended())

    def _exit_if_ended(self) -> None:
        # pre_run: the room may have ended between two prompts.
        if self.ended is not None or self.chat.closed is not None:
            self._exit_prompt()

    # -- the input line ------------------------------------------------------------

    def _toolbar(self) -> FormattedText:
        chat = self.chat
        if time.monotonic() < self._leave_until:
            key = self._leave_key
            if chat.is_host:
                text = f" {key} again to leave and close the room for everyone (you host it) "
            else:
                text = f" {key} again to leave (or /exit) "
            return FormattedText([("class:bottom-toolbar.leaving", text)])
        return FormattedText(
            toolbar(
                chat.room,
                chat.members,
                chat.host,
                chat.name,
                chat.unconfirmed,
                over_tcp=chat.over_tcp,
                e2e=chat.e2e,
                encrypted=chat.encrypted,
            )
        )

    def _input_height(self) -> Dimension:
        """At most :data:`INPUT_ROWS` rows for the input line (fewer on a small screen):
        a long paste scrolls inside it rather than push the chat out of sight. And the
        prompt never starts on the screen's top row, whose erasing (before each line
        printed above the prompt) is a clear of the whole screen, which tmux keeps in
        the scrollback: stray copies of the prompt and the toolbar would pile up there.
        (Three rows stay free: the error under a line too long, the toolbar, and one
        above the prompt.)"""
        rows = self.output.get_size().rows
        return Dimension(max=max(1, min(INPUT_ROWS, rows // 2, rows - 3)))

    def _check_line(self, document: Document) -> None:
        """Refuse, under the input line, a line the client would refuse to send."""
        command = parse_input(document.text)
        if command.kind != "send":
            return
        try:
            self.chat.check_text(command.text)
        except OCMError as error:
            if error.code is ErrorCode.TOO_LARGE:
                size = len(command.text.encode("utf-8", "surrogatepass"))
                limit = self.chat.max_text_bytes
                message = f"too long to send: {size} bytes, at most {limit} (Ctrl-C clears it)"
            else:
                message = error.message
            raise ValidationError(document.cursor_position, message) from None

    def _key_bindings(self) -> KeyBindings:
        keys = KeyBindings()

        def leave_when_pressed_twice(event: KeyPressEvent, key: str) -> None:
            if time.monotonic() < self._leave_until:
                event.app.exit(exception=KeyboardInterrupt())
                return
            self._leave_key = key
            self._leave_until = time.monotonic() + LEAVE_CONFIRM_SECONDS
            # The toolbar's question goes when the time is up.
            asyncio.get_running_loop().call_later(LEAVE_CONFIRM_SECONDS, event.app.invalidate)

        @keys.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            # irssi and weechat ignore Ctrl-C; here it clears the line, and leaves only
            # when pressed twice on an empty one.
            buffer = event.current_buffer
            if buffer.text:
                # Cleared, not reset: reset() reloads the history in a task of its own,
                # and an Up pressed before that task ran would find none.
                buffer.document = Document()
                self._leave_until = 0.0
            else:
                leave_when_pressed_twice(event, "Ctrl-C")

        # Ctrl-D on an empty line asks as Ctrl-C does (it left at once, and for a host
        # closed the room, on one stray press); on a typed line it deletes the character
        # under the cursor, prompt_toolkit's own binding.
        @keys.add("c-d", filter=Condition(lambda: not self.session.default_buffer.text))
        def _end_of_input(event: KeyPressEvent) -> None:
            leave_when_pressed_twice(event, "Ctrl-D")

        @keys.add("tab")
        def _complete(event: KeyPressEvent) -> None:
            self._complete(event.current_buffer, 1)

        @keys.add("s-tab")
        def _complete_back(event: KeyPressEvent) -> None:
            self._complete(event.current_buffer, -1)

        # Focus reports (FOCUS_REPORTING_ON): prompt_toolkit reads them as Escape, "[",
        # then "I" or "O", and binds nothing to them, so they would be typed as "[I".
        @keys.add("escape", "[", "I")
        def _focus_in(event: KeyPressEvent) -> None:
            self._away = False
            self._marker_due = False

        @keys.add("escape", "[", "O")
        def _focus_out(event: KeyPressEvent) -> None:
            self._away = True
            self._marker_due = True

        return keys

    def _complete(self, buffer: Buffer, step: int) -> None:
        """Tab: complete the name before the cursor inline, irssi's way. The first Tab
        puts the first match in the line (recent speakers first), each Tab after it the
        next one in its place (Shift-Tab the one before); any other key keeps the
        line as it is. Nothing hidden: no menu to walk, so Up is always the history."""
        document = buffer.document
        cycle = self._cycle
        if cycle is None or (document.text, document.cursor_position) != (
            cycle.text,
            cycle.cursor,
        ):
            found = list(
                self.completer.get_completions(document, CompleteEvent(completion_requested=True))
            )
            if not found:
                self._cycle = None
                return
            start = document.cursor_position + found[0].start_position
            cycle = _Cycle(start, [c.text for c in found], -1 if step > 0 else 0, "", 0)
        cycle.index = (cycle.index + step) % len(cycle.matches)
        match = cycle.matches[cycle.index]
        text = document.text[: cycle.start] + match + document.text[document.cursor_position :]
        cycle.cursor = cycle.start + len(match)
        cycle.text = text
        buffer.document = Document(text, cycle.cursor)
        self._cycle = cycle

    async def _read_input(self) -> None:
        chat = self.chat
        kept = ""  # a line the client refused, given back to edit
        while self.ended is None:
            try:
                line = await self.session.prompt_async(default=kept, pre_run=self._exit_if_ended)
            except (_Ended, EOFError, KeyboardInterrupt):
                return  # Ctrl-C or Ctrl-D twice, or the room ended
            kept = ""
            command = parse_input(line)
            match command.kind:
                case "exit":
                    return
                case "send":
                    try:
                        await chat.send(command.text)
                    except ProtocolError as error:  # refused: say why, give the text back
                        kept = line
                        await self.info(
                            f"{error.message}; it is back in the input line",
                            "class:error",
                        )
                    except OCMError as error:
                        await self.info(error.message, "class:error")
                case "who":
                    await self.show(
                        who_lines(chat.members, chat.host, self.clock(), width=self.width)
                    )
                case "help":
                    await self.show(help_lines(self.clock(), width=self.width))
                case "unknown":
                    await self.info(
                        f"unknown command {sanitize(command.text)} — /help lists the commands",
                        "class:error",
                    )


# ---------------------------------------------------------------------------
# Questions before the chat: server, name, create or join, room, password
# ---------------------------------------------------------------------------


class _Hidden(Processor):
    """Shows nothing of what is typed, and leaves the cursor where the answer starts:
    no echo, as ssh and sudo ask for a password (not even its length)."""

    def apply_transformation(self, transformation_input: TransformationInput) -> Transformation:
        return Transformation([], source_to_display=lambda i: 0, display_to_source=lambda i: 0)


class Prompter:
    """Asks one question at a time on the terminal (passwords without echo)."""

    def __init__(self, *, input: Input | None = None, output: Output | None = None) -> None:
        self.session: PromptSession[str] = PromptSession(input=input, output=output, style=STYLE)
        # Passwords have their own session, which keeps no history: Up at a later
        # question must not bring a password back, in clear.
        self.secrets: PromptSession[str] = PromptSession(
            input=input,
            output=output,
            style=STYLE,
            history=DummyHistory(),
            input_processors=[_Hidden()],
        )

    async def say(self, text: str, style: str = "") -> None:
        async with in_terminal():
            output = self.session.app.output
            render_fragments(output, FormattedText([(style, text), ("", "\n")]), STYLE)
            output.flush()

    async def ask(
        self,
        question: str,
        *,
        default: str = "",
        check: Callable[[str], object] | None = None,
        password: bool = False,
        choices: Sequence[str] = (),
    ) -> str:
        """Ask until ``check`` accepts the answer (it raises ValueError or OCMError to
        refuse, with the reason shown under the prompt). Empty means ``default``. A
        ``password`` is not shown at all while it is typed."""

        def explain(document: Document) -> None:
            if check is None:
                return
            try:
                check((document.text if password else document.text.strip(" ")) or default)
            except (ValueError, OCMError) as error:
                message = error.message if isinstance(error, OCMError) else str(error)
                raise ValidationError(len(document.text), message) from None

        hint = f" [{default}]" if default else ""
        session = self.secrets if password else self.session
        answer = await session.prompt_async(
            [("class:question", f"{question}{hint}: ")],
            completer=WordCompleter(list(choices), sentence=True) if choices else None,
            validator=_FunctionValidator(explain),
            validate_while_typing=False,
        )
        if password:
            return answer or default  # spaces may be part of a password: never strip it
        # Trimmed as the server trims names: U+0020 only (docs/protocol.md, Username).
        return answer.strip(" ") or default


class _FunctionValidator(Validator):
    def __init__(self, check: Callable[[Document], None]) -> None:
        self.check = check

    def validate(self, document: Document) -> None:
        self.check(document)


def check_name(text: str) -> str:
    """A username as the server will take it (trimmed, 1-255 bytes, no controls)."""
    return validate_name(text.strip(" "), "name", error=LocalProtocolError)


async def ask_name(prompter: Prompter) -> str:
    return await prompter.ask("your name", check=check_name)


async def ask_password(prompter: Prompter, room: str) -> str:
    return await prompter.ask(f'password for "{room}"', password=True)


async def ask_new_password(prompter: Prompter, room: str | None = None) -> str:
    """The password of a room about to be created, asked twice until both agree: a typo
    nobody knows would lock everyone out. Empty (asked once): an open room."""
    question = "password (empty for an open room)"
    if room is not None:
        question = f'password for the new room "{room}" (empty for an open room)'
    while True:
        password = await prompter.ask(question, password=True)
        if not password:
            return ""
        if await prompter.ask("the same password again", password=True) == password:
            return password
        await prompter.say("! the two passwords differ; once more", "class:error")


def _room_lines(rooms: Sequence[RoomInfo]) -> list[str]:
    lines = []
    for room in rooms:
        access = "password" if room.protected else "open"
        members = f"{room.members} member" + ("" if room.members == 1 else "s")
        lines.append(f"  {sanitize(room.name)}  ({members}, {access})")
    return lines


async def interactive(
    default_server: str,
    *,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    history: int = DEFAULT_HISTORY,
    bell: bool = True,
    input: Input | None = None,
    output: Output | None = None,
    security: Security | None = None,
) -> int:
    """``ocm`` alone: ask where and who, create or join, then chat (showing the room's
    last ``history`` messages first; ``bell``: see :class:`TerminalChat`; ``security``:
    TLS and whom to trust, ``Security()`` when None).

    A refusal from the server is shown, and only what it refused is asked again: a
    taken name asks for another name, a wrong password for the password, a room that
    is gone (or exists already) for the room. Anything else goes back to the choice
    between joining and creating.
    """
    prompter = Prompter(input=input, output=output)
    try:
        server_text = await prompter.ask(
            "server", default=default_server, check=parse_server_address
        )
        server = parse_server_address(server_text)
        security = Security() if security is None else security
        rooms = await list_rooms(server, security=security)
        name = await ask_name(prompter)
        entry = _Entry(prompter, server, name, heartbeat_interval, history, security)
        while True:
            try:
                chat = await entry.choose(rooms)
            except ServerError as error:
                await prompter.say(f"! {error.message}", "class:error")
                rooms = await list_rooms(server, security=security)
                continue
            break
    except (EOFError, KeyboardInterrupt):
        return 0
    return await TerminalChat(chat, input=input, output=output, bell=bell).run()


class _Entry:
    """The questions of ``ocm`` alone after the server and the name, and the way in."""

    def __init__(
        self,
        prompter: Prompter,
        server: tuple[str, int],
        name: str,
        heartbeat_interval: float,
        history: int,
        security: Security,
    ) -> None:
        self.prompter = prompter
        self.security = security
        self.server = server
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        self.history = history

    async def choose(self, rooms: Sequence[RoomInfo]) -> ChatClient:
        """Join a listed room or create one; a ServerError this cannot answer."""
        prompter = self.prompter
        if rooms:
            await self._list(rooms)
            choice = await prompter.ask(
                "join a room or create one? (join/create)",
                default="join",
                check=_check_choice,
                choices=["join", "create"],
            )
            if not choice.lower().startswith("c"):
                return await self._join(rooms)
        else:
            await prompter.say(
                f"no rooms on {format_server_address(self.server)} yet: create the first one"
            )
        return await self._create()

    async def _list(self, rooms: Sequence[RoomInfo]) -> None:
        await self.prompter.say(f"rooms on {format_server_address(self.server)}:")
        for line in _room_lines(rooms):
            await self.prompter.say(line)

    async def _create(self) -> ChatClient:
        prompter = self.prompter
        room = await self._ask_new_room()
        password = await ask_new_password(prompter)
        while True:
            try:
                return await ChatClient.create(
                    self.server,
                    room,
                    self.name,
                    password or None,
                    heartbeat_interval=self.heartbeat_interval,
                    security=self.security,
                )  # a new room has no history to show
            except ServerError as error:
                if error.code is not ErrorCode.ROOM_EXISTS:
                    raise
                await prompter.say(f"! {error.message}", "class:error")
                room = await self._ask_new_room()

    async def _ask_new_room(self) -> str:
        return await self.prompter.ask(
            "new room name",
            check=lambda t: validate_name(t, "room name", error=LocalProtocolError),
        )

    async def _join(self, rooms: Sequence[RoomInfo]) -> ChatClient:
        prompter = self.prompter
        room, protected = await self._ask_room(rooms)
        password = await ask_password(prompter, room) if protected else None
        while True:
            try:
                return await ChatClient.join(
                    self.server,
                    room,
                    self.name,
                    password,
                    heartbeat_interval=self.heartbeat_interval,
                    history=self.history,
                    security=self.security,
                )
            except ServerError as error:
                if error.code not in _ASKED_AGAIN:
                    raise
                if error.code is ErrorCode.NO_SUCH_ROOM:  # gone since it was listed
                    rooms = await list_rooms(self.server, security=self.security)
                    if not rooms:
                        raise  # and the choice comes again: create the first one
                await prompter.say(f"! {error.message}", "class:error")
                if error.code is ErrorCode.NAME_TAKEN:  # the password was right
                    self.name = await ask_name(prompter)
                elif error.code is ErrorCode.WRONG_PASSWORD:
                    password = await ask_password(prompter, room)
                else:
                    await self._list(rooms)
                    room, protected = await self._ask_room(rooms)
                    password = await ask_password(prompter, room) if protected else None

    async def _ask_room(self, rooms: Sequence[RoomInfo]) -> tuple[str, bool]:
        """A listed room, and whether it wants a password."""
        by_name = {r.name: r for r in rooms}
        room = await self.prompter.ask(
            "room",
            default=rooms[0].name if len(rooms) == 1 else "",
            check=lambda t: _check_listed(t, by_name),
            choices=list(by_name),
        )
        return room, by_name[room].protected


# What joining asks again when the server refuses it (the rest is not the user's to fix
# by typing something else).
_ASKED_AGAIN = frozenset({ErrorCode.NAME_TAKEN, ErrorCode.WRONG_PASSWORD, ErrorCode.NO_SUCH_ROOM})


def _check_choice(text: str) -> None:
    if text.strip().lower() not in ("j", "join", "c", "create"):
        raise ValueError('type "join" or "create"')


def _check_listed(text: str, rooms: dict[str, RoomInfo]) -> None:
    if text not in rooms:
        raise ValueError(f'no room named "{text}"; Tab shows the rooms')
