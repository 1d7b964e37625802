"""The cluster's edges, each a defect a review found: a protected room tells nothing
before its password, joins at once share a replica, a room all on one node goes on
through an outage (a leave included), and a write-back that fails half way loses
nothing; a room closed over the bus has its CLOSED copies sent on time.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis

from ocm.client import ChatClient, Message, Notice
from ocm.server.app import OCMServer
from ocm.server.cluster.redis_backend import RedisBackend
from ocm.server.registry import PendingJoin
from ocm.wire import CreateRoom, JoinRoom, Kind, LeaveRoom, ServerDatagram
from ocm.wire.delivery import Ping, Status, decode_received, encode_extended
from tests.kit import (
    MS,
    UdpPeer,
    admit,
    call,
    collect,
    next_event,
    ready,
    running_server,
    server_of,
    until,
)
from tests.redis_kit import RedisServer

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
]

NODE: dict[str, Any] = {"idle_timeout": 5.0, "redis_backoff": (0.05, 0.2)}


@asynccontextmanager
async def two_nodes(
    redis_server: RedisServer, **settings: Any
) -> AsyncIterator[tuple[OCMServer, OCMServer]]:
    """Two nodes on ``redis_server``, with NODE's settings and ``settings`` over them."""
    settings = {**NODE, **settings}
    async with (
        running_server(redis_url=redis_server.url, **settings) as a,
        running_server(redis_url=redis_server.url, **settings) as b,
    ):
        yield a, b


async def join_held_after_reserving(node: OCMServer, join: JoinRoom) -> asyncio.Task[Any]:
    """``join`` through ``node``, held 300 ms once its name is reserved (a slow round
    trip to Redis): returns, as a task, once the join is there, for the test to do
    something meanwhile."""
    reserve = backend(node).reserve_member
    held = asyncio.Event()

    async def slow_reserve(pending: PendingJoin) -> None:
        await reserve(pending)
        if pending.username == join.username:
            held.set()
            await asyncio.sleep(300 * MS)

    backend(node).reserve_member = slow_reserve  # type: ignore[method-assign]
    joining = asyncio.create_task(call(node.tcp_port, join))
    await asyncio.wait_for(held.wait(), 2000 * MS)
    return joining


def backend(node: Any) -> RedisBackend:
    assert isinstance(node.backend, RedisBackend)
    return node.backend


async def test_a_protected_room_tells_nothing_before_its_password(
    redis_server: RedisServer,
) -> None:
    """As on a server alone: a wrong password with a taken name is a wrong password."""
    async with two_nodes(redis_server) as (a, b):
        await admit(a.tcp_port, CreateRoom("vault", "alice", "s3cret"))
        for node in (a, b):
            ack, _ = await call(node.tcp_port, JoinRoom("vault", "alice", "guess"))
            assert ack.error == "wrong_password"
            ack, _ = await call(node.tcp_port, JoinRoom("vault", "alice"))
            assert ack.error == "wrong_password"
        store = redis.Redis.from_url(redis_server.url)
        assert store.hkeys("ocm:members:vault") == [b"alice"]  # nothing reserved
        store.close()


async def test_a_failed_join_does_not_pull_the_replica_from_under_another(
    redis_server: RedisServer,
) -> None:
    async with two_nodes(redis_server) as (a, b):
        await admit(a.tcp_port, CreateRoom("vault", "alice", "s3cret"))
        bob = await join_held_after_reserving(b, JoinRoom("vault", "bob", "s3cret"))
        ack, _ = await call(b.tcp_port, JoinRoom("vault", "zed"))  # no password: refused
        assert ack.error == "wrong_password"
        ack, _ = await bob
        assert ack.ok, ack
        assert [*b.registry.rooms["vault"].members] == ["bob"]


async def test_a_room_all_on_one_node_goes_on_through_an_outage_and_a_leave(
    redis_server: RedisServer,
) -> None:
    async with running_server(redis_url=redis_server.url, **NODE) as a:
        where = server_of(a)
        alice = await ready(a, await ChatClient.create(where, "lobby", "alice"))
        bob = await ready(a, await ChatClient.join(where, "lobby", "bob"))
        carol = await ready(a, await ChatClient.join(where, "lobby", "carol"))
        await until(lambda: a.registry.rooms["lobby"].roster == ("alice", "bob", "carol"))
        redis_server.stop()
        await until(lambda: not backend(a).up)
        await alice.send("one")
        await carol.close()
        await alice.send("two")
        events = await collect(bob, 2)
        said = [e.text for e in events if isinstance(e, (Message, Notice))]
        assert said[-3:] == ["one", "carol left", "two"], events
        redis_server.start()  # empty: the node writes the room back
        await until(lambda: backend(a).up, 5000 * MS)
        store = redis.Redis.from_url(redis_server.url)
        await until(lambda: sorted(store.hkeys("ocm:members:lobby")) == [b"alice", b"bob"])
        store.close()
        await bob.send("three")
        heard = [e.text for e in await collect(alice, 3) if isinstance(e, Message)]
        assert heard == ["one", "two", "three"]
        await bob.close()
        await alice.close()


async def test_a_write_back_that_fails_half_way_is_done_again_whole(
    redis_server: RedisServer,
) -> None:
    async with running_server(redis_url=redis_server.url, **NODE) as a:
        chats = [
            await ready(a, await ChatClient.create(server_of(a), f"r{n}", "alice"))
            for n in range(3)
        ]
        link = backend(a)
        restore = link._restore
        calls = 0

        async def failing_once(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise redis.ConnectionError("reset, on purpose")
            return await restore(*args, **kwargs)

        link._restore = failing_once  # type: ignore[assignment]
        redis_server.restart()  # empty
        await until(lambda: link.up and calls > 3, 5000 * MS)
        store = redis.Redis.from_url(redis_server.url)
        await until(lambda: sorted(store.smembers("ocm:rooms")) == [b"r0", b"r1", b"r2"])
        store.close()
        assert sorted(a.registry.rooms) == ["r0", "r1", "r2"]
        for chat in chats:
            with pytest.raises(TimeoutError):
                await next_event(chat, 100 * MS)  # no CLOSED
            await chat.close()


async def test_a_joiner_hears_what_follows_its_join_not_its_own_notice(
    redis_server: RedisServer,
) -> None:
    """As on a server alone: COMPLETE's Seq is the joiner's own NOTICE's (a cluster node
    waits for the store to number it), so the joiner hears everything after it."""
    async with two_nodes(redis_server) as (a, b):
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
        bob = await ChatClient.join(server_of(b), "lobby", "bob")
        await alice.send("welcome")  # before bob's first datagram, maybe: repaired
        events = await collect(bob, 1)
        assert [type(e).__name__ for e in events] == ["Message"], events
        assert isinstance(events[0], Message) and events[0].text == "welcome"
        await bob.close()
        await alice.close()


class RedisLink:
    """A TCP relay between one node and Redis, which the test cuts and mends: the node
    alone is cut off, the others still reach Redis (a partition)."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.Task[None]] = set()

    async def mend(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for pipe in self.pipes:
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        pipes = [
            asyncio.create_task(pump(reader, upstream)),
            asyncio.create_task(pump(upstream_reader, writer)),
        ]
        self.pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self.pipes.difference_update(pipes)


async def test_a_partition_is_survived_and_said_in_the_log(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Node A alone is cut off: its room (everyone on A) goes on there, while carol
    joins it through B and talks. A's return is logged as a room numbered apart."""
    link = RedisLink(redis_server.port)
    await link.mend()
    url = f"redis://127.0.0.1:{link.port}/0"
    async with (
        running_server(redis_url=url, **NODE) as a,
        running_server(redis_url=redis_server.url, **NODE) as b,
    ):
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
        await link.cut()
        await until(lambda: not backend(a).up)
        await alice.send("alone on a")
        assert [e.text for e in await collect(alice, 1) if isinstance(e, Message)] == [
            "alone on a"
        ]  # the room goes on, numbered on A
        carol = await ChatClient.join(server_of(b), "lobby", "carol")  # B still sees it
        await carol.send("carol on b")
        await collect(carol, 1)
        await link.mend()
        await until(lambda: backend(a).up, 5000 * MS)
        await until(lambda: "went on apart" in caplog.text)
        await carol.close()
        await alice.close()
    await link.cut()


async def test_the_last_member_leaving_does_not_pull_the_replica_from_a_join(
    redis_server: RedisServer,
) -> None:
    async with two_nodes(redis_server) as (a, b):
        await admit(a.tcp_port, CreateRoom("lobby", "alice"))
        bob = await admit(b.tcp_port, JoinRoom("lobby", "bob"))
        carol = await join_held_after_reserving(b, JoinRoom("lobby", "carol"))
        ack, _ = await call(b.tcp_port, LeaveRoom("lobby", bob.token))  # b's only member
        assert ack.ok
        ack, _ = await carol
        assert ack.ok, ack
        assert [*b.registry.rooms["lobby"].members] == ["carol"]


async def test_a_line_redis_refuses_for_a_while_waits_and_is_delivered(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory (or read-only after a failover, or loading): the queue keeps the
    line and sends it again once Redis takes writes (a review found it dropped)."""
    async with two_nodes(redis_server) as (a, b):
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
        bob = await ready(b, await ChatClient.join(server_of(b), "lobby", "bob"))
        store = redis.Redis.from_url(redis_server.url)
        store.config_set("maxmemory-policy", "noeviction")
        store.config_set("maxmemory", 1)
        await bob.send("kept")
        await until(lambda: not backend(b).up)  # OOM: the node backs off and says so
        store.config_set("maxmemory", 0)
        heard = [e.text for e in await collect(alice, 1) if isinstance(e, Message)]
        assert heard == ["kept"]
        await until(lambda: bob.unconfirmed == 0)
        assert "redis refuses writes at redis://127.0.0.1" in caplog.text  # not "unreachable"
        store.close()
        await bob.close()
        await alice.close()


async def test_no_line_is_numbered_here_while_the_room_is_written_back(
    redis_server: RedisServer,
) -> None:
    """A line said during the write-back's round trip waits for the store: numbered
    here, it took a counter the store then gave again, and the next line was lost."""
    async with running_server(redis_url=redis_server.url, **NODE) as a:
        link = backend(a)
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
        bob = await ready(a, await ChatClient.join(server_of(a), "lobby", "bob"))
        await until(lambda: a.registry.rooms["lobby"].roster == ("alice", "bob"))
        redis_server.stop()
        await until(lambda: not link.up)
        await alice.send("one")  # numbered here: every member is here
        restore = link._restore

        async def slow_restore(*args: Any, **kwargs: Any) -> Any:
            result = await restore(*args, **kwargs)
            await alice.send("during")  # said while the write-back is in flight
            await asyncio.sleep(100 * MS)
            return result

        link._restore = slow_restore  # type: ignore[assignment]
        redis_server.start()
        await until(lambda: link.up, 5000 * MS)
        await bob.send("after")
        heard = [e.text for e in await collect(alice, 3) if isinstance(e, Message)]
        assert heard == ["one", "during", "after"]
        await until(lambda: bob.unconfirmed == 0)
        await bob.close()
        await alice.close()


async def test_a_room_closed_over_the_bus_sends_its_closed_copies_on_time(
    redis_server: RedisServer,
) -> None:
    """The host leaves on node A; on node B the bus closes the room, and the CLOSED
    copies due again for B's delivery member brought B's deadline closer: B re-arms its
    timer, so the copies do not wait for the next idle deadline (5 s here)."""
    async with two_nodes(redis_server, closed_resend_interval=20 * MS) as (a, b):
        alice = await admit(a.tcp_port, CreateRoom("lobby", "alice", None, ("delivery",)))
        bob = await admit(b.tcp_port, JoinRoom("lobby", "bob", None, ("delivery",)))
        member = await UdpPeer.open(bob.udp_port)
        try:
            member.send_raw(encode_extended(Ping(bob.token, 1, bytes.fromhex(bob.boot or ""))))
            assert isinstance(decode_received(await member.recv_raw()), Status)
            await call(a.tcp_port, LeaveRoom("lobby", alice.token))
            copies = [decode_received(await member.recv_raw(500 * MS)) for _ in range(8)]
            assert {c.kind for c in copies if isinstance(c, ServerDatagram)} == {Kind.CLOSED}
            assert len(copies) == 8
        finally:
            member.close()
