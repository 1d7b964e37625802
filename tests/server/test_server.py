"""Integration: the real server on loopback port 0, spoken to over real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import pytest

from ocm.errors import ErrorCode
from ocm.server.app import SPARE_FILES, ServerConfig, fit_connections_to_file_limit
from ocm.wire import (
    TCRP_HEADER_SIZE,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    ListRooms,
    RoomInfo,
    RoomList,
    State,
    encode_header,
)
from tests.kit import (
    MS,
    OTHER_HOST,
    RawStream,
    ServerProcess,
    TcrpConnection,
    UdpPeer,
    admit,
    call,
    enter,
    has_loopback_alias,
    running_server,
    until,
)

needs_alias = pytest.mark.skipif(
    not has_loopback_alias(), reason=f"{OTHER_HOST} is not a loopback address here"
)


async def test_create_then_join_shows_in_list() -> None:
    async with running_server() as server:
        host = await enter(server, CreateRoom("lobby", "alice"))
        guest = await enter(server, JoinRoom("lobby", "bob"))
        assert host.admission.host == "alice"
        assert guest.admission.members == ("alice", "bob")
        assert guest.admission.udp_port == server.udp_port
        assert guest.admission.idle_timeout == server.config.limits.idle_timeout
        await enter(server, CreateRoom("vault", "carol", "s3cret"))

        ack, complete = await call(server.tcp_port, ListRooms())

        assert ack.ok
        assert complete == RoomList(
            (RoomInfo("lobby", 2, protected=False), RoomInfo("vault", 1, protected=True))
        )


async def test_chat_reaches_every_member_with_consecutive_seq() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        carol = await enter(server, JoinRoom("lobby", "carol"))
        assert [n.text for n in await alice.peer.drain()] == ["bob joined", "carol joined"]
        assert [n.text for n in await bob.peer.drain()] == ["carol joined"]

        bob.say("hello")
        carol.say("héllo ✓")

        for member in (alice, bob, carol):
            first, second = await member.peer.recv(), await member.peer.recv()
            assert (first.kind, first.sender, first.text) == (Kind.MESSAGE, "bob", "hello")
            assert (second.sender, second.text) == ("carol", "héllo ✓")
            assert second.seq == first.seq + 1


async def test_heartbeat_is_not_relayed() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        assert (await alice.peer.recv()).text == "bob joined"
        bob.heartbeat()
        await alice.peer.expect_silence()


async def test_member_leave_notifies_others_who_keep_chatting() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        carol = await enter(server, JoinRoom("lobby", "carol"))

        ack, complete = await call(server.tcp_port, LeaveRoom("lobby", bob.token))
        assert ack.ok and complete == Left("lobby")

        notices = [await alice.peer.recv() for _ in range(3)]
        assert [n.text for n in notices] == ["bob joined", "carol joined", "bob left"]
        assert [n.seq for n in notices] == [1, 2, 3]
        assert (await carol.peer.recv()).text == "bob left"

        alice.say("still here")
        for member in (alice, carol):
            message = await member.peer.recv()
            assert (message.kind, message.seq, message.text) == (Kind.MESSAGE, 4, "still here")
        # bob's token is gone: his datagram is an ERROR, not a message
        assert [n.text for n in await bob.peer.drain()] == ["carol joined"]
        bob.say("hello?")
        assert (await bob.peer.recv()).kind is Kind.ERROR
        _, rooms = await call(server.tcp_port, ListRooms())
        assert rooms == RoomList((RoomInfo("lobby", 2, protected=False),))


async def test_host_leave_closes_room_and_kills_tokens() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        carol = await enter(server, JoinRoom("lobby", "carol"))
        await bob.peer.drain()

        ack, _ = await call(server.tcp_port, LeaveRoom("lobby", alice.token))
        assert ack.ok

        for member in (bob, carol):
            closed = await member.peer.recv()
            assert closed.kind is Kind.CLOSED
            assert "alice" in closed.text
        for member in (bob, carol):
            member.say("anyone?")
            error = await member.peer.recv()
            assert error.kind is Kind.ERROR and error.seq == 0
        _, rooms = await call(server.tcp_port, ListRooms())
        assert rooms == RoomList(())


async def test_silent_member_is_dropped_after_idle_timeout() -> None:
    async with running_server(idle_timeout=500 * MS) as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))
        assert (await alice.peer.recv()).text == "bob joined"

        async with alice.heartbeating(every=100 * MS):
            notice = await alice.peer.recv(timeout=1500 * MS)

        assert (notice.kind, notice.text) == (Kind.NOTICE, "bob timed out")
        bob.say("back")
        assert (await bob.peer.recv()).kind is Kind.ERROR


async def test_the_expiry_timer_follows_the_registry_deadline() -> None:
    """One timer, re-armed from registry.next_deadline() after every TCRP request and
    every expiry pass: armed when the first member arrives, at the oldest member's
    deadline, and not armed at all on a server without members."""
    async with running_server(idle_timeout=300 * MS) as server:
        assert server._expiry_timer is None  # nobody to expire: no wake-ups
        alice = await enter(server, CreateRoom("lobby", "alice"))
        deadline = server.registry.next_deadline()
        assert deadline is not None and server._expiry_timer is not None
        # Armed at the join; alice's first heartbeat only moved her deadline later.
        assert deadline - 300 * MS < server._expiry_at <= deadline
        # A refused request changes nothing, and leaves the timer armed.
        ack, _ = await call(server.tcp_port, JoinRoom("lobby", "alice"))
        assert ack.error is ErrorCode.NAME_TAKEN and server._expiry_timer is not None
        # Alice never beats again: the timer fires, closes her room, and disarms.
        closed = await alice.peer.recv(timeout=1500 * MS)
        assert closed.kind is Kind.CLOSED
        assert server.registry.next_deadline() is None and server._expiry_timer is None


async def test_a_stalled_server_reads_the_waiting_heartbeats_before_expiring() -> None:
    """The whole process stops for longer than the idle timeout while heartbeats wait
    in the socket's buffer. asyncio reads one datagram a loop turn, and the late expiry
    timer ran in the first: four of the five members were dropped for idle."""
    async with running_server(idle_timeout=300 * MS) as server:
        members = [await enter(server, CreateRoom("lobby", "m0"))]
        members += [await enter(server, JoinRoom("lobby", f"m{n}")) for n in range(1, 5)]
        for member in members:
            member.heartbeat()  # sent now; read only when the loop runs again
        time.sleep(450 * MS)  # the stall: nothing in this process runs
        await asyncio.sleep(50 * MS)
        assert len(server.registry.rooms["lobby"].members) == 5
        # The stall forgiven, expiry goes on: nobody beats again, the room closes.
        closed = await members[1].peer.recv(timeout=1500 * MS)
        while closed.kind is not Kind.CLOSED:
            closed = await members[1].peer.recv(timeout=1500 * MS)
        assert server.registry.rooms == {}


async def test_silent_host_closes_the_room() -> None:
    async with running_server(idle_timeout=300 * MS) as server:
        await enter(server, CreateRoom("lobby", "alice"))
        bob = await enter(server, JoinRoom("lobby", "bob"))

        async with bob.heartbeating(every=60 * MS):
            closed = await bob.peer.recv(timeout=1500 * MS)

        assert closed.kind is Kind.CLOSED and "timed out" in closed.text


@needs_alias
async def test_token_from_another_ip_is_refused() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        thief = await UdpPeer.open(server.udp_port, local_host=OTHER_HOST)

        thief.send("lobby", alice.token, "spoofed")

        reply = await thief.recv()
        assert reply.kind is Kind.ERROR
        await alice.peer.expect_silence()


@needs_alias
async def test_leave_with_token_from_another_ip_is_refused() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        ack, _ = await call(server.tcp_port, LeaveRoom("lobby", alice.token), local_host=OTHER_HOST)
        assert ack.error is ErrorCode.INVALID_TOKEN


async def test_token_of_one_room_cannot_post_into_another() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        carol = await enter(server, CreateRoom("other", "carol"))
        alice.peer.send("other", alice.token, "cross-room")
        assert (await alice.peer.recv()).kind is Kind.ERROR
        await carol.peer.expect_silence()


async def test_unknown_token_error_is_no_larger_than_the_datagram() -> None:
    async with running_server() as server:
        await enter(server, CreateRoom("lobby", "alice"))
        stranger = await UdpPeer.open(server.udp_port)
        probe = b"\x05\x03lobbyabc"  # 10 bytes, a token nobody has

        stranger.send_raw(probe)

        reply = await stranger.recv_raw()
        assert reply[0] == Kind.ERROR
        assert 6 <= len(reply) <= len(probe)


async def test_tiny_garbage_gets_no_reply_and_relay_goes_on() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        for garbage in (b"", b"\x00", b"\xff\xff", b"\x01\x01", b"\x09\x09short"):
            alice.peer.send_raw(garbage)
        alice.say("still relayed")
        while (reply := await alice.peer.recv()).kind is Kind.ERROR:
            pass
        assert reply.text == "still relayed"


async def test_too_long_and_invalid_utf8_text_is_refused_not_cut() -> None:
    async with running_server() as server:
        name = "a" * 200  # a long sender name makes the relayed copy larger than the input
        alice = await enter(server, CreateRoom("r", name))
        header = bytes((1, len(alice.token))) + b"r" + alice.token.encode()
        alice.peer.send_raw(header + b"x" * (4096 - len(header)))
        error = await alice.peer.recv()
        assert error.kind is Kind.ERROR and "too long" in error.text
        alice.peer.send_raw(header + b"x" * (4097 - len(header)))
        assert (await alice.peer.recv()).kind is Kind.ERROR
        alice.peer.send_raw(header + b"\xff\xfe")
        error = await alice.peer.recv()
        assert error.kind is Kind.ERROR and "UTF-8" in error.text
        longest = 4096 - 6 - len(name)
        alice.say("y" * longest)
        message = await alice.peer.recv()
        assert message.kind is Kind.MESSAGE and len(message.text) == longest


async def test_password_room_refuses_wrong_and_accepts_right() -> None:
    async with running_server() as server:
        await enter(server, CreateRoom("vault", "alice", "s3cret"))

        wrong, _ = await call(server.tcp_port, JoinRoom("vault", "bob", "guess"))
        missing, _ = await call(server.tcp_port, JoinRoom("vault", "bob"))
        right, complete = await call(server.tcp_port, JoinRoom("vault", "bob", "s3cret"))

        assert wrong.error is ErrorCode.WRONG_PASSWORD
        assert missing.error is ErrorCode.WRONG_PASSWORD
        assert right.ok and complete is not None


async def test_application_errors_keep_the_connection_open() -> None:
    async with running_server() as server:
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            created, _ = await connection.call(CreateRoom("lobby", "alice"))
            again, _ = await connection.call(CreateRoom("lobby", "bob"))
            taken, _ = await connection.call(JoinRoom("lobby", "ALICE"))
            missing, _ = await connection.call(JoinRoom("nowhere", "bob"))
            listed, rooms = await connection.call(ListRooms())
        finally:
            await connection.close()
        assert created.ok and listed.ok
        assert again.error is ErrorCode.ROOM_EXISTS
        assert taken.error is ErrorCode.NAME_TAKEN
        assert missing.error is ErrorCode.NO_SUCH_ROOM
        assert rooms == RoomList((RoomInfo("lobby", 1, protected=False),))


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (encode_header(0, 9, 0, 2) + b"{}", ErrorCode.UNKNOWN_OPERATION),
        (encode_header(0, 3, 7, 2) + b"{}", ErrorCode.BAD_REQUEST),
        (encode_header(0, 3, 0, 2**232 - 1), ErrorCode.TOO_LARGE),
        (encode_header(5, 1, 0, 4) + b"lobby[1] ", ErrorCode.BAD_REQUEST),
        (encode_header(5, 1, 0, 2) + b"lobby{}", ErrorCode.BAD_REQUEST),
        (encode_header(2, 1, 0, 2) + b"\xff\xfe{}", ErrorCode.BAD_REQUEST),
    ],
)
async def test_malformed_request_gets_error_ack_then_close(raw: bytes, code: ErrorCode) -> None:
    async with running_server() as server:
        connection = await TcrpConnection.open(server.tcp_port)
        connection.writer.write(raw)
        # Read the ACK raw: it echoes the operation byte, even one the decoder refuses.
        stream = RawStream(connection.reader)
        ack = await stream.message()
        assert (ack[1], ack[2]) == (raw[1], State.ACK)
        assert json.loads(ack[TCRP_HEADER_SIZE + ack[0] :])["code"] == code
        async with asyncio.timeout(1000 * MS):
            assert await stream.to_the_end() == b""  # the server closed it
        await connection.close()


async def test_truncated_header_then_silence_is_cut_off() -> None:
    async with running_server(message_timeout=200 * MS) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        connection.writer.write(encode_header(0, 3, 0, 2)[: TCRP_HEADER_SIZE // 2])
        async with asyncio.timeout(1000 * MS):
            assert await connection.reader.read() == b""
        await connection.close()
        # and the server still serves
        ack, _ = await call(server.tcp_port, ListRooms())
        assert ack.ok


async def test_idle_tcp_connection_is_closed() -> None:
    async with running_server(tcp_idle_timeout=200 * MS) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        async with asyncio.timeout(1000 * MS):
            assert await connection.reader.read() == b""
        await connection.close()


async def test_close_sends_closed_to_every_member() -> None:
    async with running_server() as server:
        alice = await enter(server, CreateRoom("lobby", "alice"))
        carol = await enter(server, CreateRoom("other", "carol"))
        await server.close()
        await server.close()  # idempotent
        for member in (alice, carol):
            closed = await member.peer.recv()
            assert (closed.kind, closed.text) == (Kind.CLOSED, "server shutting down")


async def test_close_waits_for_connection_handlers() -> None:
    async with running_server() as server:
        idle = await TcrpConnection.open(server.tcp_port)
        await until(lambda: len(server.tcrp.writers) == 1)
        await server.close()
        # A handler left running would be destroyed mid-await when the loop stops,
        # which asyncio reports as an error with a traceback.
        assert not server.tcrp._tasks
        await idle.close()


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be delivered on Windows")
async def test_sigterm_closes_rooms_and_exits_zero() -> None:
    server = await ServerProcess.start()
    try:
        admission = await admit(server.tcp_port, CreateRoom("lobby", "alice"))
        peer = await UdpPeer.open(admission.udp_port)
        peer.send("lobby", admission.token, "registered?")
        assert (await peer.recv()).text == "registered?"  # the echo: our address is known
        idle = await TcrpConnection.open(server.tcp_port)  # open during shutdown

        server.process.send_signal(signal.SIGTERM)

        closed = await peer.recv(timeout=5)
        assert (closed.kind, closed.text) == (Kind.CLOSED, "server shutting down")
        assert await asyncio.to_thread(server.process.wait, 10) == 0
        assert server.process.stderr is not None
        log = server.process.stderr.read()
        assert admission.token not in log
        assert "Traceback" not in log and "ERROR" not in log, log
        await idle.close()
    finally:
        server.stop()


@pytest.mark.posix
@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no RLIMIT_NOFILE")
@pytest.mark.parametrize(
    ("soft", "hard", "raised_to", "connections"),
    [
        (1024, 1_000_000, 4096 + SPARE_FILES, 4096),  # raised: all 4096 fit
        (1024, 2048, 2048, 2048 - SPARE_FILES),  # raised to the hard limit, cap lowered
        (100_000, 100_000, None, 4096),  # already enough: untouched
    ],
)
def test_connection_cap_fits_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
    soft: int,
    hard: int,
    raised_to: int | None,
    connections: int,
) -> None:
    import resource

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: calls.append(limits))

    fitted = fit_connections_to_file_limit(ServerConfig())

    assert calls == ([] if raised_to is None else [(raised_to, hard)])
    assert fitted.limits.max_connections == connections
