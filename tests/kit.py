"""The test kit: a real server on loopback port 0, raw TCRP calls and raw UDP peers.

Tests talk to the server over real sockets with these helpers, byte-exact to the
protocol, without going through ocm.client (so a client bug cannot hide a server bug).
Timing: every wait is a multiple of ``MS``, scaled by the OCM_TEST_TIMESCALE variable
for slow machines.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from ocm.protocol import (
    MAX_REPLY_PAYLOAD,
    TCRP_HEADER_SIZE,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Reply,
    Request,
    ServerDatagram,
    decode_header,
    decode_server_datagram,
    decode_tcrp_body,
    encode_client_datagram,
    encode_request,
    parse_reply,
)
from ocm.server import OCMServer, ServerConfig

MS = 0.001 * float(os.environ.get("OCM_TEST_TIMESCALE", "1"))
LOOPBACK = "127.0.0.1"
OTHER_HOST = "127.0.0.2"  # a second loopback address: "another host"
SRC = Path(__file__).resolve().parents[1] / "src"


@asynccontextmanager
async def running_server(**overrides: Any) -> AsyncIterator[OCMServer]:
    """A real OCMServer on 127.0.0.1, port 0, closed on exit."""
    config = replace(ServerConfig(host=LOOPBACK, port=0), **overrides)
    server = await OCMServer.start(config)
    try:
        yield server
    finally:
        await server.close()


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    header = decode_header(
        await reader.readexactly(TCRP_HEADER_SIZE), max_payload=MAX_REPLY_PAYLOAD
    )
    return parse_reply(decode_tcrp_body(header, await reader.readexactly(header.body_size)))


class TcrpConnection:
    """One TCP connection speaking raw TCRP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, local_host: str = LOOPBACK) -> TcrpConnection:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, local_addr=(local_host, 0))
        return cls(reader, writer)

    async def call(self, request: Request) -> tuple[Ack, Reply | None]:
        """Send a request; return its ACK and, after an ok ACK, its COMPLETE."""
        self.writer.write(encode_request(request))
        await self.writer.drain()
        async with asyncio.timeout(2000 * MS):
            ack = await read_reply(self.reader)
            assert isinstance(ack, Ack)
            if not ack.ok:
                return ack, None
            return ack, await read_reply(self.reader)

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


async def call(
    port: int, request: Request, *, local_host: str = LOOPBACK
) -> tuple[Ack, Reply | None]:
    connection = await TcrpConnection.open(port, local_host=local_host)
    try:
        return await connection.call(request)
    finally:
        await connection.close()


async def admit(
    port: int,
    request: CreateRoom | JoinRoom,
    *,
    local_host: str = LOOPBACK,
) -> Admission:
    ack, complete = await call(port, request, local_host=local_host)
    assert ack.ok, ack
    assert isinstance(complete, Admission)
    return complete


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
    """``python -m ocm server`` on loopback port 0 in a child process, from src/."""

    def __init__(self, process: subprocess.Popen[str], tcp_port: int) -> None:
        self.process = process
        self.tcp_port = tcp_port

    @classmethod
    async def start(cls, *flags: str) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        command = [sys.executable, "-m", "ocm", "server", "--host", LOOPBACK, "--port", "0"]
        process = subprocess.Popen(
            [*command, *flags], stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env
        )
        assert process.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 10)
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
