"""Integration: rooms across server nodes that share one real redis-server.

Nodes run in-process (``running_server(redis_url=...)``), except where a node must die
by SIGKILL (:class:`~tests.kit.ServerProcess`); clients are the library's, over real
sockets, with TLS and sealed datagrams unless a test says plaintext; version 1 members
speak raw datagrams (tests/kit.py). Idle timeouts are short, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import pytest
import redis

from ocm.client import ChatClient, Closed, Event, Message, Notice, list_rooms
from ocm.errors import ErrorCode, ServerError
from ocm.server.app import OCMServer
from ocm.server.cluster.redis_backend import UNREACHABLE, RedisBackend
from ocm.wire import CreateRoom, JoinRoom, Kind, RoomInfo, ServerDatagram
from ocm.wire.tcrp import LookupRoom, RoomDetails
from tests.faults import PLAINTEXT
from tests.kit import (
    LOOPBACK,
    Member,
    ServerProcess,
    call,
    collect,
    enter,
    next_event,
    ready,
    running_server,
    server_of,
    until,
)
from tests.redis_kit import RedisServer
from tests.server.kit import scrape, value

pytestmark = [
    pytest.mark.posix,
    pytest.mark.skipif(sys.platform == "win32", reason="no redis-server on Windows"),
]

IDLE = 1.0
CLOSED_BY_ALICE = "host alice left; the room is closed"


@asynccontextmanager
async def cluster(
    redis_server: RedisServer, count: int = 3, **overrides: Any
) -> AsyncIterator[list[OCMServer]]:
    """``count`` nodes on ``redis_server``, in-process."""
    options: dict[str, Any] = {
        "redis_url": redis_server.url,
        "idle_timeout": IDLE,
        "redis_backoff": (0.05, 0.2),
    }
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(running_server(**options | overrides))
            for _ in range(count)
        ]
        yield nodes


@asynccontextmanager
async def closing(*chats: ChatClient) -> AsyncIterator[None]:
    """Close ``chats`` at the end, whatever happened to them."""
    try:
        yield
    finally:
        for chat in chats:
            with suppress(Exception):
                await chat.close()


async def until_event(chat: ChatClient, wanted: type[Event], timeout: float = 3.0) -> list[Event]:
    """Events up to and with the first of type ``wanted``."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while not isinstance(events[-1] if events else None, wanted):
            events.append(await next_event(chat, timeout))
    return events


async def until_notice(chat: ChatClient, text: str, timeout: float = 3.0) -> list[Event]:
    """Events up to and with the Notice that says ``text``."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while not (events and isinstance(events[-1], Notice) and events[-1].text == text):
            events.append(await next_event(chat, timeout))
    return events


def lines(events: Iterable[Event]) -> list[tuple[int, str, str]]:
    return [(e.seq, e.sender, e.text) for e in events if isinstance(e, Message)]


async def raw_until(member: Member, kind: Kind, timeout: float = 3.0) -> list[ServerDatagram]:
    """A raw member's datagrams up to and with the first of ``kind``."""
    taken: list[ServerDatagram] = []
    async with asyncio.timeout(timeout):
        while not taken or taken[-1].kind != kind:
            taken.append(await member.peer.recv(timeout))
    return taken


def link(node: OCMServer) -> RedisBackend:
    """The node's link to the cluster's store."""
    assert isinstance(node.backend, RedisBackend)
    return node.backend


def rooms_everywhere(nodes: Iterable[OCMServer], name: str) -> list[bool]:
    return [name in node.registry.rooms for node in nodes]


async def one_on_each(a: OCMServer, b: OCMServer, c: OCMServer) -> list[ChatClient]:
    """alice hosts "lobby" on node a; bob joins it on b, carol on c; all ready, and the
    first two have heard carol join."""
    alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
    bob = await ready(b, await ChatClient.join(server_of(b), "lobby", "bob"))
    carol = await ready(c, await ChatClient.join(server_of(c), "lobby", "carol"))
    await until_notice(alice, "carol joined")
    await until_notice(bob, "carol joined")
    return [alice, bob, carol]


async def test_three_nodes_deliver_every_line_once_in_one_order(
    redis_server: RedisServer,
) -> None:
    async with cluster(redis_server) as (a, b, c):
        alice, bob, carol = await one_on_each(a, b, c)
        async with closing(alice, bob, carol):
            assert a.registry.rooms["lobby"].sealed and c.registry.rooms["lobby"].sealed
            assert carol.members == ("alice", "bob", "carol")  # the whole room's, from Redis
            for i in range(4):
                for chat in (alice, bob, carol):
                    await chat.send(f"{chat.name} {i}")

            seen = [lines(await collect(chat, 12, timeout=5.0)) for chat in (alice, bob, carol)]

            assert seen[0] == seen[1] == seen[2]
            assert len(set(seen[0])) == 12
            assert sorted((sender, text) for _, sender, text in seen[0]) == sorted(
                (chat.name, f"{chat.name} {i}") for chat in (alice, bob, carol) for i in range(4)
            )
            seqs = [seq for seq, _, _ in seen[0]]
            assert seqs == list(range(seqs[0], seqs[0] + 12))  # one counter, no gap
            for chat in (alice, bob, carol):  # each sender's own order kept
                own = [text for _, sender, text in seen[0] if sender == chat.name]
                assert own == [f"{chat.name} {i}" for i in range(4)]
            # Nothing more: no line came twice.
            for chat in (alice, bob, carol):
                with pytest.raises(TimeoutError):
                    extra = await next_event(chat, 0.15)
                    assert not isinstance(extra, Message), extra


async def test_names_rooms_and_passwords_hold_across_nodes(redis_server: RedisServer) -> None:
    async with cluster(redis_server, max_password_failures=2) as (a, b, c):
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice"))
        async with closing(alice):
            assert await list_rooms(server_of(c)) == (RoomInfo("lobby", 1, protected=False),)
            ack, details = await call(c.tcp_port, LookupRoom("lobby"))
            assert ack.ok and details == RoomDetails("lobby", 1, False, None)

            bob = await ready(b, await ChatClient.join(server_of(b), "lobby", "bob"))
            async with closing(bob):
                assert bob.host == "alice" and bob.members == ("alice", "bob")
                assert await list_rooms(server_of(c)) == (RoomInfo("lobby", 2, False),)

                ack, _ = await call(b.tcp_port, CreateRoom("lobby", "zed"))
                assert ack.error is ErrorCode.ROOM_EXISTS
                with pytest.raises(ServerError) as taken:
                    await ChatClient.join(server_of(c), "lobby", "BOB")
                assert taken.value.code is ErrorCode.NAME_TAKEN
                assert "lobby" not in c.registry.rooms  # the failed join left no replica

                vault = await ChatClient.create(server_of(a), "vault", "vera", "s3cret")
                async with closing(vault):
                    assert (await list_rooms(server_of(b)))[1] == RoomInfo("vault", 1, True)
                    with pytest.raises(ServerError) as wrong:
                        await ChatClient.join(server_of(b), "vault", "walt", "guess")
                    assert wrong.value.code is ErrorCode.WRONG_PASSWORD
                    walt = await ChatClient.join(server_of(b), "vault", "walt", "s3cret")
                    await walt.close()

                    with pytest.raises(ServerError) as wrong:
                        await ChatClient.join(server_of(a), "vault", "xena", "guess2")
                    assert wrong.value.code is ErrorCode.WRONG_PASSWORD
                    # Two wrong passwords from this IP, one through B and one through A:
                    # the cluster's limit, though neither node saw two.
                    with redis.Redis.from_url(redis_server.url) as store:
                        await until(lambda: store.get("ocm:fails:127.0.0.1") == b"2")
                    with pytest.raises(ServerError) as limited:
                        await ChatClient.join(server_of(c), "vault", "yuri", "s3cret")
                    assert limited.value.code is ErrorCode.RATE_LIMITED


async def test_a_member_leaving_on_one_node_is_announced_and_the_room_goes_on(
    redis_server: RedisServer,
) -> None:
    async with cluster(redis_server) as (a, b, c):
        alice, bob, carol = await one_on_each(a, b, c)
        async with closing(alice, bob, carol):
            assert await bob.close()

            await until_notice(alice, "bob left")
            await until_notice(carol, "bob left")
            await until(lambda: "lobby" not in b.registry.rooms)  # nobody left there
            assert await list_rooms(server_of(b)) == (RoomInfo("lobby", 2, False),)
            await alice.send("still here")
            seen = [lines(await collect(chat, 1)) for chat in (alice, carol)]
            assert seen[0] == seen[1] and seen[0][0][1:] == ("alice", "still here")


async def test_the_host_leaving_closes_the_room_on_every_node(redis_server: RedisServer) -> None:
    async with cluster(redis_server) as (a, b, c):
        alice, bob, carol = await one_on_each(a, b, c)
        async with closing(alice, bob, carol):
            assert await alice.close()

            for chat in (bob, carol):
                closed = (await until_event(chat, Closed))[-1]
                assert closed == Closed(CLOSED_BY_ALICE)
            await until(lambda: not any(rooms_everywhere((a, b, c), "lobby")))
            for node in (a, b, c):
                assert await list_rooms(server_of(node)) == ()
                assert node.registry.by_token == {}


async def test_a_silent_host_closes_the_room_on_every_node(redis_server: RedisServer) -> None:
    async with cluster(redis_server) as (a, b, c):
        # Version 1 members in a plaintext room; alice heartbeats once, then falls silent.
        alice = await enter(a, CreateRoom("lobby", "alice"))
        bob = await enter(b, JoinRoom("lobby", "bob"))
        carol = await enter(c, JoinRoom("lobby", "carol"))
        async with bob.heartbeating(IDLE / 5), carol.heartbeating(IDLE / 5):
            started = asyncio.get_running_loop().time()
            for member in (bob, carol):
                (*_, closed) = await raw_until(member, Kind.CLOSED, timeout=IDLE + 2.0)
                assert closed.text == "host alice timed out; the room is closed"
            assert asyncio.get_running_loop().time() - started < IDLE + 1.0
            await until(lambda: not any(rooms_everywhere((a, b, c), "lobby")))
            assert await list_rooms(server_of(b)) == ()
        for member in (alice, bob, carol):
            member.peer.close()


async def test_a_killed_nodes_members_time_out_and_its_rooms_close_elsewhere(
    redis_server: RedisServer,
) -> None:
    idle = 1.2
    killed = await ServerProcess.start("--redis", redis_server.url, "--idle-timeout", str(idle))
    try:
        async with cluster(redis_server, 2, idle_timeout=idle) as (a, c):
            on_killed = (LOOPBACK, killed.tcp_port)
            # "lobby", hosted on A, has bob on the node that dies; "den" is hosted there.
            # Plaintext: the killed node's TLS key is not the session's, and no matter here.
            alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice", **PLAIN))
            bob = await ChatClient.join(on_killed, "lobby", "bob", **PLAIN)
            carol = await ready(c, await ChatClient.join(server_of(c), "lobby", "carol", **PLAIN))
            dora = await ChatClient.create(on_killed, "den", "dora", **PLAIN)
            erin = await ready(a, await ChatClient.join(server_of(a), "den", "erin", **PLAIN))
            fred = await ready(c, await ChatClient.join(server_of(c), "den", "fred", **PLAIN))
            async with closing(alice, bob, carol, dora, erin, fred):
                await until_notice(alice, "carol joined")
                await until_notice(erin, "fred joined")
                await bob.send("before")  # bob's node works: its line reaches the others
                assert lines(await collect(carol, 1))[0][1:] == ("bob", "before")

                killed.process.kill()
                started = asyncio.get_running_loop().time()

                for chat in (alice, carol):
                    await until_notice(chat, "bob timed out", timeout=idle + 1.5)
                for chat in (erin, fred):
                    closed = (await until_event(chat, Closed, timeout=idle + 1.5))[-1]
                    assert closed == Closed("host dora timed out; the room is closed")
                assert asyncio.get_running_loop().time() - started < idle + 1.0
                await until(lambda: not any(rooms_everywhere((a, c), "den")))
                assert await list_rooms(server_of(c)) == (RoomInfo("lobby", 2, False),)

                await carol.send("after")
                for chat in (alice, carol):
                    assert lines(await collect(chat, 1))[0][1:] == ("carol", "after")
    finally:
        killed.stop()


PLAIN: dict[str, Any] = {"security": PLAINTEXT}


async def test_redis_lost_and_back_keeps_members_and_writes_the_room_back(
    redis_server: RedisServer,
) -> None:
    async with cluster(redis_server) as (a, b, c):
        alice, bob, carol = await one_on_each(a, b, c)
        async with closing(alice, bob, carol):
            await alice.send("one")
            for chat in (alice, bob, carol):
                ((before, *said),) = lines(await collect(chat, 1))
                assert said == ["alice", "one"]

            redis_server.stop()
            await until(lambda: not any(link(node).up for node in (a, b, c)))

            for refused in (
                ChatClient.create(server_of(b), "attic", "zed"),
                ChatClient.join(server_of(c), "lobby", "zed"),
                ChatClient.join(server_of(a), "lobby", "zed"),
            ):
                with pytest.raises(ServerError) as down:
                    await refused
                assert (down.value.code, down.value.message) == (
                    ErrorCode.SERVER_FULL,
                    UNREACHABLE,
                )
            # What is said meanwhile waits in each node's queue.
            await bob.send("while down")
            await until(lambda: link(b).state().queued >= 1)  # B cannot publish it
            for node, name in ((a, "alice"), (b, "bob"), (c, "carol")):
                assert name in node.registry.rooms["lobby"].members

            redis_server.start()  # an empty Redis: it lost every key
            await until(lambda: all(link(node).up for node in (a, b, c)), timeout=5.0)
            await until(lambda: all(link(node).state().queued == 0 for node in (a, b, c)))

            for chat in (alice, bob, carol):  # the counter goes on from where it was
                assert lines(await collect(chat, 1)) == [(before + 1, "bob", "while down")]
            with redis.Redis.from_url(redis_server.url) as store:
                await until(lambda: store.hlen("ocm:members:lobby") == 3)
            assert await list_rooms(server_of(c)) == (RoomInfo("lobby", 3, False),)

            for chat in (carol, alice, bob):
                await chat.send(f"{chat.name} back")
            seen = [lines(await collect(chat, 3)) for chat in (alice, bob, carol)]
            assert seen[0] == seen[1] == seen[2]
            assert sorted(text for _, _, text in seen[0]) == [
                "alice back",
                "bob back",
                "carol back",
            ]

            dave = await ready(b, await ChatClient.join(server_of(b), "lobby", "dave"))
            async with closing(dave):
                # The whole room's members, in the order they joined, the host first
                # (docs/protocol.md, JOIN_ROOM), though each node wrote its own back.
                assert dave.host == "alice"
                assert dave.members == ("alice", "bob", "carol", "dave")
                for chat in (alice, carol):
                    await until_notice(chat, "dave joined")
                await dave.send("hi all")
                for chat in (alice, bob, carol, dave):
                    assert lines(await collect(chat, 1))[0][1:] == ("dave", "hi all")


async def test_a_version_1_member_and_a_delivery_member_chat_across_nodes(
    redis_server: RedisServer,
) -> None:
    async with cluster(redis_server, 2) as (a, b):
        alice = await ready(a, await ChatClient.create(server_of(a), "lobby", "alice", **PLAIN))
        async with closing(alice):
            carol = await enter(b, JoinRoom("lobby", "carol"))
            async with carol.heartbeating(IDLE / 5):
                await until_notice(alice, "carol joined")

                await alice.send("hello v1")
                (*_, message) = await raw_until(carol, Kind.MESSAGE)
                assert (message.sender, message.text) == ("alice", "hello v1")

                carol.say("hello delivery")
                (*_, echo) = await raw_until(carol, Kind.MESSAGE)
                assert (echo.sender, echo.text) == ("carol", "hello delivery")
                assert echo.seq == message.seq + 1
                (_, got) = lines(await collect(alice, 2))
                assert got == (message.seq + 1, "carol", "hello delivery")
            carol.peer.close()


async def test_metrics_say_whether_redis_answers(redis_server: RedisServer) -> None:
    async with cluster(redis_server, 1, metrics_port=0) as (node,):
        samples = await scrape(node)
        assert value(samples, "ocm_redis_up") == 1
        assert value(samples, "ocm_redis_rtt_seconds") > 0

        redis_server.stop()

        async def down() -> bool:
            return value(await scrape(node), "ocm_redis_up") == 0

        async with asyncio.timeout(3.0):
            while not await down():
                await asyncio.sleep(0.02)
