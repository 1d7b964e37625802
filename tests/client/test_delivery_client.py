"""ChatClient with the delivery extension, through real sockets on loopback.

The server is the fake of tests/client/fake_delivery.py, which speaks section 3 of
docs/protocol.md and loses, or stops answering, whatever a test tells it to; a few tests
at the end check the same against the real server. The core
behind the adapter is tested without sockets in tests/client/test_delivery.py; here the
point is that the adapter sends what the core makes, feeds it what arrives and keeps its
one timer armed. Every wait is short: heartbeat intervals of tens of milliseconds where
the heartbeat matters.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from itertools import pairwise
from typing import Any

import pytest

from ocm.client import (
    ChatClient,
    Closed,
    ErrorReply,
    Event,
    Gap,
    Message,
    Notice,
    Undelivered,
    list_rooms,
)
from ocm.client.delivery import FEATURES, DeliveryState
from ocm.client.exchange import Link, call
from ocm.client.session import RoomState
from ocm.errors import ConnectionLost
from ocm.wire import MAX_DATAGRAM, JoinRoom, Kind, LeaveRoom
from ocm.wire.delivery import Chat, Data, Departed, Leave, Ping, Repair, decode_extended
from tests.client.fake_delivery import FakeDeliveryServer, delivery_server
from tests.faults import MODES, PLAINTEXT, FaultProxy, security_for
from tests.kit import LOOPBACK, MS, next_event, ready, running_server, server_of, settle, until

BEAT = 50 * MS  # a heartbeat interval for tests about heartbeats: liveness in 150 ms


async def join(fake: FakeDeliveryServer, **options: object) -> ChatClient:
    """bob joins and the fake has his first PING (so it knows where to send)."""
    bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", **options)  # type: ignore[arg-type]
    await fake.next_datagram(Ping)
    return bob


# ---------------------------------------------------------------------------
# Negotiation
# ---------------------------------------------------------------------------


async def test_delivery_is_asked_for_and_granted() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        assert fake.requests == [JoinRoom("lobby", "bob", features=FEATURES)]
        assert bob.delivery and isinstance(bob._state, DeliveryState)
        ping = await fake.next_datagram(Ping)  # the first datagram: the PING, with the boot
        assert fake.log == [ping]
        assert ping.boot == bytes.fromhex(FakeDeliveryServer.BOOT)
        # Our DATA (3 + token + MsgNo + text) is the limit here, not the room name.
        assert bob.max_text_bytes == MAX_DATAGRAM - 3 - len(bob.token) - 4
        assert await bob.close()


async def test_delivery_false_asks_for_version_1() -> None:
    async with delivery_server() as (fake, _):
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", delivery=False)
        assert fake.requests == [JoinRoom("lobby", "bob")]
        assert not bob.delivery and isinstance(bob._state, RoomState)
        await bob.close()


async def test_a_server_that_does_not_grant_it_gets_version_1() -> None:
    async with delivery_server() as (fake, _):
        fake.grant = False
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        assert fake.requests == [JoinRoom("lobby", "bob", features=FEATURES)]
        assert not bob.delivery and isinstance(bob._state, RoomState)
        await bob.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [({"delivery": 1}, TypeError), ({"history": -1}, ValueError), ({"history": 1.5}, ValueError)],
)
async def test_the_new_options_are_checked(options: dict[str, object], error: type) -> None:
    async with delivery_server() as (fake, _):
        with pytest.raises(error):
            await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", **options)  # type: ignore[arg-type]
        assert fake.requests == []


# ---------------------------------------------------------------------------
# Every message once, in order
# ---------------------------------------------------------------------------


async def test_messages_are_confirmed_and_delivered_in_order() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        fake.say("alice", "hi bob")
        for text in ("one", "two", "three"):
            await bob.send(text)
        assert await bob.flush(1000 * MS) and bob.unconfirmed == 0
        assert await settle(bob) == [
            Message("alice", "hi bob", 1),
            Message("bob", "one", 2),
            Message("bob", "two", 3),
            Message("bob", "three", 4),
        ]
        assert [d.msg_no for d in fake.sent_of(Data)] == [1, 2, 3]  # each sent once
        assert await bob.close()


async def test_a_lost_datagram_is_repaired_over_real_sockets() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        dropped: set[int] = set()

        def lose_seq_2_once(datagram: object) -> bool:
            if isinstance(datagram, Chat) and datagram.seq == 2 and 2 not in dropped:
                dropped.add(2)
                return True
            return False

        fake.drop_out = lose_seq_2_once
        for text in ("a", "b", "c"):
            fake.say("alice", text)
        events = [await next_event(bob) for _ in range(3)]
        assert events == [
            Message("alice", "a", 1),
            Message("alice", "b", 2),
            Message("alice", "c", 3),
        ]
        assert [r.ranges for r in fake.sent_of(Repair)] == [((2, 1),)]
        await bob.close()


async def test_a_lost_last_message_is_found_by_the_status() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake, heartbeat_interval=BEAT)
        lost: set[int] = set()

        def lose_it_once(datagram: object) -> bool:
            if isinstance(datagram, Chat) and datagram.text == "lost" and not lost:
                lost.add(datagram.seq)
                return True
            return False

        fake.drop_out = lose_it_once
        fake.say("alice", "a")
        fake.say("alice", "lost")
        # Nothing follows the lost message: only the next PING's STATUS tells of it.
        assert await next_event(bob) == Message("alice", "a", 1)
        assert await next_event(bob, 2000 * MS) == Message("alice", "lost", 2)
        assert fake.sent_of(Repair)[0].ranges == ((2, 1),)
        await bob.close()


async def test_seqs_the_server_no_longer_has_are_one_gap() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        fake.keep = 1  # the server keeps only the latest Seq
        fake.drop_out = lambda d: isinstance(d, Chat) and d.seq in (1, 2)
        for text in ("a", "b", "c"):
            fake.say("alice", text)
        assert await next_event(bob) == Gap(1, 3)
        assert await next_event(bob) == Message("alice", "c", 3)
        assert await settle(bob) == []  # once
        await bob.close()


async def test_history_on_entry_comes_first_and_is_marked() -> None:
    async with delivery_server() as (fake, _):
        fake.say("alice", "long ago")
        fake.say("alice", "earlier")
        fake.notice("carol joined")
        fake.notice("bob joined")  # our own, before the admission's seq
        bob = await join(fake, history=3)
        fake.say("carol", "welcome")
        assert await settle(bob) == [
            Message("alice", "earlier", 2, history=True),
            Notice("carol joined", 3, history=True),
            Notice("bob joined", 4, history=True),
            Message("carol", "welcome", 5),
        ]
        assert bob.members == ("alice", "bob")  # from the admission, not the history
        await bob.close()


# ---------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------


async def test_a_lost_data_is_resent_until_confirmed() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        fake.drop_in = lambda d: isinstance(d, Data) and len(fake.sent_of(Data)) == 1
        started = time.monotonic()
        await bob.send("persistent")
        assert await next_event(bob) == Message("bob", "persistent", 1)
        assert time.monotonic() - started >= 0.2  # one retransmission timeout at least
        assert bob.unconfirmed == 0 and len(fake.sent_of(Data)) == 2
        await bob.close()


async def test_a_lost_copy_is_confirmed_by_accepted_and_repaired() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        lost: set[int] = set()

        def lose_first_copy(datagram: object) -> bool:
            if isinstance(datagram, Chat) and datagram.seq not in lost:
                lost.add(datagram.seq)
                return True
            return False

        fake.drop_out = lose_first_copy
        await bob.send("hello")
        # The resent DATA is answered ACCEPTED (Seq 1), which confirms it and tells
        # that Seq 1 exists: repaired, the message arrives once.
        assert await bob.flush(2000 * MS)
        assert await next_event(bob) == Message("bob", "hello", 1)
        assert len(fake.sent_of(Data)) == 2 and fake.sent_of(Repair)
        assert await settle(bob) == []
        await bob.close()


async def test_an_error_with_the_msg_no_refuses_that_message_only() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        fake.refuse = lambda text: text == "bad"
        await bob.send("bad")
        await bob.send("good")
        assert await bob.flush(1000 * MS)
        assert await settle(bob) == [ErrorReply("refused: bad"), Message("bob", "good", 1)]
        assert (bob.unconfirmed, bob.undelivered) == (0, 0)
        await bob.close()


async def test_the_window_holds_sends_until_messages_are_confirmed() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake, window=2)
        fake.drop_in = lambda d: isinstance(d, Data)  # the server hears no DATA for now
        await bob.send("one")
        await bob.send("two")
        third = asyncio.create_task(bob.send("three"))
        await asyncio.sleep(100 * MS)
        assert not third.done() and bob.unconfirmed == 2
        fake.drop_in = lambda d: False  # the resends get through
        async with asyncio.timeout(2000 * MS):
            await third
        assert await bob.flush(2000 * MS)
        texts = [e.text for e in await settle(bob) if isinstance(e, Message)]
        assert texts == ["one", "two", "three"]
        await bob.close()


# ---------------------------------------------------------------------------
# The server going away
# ---------------------------------------------------------------------------


async def test_a_silent_server_ends_the_session() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake, heartbeat_interval=BEAT)
        await asyncio.sleep(4 * BEAT)  # pings answered: all is well
        assert bob.closed is None
        fake.answer = False
        await bob.send("anyone there?")
        assert await next_event(bob, 2000 * MS) == Undelivered("anyone there?")
        assert await next_event(bob) == Closed("the server stopped answering")
        assert len(fake.sent_of(Ping)) >= 4  # resent every quarter interval meanwhile
        assert not await bob.close()  # the server never said we were out


async def test_a_restarted_server_ends_the_session() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake, heartbeat_interval=BEAT)
        fake.boot = "0123456789abcdef"  # a new incarnation: bob's boot is the old one
        assert await next_event(bob, 2000 * MS) == Closed(
            "the server restarted; room lobby no longer exists"
        )
        assert await bob.close()  # the server said the room is gone


async def test_the_room_closing_ends_the_session() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        fake.notice("host alice left; the room is closed", Kind.CLOSED)
        assert [e async for e in bob] == [Closed("host alice left; the room is closed")]
        assert await bob.close()
        assert fake.sent_of(Leave) == []  # nothing to leave


# ---------------------------------------------------------------------------
# Leaving
# ---------------------------------------------------------------------------


async def test_close_leaves_with_leave_and_departed() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        started = time.monotonic()
        assert await bob.close()
        assert time.monotonic() - started < 0.5
        assert fake.sent_of(Leave) == [Leave(FakeDeliveryServer.TOKEN)]
        assert [type(r) for r in fake.requests] == [JoinRoom]  # no LEAVE_ROOM needed
        assert await bob.close()  # idempotent, same answer
        assert [e async for e in bob] == []
        with pytest.raises(ConnectionLost, match="no longer in the room"):
            await bob.send("hello?")


async def test_a_host_close_is_quick() -> None:
    async with delivery_server() as (fake, _):
        alice = await ChatClient.create((LOOPBACK, fake.tcp_port), "lobby", "alice")
        assert alice.delivery and alice.is_host
        await fake.next_datagram(Ping)
        started = time.monotonic()
        assert await alice.close()
        assert time.monotonic() - started < 1.0
        assert fake.sent_of(Leave)


async def test_close_falls_back_to_leave_room_when_leave_is_not_answered() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        bob.leave_wait = 500 * MS
        fake.answer_leave = False
        assert await bob.close()  # LEAVE_ROOM over TCP answered
        assert len(fake.sent_of(Leave)) >= 2  # LEAVE was resent meanwhile
        assert fake.requests[-1] == LeaveRoom("lobby", FakeDeliveryServer.TOKEN)


async def test_close_returns_false_when_both_ways_fail() -> None:
    async with delivery_server() as (fake, listener):
        bob = await join(fake)
        bob.leave_wait = 200 * MS
        fake.answer_leave = False
        listener.close()
        await listener.wait_closed()
        assert not await bob.close()  # no exception, just False
        assert not await bob.close()
        assert bob.closed is not None


async def test_close_waits_for_the_confirmation_of_the_last_messages() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        for n in range(10):
            await bob.send(f"line {n}")
        assert await bob.close()
        assert [d.msg_no for d in fake.sent_of(Data)] == list(range(1, 11))
        assert isinstance(fake.log[-1], Leave)  # the leave did not overtake them
        assert bob.undelivered == 0


async def test_unconfirmed_messages_at_leave_are_undelivered() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake, linger=50 * MS)
        fake.drop_in = lambda d: isinstance(d, Data)
        await bob.send("never heard")
        assert await bob.close()
        assert [e async for e in bob] == [Undelivered("never heard")]
        assert bob.undelivered == 1


async def test_leave_room_keeps_our_ip_and_a_bind_failure_is_connection_lost() -> None:
    async with delivery_server() as (fake, _):
        # 192.0.2.1 (TEST-NET-1) is no address of this host: binding to it fails.
        link = Link(LOOPBACK, "192.0.2.1")
        with pytest.raises(ConnectionLost, match="cannot reach server"):
            await call(
                (LOOPBACK, fake.tcp_port), LeaveRoom("lobby", "x"), timeout=1000 * MS, link=link
            )
        _, used = await call(
            (LOOPBACK, fake.tcp_port),
            LeaveRoom("lobby", "x"),
            timeout=1000 * MS,
            link=Link(LOOPBACK, LOOPBACK),
        )
        assert used == Link(LOOPBACK, LOOPBACK)


@pytest.mark.skipif(sys.platform != "linux", reason="IP_BIND_ADDRESS_NO_PORT is Linux's")
async def test_the_leave_room_socket_binds_our_ip_without_a_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What keeps many bound LEAVE_ROOMs from running out of ports (the test below cannot
    exhaust them): the socket bound to our IP has IP_BIND_ADDRESS_NO_PORT, so connect()
    picks a port free for this destination only."""
    opened: list[tuple[str, int]] = []
    original = asyncio.open_connection

    async def spy(*args: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = kwargs.get("sock")
        if sock is not None:
            opened.append((sock.getsockname()[0], sock.getsockopt(socket.IPPROTO_IP, 24)))
        return await original(*args, **kwargs)

    monkeypatch.setattr(asyncio, "open_connection", spy)
    async with delivery_server() as (fake, _):
        await call(
            (LOOPBACK, fake.tcp_port),
            LeaveRoom("lobby", "x"),
            timeout=1000 * MS,
            link=Link(LOOPBACK, LOOPBACK),
        )
    # Every connection of the exchange (TLS on first contact takes two), bound to our IP
    # with option 24: IP_BIND_ADDRESS_NO_PORT (Python names it from 3.12 on).
    assert opened and set(opened) == {(LOOPBACK, 1)}


async def test_many_leave_room_calls_from_one_bound_ip_all_get_through() -> None:
    """Each exchange leaves a connection in TIME_WAIT on one side, and the next binds
    the same IP again: every one gets through. (200 cannot exhaust the ports, with or
    without IP_BIND_ADDRESS_NO_PORT: the test above checks that option.)"""
    async with delivery_server() as (fake, _):
        for _ in range(200):
            fake.gone = False  # each call leaves anew
            await call(
                (LOOPBACK, fake.tcp_port),
                LeaveRoom("lobby", "x"),
                timeout=1000 * MS,
                link=Link(LOOPBACK, LOOPBACK),
            )
        await until(lambda: len(fake.requests) == 200)


# ---------------------------------------------------------------------------
# Against the real server
# ---------------------------------------------------------------------------


async def test_clients_that_join_together_do_not_heartbeat_in_lockstep() -> None:
    """Section 3: a PING every interval minus a random 0-20 %, drawn by each client, so
    that an office that joined together does not beat in step. Two clients join at the
    same moment and stay quiet; their PINGs are read off their sockets."""
    beat = 50 * MS
    async with running_server() as server:
        where = server_of(server)
        host = await ChatClient.create(where, "lobby", "host", security=PLAINTEXT)
        pair = await asyncio.gather(
            *(
                ChatClient.join(where, "lobby", name, heartbeat_interval=beat, security=PLAINTEXT)
                for name in ("bob", "carol")
            )
        )
        loop = asyncio.get_running_loop()
        pings: list[list[float]] = [[], []]
        for chat, times in zip(pair, pings, strict=True):
            transport = chat._transport
            assert transport is not None and chat.delivery
            send = transport.sendto

            def spy(data: Any, *args: Any, _send: Any = send, _times: Any = times) -> None:
                if isinstance(decode_extended(bytes(data)), Ping):
                    _times.append(loop.time())
                _send(data, *args)

            transport.sendto = spy  # type: ignore[method-assign, assignment]
        await asyncio.sleep(22 * beat)
        # A PING whose STATUS is late is resent within a tenth of the interval: those
        # retries are not heartbeats. (Each PING, retry or not, schedules the next
        # heartbeat from itself.)
        intervals = [[b - a for a, b in pairwise(times) if b - a > 0.5 * beat] for times in pings]
        assert all(len(each) >= 15 for each in intervals), intervals
        # Each draws its own: without jitter no interval is shorter than the heartbeat
        # (a timer fires late, never early); with it, about 3 in 4 are 5 % shorter or more.
        for each in intervals:
            assert sum(i < 0.95 * beat for i in each) >= 5, each
        # And not in step with each other: in lockstep their k-th intervals would be equal
        # (timer noise aside, well under 1 %); drawn apart, they differ by 3 % at the median.
        apart = sorted(abs(a - b) for a, b in zip(*intervals, strict=False))
        assert apart[len(apart) // 2] > 0.01 * beat, apart
        for chat in (*pair, host):
            await chat.close()


@pytest.mark.parametrize("mode", MODES)
async def test_real_server_history_then_live_messages(mode: str) -> None:
    security = security_for(mode)
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(
            server, await ChatClient.create(where, "lobby", "alice", security=security)
        )
        for n in range(5):
            await alice.send(f"m{n}")
        assert await alice.flush(1000 * MS)
        bob = await ready(
            server,
            await ChatClient.join(where, "lobby", "bob", history=3, security=security),
        )
        assert bob.delivery and bob.encrypted == (mode == "sealed")
        await alice.send("live")
        assert await settle(bob, 100 * MS) == [
            Message("alice", "m3", 4, history=True),
            Message("alice", "m4", 5, history=True),
            Notice("bob joined", 6, history=True),
            Message("alice", "live", 7),
        ]
        await bob.close()
        await alice.close()


async def test_real_server_leave_and_host_close_are_confirmed_at_once() -> None:
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(server, await ChatClient.create(where, "lobby", "alice"))
        bob = await ready(server, await ChatClient.join(where, "lobby", "bob"))
        carol = await ready(server, await ChatClient.join(where, "lobby", "carol"))
        assert alice.delivery and bob.delivery and carol.delivery
        started = time.monotonic()
        assert await carol.close()  # LEAVE answered DEPARTED
        assert await next_event(bob) == Notice("carol joined", 2)
        assert await next_event(bob) == Notice("carol left", 3)
        assert await alice.close()
        assert time.monotonic() - started < 1.0
        assert [e async for e in bob] == [Closed("host alice left; the room is closed")]
        assert await bob.close()  # the server's CLOSED said he is out
        assert await list_rooms(where) == ()


async def test_real_server_mixed_room_of_both_versions() -> None:
    """A version 1 member cannot be sealed (section 5 builds on delivery): the two
    versions share a plaintext room, on a server that allows one."""
    async with running_server() as server:
        where = server_of(server)
        alice = await ready(
            server, await ChatClient.create(where, "lobby", "alice", security=PLAINTEXT)
        )
        bob = await ready(
            server, await ChatClient.join(where, "lobby", "bob", delivery=False, security=PLAINTEXT)
        )
        assert alice.delivery and not bob.delivery
        await bob.send("from version 1")
        await alice.send("from delivery")
        for chat in (alice, bob):
            texts = [e.text for e in await settle(chat, 100 * MS) if isinstance(e, Message)]
            assert texts == ["from version 1", "from delivery"]
        assert await alice.flush(1000 * MS) and await bob.flush(1000 * MS)
        assert await bob.close()
        assert await alice.close()


async def test_a_leave_whose_departed_was_lost_is_confirmed_by_a_later_one() -> None:
    async with delivery_server() as (fake, _):
        bob = await join(fake)
        bob.leave_wait = 300 * MS
        # The server takes the first LEAVE, but its DEPARTED answers are lost until bob
        # has tried LEAVE_ROOM, which the server refuses: the token is gone already.
        fake.drop_out = lambda d: isinstance(d, Departed) and not fake.requests[1:]
        assert await bob.close()
        assert fake.requests[-1] == LeaveRoom("lobby", FakeDeliveryServer.TOKEN)
        assert len(fake.sent_of(Leave)) >= 2  # before LEAVE_ROOM, and after it


async def test_real_server_through_a_lossy_network_every_message_once_in_order() -> None:
    """20% loss each way, duplicates and reordering (tests/faults.py): every member
    still gets every message once, in the room's order, and no Gap."""
    async with (
        running_server() as server,
        FaultProxy.start(
            server.tcp_port, server.udp_port, seed=11, loss=0.2, duplicate=0.1, reorder=0.2
        ) as proxy,
    ):
        beat = 300 * MS  # a lost last message is found by the next STATUS
        members = [
            await ChatClient.create(
                proxy.address, "lobby", "alice", heartbeat_interval=beat, security=PLAINTEXT
            )
        ]
        for name in ("bob", "carol"):
            members.append(
                await ChatClient.join(
                    proxy.address, "lobby", name, heartbeat_interval=beat, security=PLAINTEXT
                )
            )
        assert all(m.delivery for m in members)

        async def talk(member: ChatClient) -> None:
            for n in range(10):
                await member.send(f"{member.name} {n}")

        async def listen(member: ChatClient) -> list[Message]:
            heard: list[Message] = []
            async for event in member:
                assert isinstance(event, Message | Notice), event  # no Gap, no Undelivered
                if isinstance(event, Message):
                    heard.append(event)
                    if len(heard) == 30:
                        return heard
            raise AssertionError("the stream ended")

        listeners = [asyncio.create_task(listen(m)) for m in members]
        await asyncio.gather(*(talk(m) for m in members))
        async with asyncio.timeout(20_000 * MS):
            heard = await asyncio.gather(*listeners)
        for messages in heard:
            assert messages == heard[0]  # the same messages, in the same (Seq) order
            assert [m.seq for m in messages] == sorted({m.seq for m in messages})
            # Every message once, and each sender's in the order it sent them (the
            # server relays a member's DATA in MsgNo order).
            for name in ("alice", "bob", "carol"):
                mine = [m.text for m in messages if m.sender == name]
                assert mine == [f"{name} {n}" for n in range(10)]
        assert proxy.counters.down.dropped and proxy.counters.up.dropped
        for member in members[::-1]:
            assert await member.close()


async def test_what_a_leave_could_not_settle_is_read_before_the_stream_ends() -> None:
    """Bob's DATA and LEAVE are lost; while close() falls back to LEAVE_ROOM the room
    closes (the host left). The line still in flight is reported to the reader, as
    not certain, before the stream ends: not queued after its end, unread."""
    async with running_server() as server:
        alice = await ChatClient.create(server_of(server), "lobby", "alice", security=PLAINTEXT)
        bob = await ChatClient.join(
            server_of(server), "lobby", "bob", security=PLAINTEXT, linger=1 * MS
        )
        transport: Any = bob._transport
        sendto = transport.sendto

        def lose_data_and_leave(data: bytes, *address: Any) -> None:
            if not isinstance(decode_extended(bytes(data)), Data | Leave):
                sendto(data, *address)

        transport.sendto = lose_data_and_leave
        leave_room = bob._leave

        async def the_host_leaves_first() -> int | None:
            await alice.close()
            await asyncio.sleep(200 * MS)  # its CLOSED reaches bob meanwhile
            return await leave_room()

        bob._leave = the_host_leaves_first  # type: ignore[method-assign]
        reading = asyncio.create_task(collect_all(bob))
        await bob.send("in flight")
        assert await bob.close()
        events = await asyncio.wait_for(reading, 2000 * MS)
        assert Undelivered("in flight", certain=False) in events


async def collect_all(chat: ChatClient) -> list[Event]:
    return [event async for event in chat]
