"""ocm.pipe: reading stdin lines off a file descriptor, and pipe mode over a real server.

The ``ocm`` processes themselves are driven in tests/test_cli.py; here the pieces run
in-process.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator

from ocm.client import ChatClient, Event, Message, Notice
from ocm.pipe import read_lines, run_pipe
from tests.kit import LOOPBACK, MS, running_server
from tests.test_client import ready


async def collect(chunks: list[bytes], encoding: str = "utf-8") -> list[str]:
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


async def test_run_pipe_sends_lines_prints_events_and_leaves_at_the_end() -> None:
    async with running_server() as server:
        where = (LOOPBACK, server.tcp_port)
        alice = await ready(server, await ChatClient.create(where, "lobby", "alice"))
        bob = await ready(server, await ChatClient.join(where, "lobby", "bob"))
        too_long = "x" * 5000

        async def stdin() -> AsyncIterator[str]:
            for line in ["hello", "", "   ", too_long, "bye"]:
                yield line

        out, err = io.StringIO(), io.StringIO()
        assert await run_pipe(bob, stdin(), out, err) == 0

        assert out.getvalue() == "bob: hello\nbob: bye\n"
        assert err.getvalue().startswith("ocm: message too long: 5000 bytes, at most ")
        assert err.getvalue().count("\n") == 1
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


async def test_run_pipe_ends_when_the_room_closes_while_input_is_open() -> None:
    async with running_server() as server:
        where = (LOOPBACK, server.tcp_port)
        alice = await ready(server, await ChatClient.create(where, "lobby", "alice"))
        bob = await ready(server, await ChatClient.join(where, "lobby", "bob"))
        forever = asyncio.Event()

        async def stdin() -> AsyncIterator[str]:
            await forever.wait()
            yield "never"

        out = io.StringIO()
        session = asyncio.create_task(run_pipe(bob, stdin(), out, io.StringIO()))
        await asyncio.sleep(20 * MS)
        await alice.close()
        async with asyncio.timeout(1000 * MS):
            assert await session == 0
        assert out.getvalue() == "! room closed: host alice left; the room is closed\n"
