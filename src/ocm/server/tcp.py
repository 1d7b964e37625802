"""The TCRP adapter: reads requests off TCP connections and answers them (section 1).

Four steps per request: read exactly one message (with caps and timeouts), decode it
with :mod:`ocm.wire`, ask the :class:`~ocm.server.registry.RoomRegistry`, write the ACK
and COMPLETE. No protocol decisions are made here. Datagrams the registry produces
(NOTICE, CLOSED) go to the UDP endpoint through the ``send`` callback.

Section 5: STARTTLS upgrades a connection to TLS (1.3 at least) with the server's
identity; unless the server allows plaintext, every other request on a connection still
in clear is refused with ``encryption_required``, and the connection stays open for a
STARTTLS. A STARTTLS with bytes pipelined behind it is not upgraded: the connection is
closed (those bytes were sent in clear, and must never pass for encrypted ones).

Each request's outcome is counted in :attr:`TcrpHandler.requests`, by operation and
result (``ok`` or the error code; ``unknown`` for the operation of a request too
malformed to name one): ``ocm_tcrp_requests_total`` of :mod:`ocm.server.metrics`.

Logging: each request at DEBUG (operation, client IP, room and name, outcome: ``ok`` or
the error code), written from chosen fields, never from the request itself, which holds
the password, the token or the resume secret. Connections refused for a connection
limit are a WARNING: at most one line a minute per client IP (and for the limit on all
connections), which says how many were refused since the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any, TypeVar

from ocm.errors import ErrorCode, OCMError, ProtocolError, RemoteProtocolError, RoomError
from ocm.server.cluster.backend import Backend, LocalBackend
from ocm.server.guards import LogLimiter, held_back
from ocm.server.limits import Limits
from ocm.server.passwords import PasswordHash
from ocm.server.registry import (
    Address,
    Member,
    Outgoing,
    PendingCreate,
    PendingJoin,
    RoomRegistry,
)
from ocm.server.tunnel import TunnelLink, tunnel_address
from ocm.wire.delivery import DELIVERY, RELAYED
from ocm.wire.e2e import E2E
from ocm.wire.framer import TcrpReader
from ocm.wire.sealed import SEALED
from ocm.wire.tcrp import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    Left,
    ListRooms,
    LookupRoom,
    Operation,
    Reply,
    Request,
    Resume,
    Resumed,
    RoomList,
    SealedKeys,
    StartTls,
    TcrpMessage,
    TlsReady,
    Tunnel,
    Tunnelled,
    encode_error_ack,
    encode_reply,
    parse_request,
)
from ocm.wire.tunnel import RESUME, TUNNEL, FrameReader

__all__ = ["TcrpHandler"]

log = logging.getLogger("ocm.server.tcp")

T = TypeVar("T")

# What one read takes off a connection: a whole request almost always, and a bound on
# what a pipelining peer makes us buffer beyond the message being decoded.
_READ_SIZE = 16 * 1024
# What the kernel may hold for one tunnel, on top of --tunnel-buffer: seconds of a busy
# room for one member. Left to itself Linux grows it to 4 MiB a connection (tcp_wmem),
# which would hide a reader that stopped, and hold as much per tunnel.
TUNNEL_SEND_BUFFER = 64 * 1024
# Connections refused for a limit: one WARNING line a minute at most per client IP.
REFUSAL_LOG_INTERVAL = 60.0
# Section 5: the answer to a plaintext request on a server that wants TLS.
PLAINTEXT_REFUSED = (
    "this server accepts encrypted clients only (TLS); a plaintext client needs a server "
    "started with --allow-plaintext"
)


class TcrpHandler:
    """The ``client_connected_cb`` of the TCP listener; one call per connection."""

    def __init__(
        self,
        registry: RoomRegistry,
        limits: Limits,
        *,
        udp_port: Callable[[], int],
        send: Callable[[list[Outgoing]], None],
        clock: Callable[[], float],
        hash_executor: Executor,
        after_request: Callable[[], None] = lambda: None,
        deliver: Callable[[bytes, Address], None] = lambda data, address: None,
        open_tunnel: Callable[[TunnelLink], None] = lambda link: None,
        close_tunnel: Callable[[TunnelLink], None] = lambda link: None,
        tls: ssl.SSLContext | None = None,
        allow_plaintext: bool = False,
        backend: Backend | None = None,
    ) -> None:
        self.registry = registry
        # Where rooms live beyond this node (a cluster's store), or only here: the
        # handler asks it the same things either way (ocm.server.cluster.backend).
        self.backend: Backend = backend or LocalBackend(registry)
        self.limits = limits
        self._udp_port = udp_port
        self._send = send
        self._clock = clock
        # Called after every request, whatever it did to the registry: the server
        # re-arms its expiry timer from registry.next_deadline() there (aioquic's
        # get_timer after each event), so no admission path can forget it.
        self._after_request = after_request
        # Section 4: a tunnel's datagrams go to the relay as UDP ones do (deliver), and
        # the UDP endpoint routes the tunnel address to the connection while it is open.
        self._deliver = deliver
        self._open_tunnel = open_tunnel
        self._close_tunnel = close_tunnel
        # Section 5: what STARTTLS upgrades with (None: no TLS here, STARTTLS refused),
        # and whether requests in clear are served too.
        self._tls = tls
        self.allow_plaintext = allow_plaintext
        self.connections: dict[str, int] = {}  # client IP -> open connections
        # Requests answered, by (operation, result): "create_room", "ok" or an error code.
        self.requests: dict[tuple[str, str], int] = {}
        self.writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # one per open connection
        # Password hashes run on the server's executor, whose max_concurrent_hashes
        # threads bound the memory scrypt holds (16 MiB a thread, kept between hashes).
        # The semaphore has as many slots, so a job never waits in the executor's queue:
        # it waits here, on the event loop, where the registry can be asked again right
        # before its hash starts (see _hash); a worker thread never touches the registry.
        # The waiting requests are bounded by the connection limits (one per connection).
        self._hash_executor = hash_executor
        self._hashing = asyncio.Semaphore(limits.max_concurrent_hashes)
        # Refused connections, by client IP ("*": --max-connections): when the last line
        # about them was logged, and how many were refused since. An IP is forgotten
        # with its last connection, so this holds only IPs with connections open.
        self._refusals: dict[str, tuple[float, int]] = {}
        self._refusal_lines = LogLimiter()  # many IPs at their limit at once

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if self.connections.get(ip, 0) >= self.limits.max_connections_per_ip:
            why = f"{ip} has {self.connections[ip]} open (--max-connections-per-ip)"
            self._refuse_connection(ip, why)
            writer.transport.abort()
            return
        if len(self.writers) >= self.limits.max_connections:
            why = f"{len(self.writers)} open in all (--max-connections); {ip} refused"
            self._refuse_connection("*", why)
            writer.transport.abort()
            return
        self.connections[ip] = self.connections.get(ip, 0) + 1
        self.writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer, ip)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass  # the peer went away, was too slow, or broke TLS: nothing to answer
        except Exception:
            log.exception("unexpected error on a connection from %s; closing it", ip)
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.writers.discard(writer)
            self.connections[ip] -= 1
            if not self.connections[ip]:
                del self.connections[ip]
                self._refusals.pop(ip, None)
            transport = writer.transport
            if transport.is_closing():
                pass  # a TLS transport that closed has no buffer left to ask about
            elif transport.get_write_buffer_size():
                # A reply the peer would not read: drop it rather than keep it queued.
                transport.abort()
            else:
                writer.close()

    def _count(self, operation: str, result: str) -> None:
        key = (operation, result)
        self.requests[key] = self.requests.get(key, 0) + 1

    def _refuse_connection(self, key: str, why: str) -> None:
        """Log a refused connection: at most one line a minute for ``key``."""
        now = asyncio.get_running_loop().time()
        last, refused = self._refusals.get(key, (-math.inf, 0))
        refused += 1
        if now - last < REFUSAL_LOG_INTERVAL:
            self._refusals[key] = (last, refused)
            return
        self._refusals[key] = (now, 0)
        held = self._refusal_lines.allow(now)
        if held is not None:
            since = f"; {refused} refused since the last such line" if refused > 1 else ""
            log.warning("refusing connections: %s%s%s", why, since, held_back(held))

    async def close(self, timeout: float) -> None:
        """Close every connection and wait for its handler to finish (at most ``timeout``).

        Waiting matters: a handler still running when the loop stops is destroyed
        mid-await, and asyncio logs that as an error with a traceback.
        """
        for writer in list(self.writers):
            writer.close()
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write and drain, for at most the message timeout (a slow reader is cut off)."""
        writer.write(data)
        async with asyncio.timeout(self.limits.message_timeout):
            await writer.drain()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ip: str
    ) -> None:
        framer = TcrpReader(max_payload=self.limits.max_payload)
        secure = False  # the connection carries TLS (after STARTTLS)
        while True:
            # Let the other connections and the relay run between two requests: with
            # requests already buffered, no await below would yield, and one peer that
            # pipelines thousands of them would hold the event loop for as long.
            await asyncio.sleep(0)
            try:
                message = await self._next_message(reader, framer)
                if message is None:
                    return  # orderly close between requests
                request = parse_request(message)
            except ProtocolError as error:
                # Malformed: answer (the framer has seen a whole header), then close.
                log.debug(
                    "malformed request from %s: %s (%s)", ip, error.code, _printable(error.message)
                )
                operation = framer.operation or 0
                self._count(_operation_name(operation), str(error.code))
                await self._write(
                    writer, encode_error_ack(operation, "", error.code, error.message)
                )
                return
            if isinstance(request, StartTls) and not secure and self._tls is not None:
                if not await self._start_tls(reader, writer, framer, ip):
                    return
                secure = True
                continue
            tunnelled = False
            debug = log.isEnabledFor(logging.DEBUG)
            what = self._describe(message.operation, request, ip) if debug else ""
            try:
                if not (secure or self.allow_plaintext or isinstance(request, StartTls)):
                    raise RemoteProtocolError(ErrorCode.ENCRYPTION_REQUIRED, PLAINTEXT_REFUSED)
                reply = await self._handle(request, ip, secure)
            except OCMError as error:
                assert error.code is not None
                log.debug("%s: %s", what, error.code)
                self._count(_operation_name(message.operation), str(error.code))
                answer = encode_reply(
                    Ack(message.operation, message.room, error.code, error.message)
                )
            else:
                log.debug("%s: ok", what)
                self._count(_operation_name(message.operation), "ok")
                answer = encode_reply(Ack(message.operation, message.room)) + encode_reply(reply)
                tunnelled = isinstance(reply, Tunnelled)
            finally:
                self._after_request()
            await self._write(writer, answer)
            if tunnelled:
                # Section 4: from here on the connection carries frames, both ways.
                assert isinstance(request, Tunnel)
                await self._tunnel(reader, writer, ip, request, framer.take_rest())
                return

    async def _start_tls(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: TcrpReader,
        ip: str,
    ) -> bool:
        """Answer STARTTLS and upgrade the connection (section 5); False if it is closed
        instead.

        A client sends nothing more until the COMPLETE: the next bytes are its TLS
        handshake. Any byte already buffered behind the request (by the framer, or by
        the stream reader beyond the framer's last read) was sent in clear, before the
        upgrade, and asyncio would hand it to us as if it came out of TLS: the STARTTLS
        command injection of CVE-2011-0411 and its kin. Such a connection is closed,
        not upgraded, and not answered.
        """
        assert self._tls is not None
        # StreamReader has no public way to look at its buffer without waiting; its
        # _buffer is a bytearray in CPython's asyncio (uvloop uses the same streams).
        pending = bytes(framer.take_rest()) + bytes(getattr(reader, "_buffer", b""))
        if pending:
            log.debug("STARTTLS from %s with %d bytes behind it: closing", ip, len(pending))
            self._count("starttls", str(ErrorCode.BAD_REQUEST))  # closed, not answered
            return False
        self._count("starttls", "ok")
        answer = encode_reply(Ack(Operation.STARTTLS)) + encode_reply(TlsReady())
        self._after_request()
        await self._write(writer, answer)
        try:
            await writer.start_tls(self._tls, ssl_handshake_timeout=self.limits.message_timeout)
        except ssl.SSLError as error:
            log.debug("TLS handshake with %s failed: %s", ip, error)
            return False
        log.debug("STARTTLS from %s: ok", ip)
        return True

    async def _next_message(
        self, reader: asyncio.StreamReader, framer: TcrpReader
    ) -> TcrpMessage | None:
        """The next request off the connection, or None when the peer closed between two.

        Two clocks (section 1): ``idle_timeout`` while no message has started, then
        ``message_timeout`` for the whole of one, so a peer trickling a byte a second
        holds the connection for a bounded time.
        """
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while (message := framer.next_message()) is None:
            if framer.started and deadline is None:
                deadline = loop.time() + self.limits.message_timeout
            limit = deadline if deadline is not None else loop.time() + self.limits.tcp_idle_timeout
            async with asyncio.timeout_at(limit):
                data = await reader.read(_READ_SIZE)
            if not data:
                if framer.started:
                    raise asyncio.IncompleteReadError(b"", None)  # gone mid-message
                return None
            framer.feed(data)
        return message

    def _describe(self, operation: Operation, request: Request, ip: str) -> str:
        """A request as its DEBUG line names it: the operation, the client IP, the room,
        the name (or whose token it is), and never a password, token or secret."""
        match request:
            case CreateRoom(room, username, password) | JoinRoom(room, username, password):
                access = "a password" if password else "no password"
                return f'{operation.name} from {ip}: room "{room}", name {username}, {access}'
            case LeaveRoom(room, token) | Tunnel(room, token) | Resume(room, token):
                member = self.registry.by_token.get(token.encode("ascii", "replace"))
                whose = "an unknown token" if member is None else f"the token of {member.name}"
                return f'{operation.name} from {ip}: room "{room}", {whose}'
        return f"{operation.name} from {ip}"

    def _sealed(self, features: tuple[str, ...], secure: bool) -> bool:
        """Section 5: whether a CREATE or JOIN with ``features`` is granted sealed
        datagrams: asked for, with delivery, on a TLS connection (the keys travel in the
        COMPLETE). Without them a member chats in plaintext: refused unless allowed."""
        sealed = secure and SEALED in features and DELIVERY in features
        if not sealed and not self.allow_plaintext:
            raise RoomError(
                ErrorCode.ENCRYPTION_REQUIRED,
                "this server accepts encrypted members only: TLS, and the sealed and"
                " delivery features",
            )
        return sealed

    def _check_sealed_token(self, token: str, secure: bool) -> None:
        """A sealed member's token may travel only inside TLS (section 5): over plaintext
        it is refused, as the sealed datagrams' token would otherwise leak here."""
        if secure:
            return
        member = self.registry.by_token.get(token.encode("ascii", "replace"))
        if member is not None and member.session is not None:
            raise RoomError(
                ErrorCode.ENCRYPTION_REQUIRED, "an encrypted member's token travels only in TLS"
            )

    async def _handle(self, request: Request, ip: str, secure: bool) -> Reply:
        registry = self.registry
        backend = self.backend
        match request:
            case CreateRoom(room, username, password, features, e2e):
                sealed = self._sealed(features, secure)
                creating = registry.begin_create(
                    room, username, ip, e2e=e2e, password_given=bool(password)
                )
                secret = None
                if password:
                    hashing = functools.partial(PasswordHash.create, password)
                    secret = await self._hash(creating, hashing)
                delivery = DELIVERY in features  # section 3: granted to whoever asks
                await backend.claim_room(creating, secret, sealed)
                try:
                    member = registry.finish_create(
                        creating, secret, self._clock(), delivery=delivery, sealed=sealed
                    )
                except RoomError:
                    await backend.release_room(creating)
                    raise
                return self._admission(Operation.CREATE_ROOM, member, features)
            case JoinRoom(room, username, password, features):
                sealed = self._sealed(features, secure)
                await backend.load_room(room)
                # A cluster node's replica, loaded for this join and maybe others at
                # once: forgotten when the last of them ends with nobody in it.
                loaded = registry.rooms.get(room)
                if loaded is not None:
                    loaded.joining += 1
                try:
                    return await self._join(request, ip, sealed)
                finally:
                    if loaded is not None:
                        loaded.joining -= 1
                        registry.forget_if_empty(loaded)
            case ListRooms():
                return RoomList(tuple(await backend.list_rooms()))
            case LookupRoom(room):
                return await backend.lookup(room)
            case LeaveRoom(room, token):
                self._check_sealed_token(token, secure)
                member = registry.leaving(room, token, ip)
                self._send(registry.leave_member(member, self._clock()))
                return Left(room, member.relayed_through)
            case Tunnel(room, token):
                self._check_sealed_token(token, secure)
                registry.tunnel_member(room, token, ip)
                return Tunnelled(room)
            case Resume(room, token, secret):
                self._check_sealed_token(token, secure)
                member, next_secret = registry.resume(room, token, secret, ip, self._clock())
                return Resumed(room, next_secret, member.room.seq)
            case StartTls():
                # On a TLS connection already (or a server without TLS): section 5.
                why = "the connection is encrypted already" if secure else "no TLS here"
                raise RemoteProtocolError(ErrorCode.BAD_REQUEST, f"STARTTLS refused: {why}")
        raise RemoteProtocolError(  # pragma: no cover
            ErrorCode.UNKNOWN_OPERATION, "unknown request"
        )

    async def _join(self, request: JoinRoom, ip: str, sealed: bool) -> Reply:
        registry, backend = self.registry, self.backend
        room, username, password, features = (
            request.room,
            request.username,
            request.password,
            request.features,
        )
        joining = registry.begin_join(
            room, username, ip, self._clock(), sealed=sealed, e2e=E2E in features
        )
        password_ok = False
        if joining.expected is not None and password:  # none given: no hash
            await backend.check_blocked(ip)
            checking = functools.partial(joining.expected.verify, password)
            password_ok = await self._hash(joining, checking)
        # The name is taken only with the right password (or none needed): a wrong one
        # is refused by finish_join, and counted, with nothing told about the room.
        reserved = joining.expected is None or password_ok
        if reserved:
            await backend.reserve_member(joining)
        try:
            member, outgoing = registry.finish_join(
                joining,
                password_ok,
                self._clock(),
                delivery=DELIVERY in features,
                password_given=bool(password),
            )
        except RoomError:
            if reserved:
                await backend.release_member(joining)
            raise
        self._send(outgoing)
        # In a cluster the join NOTICE is numbered in the store: COMPLETE waits for its
        # Seq, so that the member gets everything after its own NOTICE, as alone.
        seq = await backend.settle(member.room)
        return self._admission(Operation.JOIN_ROOM, member, features, seq)

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
        request: Tunnel,
        rest: bytes,
    ) -> None:
        """Carry a member's relay datagrams over this connection until either side ends it.

        Each frame in goes to the relay from the tunnel address, exactly as a datagram
        from a UDP address would: the relay checks it, and it makes the tunnel the
        member's address. A malformed frame ends the tunnel (the stream is out of step).
        A connection silent for the idle timeout ends too: its member is gone by then.
        """
        try:  # the member may have left while the COMPLETE was written
            self.registry.tunnel_member(request.room, request.token, ip)
        except OCMError:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # a smaller kernel buffer is not needed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TUNNEL_SEND_BUFFER)
        peer = writer.get_extra_info("peername")
        address = tunnel_address(ip, int(peer[1]) if peer else 0)
        link = TunnelLink(address, writer.transport, self.limits.tunnel_buffer)
        self._open_tunnel(link)
        frames = FrameReader(rest)
        loop = asyncio.get_running_loop()
        idle = self.registry.idle_timeout
        frame_due: float | None = None  # when the frame under way must be complete
        try:
            while True:
                while (datagram := frames.next_frame()) is not None:
                    self._deliver(datagram, address)
                    frame_due = None  # a frame came whole: the next has its own time
                if link.closed:
                    return
                if frames.started:
                    # One clock for the whole frame, as for a TCRP message (section 1):
                    # a peer trickling a byte a second is cut off, not waited for.
                    if frame_due is None:
                        frame_due = loop.time() + self.limits.message_timeout
                    limit: float | None = frame_due
                else:
                    limit = loop.time() + idle if math.isfinite(idle) else None
                async with asyncio.timeout_at(limit):
                    data = await reader.read(_READ_SIZE)
                if not data:
                    return
                frames.feed(data)
        except ProtocolError as error:
            log.debug("closing the tunnel of %s: %s", ip, error)
        finally:
            self._close_tunnel(link)
            self.registry.unbind(address)

    async def _hash(self, pending: PendingCreate | PendingJoin, work: Callable[[], T]) -> T:
        """Run ``work`` (scrypt) on the hash executor, once a slot is free.

        The registry is asked again first, after the wait, which may have been long: a
        guesser's queued tries are refused (rate_limited) without a hash once its IP is
        blocked, and a create whose name was taken meanwhile costs no hash.
        """
        async with self._hashing:
            self.registry.check_pending(pending, self._clock())
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._hash_executor, work)

    def _admission(
        self,
        operation: Operation,
        member: Member,
        features: tuple[str, ...],
        seq: int | None = None,
    ) -> Admission:
        room = member.room
        # A cluster room's host and members may be on other nodes (ocm.server.cluster).
        host = room.host.name if room.host is not None else room.host_name
        members = room.roster or tuple(m.name for m in room.members.values())
        registry = self.registry
        idle_timeout = registry.idle_timeout
        admission = Admission(
            operation,
            room.name,
            member.token,
            self._udp_port(),
            host,
            members,
            # Tell the client how often to heartbeat (an OCM extension); an endless
            # timeout has no JSON number, and needs no heartbeat.
            idle_timeout if math.isfinite(idle_timeout) else None,
        )
        # Section 5: a member of an end-to-end room is told so (it had to ask for it).
        e2e = (E2E,) if room.e2e is not None else ()
        if not member.delivery:
            # Version 1, byte for byte (but for an e2e room, which no v1 client joins).
            return replace(admission, features=e2e) if e2e else admission
        # Section 4 builds on section 3: a tunnel carries extended datagrams, and a
        # resumed member repairs what it missed.
        granted = (DELIVERY, *(f for f in (RELAYED, TUNNEL, RESUME) if f in features))
        if RELAYED in granted:
            registry.grant_relayed(member)
        sealed = None
        if member.session is not None:
            granted += (SEALED,)
            sealed = SealedKeys(member.session, member.key, room.key_id, room.key)
        if TUNNEL in granted:
            registry.grant_tunnel(member)  # TUNNEL is for it alone (tunnel_member)
        # Section 3: the member receives every Seq after this one (its own join NOTICE
        # was the last), whether or not the server knows its UDP address yet.
        return replace(
            admission,
            features=(*granted, *e2e),
            seq=room.seq if seq is None else seq,
            boot=registry.boot.hex(),
            history=registry.history_messages,
            resume=registry.issue_secret(member) if RESUME in features else None,
            sealed=sealed,
        )


def _operation_name(operation: int) -> str:
    """An operation as the metrics label it: "create_room", or "unknown" for a number
    that names none."""
    try:
        return Operation(operation).name.lower()
    except ValueError:
        return "unknown"


def _printable(text: str, limit: int = 200) -> str:
    """``text`` from a client, made safe for a log line: control characters escaped
    (no forged lines), cut to ``limit`` characters."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
