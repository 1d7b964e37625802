"""ocm.ui.terminal: the interactive client.

Two levels. In-process, prompt_toolkit reads keys from a pipe and writes plain text, so
the chat loop, the commands and the ways out are tested quickly against a real server.
In a real pseudo-terminal (pexpect), rendered by a terminal emulator (pyte), the screen
itself is checked: a message arriving while a line is half typed lands above the input
and leaves the half-typed line intact.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pyte
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from ocm.client import ChatClient, Closed, Message, Notice
from ocm.errors import ConnectionLost
from ocm.server.app import OCMServer
from ocm.ui.chatview import Roster
from ocm.ui.terminal import (
    NameCompleter,
    Prompter,
    TerminalChat,
    ask_name,
    ask_password,
    interactive,
)
from tests.kit import (
    LOOPBACK,
    MS,
    alice_and_bob,
    fake_server,
    next_event,
    registered,
    running_server,
    settle,
    until,
)

if sys.platform != "win32":  # pyproject.toml: pexpect is not installed on Windows
    import pexpect

SRC = Path(__file__).resolve().parents[2] / "src"
NOON = datetime(2025, 6, 3, 12, 5)


def where(server: OCMServer) -> str:
    return f"{LOOPBACK}:{server.tcp_port}"


# ---------------------------------------------------------------------------
# Completion
# ---------------------------------------------------------------------------


def completions(completer: NameCompleter, text: str, requested: bool = True) -> list[str]:
    event = CompleteEvent(completion_requested=requested)
    return [c.text for c in completer.get_completions(Document(text), event)]


def test_tab_completes_member_names() -> None:
    roster = Roster("bob")
    completer = NameCompleter(roster, lambda: ["alice", "albert", "bob"])
    assert completions(completer, "al") == ["albert: ", "alice: "]
    roster.spoke("alice")
    assert completions(completer, "AL") == ["alice: ", "albert: "]
    assert completions(completer, "thanks al") == ["alice ", "albert "]
    assert completions(completer, "", requested=True) == ["alice: ", "albert: "]
    assert completions(completer, "", requested=False) == []
    assert completions(completer, "zed") == []


# ---------------------------------------------------------------------------
# In-process: keys through a pipe, plain text out
# ---------------------------------------------------------------------------


class Screen:
    """A TerminalChat running on a pipe input and a plain-text output."""

    def __init__(self, chat: ChatClient, keys: PipeInput) -> None:
        self.keys = keys
        self.out = io.StringIO()
        self.output = PlainTextOutput(self.out)
        self.ui = TerminalChat(chat, input=keys, output=self.output, clock=lambda: NOON)
        self.task = asyncio.create_task(self.ui.run())

    def type(self, text: str) -> None:
        self.keys.send_text(text)

    async def shows(self, text: str, times: int = 1, timeout: float = 1000 * MS) -> None:
        async with asyncio.timeout(timeout):
            while self.out.getvalue().count(text) < times:
                self.output.flush()
                await asyncio.sleep(5 * MS)

    async def exit_status(self, timeout: float = 2000 * MS) -> int:
        async with asyncio.timeout(timeout):
            return await self.task


@asynccontextmanager
async def screen_for(chat: ChatClient) -> AsyncIterator[Screen]:
    with create_pipe_input() as keys:
        screen = Screen(chat, keys)
        try:
            yield screen
        finally:
            if not screen.task.done():
                screen.task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await screen.task


async def test_typing_sends_commands_answer_and_exit_leaves() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        async with screen_for(bob) as screen:
            await screen.shows('in room "lobby" on 127.0.0.1:')
            await screen.shows("12:05 -- 2 members: alice (host), bob")
            screen.type("hello alice\r")
            await screen.shows("12:05 <bob> hello alice")  # our copy came back
            screen.type("\x1b[A\r")  # Up: the last line again
            await screen.shows("12:05 <bob> hello alice", times=2)
            await alice.send("hi bob")
            await screen.shows("12:05 <alice> hi bob")
            screen.type("/me waves\r")
            await screen.shows("12:05 * bob waves")
            screen.type("/who\r")
            await screen.shows("-- 2 members: alice (host), bob", times=2)
            screen.type("/help\r")
            await screen.shows("commands: /who lists members")
            screen.type("/nope\r")
            await screen.shows("unknown command /nope — /help lists the commands")
            screen.type("//slash\r")
            await screen.shows("<bob> /slash")
            screen.type("\x1b[200~pasted one\npasted two\x1b[201~")  # a bracketed paste
            screen.type("\r")  # is one message, sent whole
            await screen.shows("<bob> pasted one\r\n" + " " * len("12:05 <bob> ") + "pasted two")
            screen.type("exit\r")
            assert await screen.exit_status() == 0
            await screen.shows('you left "lobby"')
        texts = [e.text for e in await settle(alice) if isinstance(e, Message | Notice)]
        assert texts == [
            "bob joined",
            "hello alice",
            "hello alice",
            "hi bob",
            "/me waves",
            "/slash",
            "pasted one\npasted two",
            "bob left",
        ]
        await alice.close()


async def test_a_too_long_line_is_refused_at_enter_and_kept() -> None:
    async with running_server() as server:
        alice = await ChatClient.create(where(server), "lobby", "alice")
        async with screen_for(alice) as screen:
            await screen.shows("type a message")
            screen.type("\x1b[200~" + "x" * 4100 + "\x1b[201~\r")  # pasted
            refused = "message too long: 4100 bytes, at most 4057 (not sent); it is back"
            await screen.shows(refused, timeout=3000 * MS)
            screen.type("\r")  # Enter again: the same text was still in the input line
            await screen.shows(refused, times=2, timeout=3000 * MS)
            assert alice.unconfirmed == 0 and server.relay.relayed == 0
            screen.keys.send_bytes(b"\x15")  # Ctrl-U clears it
            screen.type("short\r")
            await screen.shows("<alice> short")
            assert server.relay.relayed == 1
            screen.keys.send_bytes(b"\x04")  # Ctrl-D on an empty line
            assert await screen.exit_status() == 0
        assert await list_rooms_now(server) == 0


async def list_rooms_now(server: OCMServer) -> int:
    return len(server.registry.rooms)


async def test_the_host_is_warned_and_ctrl_c_closes_the_room() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        async with screen_for(alice) as screen:
            await screen.shows("you are the host: when you leave, the room closes for everyone")
            screen.keys.send_bytes(b"\x03")  # Ctrl-C
            assert await screen.exit_status() == 0
            await screen.shows('you left "lobby"; the room is closed')
        assert await next_event(bob) == Closed("host alice left; the room is closed")
        await bob.close()


async def test_the_room_closing_under_the_prompt_ends_the_client() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        async with screen_for(bob) as screen:
            await screen.shows("type a message")
            screen.type("half typed")
            await alice.close()
            assert await screen.exit_status() == 0
            await screen.shows("12:05 !! room closed: host alice left; the room is closed")
            assert screen.out.getvalue().rstrip().endswith("the room is closed")


async def test_a_lost_line_is_counted_in_the_toolbar_then_reported() -> None:
    async with fake_server() as fake:  # it never sends our copies back
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", confirm_timeout=300 * MS
        )
        async with screen_for(bob) as screen:
            await screen.shows("type a message")
            assert "sending" not in screen.out.getvalue()
            screen.type("hello?\r")
            await screen.shows("· 1 sending")  # in the toolbar while it is on its way
            await screen.shows("12:05 !! not delivered: hello?", timeout=2000 * MS)
            assert bob.undelivered == 1
            screen.type("/exit\r")
            assert await screen.exit_status() == 0


async def test_passwords_are_taken_as_typed_spaces_included() -> None:
    with create_pipe_input() as keys:
        prompter = Prompter(input=keys, output=PlainTextOutput(io.StringIO()))
        keys.send_text("  pass phrase  \r")
        assert await ask_password(prompter, "vault") == "  pass phrase  "
        keys.send_text("  bob  \r")
        assert await ask_name(prompter) == "bob"  # names are trimmed, as the server does
        # ...of U+0020 only, as the server does: other spaces are part of the name.
        keys.send_text(" \u2003bob\u00a0 \r")
        assert await ask_name(prompter) == "\u2003bob\u00a0"


async def test_interactive_questions_then_chat() -> None:
    async with running_server() as server:
        carol = await ChatClient.create(where(server), "vault", "carol", "s3cret")
        with create_pipe_input() as keys:
            out = io.StringIO()
            session = asyncio.create_task(
                interactive(where(server), input=keys, output=PlainTextOutput(out))
            )

            async def shows(text: str) -> None:
                async with asyncio.timeout(1000 * MS):
                    while text not in out.getvalue():
                        await asyncio.sleep(5 * MS)

            await shows("server [127.0.0.1:")
            keys.send_text("\r")  # the default
            await shows("your name")
            keys.send_text("CAROL\r")
            await shows("join a room or create one?")
            keys.send_text("\r")  # join, the default
            await shows("room [vault]")
            keys.send_text("\r")
            await shows('password for "vault"')
            keys.send_text("s3cret\r")
            await shows('! the name "CAROL" is taken in "vault"')  # asked again
            keys.send_text("dave\r")
            await shows("join a room or create one?")
            keys.send_text("create\r")
            await shows("new room name")
            keys.send_text("den\r")
            await shows("password (empty for an open room)")
            keys.send_text("\r")
            await shows("you are the host")
            keys.send_text("exit\r")
            async with asyncio.timeout(2000 * MS):
                assert await session == 0
        assert "s3cret" not in out.getvalue()  # no echo
        assert [r for r in server.registry.rooms] == ["vault"]
        await carol.close()


async def test_interactive_stops_at_an_unreachable_server() -> None:
    async with running_server() as server:
        address = where(server)
    with create_pipe_input() as keys:
        keys.send_text("\r")
        with pytest.raises(ConnectionLost, match=f"cannot reach server {address}"):
            await interactive(address, input=keys, output=PlainTextOutput(io.StringIO()))


# ---------------------------------------------------------------------------
# A real pseudo-terminal, rendered by a terminal emulator
# ---------------------------------------------------------------------------


class _Screen(pyte.Screen):
    """pyte's screen, answering the program's cursor-position requests through the pty
    like a real terminal does."""

    def __init__(self, columns: int, rows: int, reply: Callable[[str], object]) -> None:
        super().__init__(columns, rows)
        self.reply = reply

    def write_process_input(self, data: str) -> None:
        self.reply(data)


class Terminal:
    """``ocm ARGS`` in a pty of ``rows`` x ``cols``, its output rendered by pyte."""

    def __init__(
        self, args: Sequence[str], env: dict[str, str], rows: int = 20, cols: int = 80
    ) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("OCM_")}
        environment.update(PYTHONPATH=str(SRC), TERM="xterm", **env)
        self.child = pexpect.spawn(
            sys.executable, ["-m", "ocm", *args], env=environment, dimensions=(rows, cols)
        )
        self.screen = _Screen(cols, rows, lambda data: self.child.send(data.encode()))
        self.stream = pyte.ByteStream(self.screen)

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.lines)

    async def pump(self) -> bool:
        """Feed what the program wrote to the emulator; False at end of output."""
        try:
            data = await asyncio.to_thread(self.child.read_nonblocking, 65536, 0.02)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        self.stream.feed(data)
        return True

    async def until(self, check: Callable[[list[str]], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.lines):
            if time.monotonic() > deadline or not await self.pump():
                raise AssertionError("screen never matched:\n" + self.text())

    async def shows(self, text: str, timeout: float = 5) -> None:
        await self.until(lambda lines: any(text in line for line in lines), timeout)

    def cursor(self) -> tuple[int, int]:
        return self.screen.cursor.y, self.screen.cursor.x

    def row_of(self, text: str) -> int:
        return next(i for i, line in enumerate(self.lines) if text in line)

    def type(self, text: str) -> None:
        self.child.send(text.encode())

    async def exit_status(self, timeout: float = 5) -> int:
        deadline = time.monotonic() + timeout
        while await self.pump():
            assert time.monotonic() < deadline, "still running:\n" + self.text()
        self.child.close()
        return int(self.child.exitstatus)

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


@asynccontextmanager
async def terminal(args: Sequence[str], **env: str) -> AsyncIterator[Terminal]:
    term = Terminal(args, env)
    try:
        yield term
    finally:
        term.close()


def cell(term: Terminal, row: int, text: str) -> Any:
    """The emulator's cell (character and attributes) where ``text`` starts on ``row``."""
    return term.screen.buffer[row][term.lines[row].index(text)]


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="pexpect needs a POSIX pseudo-terminal")
async def test_a_message_arrives_above_a_half_typed_line_which_survives() -> None:
    async with running_server() as server:
        alice = await ChatClient.create(where(server), "lobby", "alice")
        async with terminal(["join", "lobby", "--name", "bob", "--server", where(server)]) as term:
            await term.until(lambda lines: lines[-1].startswith(" lobby  2 members · host: alice"))
            await term.shows("bob>")
            prompt_row = term.row_of("bob>")
            assert prompt_row == len(term.lines) - 2  # the input line sits right above it
            await until(lambda: registered(server, "lobby", "bob"))

            term.type("half typed")
            await term.shows("bob> half typed")
            await alice.send("hello bob, you there?")

            await term.shows("<alice> hello bob, you there?")
            # The redraw may reach us in several reads: wait for the cursor to settle
            # back at the end of the half-typed line (it passes the toolbar on the way).
            typing = (prompt_row, len("bob> half typed"))
            await term.until(
                lambda lines: lines[prompt_row] == "bob> half typed" and term.cursor() == typing
            )
            message_row = term.row_of("<alice> hello bob")
            assert message_row < prompt_row
            assert cell(term, message_row, "alice").fg != "default"  # the name's colour
            assert cell(term, message_row, "hello bob").bg != "default"  # bob is mentioned

            term.type(" line\r")  # finish the line and send it
            assert await next_event(alice) == Notice("bob joined", 1)
            assert await next_event(alice) == Message("alice", "hello bob, you there?", 2)
            assert await next_event(alice) == Message("bob", "half typed line", 3)
            await term.shows("<bob> half typed line")
            await term.until(lambda lines: lines[prompt_row] == "bob>")

            term.type("exit\r")
            assert await term.exit_status() == 0
            assert await next_event(alice) == Notice("bob left", 4)
        await alice.close()


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="pexpect needs a POSIX pseudo-terminal")
async def test_interactive_mode_in_a_terminal() -> None:
    async with running_server() as server:
        carol = await ChatClient.create(where(server), "vault", "carol", "s3cret")
        async with terminal([], OCM_SERVER=where(server)) as term:
            await term.shows(f"server [{where(server)}]:")
            term.type("\r")
            await term.shows("your name:")
            term.type("zoë\r")
            await term.shows("vault  (1 member, password)")
            term.type("join\r")
            await term.shows("room [vault]:")
            term.type("vault\r")
            await term.shows('password for "vault":')
            term.type("s3cret\r")
            await term.shows("zoë>")
            assert "s3cret" not in term.text()
            assert await next_event(carol) == Notice("zoë joined", 1)
            term.type("\x04")  # Ctrl-D leaves
            assert await term.exit_status() == 0
            assert await next_event(carol) == Notice("zoë left", 2)
        await carol.close()
