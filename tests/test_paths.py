"""Issue 12 end to end: the real server, the real client, and the fault proxy.

Section 4 of docs/protocol.md from the client's side:

1. where UDP is blocked, the client falls back to a TCP tunnel by itself and says so;
   UDP and tunnelled members share a room both ways, in one Seq order;
2. ``tcp=True`` tunnels from the start;
3. a member whose address changes mid-chat (the proxy moves from 127.0.0.1 to
   127.0.0.3) resumes: it stays in the room, misses nothing, and nobody sees it leave;
4. a tunnel that breaks is resumed and opened again, nothing lost;
5. a server that is really gone is still noticed.
(The server's side, stolen tokens and a tunnelled member that stops reading, are in
tests/server/test_tunnel.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator

import pytest

from ocm.client import ChatClient, Closed, Event, Gap, Message, Notice, PathChanged
from ocm.client.chat import OVER_TCP, RESUMED
from ocm.client.delivery import STOPPED_ANSWERING
from ocm.server.app import OCMServer
from tests.faults import MODES, PROXY_HOST, FaultProxy, proxy_options, security_for
from tests.kit import MS, collect, has_loopback_alias, running_server, server_of, until

BEAT = 100 * MS  # heartbeat interval: a blocked path is taken for blocked in 0.3 s
MOVED_HOST = "127.0.0.3"
SEALED = security_for("sealed")
# Section 5: the clients are sealed (TLS, the proxy on an address of its own) unless a
# test runs in both modes; sealed needs that address.
pytestmark = pytest.mark.skipif(
    not has_loopback_alias(PROXY_HOST), reason=f"{PROXY_HOST} is not loopback here"
)


@contextlib.asynccontextmanager
async def proxied(
    server: OCMServer, mode: str = "sealed", *, drop_all_udp: bool = False
) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.start(
        server.tcp_port,
        server.udp_port,
        seed=12,
        drop_all_udp=drop_all_udp,
        **proxy_options(mode),
    ) as proxy:
        yield proxy


def texts(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, Message)]


@pytest.mark.parametrize("mode", MODES)
async def test_where_udp_is_blocked_the_chat_goes_over_tcp_both_ways(mode: str) -> None:
    security = security_for(mode)
    async with running_server() as server, proxied(server, mode, drop_all_udp=True) as proxy:
        alice = await ChatClient.create(
            server_of(server), "lobby", "alice", heartbeat_interval=BEAT, security=security
        )
        bob = await ChatClient.join(
            proxy.address, "lobby", "bob", heartbeat_interval=BEAT, security=security
        )
        assert not bob.over_tcp  # it tries UDP first
        first = await asyncio.wait_for(anext(bob), 2000 * MS)
        assert first == PathChanged(OVER_TCP) and bob.over_tcp and not alice.over_tcp
        assert len(server._endpoint.tunnels) == 1  # (TLS hides TUNNEL from the proxy)
        for n in range(20):
            await alice.send(f"a{n}")
            await bob.send(f"b{n}")
        heard_by_bob = await collect(bob, 40)
        heard_by_alice = [
            e for e in await collect(alice, 40) if isinstance(e, Message | Notice | Gap)
        ]
        assert not any(isinstance(e, Gap) for e in heard_by_bob + heard_by_alice)
        assert texts(heard_by_bob) == texts(heard_by_alice)  # one order, the room's Seq
        assert sorted(texts(heard_by_bob)) == sorted(
            [f"a{n}" for n in range(20)] + [f"b{n}" for n in range(20)]
        )
        seqs = [e.seq for e in heard_by_bob if isinstance(e, Message)]
        assert seqs == sorted(seqs)
        assert proxy.counters.up.forwarded == 0  # not one datagram got through
        assert await bob.close()
        assert "bob" not in server.registry.rooms["lobby"].members
        assert await alice.close()


async def test_tcp_true_tunnels_from_the_start() -> None:
    async with running_server() as server:
        alice = await ChatClient.create(server_of(server), "lobby", "alice", tcp=True)
        assert alice.over_tcp
        bob = await ChatClient.join(server_of(server), "lobby", "bob")
        await bob.send("over udp")
        await alice.send("over tcp")
        assert texts(await collect(alice, 2)) == ["over udp", "over tcp"]
        assert texts(await collect(bob, 2)) == ["over udp", "over tcp"]
        member = server.registry.rooms["lobby"].members["alice"]
        assert member.address is not None and member.address[1] < 0  # a tunnel address
        assert await bob.close()
        assert await alice.close()
        assert server.registry.rooms == {}


@pytest.mark.skipif(not has_loopback_alias(MOVED_HOST), reason=f"{MOVED_HOST} is not loopback")
@pytest.mark.parametrize("mode", MODES)
async def test_a_member_whose_address_changes_keeps_its_place_and_misses_nothing(
    mode: str,
) -> None:
    security = security_for(mode)
    async with running_server() as server, proxied(server, mode) as proxy:
        alice = await ChatClient.create(
            server_of(server), "lobby", "alice", heartbeat_interval=BEAT, security=security
        )
        bob = await ChatClient.join(
            proxy.address, "lobby", "bob", heartbeat_interval=BEAT, security=security
        )
        await until(lambda: server.registry.rooms["lobby"].members["bob"].address is not None)
        seq_before = server.registry.rooms["lobby"].seq
        for n in range(5):
            await alice.send(f"before {n}")
        heard = await collect(bob, 5)
        proxy.move(MOVED_HOST)  # bob's network changes: the server sees a new address
        for n in range(5):
            await alice.send(f"after {n}")  # some reach the server before bob resumes
        await bob.send("hello from the new network")
        heard += await collect(bob, 6)
        assert texts(heard) == [f"before {n}" for n in range(5)] + [
            f"after {n}" for n in range(5)
        ] + ["hello from the new network"]
        assert PathChanged(RESUMED) in heard
        assert not any(isinstance(e, Gap | Closed) for e in heard)
        member = server.registry.rooms["lobby"].members["bob"]
        assert member.ip == MOVED_HOST and not bob.over_tcp  # still UDP, from the new host
        # Nobody saw bob leave or join again: the room's Seqs are only the 11 lines.
        assert server.registry.rooms["lobby"].seq == seq_before + 11
        later = [e for e in await collect(alice, 11) if isinstance(e, Notice)]
        assert [e.text for e in later if e.seq > seq_before] == []
        assert await bob.close()
        assert await alice.close()


async def test_a_broken_tunnel_is_resumed_and_opened_again() -> None:
    async with running_server() as server:
        alice = await ChatClient.create(
            server_of(server), "lobby", "alice", heartbeat_interval=BEAT
        )
        bob = await ChatClient.join(
            server_of(server), "lobby", "bob", heartbeat_interval=BEAT, tcp=True
        )
        first_tunnel = bob._tunnel
        assert first_tunnel is not None
        await alice.send("one")
        assert texts(await collect(bob, 1)) == ["one"]
        for link in list(server._endpoint.tunnels.values()):
            link.close()  # the server's end goes: a reset, as a middlebox would
        await alice.send("two")
        await alice.send("three")
        heard = await collect(bob, 2)
        assert texts(heard) == ["two", "three"]
        assert not any(isinstance(e, Gap | Closed) for e in heard)
        assert bob.over_tcp and bob._tunnel is not first_tunnel
        assert await bob.close()
        assert await alice.close()


async def test_a_server_gone_for_good_is_still_noticed_with_a_tunnel() -> None:
    async with running_server() as server, proxied(server, drop_all_udp=True) as proxy:
        bob = await ChatClient.create(
            proxy.address, "lobby", "bob", heartbeat_interval=BEAT, security=SEALED
        )
        assert await asyncio.wait_for(anext(bob), 2000 * MS) == PathChanged(OVER_TCP)
        proxy.blackhole()
        for link in list(server._endpoint.tunnels.values()):
            link.close()  # and its connections go with it
        events = await collect(bob, 1, 3000 * MS)
        assert events[-1] == Closed(STOPPED_ANSWERING)
        assert not await bob.close()
        proxy.restore()


async def test_udp_rejected_by_icmp_moves_to_tcp_at_once() -> None:
    """A firewall that rejects UDP (ICMP port unreachable) rather than dropping it: the
    client asks TCP at once instead of waiting out the grace, and tunnels."""
    async with running_server() as server:
        assert server._endpoint.transport is not None
        server._endpoint.transport.close()  # nothing listens on the UDP port any more
        await server._endpoint.closed.wait()
        started = asyncio.get_running_loop().time()
        bob = await ChatClient.create(server_of(server), "lobby", "bob")  # 3 s grace
        assert await asyncio.wait_for(anext(bob), 2000 * MS) == PathChanged(OVER_TCP)
        assert asyncio.get_running_loop().time() - started < 1.0
        await bob.send("still here")
        assert texts(await collect(bob, 1)) == ["still here"]
        assert await bob.close()


async def test_a_network_that_goes_away_is_looked_into_at_once() -> None:
    """A UDP send that reports our route gone (ENETUNREACH: the laptop left its Wi-Fi)
    starts the recovery at once, not after three silent heartbeat intervals. Here TCP
    still works from the same address, so the chat goes on over a tunnel."""
    async with running_server() as server:
        bob = await ChatClient.create(server_of(server), "lobby", "bob")  # 15 s heartbeats
        await until(lambda: server.registry.rooms["lobby"].members["bob"].address is not None)
        assert bob._transport is not None
        protocol = bob._transport.get_protocol()
        assert isinstance(protocol, asyncio.DatagramProtocol)
        protocol.error_received(OSError(errno.ENETUNREACH, "Network is unreachable"))
        assert await asyncio.wait_for(anext(bob), 2000 * MS) == PathChanged(OVER_TCP)
        await bob.send("still here")
        assert texts(await collect(bob, 1)) == ["still here"]
        assert await bob.close()


@pytest.mark.skipif(not has_loopback_alias(MOVED_HOST), reason=f"{MOVED_HOST} is not loopback")
async def test_udp_and_tcp_from_two_addresses_end_up_in_a_tunnel_not_a_loop() -> None:
    """UDP leaves from a new address, TCP from the old one (a NAT without paired
    pooling): a RESUME over TCP binds the token where UDP does not come from, so UDP is
    refused again at once. The client must not resume for ever: the second refusal in a
    row takes the tunnel, where TCP is all there is."""
    async with running_server() as server, proxied(server) as proxy:
        alice = await ChatClient.create(server_of(server), "lobby", "alice")
        bob = await ChatClient.join(
            proxy.address, "lobby", "bob", heartbeat_interval=BEAT, security=SEALED
        )
        await until(lambda: server.registry.rooms["lobby"].members["bob"].address is not None)
        proxy.move(MOVED_HOST, tcp=False)
        await bob.send("one")
        heard = await collect(bob, 1)
        assert texts(heard) == ["one"] and bob.over_tcp
        assert heard.count(PathChanged(RESUMED)) <= 1 and PathChanged(OVER_TCP) in heard
        await alice.send("two")
        assert texts(await collect(bob, 1)) == ["two"]
        assert await bob.close()
        assert await alice.close()


@pytest.mark.skipif(not has_loopback_alias(MOVED_HOST), reason=f"{MOVED_HOST} is not loopback")
async def test_leaving_right_after_a_move_leaves_no_ghost() -> None:
    """The user quits before the client noticed its address changed: its LEAVE is
    refused from the new address, so it resumes there and leaves over TCP. The room
    must not keep it (a host's room must close), and close() says it left."""
    async with running_server() as server, proxied(server) as proxy:
        bob = await ChatClient.create(
            proxy.address, "lobby", "bob", heartbeat_interval=BEAT, security=SEALED
        )
        await until(lambda: server.registry.rooms["lobby"].members["bob"].address is not None)
        proxy.move(MOVED_HOST)
        assert await bob.close()
        assert server.registry.rooms == {}


async def test_tcp_true_needs_the_delivery_extension() -> None:
    with pytest.raises(ValueError, match="delivery"):
        await ChatClient.create(("127.0.0.1", 9), "lobby", "bob", tcp=True, delivery=False)
