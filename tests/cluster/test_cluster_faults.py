"""Delivery across nodes on a lossy network: each member reaches its own node through a
seeded fault proxy (20% loss, 5% duplication, 10% reordering, both ways).

Issue 11's promise (every message once, in one order; gaps repaired, not reported) must
hold when the members of a room are on different nodes: a line said on node A is
numbered in Redis, delivered by node B to its member, and repaired by node B from its
own copy of the room's history. A member that joins later, on a third node, gets the
lines said before it came from the room's stream in Redis (``history``).
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from typing import Any

import pytest

from ocm.client import ChatClient, Gap, Message
from tests.faults import BAD, PROXY_HOST, FaultProxy, Faults, proxy_options, security_for
from tests.kit import MS, collect, has_loopback_alias, running_server
from tests.redis_kit import RedisServer

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
    pytest.mark.skipif(
        not has_loopback_alias(PROXY_HOST), reason=f"{PROXY_HOST} is not loopback here"
    ),
]

BEAT = 100 * MS
LINES = 20


async def test_every_line_once_in_one_order_across_lossy_nodes(redis_server: RedisServer) -> None:
    options = {"redis_url": redis_server.url, "redis_backoff": (0.05, 0.2)}
    security = security_for("sealed")
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(running_server(**options)) for _ in range(3)]
        proxies = [
            await stack.enter_async_context(
                FaultProxy.start(
                    node.tcp_port,
                    node.udp_port,
                    seed=seed,
                    up=Faults(**BAD),
                    down=Faults(**BAD),
                    **proxy_options("sealed"),
                )
            )
            for seed, node in enumerate(nodes, start=40)
        ]
        chat: dict[str, Any] = {"heartbeat_interval": BEAT, "security": security}
        alice = await ChatClient.create(proxies[0].address, "lobby", "alice", **chat)
        bob = await ChatClient.join(proxies[1].address, "lobby", "bob", **chat)
        members = [alice, bob]
        listening = [asyncio.create_task(collect(m, 2 * LINES, 20_000 * MS)) for m in members]

        async def talk(member: ChatClient) -> None:
            for n in range(LINES):
                await member.send(f"{member.name} {n}")

        await asyncio.gather(*(talk(m) for m in members))
        heard = await asyncio.gather(*listening)
        messages = [[e for e in events if isinstance(e, Message)] for events in heard]
        assert not any(isinstance(e, Gap) for events in heard for e in events)
        assert messages[0] == messages[1]  # the same lines, with the same Seqs, in one order
        expected = sorted(f"{m.name} {n}" for m in members for n in range(LINES))
        assert sorted(m.text for m in messages[0]) == expected
        assert all(m.undelivered == 0 and m.unconfirmed == 0 for m in members)
        assert all(p.counters.up.dropped and p.counters.down.duplicated for p in proxies[:2])

        # A latecomer on the third node asks for the room's last lines as it enters: node
        # C never had them; it loaded them from the room's stream in Redis.
        # Its last 5 Seqs are the last 4 lines and its own join NOTICE, as on a server
        # alone: COMPLETE waited for that NOTICE's Seq.
        carol = await ChatClient.join(proxies[2].address, "lobby", "carol", history=5, **chat)
        told = [e for e in await collect(carol, 4, 10_000 * MS) if isinstance(e, Message)]
        assert [(m.seq, m.text) for m in told] == [(m.seq, m.text) for m in messages[0][-4:]]
        for member in (carol, bob, alice):
            await member.close()
