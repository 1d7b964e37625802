"""Attack 8: a member and a host whose processes are killed: no LEAVE, no goodbye."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from ocm.wire import (
    JoinRoom,
    Kind,
    ListRooms,
    decode_server_datagram,
)
from tests.hostile.context import (
    Context,
    timed,
)
from tests.hostile.harness import (
    Attack,
    enter,
    keep_alive,
    server_env,
)
from tests.kit import MS, Member, call

MEMBER_SCRIPT = str(Path(__file__).with_name("member.py"))


# ---------------------------------------------------------------------------
# 8. A member and a host that vanish without LEAVE
# ---------------------------------------------------------------------------

DOOMED = "doomed"


async def spawn_member(port: int, name: str, *, create: bool) -> asyncio.subprocess.Process:
    args = [MEMBER_SCRIPT, str(port), DOOMED, name] + (["--create"] if create else [])
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, env=server_env()
    )
    assert process.stdout is not None
    async with asyncio.timeout(10):
        line = await process.stdout.readline()
    assert line.strip() == b"ready", f"member {name} did not start: {line!r}"
    return process


async def wait_for(member: Member, kind: Kind, timeout: float) -> tuple[float, str]:
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            datagram = decode_server_datagram(await member.peer.received.get())
            if datagram.kind is kind:
                return time.monotonic() - start, datagram.text


async def kill(process: asyncio.subprocess.Process) -> None:
    process.kill()  # SIGKILL: no LEAVE, no goodbye datagram
    await process.wait()


@timed
async def attack_8_vanishing(ctx: Context) -> Attack:
    port = ctx.server.tcp_port
    idle = ctx.limits.idle_timeout
    host = await spawn_member(port, "hank", create=True)
    member = await spawn_member(port, "mia", create=False)
    observer = await enter(port, JoinRoom(DOOMED, "olga"))
    stop = asyncio.Event()
    beating = asyncio.create_task(keep_alive([observer], stop, idle / 5))
    try:
        await asyncio.sleep(100 * MS)
        while not observer.peer.received.empty():
            observer.peer.received.get_nowait()
        await kill(member)
        dropped_after, notice = await wait_for(observer, Kind.NOTICE, idle + 3)
        await kill(host)
        closed_after, closed = await wait_for(observer, Kind.CLOSED, idle + 3)
    finally:
        stop.set()
        await beating
        observer.peer.close()
        for process in (host, member):
            if process.returncode is None:
                await kill(process)
    _, listing = await call(port, ListRooms())
    facts = {
        "notice": notice,
        "dropped_after": round(dropped_after, 2),
        "closed": closed,
        "closed_after": round(closed_after, 2),
        "room_listed_after": DOOMED in repr(listing),
    }
    return Attack(
        8,
        "A member and the host vanish without LEAVE",
        tried="two client processes (host hank, member mia) killed with SIGKILL, "
        "one after the other, while a third member (olga) listens",
        outcome=f'olga got NOTICE "{notice}" {dropped_after:.1f} s after the kill and '
        f'CLOSED "{closed}" {closed_after:.1f} s after the host\'s '
        f"(--idle-timeout {idle:g}); the room is gone from LIST_ROOMS",
        facts=facts,
    )
