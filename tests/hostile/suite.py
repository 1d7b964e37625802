"""The hostile-client suite, run once: a server process, a chatting room, twelve attacks.

:func:`run_suite` starts ``ocm server`` on 127.0.0.1 port 0, seats the well-behaved room,
starts it chatting, runs attacks 1-6 and 8-12 at the same time (floods one after another,
see :class:`~tests.hostile.attacks.Context`), then attack 7, which also accounts for every
datagram the others sent. Then the room stops and is checked, the server is asked to
serve once more, its memory and log are read, and it is stopped with SIGTERM.
The tests in test_hostile.py assert on the :class:`SuiteResult`; report.py renders it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ocm.wire import CreateRoom, Kind, ListRooms, decode_server_datagram
from tests.hostile.attacks import ATTACKS, LAST, Context
from tests.hostile.harness import (
    Attack,
    Pacer,
    ServerProcess,
    SuiteLimits,
    enter,
    keep_alive,
    raise_fd_limit,
)
from tests.hostile.room import ChatRoom, RoomReport
from tests.kit import MS, call

# The seed of every random choice in the suite; set OCM_HOSTILE_SEED to vary it.
DEFAULT_SEED = 4
# Peak resident memory the server may reach during the suite: about 25 MiB for the
# interpreter, 2 x 16 MiB for password hashes (at most two at a time, and the C allocator
# keeps that memory for the next one), and the rest for the connections, rooms and
# buffers the attacks create, all capped by the limits. Measured: 65-76 MiB.
MEMORY_BOUND_MIB = 100


@dataclass(slots=True)
class SuiteResult:
    limits: SuiteLimits
    seed: int
    attacks: list[Attack]
    room: RoomReport
    seconds: float = 0.0
    memory_start: dict[str, int] | None = None
    memory_end: dict[str, int] | None = None
    udp_drops: int | None = None
    pacer_lost: int = 0
    alive_after: bool = False
    serves_after: bool = False
    bad_log_lines: list[str] = field(default_factory=list)
    exit_code: int | None = None
    platform: str = ""

    def attack(self, number: int) -> Attack:
        return next(a for a in self.attacks if a.number == number)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_bound_mib"] = MEMORY_BOUND_MIB
        data["room"]["total_sent"] = self.room.total_sent
        return data


async def serves(server: ServerProcess) -> bool:
    """After everything: a fresh room is created, and a line said in it comes back."""
    ack, _ = await call(server.tcp_port, ListRooms())
    member = await enter(server.tcp_port, CreateRoom("after-the-storm", "zoe"))
    try:
        member.say("still here")
        async with asyncio.timeout(2000 * MS):
            while True:
                reply = decode_server_datagram(await member.peer.received.get())
                if reply.kind is Kind.MESSAGE:
                    return ack.ok and reply.text == "still here"
    finally:
        member.peer.close()


async def run_suite(workdir: Path, limits: SuiteLimits | None = None) -> SuiteResult:
    limits = limits or SuiteLimits()
    seed = int(os.environ.get("OCM_HOSTILE_SEED", DEFAULT_SEED))
    raise_fd_limit()
    start = time.monotonic()
    server = ServerProcess(limits, workdir / "server.log")
    try:
        await server.ready()
        room = ChatRoom()
        await room.open(server.tcp_port)
        pacer_member = await enter(server.tcp_port, CreateRoom("pacer", "metronome"))
        ctx = Context(server, limits, room, Pacer(pacer_member), seed)
        ctx.helpers.append(pacer_member)
        memory_start = server.memory_kib()
        stop_helpers = asyncio.Event()
        helpers = asyncio.create_task(
            keep_alive(ctx.helpers, stop_helpers, limits.idle_timeout / 5)
        )
        room.start()
        try:
            first = await asyncio.gather(*(attack(ctx) for attack in ATTACKS))
            attacks = sorted([*first, await LAST(ctx)], key=lambda a: a.number)
        finally:
            await room.stop()
            stop_helpers.set()
            await helpers
        report = room.verify()
        room.close()
        result = SuiteResult(limits, seed, attacks, report, pacer_lost=ctx.pacer.lost)
        result.alive_after = server.alive()
        result.serves_after = await serves(server)
        result.memory_start = memory_start
        result.memory_end = server.memory_kib()
        result.udp_drops = server.udp_drops()
    finally:
        exit_code = server.stop()
    result.exit_code = exit_code
    result.bad_log_lines = [
        line
        for line in server.log().splitlines()
        if "unexpected error" in line or "Traceback" in line or " ERROR " in line
    ]
    result.seconds = round(time.monotonic() - start, 2)
    result.platform = (
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    return result
