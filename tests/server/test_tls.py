"""Section 5, TLS for TCRP, from the server's side: STARTTLS over real sockets, the
plaintext policy, the injection rule, and a tunnel inside TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from ocm.client import ChatClient, Message, Security
from ocm.client.exchange import list_rooms
from ocm.errors import ErrorCode
from ocm.server.tcp import PLAINTEXT_REFUSED
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
    encode_header,
)
from ocm.wire.delivery import Chat, Data, Ping, Status, encode_extended
from ocm.wire.tcrp import StartTls, TlsReady, Tunnel, Tunnelled, encode_request
from tests.kit import (
    LOOPBACK,
    MS,
    TcrpConnection,
    TunnelPeer,
    next_event,
    ready,
    running_server,
    server_of,
)
from tests.server.kit import boot, on_udp, received, tunnelled

DELIVERY = ("delivery",)


def _any_key() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _upgrade(connection: TcrpConnection) -> None:
    """STARTTLS on a raw connection, then the handshake (any key)."""
    ack, complete = await connection.call(StartTls())
    assert ack.ok and ack.operation is Operation.STARTTLS, ack
    assert complete == TlsReady()
    await connection.writer.start_tls(_any_key(), server_hostname="127.0.0.1")


async def test_plaintext_is_refused_unless_allowed_and_the_connection_can_still_upgrade() -> None:
    async with running_server(allow_plaintext=False) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            ack, complete = await connection.call(ListRooms())
            assert (ack.error, ack.message, complete) == (
                ErrorCode.ENCRYPTION_REQUIRED,
                PLAINTEXT_REFUSED,
                None,
            )
            assert "--allow-plaintext" in ack.message
            # The same connection stays open for a STARTTLS, and then is served.
            await _upgrade(connection)
            assert connection.writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            ack, complete = await connection.call(ListRooms())
            assert ack.ok and complete == RoomList(())
        finally:
            await connection.close()


async def test_with_allow_plaintext_a_version_1_client_and_a_tls_client_share_the_port(
    tmp_path: Path,
) -> None:
    async with running_server(allow_plaintext=True) as server:
        plain = await TcrpConnection.open(server.tcp_port)
        try:
            ack, complete = await plain.call(ListRooms())
            assert ack.ok and complete == RoomList(())  # version 1, as before
        finally:
            await plain.close()
        security = Security(known_servers=tmp_path / "known_servers")
        assert await list_rooms(server_of(server), security=security) == ()
        encrypted = await TcrpConnection.open(server.tcp_port)
        try:
            await _upgrade(encrypted)
            ack, complete = await encrypted.call(ListRooms())
            assert ack.ok and complete == RoomList(())
        finally:
            await encrypted.close()


async def test_starttls_with_bytes_pipelined_behind_it_is_closed_not_upgraded() -> None:
    """The STARTTLS command injection: what was sent in clear behind the request must
    never be taken for what came through TLS."""
    async with running_server(allow_plaintext=False) as server:
        for pipelined in (encode_request(ListRooms()), b"x", b"y" * (200 * 1024)):
            connection = await TcrpConnection.open(server.tcp_port)
            try:
                connection.writer.write(encode_request(StartTls()) + pipelined)
                await connection.writer.drain()
                async with asyncio.timeout(2000 * MS):
                    # Closed without a word: no ACK, no COMPLETE, no handshake. (Reset,
                    # when the server closes with the pipelined bytes still unread.)
                    try:
                        answer = await connection.reader.read()
                    except ConnectionResetError:
                        answer = b""
                    assert answer == b""
            finally:
                connection.writer.transport.abort()


async def test_starttls_on_a_tls_connection_is_a_bad_request() -> None:
    async with running_server(allow_plaintext=False) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            await _upgrade(connection)
            ack, complete = await connection.call(StartTls())
            assert (ack.error, complete) == (ErrorCode.BAD_REQUEST, None)
            ack, complete = await connection.call(ListRooms())  # still served
            assert ack.ok and complete == RoomList(())
        finally:
            await connection.close()


async def test_a_handshake_that_never_comes_is_cut_after_the_message_timeout() -> None:
    async with running_server(allow_plaintext=False, message_timeout=100 * MS) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            ack, complete = await connection.call(StartTls())
            assert ack.ok and complete == TlsReady()
            async with asyncio.timeout(2000 * MS):
                assert await connection.reader.read() == b""  # no ClientHello: closed
            assert not server.tcrp.writers
        finally:
            await connection.close()


async def test_a_tunnel_works_inside_tls(tmp_path: Path) -> None:
    security = Security(known_servers=tmp_path / "known_servers")
    async with running_server(allow_plaintext=False) as server:
        where = server_of(server)
        alice = await ChatClient.create(where, "lobby", "alice", tcp=True, security=security)
        bob = await ready(server, await ChatClient.join(where, "lobby", "bob", security=security))
        async with alice, bob:
            assert alice.over_tcp and alice.encrypted
            # Alice's tunnel is a TLS connection on the server's side.
            (writer,) = server.tcrp.writers
            assert writer.get_extra_info("ssl_object") is not None
            await alice.send("hello through TLS")
            await bob.send("and back")
            seen = [await next_event(alice) for _ in range(3)]
            said = {(e.sender, e.text) for e in seen if isinstance(e, Message)}
            assert said == {("alice", "hello through TLS"), ("bob", "and back")}


async def test_a_starttls_of_32_bytes_is_the_same_request() -> None:
    """A payload of size 0 means ``{}`` (section 1): the header alone is a STARTTLS."""
    async with running_server(allow_plaintext=False) as server:
        connection = await TcrpConnection.open(server.tcp_port)
        try:
            connection.writer.write(encode_header(0, Operation.STARTTLS, 0, 0))
            async with asyncio.timeout(2000 * MS):
                ack = await connection.replies.next()
                assert isinstance(ack, Ack) and ack.ok
                assert await connection.replies.next() == TlsReady()
            await connection.writer.start_tls(_any_key(), server_hostname="127.0.0.1")
            ack, complete = await connection.call(ListRooms())
            assert ack.ok and complete == RoomList(())
        finally:
            await connection.close()


async def test_a_tls_tunnel_that_is_not_read_is_cut_and_the_room_goes_on() -> None:
    """--tunnel-buffer bounds a tunnel inside TLS as well: the SSL transport counts what
    waits (section 4), and the cut happens, with the sender's CHATs still coming back."""
    limit = 16 * 1024
    # The members ask for no sealed datagrams (the cut is TLS's transport's to make, not
    # the seal's): a server that allows plaintext members admits them.
    async with running_server(tunnel_buffer=limit, allow_plaintext=True) as server:
        alice = await _admit_over_tls(server.tcp_port, CreateRoom("lobby", "alice", None, DELIVERY))
        a = await on_udp(alice)
        bob = await _admit_over_tls(
            server.tcp_port, JoinRoom("lobby", "bob", None, ("delivery", "tunnel"))
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, server.tcp_port))
        connection = TcrpConnection(*await asyncio.open_connection(sock=sock))
        await _upgrade(connection)
        ack, complete = await connection.call(Tunnel("lobby", bob.token))
        assert ack.ok and complete == Tunnelled("lobby")
        b = TunnelPeer(connection)
        b.send(encode_extended(Ping(bob.token, 1, boot(bob))))
        assert isinstance(await tunnelled(b), Status)
        link = server._endpoint.tunnels[(LOOPBACK, -b.port)]
        try:
            assert await received(a) == ServerDatagram(Kind.NOTICE, 1, "", "bob joined")
            b.stop_reading()
            text = "x" * 4000
            n = 0
            async with asyncio.timeout(4000 * MS):
                while not link.cut and n < 4000:
                    n += 1
                    a.send_raw(encode_extended(Data(alice.token, n, text)))
                    assert await received(a, 500 * MS) == Chat(1 + n, "alice", n, text)
            assert link.cut and link.closed
            assert list(server.registry.rooms["lobby"].members) == ["alice", "bob"]
        finally:
            a.close()
            connection.writer.transport.abort()


async def _admit_over_tls(port: int, request: CreateRoom | JoinRoom) -> Admission:
    connection = await TcrpConnection.open(port)
    try:
        await _upgrade(connection)
        ack, complete = await connection.call(request)
        assert ack.ok and isinstance(complete, Admission), ack
        return complete
    finally:
        await connection.close()


async def test_the_stream_buffer_the_injection_check_reads_is_still_there() -> None:
    """Both ends look for bytes behind STARTTLS in StreamReader's private ``_buffer``
    too (bytes read off the socket but not yet by us). Should a Python release rename
    it, the check would quietly see nothing there: this test says so first."""
    reader = asyncio.StreamReader()
    reader.feed_data(b"behind")
    buffer = getattr(reader, "_buffer", None)
    assert isinstance(buffer, bytearray) and bytes(buffer) == b"behind"
