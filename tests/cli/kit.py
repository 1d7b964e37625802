"""The CLI tests' kit: ``python -m ocm`` as a real process (run to the end, or piped
line by line), a real ``ocm server`` process, and a wait for a room to be listed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ocm.client import list_rooms
from tests.kit import LOOPBACK, MS

SRC = Path(__file__).resolve().parents[2] / "src"
# A clean environment: no OCM_* from the developer's shell, the checkout's code.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("OCM_")}
ENV["PYTHONPATH"] = str(SRC)
PIPE = asyncio.subprocess.PIPE


@dataclass
class Result:
    code: int
    out: str
    err: str


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """``python -m ocm ARGS`` with its three standard streams piped to the test."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ocm",
        *args,
        stdin=PIPE,
        stdout=PIPE,
        stderr=PIPE,
        env={**ENV, **(env or {})},
    )


async def ocm(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 15
) -> Result:
    """Run ``python -m ocm ARGS`` to the end with ``stdin`` piped in."""
    process = await spawn(*args, env=env)
    async with asyncio.timeout(timeout):
        out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


class Piped:
    """An ``ocm`` process whose stdin the test writes and whose stdout it reads."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Piped:
        return cls(await spawn(*args, env=env))

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def line(self, timeout: float = 5) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stdout.readline()
        assert raw, f"no more output; stderr: {await self.stderr()}"
        return raw.decode().rstrip("\n")

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()

    async def finish(self, timeout: float = 5) -> tuple[int, str, str]:
        """Close stdin (end of input) and wait for the exit: (status, rest of stdout, stderr)."""
        async with asyncio.timeout(timeout):
            out, err = await self.process.communicate(b"")
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@asynccontextmanager
async def server_process() -> AsyncIterator[int]:
    """A real ``python -m ocm server`` on loopback, port 0; yields its TCP port."""
    async with server_process_handle() as (port, _):
        yield port


@asynccontextmanager
async def server_process_handle() -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    """:func:`server_process`, and the process itself (to signal it)."""
    process = await spawn("server", "--host", LOOPBACK, "--port", "0")
    try:
        assert process.stderr is not None
        async with asyncio.timeout(10):
            line = (await process.stderr.readline()).decode()
        assert "listening" in line, line
        yield int(line.split("TCP port ")[1].split(",")[0]), process
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def wait_for_room(server: str, room: str) -> None:
    async with asyncio.timeout(5):
        while room not in {r.name for r in await list_rooms(server)}:
            await asyncio.sleep(20 * MS)
