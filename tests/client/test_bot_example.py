"""The README's bot example (examples/bot.py), run as people run it: a child process
against a real server.

It joins its room, or creates it when there is none; answers people and not bots, cut to
fit; leaves on Ctrl-C or SIGTERM and exits 0; and says what went wrong in one line
(status 1), never with a traceback.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ocm.client import ChatClient, Closed, Message, Notice
from ocm.server.app import OCMServer
from ocm.wire import MAX_DATAGRAM
from tests.kit import (
    LOOPBACK,
    MS,
    next_event,
    ready,
    registered,
    running_server,
    server_of,
    settle,
    until,
)

ROOT = Path(__file__).resolve().parents[2]


def readme_bot_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- bot-example -->\n```python\n(.*?)```", readme, re.DOTALL)
    assert found, "README.md lost its bot example"
    return found.group(1)


def test_examples_bot_is_the_readme_example() -> None:
    code = readme_bot_example()
    assert (ROOT / "examples" / "bot.py").read_text(encoding="utf-8") == code
    assert len([line for line in code.splitlines() if line.strip()]) <= 35  # read at a glance


@asynccontextmanager
async def bot(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The README's example in a child process, with these command-line arguments
    (``OCM_SERVER`` unset: the tests say ``--server``); killed if a test leaves it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OCM_SERVER", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        readme_bot_example(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def finish(process: asyncio.subprocess.Process) -> tuple[int | None, str]:
    """The exit status and stderr, within 5 s."""
    async with asyncio.timeout(5):
        _, stderr = await process.communicate()
    return process.returncode, stderr.decode()


def where(server: OCMServer) -> str:
    return f"{LOOPBACK}:{server.tcp_port}"


async def test_the_bot_joins_an_existing_room_and_answers_people_only() -> None:
    async with running_server() as server:
        alice = await ready(server, await ChatClient.create(server_of(server), "lobby", "alice"))
        async with bot("--server", where(server)) as process:  # the default room: lobby
            assert await next_event(alice, 10_000 * MS) == Notice("echobot joined", 1)
            await until(lambda: registered(server, "lobby", "echobot"))
            await alice.send("hello bot")
            assert await next_event(alice) == Message("alice", "hello bot", 2)
            assert await next_event(alice) == Message("echobot", "alice said: hello bot", 3)

            # Another bot is not answered (two echo bots would echo each other forever),
            # and an answer that would be too long is cut, not a crash.
            other = await ready(
                server, await ChatClient.join(server_of(server), "lobby", "OtherBot")
            )
            await other.send("beep")
            longest = "é" * (alice.max_text_bytes // 2)
            await alice.send(longest)
            texts = [e.text for e in await settle(alice, 300 * MS) if isinstance(e, Message)]
            limit = min(MAX_DATAGRAM - 2 - len("lobby") - len(alice.token), MAX_DATAGRAM - 6 - 7)
            answer = f"alice said: {longest}".encode()[:limit].decode(errors="ignore")
            assert texts == ["beep", longest, answer]
            await other.close()

            await alice.close()  # the room closes; the bot's loop ends; it exits
            assert await finish(process) == (0, "")


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="no SIGINT or SIGTERM to send on Windows")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_the_bot_creates_a_missing_room_and_leaves_on_a_signal(signum: int) -> None:
    """No room "den": the bot creates it and hosts it, answers in it, and on Ctrl-C
    (SIGINT) or SIGTERM leaves it (closing it, as its host) and exits 0."""
    async with running_server() as server:
        args = ("--server", where(server), "--room", "den", "--name", "denbot")
        async with bot(*args) as process:
            await until(lambda: registered(server, "den", "denbot"), 10_000 * MS)
            host = server.registry.rooms["den"].host
            assert host is not None and host.name == "denbot"
            async with await ChatClient.join(server_of(server), "den", "carol") as carol:
                await ready(server, carol)
                await carol.send("anyone here?")
                said = [await next_event(carol), await next_event(carol)]
                assert [(m.sender, m.text) for m in said if isinstance(m, Message)] == [
                    ("carol", "anyone here?"),
                    ("denbot", "carol said: anyone here?"),
                ]
                process.send_signal(signum)
                closed = await next_event(carol, 5000 * MS)
                assert isinstance(closed, Closed), closed
            assert await finish(process) == (0, "")
        assert "den" not in server.registry.rooms


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_the_bot_says_what_went_wrong_in_one_line() -> None:
    port = unused_port()
    async with bot("--server", f"{LOOPBACK}:{port}") as process:
        assert await finish(process) == (
            1,
            f"echobot: cannot reach server {LOOPBACK}:{port} (connection refused)\n",
        )
    async with bot("--server", "::1:9312") as process:
        code, err = await finish(process)
        assert (code, err.count("\n")) == (1, 1)
        assert err.startswith('echobot: "::1:9312" is ambiguous: write an IPv6 address')
    async with (
        running_server() as server,
        await ChatClient.create(server_of(server), "lobby", "echobot"),
        bot("--server", where(server)) as process,
    ):
        code, err = await finish(process)
    assert (code, err.count("\n"), "Traceback" in err) == (1, 1, False)
    assert err.startswith("echobot: name_taken: ")
