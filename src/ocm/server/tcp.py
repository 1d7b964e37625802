"""The TCRP adapter: reads requests off TCP connections and answers them (section 1).

Four steps per request: read exactly one message (with caps and timeouts), decode it
with :mod:`ocm.wire`, ask the :class:`~ocm.server.registry.RoomRegistry`, write the ACK
and COMPLETE. No protocol decisions are made here. Datagrams the registry produces
(NOTICE, CLOSED) go to the UDP endpoint through the ``send`` callback.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocm.errors import ErrorCode, OCMError, ProtocolError
from ocm.server.passwords import PasswordHash
from ocm.server.registry import Member, Outgoing, RoomRegistry
from ocm.wire.constants import MAX_TCRP_PAYLOAD
from ocm.wire.framer import TcrpReader
from ocm.wire.tcrp import (
    Ack,
    Admission,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    Left,
    ListRooms,
    Operation,
    Reply,
    Request,
    RoomList,
    TcrpMessage,
    encode_error_ack,
    encode_reply,
    parse_request,
)

__all__ = ["TcpLimits", "TcrpHandler"]

log = logging.getLogger("ocm.server.tcp")

# Section 1: a connection that sends nothing for this long is closed.
DEFAULT_TCP_IDLE_TIMEOUT = 10.0
# A message that has started must be complete within this time: a peer trickling one
# byte a second holds a connection for at most this long. The same bound applies to a
# reply the peer will not read (a write that stalls this long aborts the connection).
DEFAULT_MESSAGE_TIMEOUT = 5.0
# Per client IP, and in all: bounds the file descriptors and buffers an attacker can pin.
DEFAULT_MAX_CONNECTIONS_PER_IP = 32
DEFAULT_MAX_CONNECTIONS = 4096
# What one read takes off a connection: a whole request almost always, and a bound on
# what a pipelining peer makes us buffer beyond the message being decoded.
_READ_SIZE = 16 * 1024
# Password hashes (scrypt, 16 MiB and ~40 ms of CPU each) computed at once: bounds the
# memory and CPU that a crowd of password guesses can take from the relay.
DEFAULT_MAX_CONCURRENT_HASHES = 2


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Caps on what one TCP peer can make the server hold (each is a server flag)."""

    max_payload: int = MAX_TCRP_PAYLOAD
    idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT
    message_timeout: float = DEFAULT_MESSAGE_TIMEOUT
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_concurrent_hashes: int = DEFAULT_MAX_CONCURRENT_HASHES


class TcrpHandler:
    """The ``client_connected_cb`` of the TCP listener; one call per connection."""

    def __init__(
        self,
        registry: RoomRegistry,
        limits: TcpLimits,
        *,
        udp_port: Callable[[], int],
        send: Callable[[list[Outgoing]], None],
        clock: Callable[[], float],
        after_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self._udp_port = udp_port
        self._send = send
        self._clock = clock
        # Called after every request, whatever it did to the registry: the server
        # re-arms its expiry timer from registry.next_deadline() there (aioquic's
        # get_timer after each event), so no admission path can forget it.
        self._after_request = after_request
        self.connections: dict[str, int] = {}  # client IP -> open connections
        self.writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # one per open connection
        self._hashing = asyncio.Semaphore(limits.max_concurrent_hashes)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if (
            self.connections.get(ip, 0) >= self.limits.max_connections_per_ip
            or len(self.writers) >= self.limits.max_connections
        ):
            log.debug("refusing a connection from %s: too many connections", ip)
            writer.transport.abort()
            return
        self.connections[ip] = self.connections.get(ip, 0) + 1
        self.writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer, ip)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the peer went away or was too slow: nothing to answer
        except Exception:
            log.exception("unexpected error on a connection from %s; closing it", ip)
        finally:
            if task is not None:
                self._tasks.discard(task)
            self.writers.discard(writer)
            self.connections[ip] -= 1
            if not self.connections[ip]:
                del self.connections[ip]
            if writer.transport.get_write_buffer_size():
                # A reply the peer would not read: drop it rather than keep it queued.
                writer.transport.abort()
            else:
                writer.close()

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
                operation = framer.operation or 0
                await self._write(
                    writer, encode_error_ack(operation, "", error.code, error.message)
                )
                return
            try:
                reply = await self._handle(request, ip)
            except OCMError as error:
                assert error.code is not None
                answer = encode_reply(
                    Ack(message.operation, message.room, error.code, error.message)
                )
            else:
                answer = encode_reply(Ack(message.operation, message.room)) + encode_reply(reply)
            finally:
                self._after_request()
            await self._write(writer, answer)

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
            limit = deadline if deadline is not None else loop.time() + self.limits.idle_timeout
            async with asyncio.timeout_at(limit):
                data = await reader.read(_READ_SIZE)
            if not data:
                if framer.started:
                    raise asyncio.IncompleteReadError(b"", None)  # gone mid-message
                return None
            framer.feed(data)
        return message

    async def _handle(self, request: Request, ip: str) -> Reply:
        registry = self.registry
        match request:
            case CreateRoom(room, username, password):
                secret = None
                if password:
                    async with self._hashing:
                        registry.check_create(room, ip)  # no hash for a create bound to fail
                        secret = await asyncio.to_thread(PasswordHash.create, password)
                member = registry.create_room(room, username, secret, ip, self._clock())
                return self._admission(Operation.CREATE_ROOM, member)
            case JoinRoom(room, username, password):
                expected = registry.admit(room, username, ip, self._clock())
                verified = None
                if expected is not None:
                    async with self._hashing:
                        # Checked again after the wait: a guesser's queued tries are
                        # refused (rate_limited) without a hash once the IP is blocked.
                        expected = registry.admit(room, username, ip, self._clock())
                        if expected is not None and await asyncio.to_thread(
                            expected.verify, password
                        ):
                            verified = expected
                member, outgoing = registry.complete_join(
                    room, username, ip, self._clock(), verified=verified
                )
                self._send(outgoing)
                return self._admission(Operation.JOIN_ROOM, member)
            case ListRooms():
                return RoomList(tuple(registry.list_rooms()))
            case LeaveRoom(room, token):
                self._send(registry.leave(room, token, ip))
                return Left(room)
        raise ProtocolError(ErrorCode.UNKNOWN_OPERATION, "unknown request")  # pragma: no cover

    def _admission(self, operation: Operation, member: Member) -> Admission:
        room = member.room
        assert room.host is not None
        members = tuple(m.name for m in room.members.values())
        idle_timeout = self.registry.idle_timeout
        return Admission(
            operation,
            room.name,
            member.token,
            self._udp_port(),
            room.host.name,
            members,
            # Tell the client how often to heartbeat (an OCM extension); an endless
            # timeout has no JSON number, and needs no heartbeat.
            idle_timeout if math.isfinite(idle_timeout) else None,
        )
