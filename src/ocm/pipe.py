"""Pipe mode: the ``ocm`` client when stdin is not a terminal (scripts, bots, tests).

Each stdin line is sent as one message; each event is one stdout line in the format of
:func:`ocm.chatview.pipe_line`; end of input leaves the room, once the server's copies
of the lines already sent have come back (so ``echo hi | ocm join lobby`` delivers
"hi"). A line the client refuses (too long) is reported on stderr and skipped.

Stdin is read by a daemon thread with ``os.read`` on the file descriptor: it works for
pipes, files and consoles on every platform, and a thread blocked on a quiet pipe never
holds up the exit (a buffered ``sys.stdin`` read would hold its lock at shutdown).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import TextIO

from ocm.chatview import pipe_line
from ocm.client import ChatClient
from ocm.errors import ConnectionLost, ProtocolError

__all__ = ["read_lines", "run_pipe"]

_CHUNK = 64 * 1024


def read_lines(fd: int, encoding: str) -> AsyncIterator[str]:
    """Lines from file descriptor ``fd`` without their line ending, until end of file.

    Undecodable bytes become U+FFFD rather than an error.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def pump() -> None:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        pending = ""
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            for line in complete:
                if not put(line.removesuffix("\r")):
                    return
            if not chunk:
                if pending:
                    put(pending)
                put(None)
                return

    threading.Thread(target=pump, name="ocm-stdin", daemon=True).start()

    async def lines() -> AsyncIterator[str]:
        while (line := await queue.get()) is not None:
            yield line

    return lines()


def _emit(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def run_pipe(chat: ChatClient, lines: AsyncIterator[str], out: TextIO, err: TextIO) -> int:
    """Chat between ``lines`` and ``out`` until end of input or the room ends; leave."""

    async def show() -> None:
        async for event in chat:
            _emit(out, pipe_line(event))

    async def send() -> None:
        async for line in lines:
            if not line.strip():
                continue
            try:
                await chat.send(line)
            except ProtocolError as error:  # too long: say so, keep going
                _emit(err, f"ocm: {error.message}")
            except ConnectionLost:
                return  # the room ended; show() prints why

    printer = asyncio.create_task(show(), name="ocm-pipe-out")
    reader = asyncio.create_task(send(), name="ocm-pipe-in")
    try:
        await asyncio.wait({printer, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reader.cancel()
        await chat.close()  # waits for our last copies, then LEAVE_ROOM
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        try:
            await printer
        except BrokenPipeError:
            # Nobody reads our output any more; keep Python's exit flush quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
    return 0


def stdin_lines() -> AsyncIterator[str]:
    """:func:`read_lines` on this process's stdin, in its configured encoding."""
    return read_lines(sys.stdin.fileno(), sys.stdin.encoding or "utf-8")
