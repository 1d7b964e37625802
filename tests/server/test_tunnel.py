"""Integration: section 4 of docs/protocol.md on the real server, over real sockets.

TUNNEL turns a TCRP connection into a carrier of framed relay datagrams; RESUME moves a
token to another IP with the secret its COMPLETE gave. These tests put UDP and
tunnelled members in one room, move members between loopback hosts (127.0.0.2 stands
for "another host" where the system has it), and check that a tunnel's reader that
stops reading costs the room nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

import pytest

from ocm.client.exchange import read_message
from ocm.errors import ErrorCode
from ocm.server.app import OCMServer
from ocm.server.registry import Address, Member
from ocm.wire import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    Kind,
    ListRooms,
    Operation,
    RoomList,
    ServerDatagram,
    State,
    TcrpMessage,
    encode_request,
    encode_tcrp,
)
from ocm.wire.delivery import (
    Chat,
    Data,
    Departed,
    Leave,
    Ping,
    Repair,
    Status,
    encode_extended,
    encode_received,
)
from ocm.wire.tcrp import Resume, Resumed, Tunnel, Tunnelled
from ocm.wire.tunnel import MAX_FRAME, encode_frame
from tests.kit import (
    LOOPBACK,
    MS,
    OTHER_HOST,
    TcrpConnection,
    TunnelPeer,
    UdpPeer,
    admit,
    call,
    enter,
    has_loopback_alias,
    running_server,
    until,
)
from tests.server.kit import boot, on_udp, received, tunnelled

needs_alias = pytest.mark.skipif(
    not has_loopback_alias(), reason=f"{OTHER_HOST} is not a loopback address here"
)

DELIVERY = ("delivery",)
TUNNEL = ("delivery", "tunnel")


def member(server: OCMServer, admission: Admission) -> Member:
    return server.registry.by_token[admission.token.encode()]


async def through_tunnel(
    server: OCMServer, admission: Admission, sock: socket.socket | None = None
) -> TunnelPeer:
    """A delivery member's tunnel, registered by a PING (its STATUS taken)."""
    peer = await TunnelPeer.open(server.tcp_port, admission.room, admission.token, sock=sock)
    peer.send(encode_extended(Ping(admission.token, 1, boot(admission))))
    assert isinstance(await tunnelled(peer), Status)
    assert member(server, admission).address == (LOOPBACK, -peer.port)
    return peer


async def complete_payload(port: int, request: JoinRoom) -> dict[str, object]:
    """The raw JSON of a request's COMPLETE: the keys, not what a parser makes of them."""
    connection = await TcrpConnection.open(port)
    try:
        connection.writer.write(encode_request(request))
        await connection.replies.next()  # the ACK
        message = await read_message(connection.reader, connection.replies.framer)
    finally:
        await connection.close()
    payload: dict[str, object] = message.payload
    return payload


# ---------------------------------------------------------------------------
# Negotiation
# ---------------------------------------------------------------------------


async def test_tunnel_and_resume_are_granted_only_with_delivery() -> None:
    async with running_server() as server:
        port = server.tcp_port
        every = await admit(
            port, CreateRoom("lobby", "alice", None, ("resume", "delivery", "tunnel"))
        )
        assert every.features == ("delivery", "tunnel", "resume")
        assert every.resume is not None and len(every.resume) >= 22
        tunnel = await admit(port, JoinRoom("lobby", "bob", None, ("delivery", "tunnel")))
        assert (tunnel.features, tunnel.resume) == (("delivery", "tunnel"), None)
        resume = await admit(port, JoinRoom("lobby", "carol", None, ("delivery", "resume")))
        assert resume.features == ("delivery", "resume")
        assert resume.resume is not None and resume.resume != every.resume
        # Only a digest is kept, and only for those who asked.
        assert member(server, tunnel).secret_digest is None
        assert member(server, resume).secret_digest not in (None, resume.resume.encode())
        # Without delivery: version 1, byte for byte, whatever else was asked.
        v1 = await complete_payload(port, JoinRoom("lobby", "dave", None, ("tunnel", "resume")))
        assert set(v1) == {"token", "udp_port", "host", "members", "idle_timeout"}
        v1 = await complete_payload(port, JoinRoom("lobby", "erin"))
        assert set(v1) == {"token", "udp_port", "host", "members", "idle_timeout"}


# ---------------------------------------------------------------------------
# A room of UDP and tunnelled members
# ---------------------------------------------------------------------------


async def test_udp_and_tunnelled_members_share_a_room() -> None:
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "tunnel")))
        b = await through_tunnel(server, bob)
        try:
            assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
            b.send(encode_extended(Ping(bob.token, 7, boot(bob))))
            assert await tunnelled(b) == Status(1, 7)

            a.send_raw(encode_extended(Data(alice.token, 1, "hi bob")))
            assert await received(a) == await tunnelled(b) == Chat(2, "alice", 1, "hi bob")
            b.send(encode_extended(Data(bob.token, 1, "hi alice")))
            assert await received(a) == await tunnelled(b) == Chat(3, "bob", 1, "hi alice")

            b.send(encode_extended(Repair(bob.token, ((1, 3),))))
            assert [await tunnelled(b) for _ in range(3)] == [
                ServerDatagram(Kind.NOTICE, 1, "", "bob joined"),
                Chat(2, "alice", 1, "hi bob"),
                Chat(3, "bob", 1, "hi alice"),
            ]

            b.send(encode_extended(Leave(bob.token)))
            assert await tunnelled(b) == Departed()
            assert await received(a) == ServerDatagram(Kind.NOTICE, 4, "", "bob left")
            assert list(server.registry.rooms["lobby"].members) == ["alice"]
            await a.expect_silence(30 * MS)
        finally:
            a.close()
            await b.close()


async def test_frames_sent_right_behind_tunnel_are_not_lost() -> None:
    """A client may write its first frame with TUNNEL, before the COMPLETE is back: the
    server's TCRP reader has those bytes, and hands them to the tunnel."""
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        connection = await TcrpConnection.open(server.tcp_port)
        ping = encode_extended(Ping(alice.token, 5, boot(alice)))
        connection.writer.write(encode_request(Tunnel("lobby", alice.token)) + encode_frame(ping))
        ack = await connection.replies.next()
        assert isinstance(ack, Ack) and ack.ok
        assert await connection.replies.next() == Tunnelled("lobby")
        peer = TunnelPeer(connection)
        try:
            assert await tunnelled(peer) == Status(0, 5)
        finally:
            await peer.close()


async def test_tunnel_is_refused_for_a_wrong_token_or_a_version_1_member() -> None:
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        carol = await admit(server.tcp_port, JoinRoom("lobby", "carol"))  # version 1
        dave = await admit(server.tcp_port, JoinRoom("lobby", "dave", None, DELIVERY))
        other = await admit(server.tcp_port, CreateRoom("other", "oscar", None, TUNNEL))
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            for room, token in [
                ("lobby", "no-such-token"),
                ("lobby", carol.token),
                ("lobby", dave.token),  # delivery, but no tunnel granted
                ("lobby", other.token),  # a member of another room
                ("nowhere", alice.token),
            ]:
                ack, complete = await connection.call(Tunnel(room, token))
                assert (ack.error, complete) == (ErrorCode.INVALID_TOKEN, None)
            # The connection still speaks TCRP: a refused TUNNEL turned nothing into frames.
            ack, rooms = await connection.call(ListRooms())
            assert ack.ok and isinstance(rooms, RoomList) and len(rooms.rooms) == 2
        finally:
            await connection.close()
        assert server._endpoint.tunnels == {}


async def test_tunnel_is_refused_to_a_member_granted_only_delivery() -> None:
    """Section 4: TUNNEL is for a member granted ``tunnel``; one that asked for delivery
    alone (its client does not expect frames) is refused, and its chat goes on."""
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        assert alice.features == ("delivery",)
        a = await on_udp(alice)
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            ack, complete = await connection.call(Tunnel("lobby", alice.token))
            assert (ack.error, complete) == (ErrorCode.INVALID_TOKEN, None)
            ack, rooms = await connection.call(ListRooms())  # still TCRP
            assert ack.ok and isinstance(rooms, RoomList)
            a.send_raw(encode_extended(Data(alice.token, 1, "still on UDP")))
            assert await received(a) == Chat(1, "alice", 1, "still on UDP")
            address = member(server, alice).address
            assert address is not None and address[1] > 0  # a UDP address, no tunnel's
        finally:
            a.close()
            await connection.close()
        assert server._endpoint.tunnels == {}


@needs_alias
async def test_tunnel_is_refused_from_another_host() -> None:
    """A token is bound to the IP that obtained it, for a tunnel as for a datagram."""
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        connection = await TcrpConnection.open(server.tcp_port, local_host=OTHER_HOST)
        try:
            ack, _ = await connection.call(Tunnel("lobby", alice.token))
            assert ack.error is ErrorCode.INVALID_TOKEN
        finally:
            await connection.close()


@pytest.mark.parametrize(
    "header", [b"\x00\x00", (MAX_FRAME + 1).to_bytes(2, "big")], ids=["length 0", "over MAX_FRAME"]
)
async def test_a_malformed_frame_closes_the_tunnel_and_the_server_goes_on(header: bytes) -> None:
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        first = await through_tunnel(server, alice)
        try:
            first.connection.writer.write(header)  # no body follows: the length alone is bad
            await first.ended()
        finally:
            await first.close()
        await until(lambda: member(server, alice).address is None)
        second = await through_tunnel(server, alice)  # same member, new tunnel: served
        try:
            second.send(encode_extended(Data(alice.token, 1, "still here")))
            assert await tunnelled(second) == Chat(1, "alice", 1, "still here")
        finally:
            await second.close()


async def test_a_frame_left_unfinished_ends_the_tunnel_after_the_message_timeout() -> None:
    async with running_server(message_timeout=100 * MS) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        peer = await through_tunnel(server, alice)
        try:
            peer.connection.writer.write(b"\x00\x10abc")  # 3 of 16 bytes, and no more
            started = asyncio.get_running_loop().time()
            await peer.ended(1000 * MS)
            assert asyncio.get_running_loop().time() - started >= 90 * MS
        finally:
            await peer.close()


async def test_a_frame_trickled_a_byte_at_a_time_is_cut_at_the_message_timeout() -> None:
    """Each byte within the timeout of the last, but the frame not whole within the
    message timeout: cut, as a trickled TCRP message is (a read's own timeout alone
    would wait for ever)."""
    async with running_server(message_timeout=200 * MS) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        peer = await through_tunnel(server, alice)
        try:
            started = asyncio.get_running_loop().time()
            peer.connection.writer.write(b"\x00\x40")  # a 64-byte frame, to come slowly
            with pytest.raises(EOFError):
                for _ in range(40):  # 40 x 50 ms: far longer than the message timeout
                    peer.connection.writer.write(b"x")
                    await asyncio.sleep(50 * MS)
                    if peer.connection.reader.at_eof():
                        raise EOFError
                    await asyncio.sleep(0)
            assert asyncio.get_running_loop().time() - started < 1000 * MS
        finally:
            await peer.close()


async def test_a_silent_tunnel_ends_with_the_idle_timeout() -> None:
    async with running_server(idle_timeout=200 * MS) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        peer = await through_tunnel(server, alice)
        try:
            await peer.ended(1000 * MS)  # alice is gone by then too: nothing to carry
            assert server._endpoint.tunnels[(LOOPBACK, -peer.port)].closed
        finally:
            await peer.close()


# ---------------------------------------------------------------------------
# A tunnel's reader that does not read
# ---------------------------------------------------------------------------


async def test_a_tunnel_that_is_not_read_is_cut_and_the_room_goes_on() -> None:
    """Its frames wait in the server's buffer up to --tunnel-buffer, then the tunnel is
    cut: the sender's own CHATs keep coming back at once, the server's memory for it
    stays bounded, and bob stays a member (his client would tunnel again and repair)."""
    limit = 16 * 1024
    async with running_server(tunnel_buffer=limit) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "tunnel")))
        # A small receive window (set before connecting): our side's kernel takes little.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, server.tcp_port))
        b = await through_tunnel(server, bob, sock=sock)
        link = server._endpoint.tunnels[(LOOPBACK, -b.port)]
        (writer,) = (w for w in server.tcrp.writers if w.get_extra_info("peername")[1] == b.port)
        peak = 0
        send = link.send

        def measured(datagram: bytes) -> bool:
            nonlocal peak
            written = send(datagram)
            peak = max(peak, writer.transport.get_write_buffer_size())
            return written

        link.send = measured  # type: ignore[method-assign]
        try:
            assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
            b.stop_reading()
            # Loopback grows the server's send buffer to megabytes (tcp_wmem): the kernel
            # takes that much first, then the server's own buffer fills.
            text = "x" * 4000
            n = 0
            async with asyncio.timeout(4000 * MS):  # a round trip is well under 1 ms
                while not link.cut and n < 4000:  # 16 MB, four times Linux's maximum
                    n += 1
                    a.send_raw(encode_extended(Data(alice.token, n, text)))
                    assert await received(a, 500 * MS) == Chat(1 + n, "alice", n, text)
                for later in range(n + 1, n + 21):  # and after the cut, as before
                    a.send_raw(encode_extended(Data(alice.token, later, text)))
                    assert await received(a, 500 * MS) == Chat(1 + later, "alice", later, text)
            assert link.cut and link.closed
            frame = len(encode_frame(encode_received(Chat(n, "alice", n, text))))
            assert limit < peak <= limit + frame
            # Cut with a reset, not a FIN queued behind what the kernel still holds for
            # bob: that would keep it, in an orphaned socket, and never tell bob.
            await until(lambda: sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0)
            await until(lambda: member(server, bob).address is None)
            assert list(server.registry.rooms["lobby"].members) == ["alice", "bob"]
        finally:
            a.close()
            await b.close()


async def test_an_open_tunnel_leaves_the_fan_out_of_udp_rooms_as_it_was() -> None:
    """While anyone tunnels, every send looks for tunnels among its addresses. A room of
    UDP members must keep its address tuple: the batch sender (sendmmsg) prepares a
    room's destinations once, keyed by that tuple, not again for every datagram."""
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("tunnelled", "alice", None, TUNNEL))
        a = await through_tunnel(server, alice)
        members = [await enter(server, CreateRoom("lobby", "m0"))]
        members += [await enter(server, JoinRoom("lobby", f"m{i}")) for i in (1, 2)]
        for m in members:
            await m.peer.drain()  # the joins
        endpoint = server._endpoint
        addresses = server.registry.rooms["lobby"].addresses
        assert endpoint._through_tunnels(b"x", addresses) is addresses
        prepared: list[int] = []
        batch = endpoint._batch
        if batch is not None:
            prepare = batch._prepare

            def counted(addresses: tuple[Address, ...]) -> Any:
                prepared.append(len(addresses))
                return prepare(addresses)

            batch._prepare = counted  # type: ignore[method-assign]
        try:
            for line in range(5):
                members[line % 3].say(f"line {line}")
            for m in members:
                assert [(await m.peer.recv()).text for _ in range(5)] == [
                    f"line {line}" for line in range(5)
                ]
            assert len(prepared) <= 1  # once at most (the room's tuple may be new to it)
        finally:
            await a.close()
            for m in members:
                m.peer.close()


async def test_a_room_of_both_kinds_splits_its_fan_out_once_per_member_change() -> None:
    """Four members, two tunnelled: every line reaches all four, and the room's UDP
    addresses are prepared for the batch sender once, not per line (the split of the
    room's fan-out list is remembered). Closing a tunnel forgets the split: the next
    line still reaches everyone else, and nothing goes to the closed tunnel's address."""
    async with running_server() as server:
        tunnel = ("delivery", "tunnel")
        admissions = [await admit(server.tcp_port, CreateRoom("lobby", "m0", None, tunnel))]
        for n in (1, 2, 3):
            request = JoinRoom("lobby", f"m{n}", None, tunnel)
            admissions.append(await admit(server.tcp_port, request))
        udp = [await on_udp(admissions[0]), await on_udp(admissions[1])]
        tunnels = [
            await through_tunnel(server, admissions[2]),
            await through_tunnel(server, admissions[3]),
        ]
        endpoint = server._endpoint
        prepared: list[int] = []
        batch = endpoint._batch
        if batch is not None:
            prepare = batch._prepare

            def counted(addresses: tuple[Address, ...]) -> Any:
                prepared.append(len(addresses))
                return prepare(addresses)

            batch._prepare = counted  # type: ignore[method-assign]

        async def everyone_hears(texts: list[str], peers: int = 4) -> None:
            async def chats(next_one: Any) -> list[str]:
                heard: list[str] = []
                while len(heard) < len(texts):
                    datagram = await next_one()
                    if isinstance(datagram, Chat):
                        heard.append(datagram.text)
                return heard

            listeners = [lambda p=p: received(p) for p in udp]
            listeners += [lambda p=p: tunnelled(p) for p in tunnels[: peers - 2]]
            for listener in listeners:
                assert await chats(listener) == texts

        try:
            for n in range(5):
                udp[n % 2].send_raw(
                    encode_extended(Data(admissions[n % 2].token, n // 2 + 1, f"l{n}"))
                )
            await everyone_hears([f"l{n}" for n in range(5)])
            assert len(prepared) <= 1 and set(prepared) <= {2}  # the two UDP members, once
            assert len(endpoint._splits) <= 2
            await tunnels[1].close()
            await until(lambda: member(server, admissions[3]).address is None)
            udp[0].send_raw(encode_extended(Data(admissions[0].token, 4, "after")))
            await everyone_hears(["after"], peers=3)
        finally:
            for peer in udp:
                peer.close()
            await tunnels[0].close()


# ---------------------------------------------------------------------------
# Closed tunnels
# ---------------------------------------------------------------------------


async def test_a_closed_tunnels_address_never_reaches_the_udp_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """bob closes a tunnel, then another right after his room's CLOSED was made: the
    room goes on, then the CLOSED's later copies (addressed to that tunnel too) go out.
    A tunnel address (negative port) given to the UDP socket would raise, and be logged."""
    caplog.set_level(logging.WARNING)
    async with running_server(closed_resend_interval=40 * MS) as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "tunnel")))
        assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
        first = await through_tunnel(server, bob)
        await first.close()
        await until(lambda: member(server, bob).address is None)
        try:
            a.send_raw(encode_extended(Data(alice.token, 1, "anyone?")))
            assert await received(a) == Chat(2, "alice", 1, "anyone?")
            second = await through_tunnel(server, bob)
            link = server._endpoint.tunnels[(LOOPBACK, -second.port)]
            a.send_raw(encode_extended(Leave(alice.token)))  # the host leaves: CLOSED
            assert await received(a) == Departed()
            closed = ServerDatagram(Kind.CLOSED, 3, "", "host alice left; the room is closed")
            assert await received(a) == await tunnelled(second) == closed
            await second.close()
            await until(lambda: link.closed)
            # The copies, 1, 3 and 7 intervals after the first: alice gets all three.
            assert [await received(a) for _ in range(3)] == [closed] * 3
            await asyncio.sleep(20 * MS)  # anything sent with the last copy is done
        finally:
            a.close()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


async def test_a_tunnel_reset_by_its_peer_is_not_written_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The peer resets the connection (RST): its transport is closing at once, but the
    handler that closes the link runs a loop iteration or two later. What the room sends
    meanwhile must not go to the transport: after a few writes asyncio would log
    "socket.send() raised exception." for each."""
    caplog.set_level(logging.WARNING)
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, TUNNEL))
        peer = await through_tunnel(server, alice)
        link = server._endpoint.tunnels[(LOOPBACK, -peer.port)]
        (writer,) = (w for w in server.tcrp.writers if w.get_extra_info("peername")[1] == peer.port)
        sock = peer.connection.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.connection.writer.transport.abort()  # closed with linger 0: a reset
        async with asyncio.timeout(1000 * MS):
            while not writer.transport.is_closing():
                await asyncio.sleep(0)  # one loop iteration: the handler is not there yet
        assert not link.closed
        room = server.registry.rooms["lobby"]
        chat = encode_received(Chat(1, "alice", 1, "anyone there?"))
        for _ in range(10):
            server._endpoint.send_to(chat, room.addresses)
        assert link.closed and not link.cut
        await until(lambda: member(server, alice).address is None)
        assert list(room.members) == ["alice"]  # still a member: its client resumes
    loggers = ("asyncio", "ocm")
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] in loggers
    ]
    assert problems == [], [r.getMessage() for r in problems]


async def test_a_token_carried_by_another_members_tunnel_outlives_it_safely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The relay takes any token valid from the tunnel's IP, as from a UDP address: bob2's
    PING through bob1's tunnel makes that tunnel bob2's address too. When it closes, and
    its linger is over, the room's fan-out must still never hand the socket a negative
    port (asyncio would close the relay's UDP transport on that error)."""
    caplog.set_level(logging.WARNING)
    async with running_server() as server:
        port = server.tcp_port
        alice = await admit(port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob1 = await admit(port, JoinRoom("lobby", "bob1", None, ("delivery", "tunnel")))
        bob2 = await admit(port, JoinRoom("lobby", "bob2", None, ("delivery", "tunnel")))
        carol = await admit(port, JoinRoom("lobby", "carol", None, DELIVERY))
        c = await on_udp(carol)
        try:
            names = enumerate(("bob1", "bob2", "carol"), 1)
            joins = [ServerDatagram(Kind.NOTICE, n, "", f"{who} joined") for n, who in names]
            assert [await received(a) for _ in range(3)] == joins
            t = await through_tunnel(server, bob1)
            t.send(encode_extended(Ping(bob2.token, 2, boot(bob2))))
            assert await tunnelled(t) == Status(3, 2)
            assert member(server, bob2).address == (LOOPBACK, -t.port)
            await t.close()
            await until(lambda: not server._endpoint.tunnels, timeout=4000 * MS)  # linger over
            for n in (1, 2):
                a.send_raw(encode_extended(Data(alice.token, n, f"line {n}")))
                chat = Chat(3 + n, "alice", n, f"line {n}")
                assert await received(a) == await received(c) == chat
            transport = server._endpoint.transport
            assert transport is not None and not transport.is_closing()
        finally:
            a.close()
            c.close()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]


# ---------------------------------------------------------------------------
# RESUME
# ---------------------------------------------------------------------------


@needs_alias
async def test_resume_moves_a_member_to_another_host_unseen_by_the_room() -> None:
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "resume")))
        assert bob.resume is not None
        old = await on_udp(bob)
        assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
        new = await UdpPeer.open(bob.udp_port, local_host=OTHER_HOST)
        try:
            ack, complete = await call(
                server.tcp_port, Resume("lobby", bob.token, bob.resume), local_host=OTHER_HOST
            )
            assert ack.ok and isinstance(complete, Resumed)
            assert complete.seq == 1 and complete.secret != bob.resume

            new.send_raw(encode_extended(Ping(bob.token, 2, boot(bob))))
            assert await received(new) == Status(1, 2)
            old.send_raw(encode_extended(Ping(bob.token, 3, boot(bob))))
            refusal = await received(old)
            assert isinstance(refusal, ServerDatagram) and refusal.kind is Kind.ERROR
            # The room saw nothing: no leave, no join, no Seq.
            await a.expect_silence(50 * MS)
            assert server.registry.rooms["lobby"].seq == 1
            a.send_raw(encode_extended(Data(alice.token, 1, "welcome back")))
            assert await received(a) == await received(new) == Chat(2, "alice", 1, "welcome back")
            await old.expect_silence(30 * MS)
            # The secret moved the token once; the new one moves it back.
            ack, _ = await call(server.tcp_port, Resume("lobby", bob.token, bob.resume))
            assert ack.error is ErrorCode.INVALID_TOKEN
            ack, _ = await call(server.tcp_port, Resume("lobby", bob.token, complete.secret))
            assert ack.ok and member(server, bob).ip == LOOPBACK
        finally:
            for peer in (a, old, new):
                peer.close()


@needs_alias
async def test_resume_then_tunnel_on_one_connection_from_a_new_host() -> None:
    """What a client does when its address changed on a network without UDP: RESUME,
    then TUNNEL on the same connection, from the new address."""
    async with running_server() as server:
        alice = await admit(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        features = ("delivery", "tunnel", "resume")
        bob = await admit(server.tcp_port, JoinRoom("lobby", "bob", None, features))
        assert bob.resume is not None
        assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
        connection = await TcrpConnection.open(server.tcp_port, local_host=OTHER_HOST)
        try:
            ack, complete = await connection.call(Resume("lobby", bob.token, bob.resume))
            assert ack.ok and isinstance(complete, Resumed)
            ack, complete = await connection.call(Tunnel("lobby", bob.token))
            assert ack.ok and complete == Tunnelled("lobby")
            peer = TunnelPeer(connection)
            peer.send(encode_extended(Ping(bob.token, 4, boot(bob))))
            assert await tunnelled(peer) == Status(1, 4)
            assert member(server, bob).address == (OTHER_HOST, -peer.port)
            a.send_raw(encode_extended(Data(alice.token, 1, "found you")))
            assert await received(a) == await tunnelled(peer) == Chat(2, "alice", 1, "found you")
        finally:
            a.close()
            await connection.close()


@needs_alias
async def test_a_stolen_token_cannot_be_moved() -> None:
    """A resume attempt with a stolen token from another IP: with no secret at all, a
    wrong one, or another member's right one, the token stays where it is, and guessing
    is rate limited like a wrong password: after max_password_failures, even the right
    secret is refused from there. The victim stays bound and keeps chatting."""
    async with running_server(max_password_failures=3) as server:
        port = server.tcp_port
        features = ("delivery", "resume")
        alice = await admit(port, CreateRoom("lobby", "alice", None, features))
        a = await on_udp(alice)
        try:
            bob = await admit(port, JoinRoom("lobby", "bob", None, features))
            assert alice.resume is not None and bob.resume is not None
            victim = member(server, alice)
            digest, address = victim.secret_digest, victim.address
            assert address is not None
            assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
            # No secret field: not even a request (the field is required). The server
            # answers bad_request and closes the connection; nothing is counted.
            connection = await TcrpConnection.open(port, local_host=OTHER_HOST)
            try:
                payload = {"token": alice.token}
                message = TcrpMessage(Operation.RESUME, State.REQUEST, "lobby", payload)
                connection.writer.write(encode_tcrp(message))
                ack = await connection.replies.next()
                assert isinstance(ack, Ack) and ack.error is ErrorCode.BAD_REQUEST
                async with asyncio.timeout(1000 * MS):
                    assert await connection.reader.read() == b""  # closed by the server
            finally:
                await connection.close()
            # Three guesses, each counted (had the request above counted, the third
            # would be answered rate_limited).
            for secret in [
                "x" * 32,  # a wrong secret
                bob.resume,  # another member's right secret
                alice.resume[::-1],
            ]:
                ack, _ = await call(
                    port, Resume("lobby", alice.token, secret), local_host=OTHER_HOST
                )
                assert ack.error is ErrorCode.INVALID_TOKEN
            # Blocked there now: even the right secret.
            right = Resume("lobby", alice.token, alice.resume)
            ack, _ = await call(port, right, local_host=OTHER_HOST)
            assert ack.error is ErrorCode.RATE_LIMITED
            # Nothing moved: alice is bound where she was, with the secret she holds.
            assert (victim.ip, victim.address, victim.secret_digest) == (LOOPBACK, address, digest)
            assert server.registry.authenticate_token(victim.token_bytes, OTHER_HOST) is None
            assert server.registry.rooms["lobby"].seq == 1
            a.send_raw(encode_extended(Data(alice.token, 1, "still here")))
            assert await received(a) == Chat(2, "alice", 1, "still here")
            # The attacker's failures are its own IP's: alice's own RESUME still works.
            ack, _ = await call(port, right)
            assert ack.ok and victim.ip == LOOPBACK
            a.send_raw(encode_extended(Data(alice.token, 2, "and still")))
            assert await received(a) == Chat(3, "alice", 2, "and still")
        finally:
            a.close()
