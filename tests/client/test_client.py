"""ocm.client: the asyncio adapter, end to end against real servers.

The seed's list (create, join, send and receive, a member leaving, the host leaving)
runs through :class:`ChatClient` against the real server on loopback. Seq handling is
tested on the core (tests/test_session.py), and here through real sockets with a fake
server that sends exactly the datagrams a test wants (gaps, duplicates, late arrivals).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

import ocm.client
import ocm.client.chat
import ocm.client.delivery
import ocm.client.events
import ocm.client.session
from ocm.client import (
    ChatClient,
    Closed,
    ErrorReply,
    Gap,
    Message,
    Notice,
    Overflow,
    Security,
    Undelivered,
    format_server_address,
    list_rooms,
    parse_server_address,
)
from ocm.client.delivery import FEATURES
from ocm.errors import ConnectionLost, ErrorCode, ProtocolError, ServerError
from ocm.wire import (
    MAX_DATAGRAM,
    JoinRoom,
    Kind,
    LeaveRoom,
    RoomInfo,
)
from tests.faults import MODES, security_for
from tests.kit import (
    FAST,
    LOOPBACK,
    MS,
    FakeServer,
    alice_and_bob,
    create_rooms,
    fake_server,
    next_event,
    ready,
    registered,
    running_server,
    server_of,
    settle,
    until,
)

# What ChatClient.join(..., "lobby", "bob") sends: it asks for the delivery extension
# (the fake server of tests/kit.py does not grant it, so the session is version 1).
BOB_JOINS = JoinRoom("lobby", "bob", features=FEATURES)
# ---------------------------------------------------------------------------
# The public names
# ---------------------------------------------------------------------------


def test_the_core_names_are_the_same_objects_from_ocm_client() -> None:
    """Scripts import the events and the core from ocm.client (README); they live in
    ocm.client.events, ocm.client.session and ocm.client.delivery, and isinstance checks
    must work whichever module a script used."""
    events = set(ocm.client.__all__) & set(ocm.client.events.__all__)
    assert events == {"Message", "Notice", "Closed", "ErrorReply", "Gap", "Overflow"} | {
        "Undelivered",
        "PathChanged",
        "Event",
        "DROPPED",
        "NETWORK_GONE",
        "COULD_NOT_RESUME",
    }
    core = set(ocm.client.__all__) & set(ocm.client.session.__all__)
    assert core >= {"RoomState", "SeqTracker"}
    delivery = set(ocm.client.__all__) & set(ocm.client.delivery.__all__)
    assert delivery == {"DeliveryState"}
    for module, names in (
        (ocm.client.events, events),
        (ocm.client.session, core),
        (ocm.client.delivery, delivery),
    ):
        for name in names:
            assert getattr(ocm.client, name) is getattr(module, name), name
    for name in ocm.client.__all__:
        assert hasattr(ocm.client, name), name


# ---------------------------------------------------------------------------
# Server addresses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", ("example.org", 9001)),
        ("example.org:9100", ("example.org", 9100)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:9001", ("::1", 9001)),
        ("[::1]", ("::1", 9001)),
        ("::1", ("::1", 9001)),
        ("fe80::1:abcd", ("fe80::1:abcd", 9001)),
        (":9100", ("localhost", 9100)),
        ("  host:2  ", ("host", 2)),
    ],
)
def test_parse_server_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_server_address(text) == expected


@pytest.mark.parametrize(
    "text", ["host:", "host:abc", "host:0", "host:65536", "[::1", "[::1]x", "[::1]:", "h:-1"]
)
def test_parse_server_address_refuses_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_server_address(text)


def test_server_address_pairs_and_formatting() -> None:
    assert parse_server_address(("::1", 9100)) == ("::1", 9100)
    assert parse_server_address("box", default_port=7) == ("box", 7)
    with pytest.raises(ValueError):
        parse_server_address(("box", 0))
    for address in [("::1", 9001), ("example.org", 9100), ("10.0.0.1", 1)]:
        assert parse_server_address(format_server_address(address)) == address
    assert format_server_address(("::1", 9001)) == "[::1]:9001"


# ---------------------------------------------------------------------------
# End to end against the real server: the seed's list
# ---------------------------------------------------------------------------


async def test_create_a_room() -> None:
    async with running_server() as server:
        async with await ChatClient.create(server_of(server), "lobby", "alice") as alice:
            assert (alice.room, alice.name, alice.host) == ("lobby", "alice", "alice")
            assert alice.is_host and alice.members == ("alice",)
            assert alice.closed is None
            assert await list_rooms(server_of(server)) == (RoomInfo("lobby", 1, False),)
            # the first heartbeat went out before create() returned
            await until(lambda: registered(server, "lobby", "alice"))
        assert await list_rooms(server_of(server)) == ()


@pytest.mark.parametrize("mode", MODES)
async def test_join_send_and_receive(mode: str) -> None:
    security = security_for(mode)
    async with running_server() as server:
        address = f"127.0.0.1:{server.tcp_port}"
        async with (
            await ready(
                server, await ChatClient.create(address, "lobby", "alice", security=security)
            ) as alice,
            await ready(
                server, await ChatClient.join(address, "lobby", "bob", security=security)
            ) as bob,
        ):
            assert alice.encrypted == bob.encrypted == (mode == "sealed")
            assert (bob.host, bob.is_host, bob.members) == ("alice", False, ("alice", "bob"))
            assert await next_event(alice) == Notice("bob joined", 1)
            assert alice.members == ("alice", "bob")

            await bob.send("hello alice")
            await alice.send("héllo bob ✓")
            for chat in (alice, bob):
                first, second = await next_event(chat), await next_event(chat)
                assert first == Message("bob", "hello alice", 2)
                assert second == Message("alice", "héllo bob ✓", 3)
            assert await bob.flush(1000 * MS)
            assert bob.unconfirmed == 0


async def test_a_member_leaves_and_the_others_go_on() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        carol = await ready(server, await ChatClient.join(server_of(server), "lobby", "carol"))

        await bob.close()
        await bob.close()  # idempotent

        assert [e async for e in bob] == [Notice("carol joined", 2)]  # ends, no Closed
        assert isinstance(bob.closed, Closed)
        with pytest.raises(ConnectionLost, match="no longer in the room"):
            await bob.send("hello?")
        assert await settle(alice) == [
            Notice("bob joined", 1),
            Notice("carol joined", 2),
            Notice("bob left", 3),
        ]
        assert alice.members == carol.members == ("alice", "carol")
        await carol.send("still here")
        assert await next_event(alice) == Message("carol", "still here", 4)
        assert await list_rooms(server_of(server)) == (RoomInfo("lobby", 2, False),)
        await carol.close()
        await alice.close()


@pytest.mark.parametrize("mode", MODES)
async def test_the_host_leaving_closes_the_room_for_everyone(mode: str) -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server, security=security_for(mode))
        assert alice.encrypted == bob.encrypted == (mode == "sealed")

        await alice.close()

        events = [e async for e in bob]  # the stream ends by itself
        assert events == [Closed("host alice left; the room is closed")]
        assert bob.closed == Closed("host alice left; the room is closed")
        with pytest.raises(ConnectionLost, match="host alice left"):
            await bob.send("anyone?")
        # the CLOSED that our own leave caused is no news: no Closed for the host
        assert [e async for e in alice] == [Notice("bob joined", 1)]
        await bob.close()  # no LEAVE for a closed room, no error
        assert await list_rooms(server_of(server)) == ()


async def test_server_refusals_are_server_errors_with_the_wire_code() -> None:
    async with running_server() as server:
        where = server_of(server)
        async with await ChatClient.create(where, "vault", "alice", "s3cret"):
            cases: list[tuple[Any, ErrorCode]] = [
                (ChatClient.join(where, "nowhere", "bob"), ErrorCode.NO_SUCH_ROOM),
                (ChatClient.create(where, "vault", "bob"), ErrorCode.ROOM_EXISTS),
                (ChatClient.join(where, "vault", "bob", "guess"), ErrorCode.WRONG_PASSWORD),
                (ChatClient.join(where, "vault", "ALICE", "s3cret"), ErrorCode.NAME_TAKEN),
                (ChatClient.join(where, "vault", "bad\x1bname"), ErrorCode.BAD_REQUEST),
            ]
            for attempt, code in cases:
                with pytest.raises(ServerError) as caught:
                    await attempt
                assert caught.value.code is code
                assert caught.value.message
            async with await ChatClient.join(where, "vault", "bob", "s3cret") as bob:
                assert bob.members == ("alice", "bob")
        assert str(ServerError(ErrorCode.NO_SUCH_ROOM, 'no room named "x"')) == (
            'no_such_room: no room named "x"'
        )


async def test_an_unreachable_server_is_connection_lost() -> None:
    async with running_server() as server:
        port = server.tcp_port
    with pytest.raises(ConnectionLost, match=rf"cannot reach server 127.0.0.1:{port} \("):
        await ChatClient.join(("127.0.0.1", port), "lobby", "bob")
    with pytest.raises(ConnectionLost, match="cannot reach server"):
        await list_rooms(f"127.0.0.1:{port}")


@pytest.mark.parametrize("delivery", [True, False])
async def test_too_long_text_is_refused_before_sending(delivery: bool) -> None:
    name = "b" * 100
    async with running_server() as server:
        where = server_of(server)
        alice = await ChatClient.create(where, "lobby", "alice", delivery=delivery)
        await ready(server, alice)
        bob = await ready(server, await ChatClient.join(where, "lobby", name, delivery=delivery))
        assert bob.delivery is delivery
        await next_event(alice)  # bob joined
        # With a long name the relayed datagram (6 + sender + text; a CHAT also has the
        # 4 bytes of the MsgNo) is the limit.
        assert bob.max_text_bytes == MAX_DATAGRAM - 6 - len(name) - (4 if delivery else 0)
        longest = "é" * (bob.max_text_bytes // 2) + "x" * (bob.max_text_bytes % 2)

        with pytest.raises(ProtocolError) as caught:
            await bob.send(longest + "x")
        assert caught.value.code is ErrorCode.TOO_LARGE
        assert f"at most {bob.max_text_bytes}" in caught.value.message
        with pytest.raises(ProtocolError, match="empty"):
            await bob.send("")
        assert bob.unconfirmed == 0
        # fit() cuts to the limit on a character boundary, never inside an "é".
        assert bob.fit("é" * bob.max_text_bytes) == "é" * (bob.max_text_bytes // 2)
        assert bob.fit(longest + "x") == longest and bob.fit("short") == "short"

        await bob.send(longest)  # exactly at the limit: relayed whole
        assert await next_event(alice) == Message(name, longest, 2)
        assert server.relay.rejected == 0
        await bob.close()
        await alice.close()


@pytest.mark.parametrize("delivery", [True, False])
async def test_a_long_room_name_lowers_the_limit_of_version_1(delivery: bool) -> None:
    async with running_server() as server:
        room = "r" * 255
        create = ChatClient.create(server_of(server), room, "al", delivery=delivery)
        async with await create as alice:
            if delivery:  # a DATA (3 + token + MsgNo + text) names no room
                assert alice.max_text_bytes == MAX_DATAGRAM - 3 - len(alice.token) - 4
            else:  # our own datagram (2 + room + token + text) is the limit here
                assert alice.max_text_bytes == MAX_DATAGRAM - 2 - 255 - len(alice.token)
            await alice.send("x" * alice.max_text_bytes)
            message = await next_event(alice)
            assert isinstance(message, Message) and len(message.text) == alice.max_text_bytes


async def test_heartbeats_keep_a_quiet_member_in_the_room() -> None:
    async with running_server(idle_timeout=150 * MS) as server:
        where = server_of(server)
        beat = 30 * MS
        async with (
            await ready(
                server, await ChatClient.create(where, "lobby", "alice", heartbeat_interval=beat)
            ) as alice,
            await ready(
                server, await ChatClient.join(where, "lobby", "bob", heartbeat_interval=beat)
            ) as bob,
        ):
            await asyncio.sleep(350 * MS)  # over two idle timeouts, nobody says a word
            assert alice.closed is None and bob.closed is None
            assert await settle(alice) == [Notice("bob joined", 1)]
            assert await list_rooms(where) == (RoomInfo("lobby", 2, False),)


@pytest.mark.parametrize("name", ["bob\u00a0", " \u2003bob "])
async def test_a_name_with_unicode_spaces_recognises_its_own_copies(name: str) -> None:
    """The server trims U+0020 only; the client takes its name from the admission, so
    its own copies (spelled as the server keeps the name) still confirm its messages."""
    async with running_server() as server:
        kept = name.strip(" ")
        host = await ChatClient.create(server_of(server), "lobby", name)
        assert host.name == kept and host.is_host
        await ready(server, host)
        async with await ChatClient.create(server_of(server), "other", "carol"):
            member = await ChatClient.join(server_of(server), "other", name)
            assert member.name == kept and member.members == ("carol", kept)
            await ready(server, member)
            for chat in (host, member):
                await chat.send("hi")
                assert await chat.flush(1000 * MS)
                assert (chat.undelivered, chat.unconfirmed) == (0, 0)
            await member.close()
        await host.close()


async def test_the_heartbeat_follows_the_idle_timeout_the_server_sends() -> None:
    """The interval is chosen here; when the beats go out is RoomState's schedule,
    tested without sleeping in test_session.py."""
    async with running_server(idle_timeout=600 * MS) as server:
        where = server_of(server)
        # Default heartbeat (15 s): the server's idle_timeout / 3 is sooner, and wins.
        async with await ChatClient.create(where, "lobby", "alice") as alice:
            assert alice.heartbeat_interval == pytest.approx(200 * MS)
            assert alice._state.heartbeat_interval == alice.heartbeat_interval
        # A shorter interval of our own is kept.
        async with await ChatClient.create(where, "x", "carol", heartbeat_interval=FAST) as carol:
            assert carol.heartbeat_interval == FAST


@pytest.mark.parametrize("delivery", [True, False])
async def test_a_dropped_member_learns_it_from_the_token_error(delivery: bool) -> None:
    async with running_server(idle_timeout=200 * MS) as server:
        where = server_of(server)
        # Sealed rooms admit sealed members only, and sealing needs delivery (section 5):
        # a version 1 bob joins a plaintext room.
        security = Security(insecure=not delivery)
        alice = await ready(
            server,
            await ChatClient.create(
                where, "lobby", "alice", heartbeat_interval=FAST, security=security
            ),
        )
        bob = await ready(
            server,
            await ChatClient.join(where, "lobby", "bob", delivery=delivery, security=security),
        )
        # Bob goes silent (a suspended laptop): his timer, and so his heartbeat, stops.
        # (He would otherwise beat every idle_timeout / 3, as the server tells him.)
        bob._stop_timers()
        assert await next_event(alice) == Notice("bob joined", 1)
        assert await next_event(alice, 2000 * MS) == Notice("bob timed out", 2)

        await bob.send("am I still here?")

        if delivery:  # resent until confirmed: unconfirmed when the room ends for bob
            assert await next_event(bob) == Undelivered("am I still here?")
        closed = await next_event(bob)
        assert isinstance(closed, Closed) and "unknown token" in closed.reason
        assert [e async for e in bob] == []
        await bob.close()
        await alice.close()


async def test_the_server_shutting_down_ends_the_stream() -> None:
    async with running_server() as server:
        bob = await ChatClient.create(server_of(server), "lobby", "bob")
        await until(lambda: registered(server, "lobby", "bob"))
        await server.close()
        assert [e async for e in bob] == [Closed("server shutting down")]
        await bob.close()


async def test_close_waits_for_the_copy_of_the_last_message() -> None:
    async with running_server() as server:
        alice, bob = await alice_and_bob(server)
        for n in range(20):
            await bob.send(f"line {n}")
        await bob.close()  # at once: the leave must not overtake the lines
        texts = [e.text for e in await settle(alice) if isinstance(e, Message)]
        assert texts == [f"line {n}" for n in range(20)]
        mine = [e for e in [e async for e in bob] if isinstance(e, Message)]
        assert len(mine) == 20
        await alice.close()


# ---------------------------------------------------------------------------
# Through real sockets with a fake server: Seq gaps, duplicates, the UDP address
# ---------------------------------------------------------------------------


async def test_gaps_and_duplicates_through_real_sockets() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        heartbeat = await fake.udp.recv_raw()
        assert heartbeat == b"\x05\x20lobby" + FakeServer.TOKEN.encode()

        fake.send(Kind.MESSAGE, 7, "first I see", "alice")
        fake.send(Kind.MESSAGE, 7, "first I see", "alice")  # duplicate
        fake.send(Kind.NOTICE, 10, "carol joined")  # 8 and 9 lost...
        fake.send(Kind.MESSAGE, 9, "late", "alice")  # ...9 only late
        fake.send(Kind.MESSAGE, 9, "late", "alice")
        fake.send(Kind.ERROR, 0, "message too long: max 4087 bytes")
        fake.send(Kind.CLOSED, 11, "host alice left; the room is closed")

        events = [e async for e in bob]
        assert events == [
            Message("alice", "first I see", 7),
            Gap(expected=8, got=10),
            Notice("carol joined", 10),
            Message("alice", "late", 9),
            ErrorReply("message too long: max 4087 bytes"),
            Closed("host alice left; the room is closed"),
        ]
        assert bob.members == ("alice", "bob", "carol")
        await bob.close()
        assert fake.requests == [BOB_JOINS]  # closed room: no LEAVE


async def test_cancelling_a_join_in_flight_still_leaves_the_room() -> None:
    async with fake_server() as fake:
        fake.delay = 50 * MS
        joining = asyncio.create_task(ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob"))
        await fake.answering.wait()  # the server has the request: we may be in the room
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        assert fake.requests == [BOB_JOINS, LeaveRoom("lobby", FakeServer.TOKEN)]


async def test_cancelling_a_join_while_its_udp_socket_opens_still_leaves() -> None:
    async with fake_server() as fake:
        opening = asyncio.Event()

        async def slow_open(self: ChatClient) -> None:
            opening.set()
            await asyncio.sleep(3600)  # a socket that takes its time: cancelled here

        original = ChatClient._open_udp
        ChatClient._open_udp = slow_open  # type: ignore[method-assign]
        try:
            joining = asyncio.create_task(
                ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
            )
            await opening.wait()  # admitted: we are in the room on the server
            joining.cancel()
            with pytest.raises(asyncio.CancelledError):
                await joining
        finally:
            ChatClient._open_udp = original  # type: ignore[method-assign]
        assert fake.requests == [BOB_JOINS, LeaveRoom("lobby", FakeServer.TOKEN)]


async def test_heartbeats_repeat_and_close_sends_leave_room() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", heartbeat_interval=FAST
        )
        beats = [await fake.udp.recv_raw() for _ in range(3)]  # the first, then two more
        assert len(set(beats)) == 1
        assert await bob.close()  # the COMPLETE of LEAVE_ROOM: we are out
        assert fake.requests == [BOB_JOINS, LeaveRoom("lobby", FakeServer.TOKEN)]
        await fake.udp.expect_silence(3 * FAST)  # the heartbeat stopped


async def test_the_server_port_going_dark_ends_the_stream() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", heartbeat_interval=FAST
        )
        await fake.udp.recv_raw()
        fake.udp.close()  # nothing listens on the UDP port now: ICMP port unreachable
        event = await next_event(bob, 2000 * MS)
        assert event == Closed("lost contact with the server")
        assert not await bob.close()  # our conclusion: the server never said we are out


async def test_send_waits_while_the_window_is_full_and_lost_copies_are_reported() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", window=3, confirm_timeout=300 * MS
        )
        await fake.udp.recv_raw()  # the first heartbeat
        for text in ("one", "two", "three"):
            await bob.send(text)
        assert bob.unconfirmed == 3
        fourth = asyncio.create_task(bob.send("four"))
        await asyncio.sleep(50 * MS)
        assert not fourth.done()  # three in flight: it waits
        assert [await fake.udp.recv_raw() for _ in range(3)][-1].endswith(b"three")
        fake.send(Kind.MESSAGE, 1, "two", "bob")  # "two" came back: room for one more
        async with asyncio.timeout(1000 * MS):
            await fourth
        assert (await fake.udp.recv_raw()).endswith(b"four")
        # The server confirms nothing more: each message is given up confirm_timeout
        # after it was sent, and the window opens again by itself.
        assert not await bob.flush(50 * MS)
        assert await bob.flush(1000 * MS)
        events = [await next_event(bob) for _ in range(4)]
        assert events == [
            Message("bob", "two", 1),
            Undelivered("one"),
            Undelivered("three"),
            Undelivered("four"),
        ]
        assert (bob.unconfirmed, bob.undelivered) == (0, 3)
        await bob.close()


async def test_a_send_waiting_for_the_window_gives_up_when_the_client_closes() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join(
            (LOOPBACK, fake.tcp_port), "lobby", "bob", window=1, linger=50 * MS
        )
        await bob.send("one")
        waiting = asyncio.create_task(bob.send("two"))
        await asyncio.sleep(20 * MS)
        await bob.close()
        with pytest.raises(ConnectionLost, match="no longer in the room: left the room"):
            await waiting


async def test_the_udp_socket_asks_for_a_bigger_receive_buffer() -> None:
    rmem_max = Path("/proc/sys/net/core/rmem_max")
    if not rmem_max.exists():
        pytest.skip("the kernel's cap on receive buffers is read from /proc (Linux)")
    cap = int(rmem_max.read_text(encoding="ascii"))
    async with fake_server() as fake:
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob")
        assert bob._transport is not None
        sock = bob._transport.get_extra_info("socket")
        wanted = ocm.client.chat.RECEIVE_BUFFER
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(wanted, cap)
        await bob.close()


async def test_unread_events_are_bounded_and_the_loss_reported() -> None:
    async with fake_server() as fake:
        bob = await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", max_events=3)
        await fake.udp.recv_raw()
        for seq in range(1, 6):
            fake.send(Kind.NOTICE, seq, f"user{seq} joined")
        fake.send(Kind.CLOSED, 6, "server shutting down")
        await until(lambda: bob.closed is not None)  # all six arrived, nobody read them
        assert [e async for e in bob] == [
            Overflow(3),  # the oldest three made room
            Notice("user4 joined", 4),
            Notice("user5 joined", 5),
            Closed("server shutting down"),  # never dropped: the newest
        ]
        await bob.close()


@pytest.mark.parametrize(
    "options", [{"window": 0}, {"confirm_timeout": -1.0}, {"heartbeat_interval": 0.0}]
)
async def test_options_must_be_positive_and_are_checked_first(options: Any) -> None:
    async with fake_server() as fake:
        with pytest.raises(ValueError, match="must be positive"):
            await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", **options)
        with pytest.raises(TypeError, match="unknown option 'windows'"):
            await ChatClient.join((LOOPBACK, fake.tcp_port), "lobby", "bob", windows=3)  # type: ignore[call-arg]
        assert fake.requests == []


async def test_list_rooms_takes_a_reply_far_over_the_request_limit() -> None:
    names = [f"{n:03d}" + "r" * 252 for n in range(400)]  # 255 bytes each: ~120 KB in all
    async with running_server(max_rooms_per_ip=len(names)) as server:
        await create_rooms(server.tcp_port, names)
        rooms = await list_rooms(server_of(server))
    assert [room.name for room in rooms] == names
