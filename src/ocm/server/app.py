"""The OCM server: one TCP listener for TCRP and one UDP endpoint for the relay.

:class:`OCMServer` wires the layers together and owns the lifecycle: it binds the
sockets (with ``--metrics-port``, the metrics endpoint's too: :mod:`ocm.server.metrics`),
arms the idle-expiry timer the registry asks for, and on :meth:`OCMServer.close` tells
every member CLOSED before it stops. :func:`serve` runs it until SIGINT/SIGTERM. Only
this module and the adapters read the clock (``loop.time()``; the wall clock once, for
the metrics' start time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ocm import __version__
from ocm.server.cluster.backend import Backend, LocalBackend
from ocm.server.exposition import render
from ocm.server.guards import ErrorReplyLimiter, FailureLimiter
from ocm.server.identity import load_identity, server_context
from ocm.server.limits import Limits
from ocm.server.metrics import MetricsEndpoint, snapshot
from ocm.server.registry import Outgoing, RoomRegistry
from ocm.server.relay import RelayCore
from ocm.server.tcp import TcrpHandler
from ocm.server.udp import RelayEndpoint
from ocm.wire.constants import DEFAULT_PORT
from ocm.wire.texts import ServerShutdown

__all__ = ["OCMServer", "ServerConfig", "serve"]

log = logging.getLogger("ocm.server")

# Connections the kernel queues before we accept them. asyncio's default (100) is smaller
# than one burst of clients or attackers: past it the kernel drops handshakes, and the
# clients retry a second or more later. Linux caps it at net.core.somaxconn.
TCP_BACKLOG = 512
# An expiry timer that runs this much of an idle timeout late means the loop did not
# run (a stalled process, a suspended machine): see OCMServer._expire_idle.
STALL = 0.25


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    udp_port: int | None = None  # None: the same number as the TCP port
    limits: Limits = field(default_factory=Limits)  # every other flag of ocm server
    # Section 5, TLS: where the server keeps its own key (None: default_data_dir()), or
    # an operator's certificate and key instead; and whether clients that do not
    # STARTTLS are served (version 1 clients), next to those that do.
    data_dir: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_plaintext: bool = False
    # The Prometheus endpoint (ocm.server.metrics): off unless given a port (0: any
    # free one), and on the loopback interface unless told otherwise: it is for the
    # operator, and has no TLS and no password.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    # A cluster node (ocm.server.cluster): the Redis its rooms live in, shared with the
    # other nodes. None: a server on its own, nothing shared (the embedded default).
    redis_url: str | None = None
    # How long the node waits before its first reconnect to Redis, and at most.
    redis_backoff: tuple[float, float] = (0.1, 5.0)


UDP_SEND_BUFFER = 4 * 1024 * 1024
UDP_RECEIVE_BUFFER = 1024 * 1024


def _bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6 and host in ("::", ""):
            # Dual stack where the system allows it, like the TCP listener.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        keep_receiving_after_unreachable(sock)
        # One chat line to a big room is many copies at once (4 KB x 1,000 members is
        # 4 MB): a send buffer that holds them keeps the relay on its fast path on a
        # real network card. A larger receive buffer absorbs bursts between two turns
        # of the event loop. The system may grant less (Linux caps at wmem_max and
        # rmem_max); that only costs speed.
        for option, size in (
            (socket.SO_SNDBUF, UDP_SEND_BUFFER),
            (socket.SO_RCVBUF, UDP_RECEIVE_BUFFER),
        ):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def keep_receiving_after_unreachable(sock: socket.socket) -> None:
    """Windows: a relay to a client that has gone must not stop the socket receiving.

    Winsock reports the ICMP "port unreachable" for one departed client as
    WSAECONNRESET on the socket's next receive, and asyncio's proactor loop then stops
    reading the socket for good (CPython issues 91227 and 127057): one member closing
    its terminal would silence the relay for every room. Turning SIO_UDP_CONNRESET off
    is the usual cure (libuv, ntpd do the same). Elsewhere nothing is needed: an
    unconnected UDP socket is not told about ICMP errors.
    """
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        sio_udp_connreset = 0x9800000C  # _WSAIOW(IOC_VENDOR, 12), mstcpip.h
        prototype = ctypes.WINFUNCTYPE(
            ctypes.c_int,
            ctypes.c_size_t,  # SOCKET
            wintypes.DWORD,
            ctypes.c_void_p,
            wintypes.DWORD,
            ctypes.c_void_p,
            wintypes.DWORD,
            ctypes.POINTER(wintypes.DWORD),
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        report = wintypes.BOOL(False)
        returned = wintypes.DWORD(0)
        try:
            wsa_ioctl = prototype(("WSAIoctl", ctypes.windll.ws2_32))
            failed = wsa_ioctl(
                sock.fileno(),
                sio_udp_connreset,
                ctypes.byref(report),
                ctypes.sizeof(report),
                None,
                0,
                ctypes.byref(returned),
                None,
                None,
            )
        except (AttributeError, OSError, ctypes.ArgumentError):
            failed = True  # the relay still works; it is only less robust
        if failed:
            log.warning("could not turn off UDP connection-reset reports on this socket")


def _bind_tcp(host: str, port: int) -> socket.socket:
    if ":" in host:
        dual = host in ("::", "") and socket.has_dualstack_ipv6()
        return socket.create_server(
            (host, port), family=socket.AF_INET6, dualstack_ipv6=dual, backlog=TCP_BACKLOG
        )
    return socket.create_server((host, port), family=socket.AF_INET, backlog=TCP_BACKLOG)


class OCMServer:
    """A running server. Create it with ``await OCMServer.start(config)``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        limits = config.limits
        self.registry = RoomRegistry(
            idle_timeout=limits.idle_timeout,
            max_rooms=limits.max_rooms,
            max_members=limits.max_members,
            max_rooms_per_ip=limits.max_rooms_per_ip,
            history_messages=limits.history_messages,
            history_bytes=limits.history_bytes,
            repair_rate=limits.repair_rate,
            closed_resend_interval=limits.closed_resend_interval,
            failures=FailureLimiter(limits.max_password_failures, limits.failure_window),
        )
        self.relay = RelayCore(self.registry, ErrorReplyLimiter(limits.error_replies_per_second))
        self._loop = asyncio.get_running_loop()
        # A closed tunnel's address stays routed to nowhere while a CLOSED's copies
        # (made before it closed) may still go to it: up to 7 resend intervals.
        linger = 8 * limits.closed_resend_interval + 1.0
        self._endpoint = RelayEndpoint(
            self.relay, self._loop.time, self._arm_expiry, tunnel_linger=linger
        )
        # Password hashes (scrypt) run here, not on the loop's default executor: each
        # worker thread keeps the 16 MiB its last hash used, and the default executor
        # grows to min(32, CPUs + 4) threads, so only a pool of its own makes
        # --max-concurrent-hashes bound the memory (docs/security.md). Threads start on
        # the first hash.
        # Section 5: the key clients pin; IdentityError (one line) if it cannot be used.
        self.identity = load_identity(config.data_dir, config.cert_file, config.key_file)
        self.hash_executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent_hashes, thread_name_prefix="ocm-hash"
        )
        self.backend: Backend
        if config.redis_url is None:
            self.backend = LocalBackend(self.registry)
        else:
            # The cluster extra (redis-py): imported only for a cluster node.
            from ocm.server.cluster.redis_backend import RedisBackend

            self.backend = RedisBackend(
                config.redis_url,
                self.registry,
                send=self._send_and_arm,
                clock=self._loop.time,
                backoff=config.redis_backoff,
            )
        self.tcrp = TcrpHandler(
            self.registry,
            limits,
            udp_port=lambda: self.udp_port,
            send=self._endpoint.send,
            clock=self._loop.time,
            hash_executor=self.hash_executor,
            after_request=self._arm_expiry,
            deliver=self._endpoint.datagram_received,
            open_tunnel=self._endpoint.open_tunnel,
            close_tunnel=self._endpoint.close_tunnel,
            tls=server_context(self.identity),
            allow_plaintext=config.allow_plaintext,
            backend=self.backend,
        )
        self._tcp_server: asyncio.Server | None = None
        # One timer for the registry's next deadline (aioquic's get_timer), re-armed
        # after every TCRP request and every expiry pass.
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        self._listen_until: float | None = None  # no expiry before: after a stall
        self._closed = asyncio.Event()
        self._closing = False
        self.tcp_port = 0
        self.udp_port = 0
        self.metrics: MetricsEndpoint | None = None
        if config.metrics_port is not None:
            self.metrics = MetricsEndpoint(self.metrics_text, timeout=limits.message_timeout)
        self.metrics_port: int | None = None  # the bound port, with --metrics-port
        self.start_time = time.time()  # Unix time, for ocm_start_time_seconds

    @classmethod
    async def start(cls, config: ServerConfig | None = None) -> OCMServer:
        server = cls(config or ServerConfig())
        await server._bind()
        return server

    async def _bind(self) -> None:
        config = self.config
        try:
            tcp_sock = _bind_tcp(config.host, config.port)
        except OSError as error:
            raise _cannot_listen("TCP", config.host, config.port, error) from error
        self.tcp_port = tcp_sock.getsockname()[1]
        wanted = self.tcp_port if config.udp_port is None else config.udp_port
        try:
            udp_sock = _bind_udp(config.host, wanted)
        except OSError as error:
            if config.udp_port is not None or config.port != 0:
                tcp_sock.close()
                raise _cannot_listen("UDP", config.host, wanted, error) from error
            udp_sock = _bind_udp(config.host, 0)  # port 0: any free pair will do
        self.udp_port = udp_sock.getsockname()[1]
        metrics_sock = None
        if config.metrics_port is not None:
            try:
                metrics_sock = _bind_tcp(config.metrics_host, config.metrics_port)
            except OSError as error:
                tcp_sock.close()
                udp_sock.close()
                raise _cannot_listen(
                    "metrics", config.metrics_host, config.metrics_port, error
                ) from error
        await self._loop.create_datagram_endpoint(lambda: self._endpoint, sock=udp_sock)
        # A cluster node reaches its Redis (or has tried once) before it takes requests,
        # so a client that connects as soon as it listens finds it ready.
        await self.backend.start()
        # start_server listens again with its own backlog: pass ours, or it is 100.
        self._tcp_server = await asyncio.start_server(
            self.tcrp, sock=tcp_sock, limit=config.limits.max_payload + 1024, backlog=TCP_BACKLOG
        )
        log.info(
            "OCM server listening on %s: TCP port %d, UDP port %d (TLS, %s; idle timeout "
            "%gs, %s loop)",
            config.host,
            self.tcp_port,
            self.udp_port,
            "plaintext clients allowed" if config.allow_plaintext else "plaintext refused",
            config.limits.idle_timeout,
            "uvloop" if type(self._loop).__module__.startswith("uvloop") else "asyncio",
        )
        if self.metrics is not None and metrics_sock is not None:
            await self.metrics.start(metrics_sock)
            self.metrics_port = self.metrics.port
            where = (
                f"[{config.metrics_host}]" if ":" in config.metrics_host else config.metrics_host
            )
            log.info("metrics at http://%s:%d/metrics", where, self.metrics_port)
        self.start_time = time.time()
        identity = self.identity
        if identity.created:
            log.info("created a new server key in %s", identity.key_file.parent)
        log.info("server key %s (%s)", identity.fingerprint, identity.cert_file)

    def metrics_text(self) -> str:
        """What the metrics endpoint serves: the server's counts now, as Prometheus text."""
        return render(
            snapshot(
                registry=self.registry,
                relay=self.relay,
                endpoint=self._endpoint,
                tcrp=self.tcrp,
                version=__version__,
                start_time=self.start_time,
                cluster=self.backend.state(),
            )
        )

    def _send(self, outgoing: Iterable[Outgoing]) -> None:
        self._endpoint.send(outgoing)

    def _send_and_arm(self, outgoing: Iterable[Outgoing]) -> None:
        """What the cluster's bus says to this node's members; a room it closed has
        CLOSED copies due again, so the expiry timer may need to fire sooner."""
        self._endpoint.send(outgoing)
        if self.registry.deadline_moved:
            self._arm_expiry()

    def _arm_expiry(self) -> None:
        """Arm the expiry timer for :meth:`RoomRegistry.next_deadline`.

        Called after every TCRP request, every expiry pass, and every datagram that
        brought a deadline closer (the registry says so: ``deadline_moved``, set when a
        delivery member's LEAVE closed a room). Other datagrams only push deadlines later:
        a timer that fires early finds nobody idle and re-arms for the new one.
        """
        self.registry.deadline_moved = False
        if self._closing:
            return
        deadline = self.registry.next_deadline()
        if deadline is not None and self._listen_until is not None:
            deadline = max(deadline, self._listen_until)
        if self._expiry_timer is not None:
            if deadline is not None and self._expiry_at <= deadline:
                return  # armed for sooner already
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if deadline is not None:
            self._expiry_at = deadline
            self._expiry_timer = self._loop.call_at(deadline, self._expire_idle)

    def _expire_idle(self) -> None:
        self._expiry_timer = None
        now = self._loop.time()
        late = now - self._expiry_at
        if late > STALL * self.config.limits.idle_timeout and self._listen_until is None:
            # The loop did not run for a while. The heartbeats sent meanwhile wait in
            # the socket's buffer, read one per loop turn: expiring now would take
            # their senders for idle. Time the server could not listen is not their
            # silence, so read first, for as long again (once: a loop that stalls
            # every time still expires).
            self._listen_until = now + min(late, self.config.limits.idle_timeout)
            self._arm_expiry()
            return
        self._listen_until = None
        # The loop may run a timer a clock tick early; it is due all the same.
        now = max(now, self._expiry_at)
        try:
            self._send(self.registry.expire(now))
        except Exception:
            # Expiry must outlive a bug: without it hosts never time out. Retry in a
            # second, so a bug that repeats cannot spin the loop.
            log.exception("unexpected error expiring idle members")
            self._expiry_at = now + 1.0
            self._expiry_timer = self._loop.call_at(self._expiry_at, self._expire_idle)
            return
        self._arm_expiry()

    async def close(self) -> None:
        """Stop accepting, send CLOSED to every member, close connections. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._tcp_server is not None:
                self._tcp_server.close()
            # One turn of the loop: a connection accepted just now starts its handler,
            # which tcrp.close() can then close and wait for (instead of asyncio
            # cancelling a handler that never ran, with a traceback in the log).
            await asyncio.sleep(0)
            if self.metrics is not None:
                await self.metrics.close()
            if self._expiry_timer is not None:
                self._expiry_timer.cancel()
                self._expiry_timer = None
            self._send(self.registry.close_all(ServerShutdown(), self._loop.time()))
            # The copies keep their schedule while connections and the store close
            # (a hash or Redis may hold those up): bunched together, they would be lost
            # together.
            resending = asyncio.create_task(self._resend_closed())
            try:
                await self.tcrp.close(timeout=2.0)
                await self.backend.close()
            finally:
                await resending
            if self._tcp_server is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._tcp_server.wait_closed()
            if self._endpoint.transport is not None:
                self._endpoint.transport.close()
                # The transport closes its socket on a later turn of the loop: wait, so
                # that a server started next on the same port finds it free.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self._endpoint.closed.wait()
            log.info("OCM server stopped")
        finally:
            # Without waiting: a hash still running (tens of ms) ends in its thread, which
            # then exits; its request's handler is gone, and nothing is queued behind it.
            self.hash_executor.shutdown(wait=False, cancel_futures=True)
            self._closed.set()

    async def _resend_closed(self) -> None:
        """Linger while delivery members' CLOSED copies are due again, so that one whose
        first copy was lost still learns the server is shutting down; meanwhile the relay
        answers their tokens with the CLOSED too (section 3). Version 1 members, and a
        server without delivery members, add no wait."""
        registry = self.registry
        while (deadline := registry.next_deadline()) is not None:
            await asyncio.sleep(max(0.0, deadline - self._loop.time()))
            self._send(registry.expire(max(self._loop.time(), deadline)))

    async def __aenter__(self) -> OCMServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _cannot_listen(transport: str, host: str, port: int, error: OSError) -> OSError:
    """The bind error, saying which socket failed: "TCP port 9001 on 0.0.0.0: ..."."""
    where = f"[{host}]" if ":" in host else host
    reason = error.strerror or str(error)
    return OSError(error.errno, f"cannot listen on {transport} port {port} on {where}: {reason}")


# SIGINT is Ctrl-C everywhere; SIGTERM is how service managers stop us on POSIX;
# SIGBREAK is Ctrl-Break in a Windows console. Names missing on a platform are skipped.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")


def on_stop_signals(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None]
) -> Callable[[], None]:
    """Call ``stop`` on the loop when a stop signal arrives; return the undo.

    ``loop.add_signal_handler`` where the loop has it (POSIX). Windows' loops raise
    NotImplementedError: there a plain :func:`signal.signal` handler, which Python runs
    between bytecodes of the main thread, hops onto the loop. Off the main thread no
    handler can be set; whoever runs us there stops us by cancelling.
    """
    undo: list[Callable[[], object]] = []
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, stop)
        except (NotImplementedError, RuntimeError):
            pass
        else:
            undo.append(functools.partial(loop.remove_signal_handler, signum))
            continue
        try:
            previous = signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop))
        except (ValueError, OSError):
            continue
        if previous is not None:
            undo.append(functools.partial(signal.signal, signum, previous))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


# Descriptors the server needs besides its TCP connections: listeners, the UDP socket,
# the event loop's own, logging, the hashing threads.
SPARE_FILES = 64


def fit_connections_to_file_limit(config: ServerConfig) -> ServerConfig:
    """Make room for ``--max-connections`` under the process's open-file limit.

    Many systems start processes with a soft limit of 1024, below the default of 4096
    connections: past it accept() fails with EMFILE, which asyncio logs over and over.
    Raise the soft limit towards the hard one; if that is still short, lower the
    connection cap to fit and say so. Systems without RLIMIT_NOFILE (Windows) are left
    as they are.
    """
    if sys.platform == "win32":
        return config
    import resource  # POSIX only

    wanted = config.limits.max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return config
    fitted = max(1, soft - SPARE_FILES)
    log.warning(
        "open-file limit %d allows %d TCP connections, not %d", soft, fitted, wanted - SPARE_FILES
    )
    return replace(config, limits=replace(config.limits, max_connections=fitted))


async def serve(config: ServerConfig) -> None:
    """Run a server until SIGINT or SIGTERM, then close it (members get CLOSED)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = await OCMServer.start(fit_connections_to_file_limit(config))
    restore = on_stop_signals(loop, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        try:
            await server.close()
        finally:
            restore()
