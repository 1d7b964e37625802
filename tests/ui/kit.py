"""The UI tests' kit: what more than one module of tests/ui/ uses (a fixed clock, plain
text of a line's fragments, a TerminalChat on a pipe)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from ocm.client import ChatClient
from ocm.ui.terminal import TerminalChat
from tests.kit import MS

NOON = datetime(2025, 6, 3, 12, 5)


def plain(fragments: list[tuple[str, str]]) -> str:
    return "".join(text for _, text in fragments)


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
