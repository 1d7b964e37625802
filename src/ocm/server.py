"""The OCM server: one TCP listener for TCRP and one UDP endpoint for the relay.

:class:`OCMServer` wires the layers together and owns the lifecycle: it binds the
sockets, arms the idle-expiry timer the registry asks for, and on :meth:`OCMServer.close`
tells every member CLOSED before it stops. :func:`serve` runs it until SIGINT/SIGTERM.
Only this module and the adapters read the clock (``loop.time()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from ocm.registry import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_ROOMS,
    Outgoing,
    RoomRegistry,
)
from ocm.relay import RelayCore
from ocm.tcp import TcpLimits, TcrpHandler
from ocm.udp import RelayEndpoint

__all__ = ["OCMServer", "ServerConfig", "serve"]

log = logging.getLogger("ocm.server")

DEFAULT_PORT = 9001
SHUTDOWN_REASON = "server shutting down"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    udp_port: int | None = None  # None: the same number as the TCP port
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_rooms: int = DEFAULT_MAX_ROOMS
    max_members: int = DEFAULT_MAX_MEMBERS
    tcp: TcpLimits = field(default_factory=TcpLimits)


def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and host in ("::", ""):
            # Dual stack where the system allows it, like the TCP listener.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _bind_tcp(host: str, port: int) -> socket.socket:
    if ":" in host:
        dual = host in ("::", "") and socket.has_dualstack_ipv6()
        return socket.create_server(
            (host, port), family=socket.AF_INET6, dualstack_ipv6=dual, backlog=512
        )
    return socket.create_server((host, port), family=socket.AF_INET, backlog=512)


class OCMServer:
    """A running server. Create it with ``await OCMServer.start(config)``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = RoomRegistry(
            idle_timeout=config.idle_timeout,
            max_rooms=config.max_rooms,
            max_members=config.max_members,
        )
        self.relay = RelayCore(self.registry)
        self._loop = asyncio.get_running_loop()
        self._endpoint = RelayEndpoint(self.relay, self._loop.time)
        self.tcrp = TcrpHandler(
            self.registry,
            config.tcp,
            udp_port=lambda: self.udp_port,
            send=self._endpoint.send,
            clock=self._loop.time,
            on_join=self._wake_expiry,
        )
        self._tcp_server: asyncio.Server | None = None
        self._members_added = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._closing = False
        self.tcp_port = 0
        self.udp_port = 0

    @classmethod
    async def start(cls, config: ServerConfig | None = None) -> OCMServer:
        server = cls(config or ServerConfig())
        await server._bind()
        return server

    async def _bind(self) -> None:
        config = self.config
        tcp_sock = _bind_tcp(config.host, config.port)
        self.tcp_port = tcp_sock.getsockname()[1]
        wanted = self.tcp_port if config.udp_port is None else config.udp_port
        try:
            udp_sock = _bind_udp(config.host, wanted)
        except OSError:
            if config.udp_port is not None or config.port != 0:
                tcp_sock.close()
                raise
            udp_sock = _bind_udp(config.host, 0)  # port 0: any free pair will do
        self.udp_port = udp_sock.getsockname()[1]
        await self._loop.create_datagram_endpoint(lambda: self._endpoint, sock=udp_sock)
        self._tcp_server = await asyncio.start_server(
            self.tcrp, sock=tcp_sock, limit=config.tcp.max_payload + 1024
        )
        self._expiry_task = asyncio.create_task(self._expire_idle(), name="ocm-expiry")
        log.info(
            "OCM server listening on %s: TCP port %d, UDP port %d (idle timeout %gs)",
            config.host,
            self.tcp_port,
            self.udp_port,
            config.idle_timeout,
        )

    def _send(self, outgoing: Iterable[Outgoing]) -> None:
        self._endpoint.send(outgoing)

    def _wake_expiry(self) -> None:
        self._members_added.set()

    async def _expire_idle(self) -> None:
        """Sleep until the registry's next deadline, expire, repeat (aioquic's timer)."""
        while True:
            deadline = self.registry.next_deadline()
            if deadline is None:
                self._members_added.clear()
                await self._members_added.wait()
                continue
            delay = deadline - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._send(self.registry.expire(self._loop.time()))

    async def close(self, reason: str = SHUTDOWN_REASON) -> None:
        """Stop accepting, send CLOSED to every member, close connections. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._tcp_server is not None:
                self._tcp_server.close()
            if self._expiry_task is not None:
                self._expiry_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._expiry_task
            self._send(self.registry.close_all(reason))
            for writer in list(self.tcrp.writers):
                writer.close()
            if self._tcp_server is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._tcp_server.wait_closed()
            if self._endpoint.transport is not None:
                self._endpoint.transport.close()
            log.info("OCM server stopped")
        finally:
            self._closed.set()

    async def __aenter__(self) -> OCMServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(config: ServerConfig) -> None:
    """Run a server until SIGINT or SIGTERM, then close it (members get CLOSED)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = await OCMServer.start(config)
    for signum in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            # Windows has no add_signal_handler: a plain handler hops onto the loop.
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.close()
