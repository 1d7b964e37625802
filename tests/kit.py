"""The test kit: a real server on loopback port 0, raw TCRP calls and raw UDP peers,
library clients made ready, and a fake server the tests drive by hand.

Server tests talk to the server over real sockets with the raw helpers, byte-exact to
the protocol, without going through ocm.client (so a client bug cannot hide a server
bug); TCRP replies are cut from the stream by the wire's own framer. Client and UI tests
use the library helpers (:func:`ready`, :func:`alice_and_bob`, :func:`settle`) and
:func:`fake_server`. Timing: every wait is a multiple of ``MS``, scaled by the
OCM_TEST_TIMESCALE variable for slow machines.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from ocm.client import ChatClient, Event, Message
from ocm.client.exchange import read_message
from ocm.server.app import OCMServer, ServerConfig
from ocm.server.limits import Limits
from ocm.wire import (
    MAX_REPLY_PAYLOAD,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    Operation,
    Reply,
    Request,
    ServerDatagram,
    TcrpMessage,
    TcrpReader,
    decode_server_datagram,
    encode_client_datagram,
    encode_reply,
    encode_request,
    encode_server_datagram,
    parse_reply,
    parse_request,
)
from ocm.wire.tcrp import StartTls, TlsReady

MS = 0.001 * float(os.environ.get("OCM_TEST_TIMESCALE", "1"))
LOOPBACK = "127.0.0.1"
OTHER_HOST = "127.0.0.2"  # a second loopback address: "another host"
SRC = Path(__file__).resolve().parents[1] / "src"


@asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[OCMServer]:
    """A real OCMServer on 127.0.0.1, port 0, that also serves plaintext clients
    (``allow_plaintext=False`` for one that wants TLS), closed on exit.

    ``overrides`` are fields of ServerConfig (``host="::"``) or of Limits
    (``idle_timeout=0.2``, ``max_members=2``), the latter on top of the defaults, except
    that a closing server re-sends its CLOSED to delivery members at a test's pace
    (``closed_resend_interval``, 10 ms, unless a test says otherwise).
    """
    limit_names = {f.name for f in fields(Limits)}
    limits: dict[str, Any] = {"closed_resend_interval": 10 * MS}
    limits |= {name: value for name, value in overrides.items() if name in limit_names}
    others = {name: value for name, value in overrides.items() if name not in limit_names}
    # Plaintext allowed: the server tests speak version 1 byte for byte on purpose; the
    # library clients go over TLS (their default) all the same. The data directory is
    # the session's (tests/conftest.py): one key for every test server.
    config = replace(ServerConfig(host=LOOPBACK, port=0, allow_plaintext=True), **others)
    config = replace(config, limits=replace(config.limits, **limits))
    server = await OCMServer.start(config)
    try:
        yield server
    finally:
        await server.close()


class ReplyReader:
    """Replies off one TCP connection, through the wire's framer (which keeps the bytes
    of the next reply when two arrive in one read)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)

    async def next(self) -> Reply:
        return parse_reply(await read_message(self.reader, self.framer))


class RawStream:
    """TCRP messages off one TCP connection as the raw bytes they came in, cut by the
    wire's framer (:meth:`~ocm.wire.framer.TcrpReader.next_raw`: the sizes alone, so an
    operation or state the decoder would refuse is still read), then, once the tool
    stops reading TCRP (after a TUNNEL, or to see the stream end), bytes as they come.
    """

    def __init__(
        self, reader: asyncio.StreamReader, *, max_payload: int = MAX_REPLY_PAYLOAD
    ) -> None:
        self.reader = reader
        self.framer = TcrpReader(max_payload=max_payload)
        self._rest: bytearray | None = None  # past the TCRP messages, once taken

    async def message(self) -> bytes:
        """The next whole message, header and body; IncompleteReadError at the end."""
        assert self._rest is None, "the stream is past its TCRP messages"
        while (raw := self.framer.next_raw()) is None:
            data = await self.reader.read(4096)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            self.framer.feed(data)
        return raw

    def _taken(self) -> bytearray:
        if self._rest is None:
            self._rest = bytearray(self.framer.take_rest())
        return self._rest

    async def exactly(self, size: int) -> bytes:
        """The next ``size`` bytes after the messages read (the framer's leftover first)."""
        rest = self._taken()
        if len(rest) < size:
            rest += await self.reader.readexactly(size - len(rest))
        data = bytes(rest[:size])
        del rest[:size]
        return data

    def take_rest(self) -> bytes:
        """What was read beyond the messages, taken out (the stream goes on from there)."""
        rest = self._taken()
        data = bytes(rest)
        rest.clear()
        return data

    async def to_the_end(self) -> bytes:
        """Everything after the messages read, until the peer closes."""
        return self.take_rest() + await self.reader.read()


class TcrpConnection:
    """One TCP connection speaking raw TCRP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies = ReplyReader(reader)

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        local_host: str | None = LOOPBACK,
        host: str = LOOPBACK,
        tls: bool = False,
    ) -> TcrpConnection:
        """A connection to ``host``; with ``tls``, upgraded by STARTTLS (section 5)."""
        local = None if local_host is None else (local_host, 0)
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        connection = cls(reader, writer)
        if tls:
            await connection.starttls()
        return connection

    async def starttls(self) -> None:
        """STARTTLS, then the handshake (any key: the test trusts its own server)."""
        ack, complete = await self.call(StartTls())
        assert ack.ok and complete == TlsReady(), (ack, complete)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        await self.writer.start_tls(context, server_hostname=LOOPBACK)

    async def call(self, request: Request) -> tuple[Ack, Reply | None]:
        """Send a request; return its ACK and, after an ok ACK, its COMPLETE."""
        self.writer.write(encode_request(request))
        await self.writer.drain()
        async with asyncio.timeout(2000 * MS):
            ack = await self.replies.next()
            assert isinstance(ack, Ack)
            if not ack.ok:
                return ack, None
            return ack, await self.replies.next()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


async def call(
    port: int,
    request: Request,
    *,
    local_host: str | None = LOOPBACK,
    host: str = LOOPBACK,
    tls: bool = False,
) -> tuple[Ack, Reply | None]:
    """One exchange on a new connection to ``host`` (from ``local_host``; None: let the
    system choose, as for an IPv6 server), inside TLS if ``tls``."""
    connection = await TcrpConnection.open(port, local_host=local_host, host=host, tls=tls)
    try:
        return await connection.call(request)
    finally:
        await connection.close()


async def admit(
    port: int,
    request: CreateRoom | JoinRoom,
    *,
    local_host: str = LOOPBACK,
    tls: bool = False,
) -> Admission:
    ack, complete = await call(port, request, local_host=local_host, tls=tls)
    assert ack.ok, ack
    assert isinstance(complete, Admission)
    return complete


async def create_rooms(port: int, names: list[str]) -> None:
    """Open rooms by raw TCRP (hosts that never heartbeat: fine for a listing)."""
    connection = await TcrpConnection.open(port)
    try:
        for name in names:
            ack, _ = await connection.call(CreateRoom(name, "host"))
            assert ack.ok, ack
    finally:
        await connection.close()


class UdpPeer(asyncio.DatagramProtocol):
    """A raw UDP socket on loopback that queues every datagram it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)

    @classmethod
    async def open(cls, server_udp_port: int, *, local_host: str = LOOPBACK) -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(
            cls, local_addr=(local_host, 0), remote_addr=(LOOPBACK, server_udp_port)
        )
        return peer

    def send_raw(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    def send(self, room: str, token: str, text: str = "") -> None:
        self.send_raw(encode_client_datagram(ClientDatagram(room, token, text)))

    async def recv_raw(self, timeout: float = 1000 * MS) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.received.get()

    async def recv(self, timeout: float = 1000 * MS) -> ServerDatagram:
        return decode_server_datagram(await self.recv_raw(timeout))

    async def drain(self, settle: float = 30 * MS) -> list[ServerDatagram]:
        """Wait ``settle``, then take every datagram already queued."""
        await asyncio.sleep(settle)
        taken = []
        while not self.received.empty():
            taken.append(decode_server_datagram(self.received.get_nowait()))
        return taken

    async def expect_silence(self, duration: float = 100 * MS) -> None:
        try:
            data = await self.recv_raw(duration)
        except TimeoutError:
            return
        raise AssertionError(f"expected no datagram, got {data!r}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Member:
    """A room member as a test sees it: its admission plus its UDP peer."""

    def __init__(self, admission: Admission, peer: UdpPeer) -> None:
        self.admission = admission
        self.peer = peer

    @property
    def token(self) -> str:
        return self.admission.token

    @property
    def room(self) -> str:
        return self.admission.room

    def say(self, text: str) -> None:
        self.peer.send(self.room, self.token, text)

    def heartbeat(self) -> None:
        self.peer.send(self.room, self.token)

    @asynccontextmanager
    async def heartbeating(self, every: float) -> AsyncIterator[None]:
        """Heartbeat every ``every`` seconds while the block runs (bounded: at most 100)."""

        async def beat() -> None:
            for _ in range(100):
                self.heartbeat()
                await asyncio.sleep(every)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()

    async def registered(self, server: OCMServer) -> None:
        """Send the first heartbeat and wait until the server has taken its address."""
        self.heartbeat()
        member = server.registry.by_token[self.token.encode()]
        await until(lambda: member.address is not None)


async def enter(
    server: OCMServer,
    request: CreateRoom | JoinRoom,
    *,
    local_host: str = LOOPBACK,
) -> Member:
    """Create or join over TCRP, open a UDP peer from the same host, heartbeat once."""
    admission = await admit(server.tcp_port, request, local_host=local_host)
    peer = await UdpPeer.open(admission.udp_port, local_host=local_host)
    member = Member(admission, peer)
    await member.registered(server)
    return member


async def until(condition: Callable[[], bool], timeout: float = 2000 * MS) -> None:
    """Poll ``condition`` every millisecond until it holds; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


class ServerProcess:
    """``python -m ocm server --allow-plaintext`` on loopback port 0 in a child process,
    from src/."""

    def __init__(self, process: subprocess.Popen[str], tcp_port: int) -> None:
        self.process = process
        self.tcp_port = tcp_port

    @classmethod
    async def start(cls, *flags: str) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        command = [sys.executable, "-m", "ocm", "server", "--host", LOOPBACK, "--port", "0"]
        command.append("--allow-plaintext")  # raw TCRP from the tests, and TLS clients
        process = subprocess.Popen(
            [*command, *flags], stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env
        )
        assert process.stderr is not None
        # The "listening" line, after any the server writes before it (a cluster node
        # logs reaching its Redis first); ten lines at most.
        for _ in range(10):
            line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 10)
            if "listening" in line or not line:
                break
        if "listening" not in line:
            process.kill()
            raise AssertionError(f"the server did not start: {line}")
        return cls(process, int(line.split("TCP port ")[1].split(",")[0]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def has_loopback_alias(host: str = OTHER_HOST) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------
# Library clients
# ---------------------------------------------------------------------------


FAST = 50 * MS  # heartbeat interval for tests that need the client to keep beating


def server_of(server: OCMServer) -> tuple[str, int]:
    return (LOOPBACK, server.tcp_port)


async def collect(chat: ChatClient, count: int, timeout: float = 5000 * MS) -> list[Event]:
    """Events until ``count`` Messages (or the end of the stream)."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in chat:
            events.append(event)
            if sum(isinstance(e, Message) for e in events) == count:
                break
    return events


async def next_event(chat: ChatClient, timeout: float = 1000 * MS) -> Event:
    async with asyncio.timeout(timeout):
        return await anext(chat)


async def settle(chat: ChatClient, duration: float = 50 * MS) -> list[Event]:
    """Every event that arrives within ``duration``."""
    events: list[Event] = []
    with pytest.raises(TimeoutError):
        while True:
            events.append(await next_event(chat, duration))
    return events


async def ready(server: OCMServer, chat: ChatClient) -> ChatClient:
    """``chat`` once the server has its UDP address. A member's first heartbeat and the
    next member's join travel on different sockets, so without this wait the server may
    announce the join before it knows where to send the NOTICE."""
    await until(lambda: registered(server, chat.room, chat.name))
    return chat


async def alice_and_bob(server: OCMServer, **options: Any) -> tuple[ChatClient, ChatClient]:
    """The usual pair in "lobby": alice its host, bob a member, both ready. ``options``
    go to both (``security=PLAINTEXT`` for a plaintext pair)."""
    where = server_of(server)
    alice = await ready(server, await ChatClient.create(where, "lobby", "alice", **options))
    bob = await ready(server, await ChatClient.join(where, "lobby", "bob", **options))
    return alice, bob


def registered(server: OCMServer, room: str, name: str) -> bool:
    """The server has this member's UDP address (its first heartbeat arrived)."""
    members = server.registry.rooms[room].members if room in server.registry.rooms else {}
    member = members.get(name.casefold())
    return member is not None and member.address is not None


class RecordingPeer(UdpPeer):
    """A UdpPeer that remembers where the last datagram came from, to answer it."""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last_address = addr
        super().datagram_received(data, addr)


class FakeServer:
    """A TCRP listener that admits anyone into "lobby" (host alice), with a UDP socket
    the test drives by hand. It records every request."""

    TOKEN = "t" * 32

    def __init__(self, udp: RecordingPeer) -> None:
        self.udp = udp
        self.requests: list[Request] = []
        self.tcp_port = 0
        self.delay = 0.0  # before answering
        self.answering = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message, request = await fake_request(reader, writer)
        self.requests.append(request)
        self.answering.set()
        await asyncio.sleep(self.delay)
        port = self.udp.transport.get_extra_info("sockname")[1] if self.udp.transport else 0
        match request:
            case JoinRoom(room, username):
                reply: Admission | Left = Admission(
                    Operation.JOIN_ROOM, room, self.TOKEN, port, "alice", ("alice", username)
                )
            case LeaveRoom(room):
                reply = Left(room)
            case _:
                raise AssertionError(f"the fake server does not do {request}")
        writer.write(encode_reply(Ack(message.operation, room)) + encode_reply(reply))
        await writer.drain()
        writer.close()

    def send(self, kind: Kind, seq: int, text: str = "", sender: str = "") -> None:
        assert self.udp.transport is not None
        data = encode_server_datagram(ServerDatagram(kind, seq, sender, text))
        self.udp.transport.sendto(data, self.udp.last_address)


async def fake_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[TcrpMessage, Request]:
    """A fake server's first real request on a connection: a STARTTLS before it is
    answered and the connection upgraded with the session's server key (section 5), as
    a real server does, so that clients test over TLS as they run."""
    from ocm.server.identity import load_identity, server_context

    framer = TcrpReader()
    message = await read_message(reader, framer)
    request = parse_request(message)
    if isinstance(request, StartTls):
        writer.write(encode_reply(Ack(Operation.STARTTLS)) + encode_reply(TlsReady()))
        await writer.drain()
        await writer.start_tls(server_context(load_identity()))
        message = await read_message(reader, TcrpReader())
        request = parse_request(message)
    return message, request


@asynccontextmanager
async def fake_server() -> AsyncIterator[FakeServer]:
    loop = asyncio.get_running_loop()
    _, udp = await loop.create_datagram_endpoint(RecordingPeer, local_addr=(LOOPBACK, 0))
    fake = FakeServer(udp)
    listener = await asyncio.start_server(fake.handle, LOOPBACK, 0)
    fake.tcp_port = listener.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        listener.close()
        udp.close()


class TunnelPeer:
    """A member's tunnel (section 4 of docs/protocol.md), raw: a TCRP connection that,
    after TUNNEL's ok ACK and COMPLETE, carries framed relay datagrams both ways.

    :meth:`send` takes an encoded extended datagram (``ocm.wire.delivery``), :meth:`recv`
    returns the next datagram the server sent, as bytes (``decode_received`` them).
    """

    def __init__(self, connection: TcrpConnection) -> None:
        from ocm.wire.tunnel import FrameReader

        self.connection = connection
        # Whatever the reply reader took beyond the COMPLETE is the first frames' bytes.
        self.frames = FrameReader(connection.replies.framer.take_rest())

    @classmethod
    async def open(
        cls,
        port: int,
        room: str,
        token: str,
        *,
        local_host: str = LOOPBACK,
        sock: socket.socket | None = None,
    ) -> TunnelPeer:
        """TUNNEL on a new connection from ``local_host``, or on ``sock`` (connected)."""
        from ocm.wire.tcrp import Tunnel, Tunnelled

        if sock is None:
            connection = await TcrpConnection.open(port, local_host=local_host)
        else:
            connection = TcrpConnection(*await asyncio.open_connection(sock=sock))
        try:
            ack, complete = await connection.call(Tunnel(room, token))
            assert ack.ok, ack
            assert complete == Tunnelled(room), complete
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    @property
    def port(self) -> int:
        """The local TCP port: the server knows the tunnel as (IP, -port)."""
        return int(self.connection.writer.get_extra_info("sockname")[1])

    def send(self, datagram: bytes) -> None:
        from ocm.wire.tunnel import encode_frame

        self.connection.writer.write(encode_frame(datagram))

    async def recv(self, timeout: float = 1000 * MS) -> bytes:
        """The next datagram; EOFError if the server ended the tunnel first."""
        async with asyncio.timeout(timeout):
            while (datagram := self.frames.next_frame()) is None:
                data = await self.connection.reader.read(64 * 1024)
                if not data:
                    raise EOFError("the server closed the tunnel")
                self.frames.feed(data)
        return datagram

    async def ended(self, timeout: float = 1000 * MS) -> None:
        """Read (and drop) until the server ends the tunnel; TimeoutError if it does not."""
        transport = self.connection.writer.transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_reading():
            transport.resume_reading()  # after stop_reading
        async with asyncio.timeout(timeout):
            with suppress(ConnectionError):
                while await self.connection.reader.read(64 * 1024):
                    pass

    def stop_reading(self) -> None:
        """Read nothing more: what the server sends waits in the kernel, then in its own
        buffer (the stream reader would otherwise take up to 128 KiB on our side)."""
        transport = self.connection.writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()

    async def close(self) -> None:
        await self.connection.close()
