"""Pipe mode: the ``ocm`` client when stdin is not a terminal (scripts, bots, tests).

Each stdin line is sent as one message, read as on a terminal
(:func:`ocm.ui.chatview.pipe_input`): ``/me waves`` is an action, ``exit`` or ``/exit``
leaves, ``/say TEXT`` and a leading ``//`` send a line literally. Each event is one
stdout line in the format of :func:`ocm.ui.chatview.pipe_line`. End of input (or
``exit``) leaves the room, once the server's copies of the lines already sent have come
back (so ``echo hi | ocm join lobby`` delivers "hi"). A line the client refuses (too
long) is reported on stderr and skipped. Lines go
out no faster than the server confirms them (the client's window). The exit status
(:func:`ocm.ui.chatview.exit_status`) says how the chat ended: 0 when we left, 3 when
the room closed, 4 when we lost it otherwise (the server was lost, or dropped us, or
our leave went unanswered); and 1 when we left but a line was refused or never
confirmed, so a script never loses lines silently.

Stdin is read by a daemon thread with ``os.read`` on the file descriptor: it works for
pipes, files and consoles on every platform, and a thread blocked on a quiet pipe never
holds up the exit (a buffered ``sys.stdin`` read would hold its lock at shutdown). The
thread stops reading while :data:`MAX_QUEUED_READS` reads wait to be sent, so ``yes |
ocm join ...`` does not fill the memory, and a line longer than :data:`MAX_LINE` is
dropped as it is read (``cat /dev/urandom | ocm join ...`` has no newline to wait for).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from ocm.client import ChatClient
from ocm.errors import ConnectionLost, ProtocolError
from ocm.ui.chatview import NOT_LEFT, closing, exit_status, pipe_input, pipe_line

if TYPE_CHECKING:
    from ocm.client import Closed, Event

__all__ = [
    "BATCH_EVENTS",
    "HISTORY_WAIT",
    "MAX_LINE",
    "MAX_QUEUED_READS",
    "LongLine",
    "read_lines",
    "run_pipe",
]

_CHUNK = 64 * 1024
# Reads (each up to 64 KiB of lines) waiting to be sent at most: 1 MiB of input.
MAX_QUEUED_READS = 16
# Characters of one line kept at most while its newline has not come. No message may be
# longer than 4 KiB (section 2), so a longer line would be refused anyway; 64 KiB is far
# past that and bounds the memory that input without newlines can take.
MAX_LINE = 64 * 1024
# Events written to stdout in one go at most (one write and one flush for all of them).
BATCH_EVENTS = 1000
# How long the end of input waits for the history asked for (--history) at most. The
# server answers a repair at --repair-rate, 1,000 datagrams a second by default: this
# is enough for the most history the client takes, 4,096 Seqs.
HISTORY_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class LongLine:
    """In place of a line longer than :data:`MAX_LINE` characters: dropped unread."""


def read_lines(fd: int, encoding: str) -> AsyncIterator[str | LongLine]:
    """Lines from file descriptor ``fd`` without their line ending, until end of file.

    Undecodable bytes become U+FFFD rather than an error. A line longer than
    :data:`MAX_LINE` characters comes as one :class:`LongLine`.
    """
    loop = asyncio.get_running_loop()
    # The lines of one read at a time; an empty list is the end of the input. The thread
    # takes a slot for each read it queues and the reader gives it back: the backpressure.
    queue: asyncio.Queue[list[str | LongLine]] = asyncio.Queue()
    slots = threading.Semaphore(MAX_QUEUED_READS)

    def put(lines: list[str | LongLine]) -> bool:
        while not slots.acquire(timeout=0.2):
            if loop.is_closed():
                return False  # nobody is listening any more
        try:
            loop.call_soon_threadsafe(queue.put_nowait, lines)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def pump() -> None:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        pending = ""
        dropping = False  # in a line too long to keep: skip to its end
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                chunk = b""
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            lines: list[str | LongLine] = []
            for line in complete:
                lines.append(LongLine() if dropping else line.removesuffix("\r"))
                dropping = False
            if dropping or len(pending) > MAX_LINE:
                dropping, pending = True, ""
            if lines and not put(lines):
                return
            if not chunk:
                if dropping or pending:
                    put([LongLine() if dropping else pending])
                put([])
                return

    threading.Thread(target=pump, name="ocm-stdin", daemon=True).start()

    async def lines() -> AsyncIterator[str | LongLine]:
        while batch := await queue.get():
            slots.release()
            for line in batch:
                yield line

    return lines()


def _emit(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def run_pipe(
    chat: ChatClient, lines: AsyncIterator[str | LongLine], out: TextIO, err: TextIO
) -> int:
    """Chat between ``lines`` and ``out`` until end of input, ``exit``, or the room
    ends; leave.

    The exit status of :func:`~ocm.ui.chatview.exit_status`: 0 when we left and the
    server confirmed every line; 1 when a line was refused (too long: not sent) or not
    confirmed; 3 when the room closed; 4 when the server was lost or dropped us, or did
    not confirm our leave (said on stderr).
    """
    refused = 0
    closed: Closed | None = None

    async def show() -> None:
        nonlocal closed
        async for first in chat:
            # This event and those already waiting behind it: one write, one flush.
            events = [first, *chat.ready_events(BATCH_EVENTS - 1)]
            for event in events:
                closed = closing(event) or closed
            out.write("".join(shown(event) + "\n" for event in events))
            out.flush()

    def shown(event: Event) -> str:
        # The last line says how the chat ended, for us: "you were dropped ..." is
        # ours alone, and whether the server was lost is known once the room is over.
        return pipe_line(event, me=chat.name, is_host=chat.is_host, server_lost=chat.server_lost)

    async def send() -> None:
        nonlocal refused
        async for line in lines:
            if isinstance(line, LongLine):
                refused += 1
                _emit(err, f"ocm: line longer than {MAX_LINE} characters dropped (not sent)")
                continue
            command = pipe_input(line)
            if command.kind == "exit":
                return  # as the end of input
            if command.kind != "send":
                continue  # an empty line
            try:
                await chat.send(command.text)  # waits while the window is full; yields
            except ProtocolError as error:  # too long: say so, keep going
                refused += 1
                _emit(err, f"ocm: {error.message}")
            except ConnectionLost:
                return  # the room ended; show() prints why

    printer = asyncio.create_task(show(), name="ocm-pipe-out")
    reader = asyncio.create_task(send(), name="ocm-pipe-in")
    try:
        done, _ = await asyncio.wait({printer, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            # End of input: first the history (``ocm join ... --history 20 </dev/null``
            # prints it, then leaves). Every line still in flight was sent less than
            # confirm_timeout ago, so by then its copy is back or it is Undelivered.
            await chat.catch_up(HISTORY_WAIT)
            await chat.flush(chat.confirm_timeout)
    finally:
        reader.cancel()
        left = await chat.close()  # waits for our last copies, then leaves
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        try:
            await printer
        except BrokenPipeError:
            # Nobody reads our output any more; keep Python's exit flush quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
    lost = chat.undelivered + chat.unconfirmed
    if refused:
        _emit(err, f"ocm: {refused} line{'' if refused == 1 else 's'} refused (not sent)")
    if lost:
        _emit(err, f"ocm: {lost} message{'' if lost == 1 else 's'} not confirmed by the server")
    if closed is None and not left:
        _emit(err, f"ocm: {NOT_LEFT}")
    server_lost = closed is not None and chat.server_lost
    return exit_status(closed, server_lost=server_lost, left=left, lines_lost=bool(refused or lost))


def stdin_lines() -> AsyncIterator[str | LongLine]:
    """:func:`read_lines` on this process's stdin, in its configured encoding."""
    return read_lines(sys.stdin.fileno(), sys.stdin.encoding or "utf-8")
