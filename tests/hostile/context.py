"""What the attacks of the hostile-client suite share: a context and small helpers."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from tests.hostile.harness import (
    Attack,
    Exchange,
    Pacer,
    ServerProcess,
    SuiteLimits,
    UdpAttacker,
    UdpRecord,
)
from tests.hostile.room import ChatRoom
from tests.kit import Member


@dataclass(slots=True)
class Context:
    """What every attack may use: the server, its limits, the room, the UDP lane."""

    server: ServerProcess
    limits: SuiteLimits
    room: ChatRoom
    pacer: Pacer
    seed: int
    # Floods share the server's one receive queue: one flood at a time keeps the pacing
    # budget (and so the chat) safe.
    udp_lane: asyncio.Lock = field(default_factory=asyncio.Lock)
    udp_records: list[UdpRecord] = field(default_factory=list)
    helpers: list[Member] = field(default_factory=list)  # members kept alive for the suite

    def rng(self, attack: int) -> random.Random:
        return random.Random(self.seed * 100 + attack)

    async def attacker(self, ip: str, sockets: int = 16) -> UdpAttacker:
        attacker = await UdpAttacker(ip).open(self.server.udp_port, sockets)
        self.udp_records.append(attacker.record)
        return attacker

    async def flood(
        self, attacker: UdpAttacker, datagrams: Iterable[bytes], rate: float | None = None
    ) -> float:
        async with self.udp_lane:
            return await attacker.flood(datagrams, self.pacer, rate=rate)


def fmt(number: float) -> str:
    return f"{number:,}"


def span(seconds: list[float]) -> str:
    """ "2.0 s", or "2.0-2.3 s" when the times differ at that precision."""
    low, high = f"{min(seconds, default=0):.1f}", f"{max(seconds, default=0):.1f}"
    return f"{low} s" if low == high else f"{low}-{high} s"


def timed(run: Callable[[Context], Awaitable[Attack]]) -> Callable[[Context], Awaitable[Attack]]:
    async def wrapper(ctx: Context) -> Attack:
        start = time.monotonic()
        attack = await run(ctx)
        attack.seconds = round(time.monotonic() - start, 2)
        return attack

    wrapper.__name__ = run.__name__
    return wrapper


def fake_token(rng: random.Random) -> str:
    """A guess shaped like a real token: 24 random bytes, URL-safe base64, 32 characters."""
    return base64.urlsafe_b64encode(rng.randbytes(24)).decode()


def tcp_answers(exchanges: list[Exchange]) -> int:
    return sum(item.ok_acks for item in exchanges)


def summarize_streams(exchanges: list[Exchange]) -> dict[str, object]:
    codes: Counter[str] = Counter()
    for item in exchanges:
        codes.update(item.error_codes)
    return {
        "streams": len(exchanges),
        "endings": dict(Counter(item.ending for item in exchanges)),
        "error_acks": dict(codes),
        "ok_acks": sum(item.ok_acks for item in exchanges),
        "slowest": round(max((item.seconds for item in exchanges), default=0.0), 2),
    }
