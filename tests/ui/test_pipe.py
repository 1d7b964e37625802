"""ocm.ui.pipe: reading stdin lines off a file descriptor, and pipe mode over a real server.

The ``ocm`` processes themselves are driven in tests/test_cli.py; here the pieces run
in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator

import pytest

from ocm.client import ChatClient, Closed, Event, Message, Notice
from ocm.ui.chatview import EXIT_LEFT, EXIT_ROOM_CLOSED, EXIT_SERVER_LOST
from ocm.ui.pipe import MAX_LINE, MAX_QUEUED_READS, LongLine, read_lines, run_pipe
from ocm.wire import Kind
from ocm.wire.delivery import Data, Ping
from ocm.wire.texts import UnknownToken, format_refusal
from tests.client.fake_delivery import delivery_server
from tests.kit import (
    LOOPBACK,
    MS,
    alice_and_bob,
    fake_server,
    ready,
    running_server,
    server_of,
    until,
)


async def collect(chunks: list[bytes], encoding: str = "utf-8") -> list[str | LongLine]:
    read_end, write_end = os.pipe()
    try:
        lines = read_lines(read_end, encoding)
        for chunk in chunks:
            os.write(write_end, chunk)
            await asyncio.sleep(5 * MS)  # separate reads: exercise the incremental decoder
        os.close(write_end)
        async with asyncio.timeout(1000 * MS):
            return [line async for line in lines]
    finally:
        os.close(read_end)


async def test_lines_without_their_endings() -> None:
    assert await collect([b"one\ntwo\r\nthree"]) == ["one", "two", "three"]
    assert await collect([b"a\n\nb\n"]) == ["a", "", "b"]
    assert await collect([]) == []


async def test_characters_split_across_reads_and_bad_bytes() -> None:
    snowman = "☃".encode()
    assert await collect([b"x" + snowman[:1], snowman[1:] + b"\n"]) == ["x☃"]
    assert await collect([b"bad \xff\xfe end\n"]) == ["bad \ufffd\ufffd end"]
    assert await collect(["café\n".encode("latin-1")], "latin-1") == ["café"]


async def test_a_line_without_end_is_dropped_past_the_limit() -> None:
    """Input without newlines must not grow the memory: past MAX_LINE characters the
    rest of the line is dropped, and the line comes as one LongLine."""
    endless = b"y" * (MAX_LINE + 1)
    huge = [endless[i : i + 4096] for i in range(0, len(endless), 4096)]
    assert await collect([b"before\n", *huge, b"y" * 1000, b"\nafter\n"]) == [
        "before",
        LongLine(),
        "after",
    ]
    assert await collect([b"ok\n", endless]) == ["ok", LongLine()]  # no newline at the end
    just_fits = b"z" * MAX_LINE
    assert await collect([just_fits + b"\n"]) == [just_fits.decode()]


async def test_the_reader_stops_reading_while_lines_wait_to_be_sent() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        lines = read_lines(read_end, "utf-8")
        chunk = b"x" * 1023 + b"\n"
        written = 0
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000):  # 10 MiB offered: far more than may be held
                written += os.write(write_end, chunk)
                await asyncio.sleep(0)  # let the reader thread hand its lines over
        # Nobody took a line: the thread holds a bounded number of reads, then stops
        # reading, and the pipe fills up behind it.
        assert written < (MAX_QUEUED_READS + 2) * 64 * 1024 + 1024 * 1024
        first = await anext(lines)
        assert first == "x" * 1023
    finally:
        os.close(write_end)
        os.close(read_end)


async def test_run_pipe_sends_lines_prints_events_and_leaves_at_the_end() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        too_long = "x" * 5000

        async def stdin() -> AsyncIterator[str]:
            for line in ["hello", "", "   ", too_long, "bye"]:
                yield line

        out, err = io.StringIO(), io.StringIO()
        # The refused line is not lost silently: the exit status says so.
        assert await run_pipe(bob, stdin(), out, err) == 1

        assert out.getvalue() == "bob: hello\nbob: bye\n"
        first, summary = err.getvalue().splitlines()
        assert first.startswith("ocm: message too long: 5000 bytes, at most ")
        assert summary == "ocm: 1 line refused (not sent)"
        events: list[Event] = []
        async with asyncio.timeout(1000 * MS):
            while len(events) < 4:
                events.append(await anext(alice))
        assert events == [
            Notice("bob joined", 1),
            Message("bob", "hello", 2),
            Message("bob", "bye", 3),
            Notice("bob left", 4),
        ]
        await alice.close()


@pytest.mark.parametrize("delivery", [True, False])
async def test_actions_literal_lines_and_exit_are_read_as_on_a_terminal(delivery: bool) -> None:
    """``/me waves`` is an action for every reader (the library's Message, this pipe's
    own output); ``//`` drops one slash and ``/say`` sends its text as it is; ``exit``
    leaves, and what follows it is never sent."""
    async with running_server() as server:
        alice = await ready(
            server, await ChatClient.create(server_of(server), "lobby", "alice", delivery=delivery)
        )
        bob = await ready(
            server, await ChatClient.join(server_of(server), "lobby", "bob", delivery=delivery)
        )

        async def stdin() -> AsyncIterator[str]:
            for line in ["/me waves", "//me x", "/say exit", "//exit", "/who", "exit", "late"]:
                yield line

        out, err = io.StringIO(), io.StringIO()
        assert await run_pipe(bob, stdin(), out, err) == EXIT_LEFT
        assert (out.getvalue(), err.getvalue()) == (
            "* bob waves\nbob: /me x\nbob: exit\nbob: /exit\nbob: /who\n",
            "",
        )
        events: list[Event] = []
        async with asyncio.timeout(1000 * MS):
            while len(events) < 7:
                events.append(await anext(alice))
        assert events == [
            Notice("bob joined", 1),
            Message("bob", "waves", 2, action=True),
            Message("bob", "/me x", 3),
            Message("bob", "exit", 4),
            Message("bob", "/exit", 5),
            Message("bob", "/who", 6),
            Notice("bob left", 7),
        ]
        await alice.send_action("nods")  # the library's way to the same
        async with asyncio.timeout(1000 * MS):
            assert await anext(alice) == Message("alice", "nods", 8, action=True)
        await alice.close()


async def test_a_member_the_server_dropped_is_told_the_room_goes_on() -> None:
    """The server no longer knows our token (we were silent past its idle timeout): not
    "room closed", for the room goes on, and the status of a lost room (4), not 3."""
    async with fake_server() as fake:
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", delivery=False)
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            await forever.wait()
            yield "never"

        await fake.udp.recv_raw()  # the first heartbeat
        fake.send(Kind.ERROR, 0, format_refusal(UnknownToken()))
        out = io.StringIO()
        async with asyncio.timeout(2000 * MS):
            assert await run_pipe(bob, stdin(), out, io.StringIO()) == EXIT_SERVER_LOST
        assert out.getvalue() == (
            "! you were dropped after too long a silence; the room goes on without you\n"
        )


async def test_lines_the_server_never_confirmed_make_the_exit_status_1() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", confirm_timeout=100 * MS
        )

        async def stdin() -> AsyncIterator[str]:
            for line in ["one", "two", "three"]:
                yield line
            await fake.udp.recv_raw()  # the first heartbeat
            for _ in range(3):
                await fake.udp.recv_raw()
            fake.send(Kind.MESSAGE, 1, "two", "bob")  # only "two" comes back

        out, err = io.StringIO(), io.StringIO()
        async with asyncio.timeout(2000 * MS):
            assert await run_pipe(bob, stdin(), out, err) == 1
        assert out.getvalue() == ("bob: two\n! not confirmed: one\n! not confirmed: three\n")
        assert err.getvalue() == "ocm: 2 messages not confirmed by the server\n"


async def test_a_dropped_long_line_is_reported_once_and_makes_the_exit_status_1() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)

        async def stdin() -> AsyncIterator[str | LongLine]:
            yield "hello"
            yield LongLine()

        out, err = io.StringIO(), io.StringIO()
        assert await run_pipe(bob, stdin(), out, err) == 1
        assert out.getvalue() == "bob: hello\n"
        assert err.getvalue() == (
            f"ocm: line longer than {MAX_LINE} characters dropped (not sent)\n"
            "ocm: 1 line refused (not sent)\n"
        )
        await alice.close()


async def test_run_pipe_ends_when_the_room_closes_while_input_is_open() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            await forever.wait()
            yield "never"

        out = io.StringIO()
        session = asyncio.create_task(run_pipe(bob, stdin(), out, io.StringIO()))
        await asyncio.sleep(20 * MS)
        await alice.close()
        async with asyncio.timeout(1000 * MS):
            assert await session == EXIT_ROOM_CLOSED == 3
        assert out.getvalue() == "! room closed: the host alice left\n"


async def no_input() -> AsyncIterator[str]:
    return
    yield ""  # pragma: no cover (an async generator with nothing in it)


async def test_history_comes_first_marked_even_when_input_ends_at_once() -> None:
    """``ocm join lobby --history 3 </dev/null`` prints the history, then leaves: the end
    of input waits for it (catch_up)."""
    async with running_server() as server:
        alice = await ready(server, await ChatClient.create(server_of(server), "lobby", "alice"))
        for n in range(5):
            await alice.send(f"m{n}")
        assert await alice.flush(1000 * MS)
        bob = await ChatClient.join(server_of(server), "lobby", "bob", history=3)
        out, err = io.StringIO(), io.StringIO()
        assert await run_pipe(bob, no_input(), out, err) == EXIT_LEFT
        assert (out.getvalue(), err.getvalue()) == (
            "history alice: m3\nhistory alice: m4\nhistory * bob joined\n",
            "",
        )
        await alice.close()


async def test_a_silent_server_ends_pipe_mode_with_status_4() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", heartbeat_interval=50 * MS
        )
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            yield "hello"
            await forever.wait()

        fake.drop_in = lambda datagram: isinstance(datagram, Data)  # "hello" goes nowhere
        fake.answer = False  # and nothing comes back
        out, err = io.StringIO(), io.StringIO()
        async with asyncio.timeout(2000 * MS):
            assert await run_pipe(bob, stdin(), out, err) == EXIT_SERVER_LOST == 4
        assert out.getvalue() == (
            "! not confirmed: hello\n! the server stopped answering — the chat is over\n"
        )
        # The lost line is said too; the room had ended, so no word about the leave.
        assert err.getvalue() == "ocm: 1 message not confirmed by the server\n"


async def test_a_restarted_server_ends_pipe_mode_with_status_4() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", heartbeat_interval=50 * MS
        )
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            await forever.wait()
            yield "never"

        fake.boot = "0123456789abcdef"
        out, err = io.StringIO(), io.StringIO()
        async with asyncio.timeout(2000 * MS):
            assert await run_pipe(bob, stdin(), out, err) == EXIT_SERVER_LOST
        assert out.getvalue() == (
            "! the server restarted; room lobby no longer exists — the chat is over\n"
        )
        assert err.getvalue() == ""


async def test_a_leave_never_confirmed_is_said_with_status_4() -> None:
    async with delivery_server() as (fake, listener):
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        bob.leave_wait = 100 * MS
        await fake.next_datagram(Ping)
        fake.answer_leave = False  # no DEPARTED, and LEAVE_ROOM cannot connect
        listener.close()
        await listener.wait_closed()
        out, err = io.StringIO(), io.StringIO()
        assert await run_pipe(bob, no_input(), out, err) == EXIT_SERVER_LOST
        assert out.getvalue() == ""
        assert err.getvalue() == (
            "ocm: could not confirm that you left; "
            "the server will drop you after its idle timeout\n"
        )


async def test_waiting_events_are_taken_and_written_in_one_go() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        await fake.next_datagram(Ping)
        assert bob.ready_events(10) == []  # nothing waiting: no wait either
        for n in range(5):
            fake.say("alice", f"line {n}")
        await until(lambda: len(bob._events) == 5)
        assert bob.ready_events(2) == [Message("alice", "line 0", 1), Message("alice", "line 1", 2)]
        assert await anext(bob) == Message("alice", "line 2", 3)
        assert bob.ready_events(0) == []
        assert [e.text for e in bob.ready_events(10) if isinstance(e, Message)] == [
            "line 3",
            "line 4",
        ]

        writes: list[str] = []

        class Out(io.StringIO):
            def write(self, text: str) -> int:
                writes.append(text)
                return super().write(text)

        for n in range(5, 8):
            fake.say("alice", f"line {n}")
        await until(lambda: len(bob._events) == 3)
        out = Out()
        assert await run_pipe(bob, no_input(), out, io.StringIO()) == EXIT_LEFT
        assert writes == ["alice: line 5\nalice: line 6\nalice: line 7\n"]
        assert bob.ready_events(10) == []  # the stream is over


async def test_server_lost_tells_a_lost_server_from_a_closed_room() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        await fake.next_datagram(Ping)
        assert not bob.server_lost  # in the room
        fake.notice("host alice left; the room is closed", Kind.CLOSED)
        assert [e async for e in bob] == [Closed("host alice left; the room is closed")]
        assert not bob.server_lost
    async with fake_server() as v1:
        carol = await ChatClient.join(
            (LOOPBACK, v1.tcp_port), "lobby", "carol", heartbeat_interval=50 * MS
        )
        await v1.udp.recv_raw()
        v1.udp.close()  # nothing listens on the UDP port now: ICMP port unreachable
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            await forever.wait()
            yield "never"

        out = io.StringIO()
        async with asyncio.timeout(2000 * MS):
            assert await run_pipe(carol, stdin(), out, io.StringIO()) == EXIT_SERVER_LOST
        assert carol.server_lost
        assert out.getvalue() == "! lost contact with the server — the chat is over\n"
