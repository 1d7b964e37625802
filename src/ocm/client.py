"""The OCM client library: join a room from a script, a bot or the terminal UI.

This module is the asyncio adapter around the sans-I/O core of :mod:`ocm.session`
(:class:`~ocm.session.RoomState`: Seq order, members, confirmations; the event queue;
the text limits), the same split as the server's registry under its adapters.
:class:`ChatClient` speaks TCRP over TCP to get in and out (:func:`list_rooms`,
:meth:`ChatClient.create`, :meth:`ChatClient.join`, LEAVE_ROOM on
:meth:`ChatClient.close`), holds one connected UDP socket for the chat, a heartbeat task
and the timer for overdue copies, and reads the loop's clock for the core. The event
types and the core are re-exported here: ``from ocm.client import ChatClient, Message``
is all a script needs.

All bytes go through :mod:`ocm.protocol`. Refusals raise the one error tree of
:mod:`ocm.errors`: an error ACK is a :class:`~ocm.errors.ServerError` with the wire code,
an unreachable server is :class:`~ocm.errors.ConnectionLost`, a text that cannot be sent
(too long, empty, room already closed) is refused before anything leaves the machine.

UDP has no flow control of its own, so the client brings a little: at most ``window`` of
our messages are in flight (sent, the server's copy not back yet) and :meth:`ChatClient.send`
waits for room in the window. A copy that has not come back after ``confirm_timeout``
seconds is reported as :class:`Undelivered`. Events wait for their reader in a bounded
buffer; a reader that falls ``max_events`` behind loses the oldest, reported as
:class:`Overflow`.
This module never prints and never touches the terminal: sanitising text for display is
the front end's job (:mod:`ocm.chatview`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from ocm.errors import ConnectionLost, ErrorCode, OCMError, ProtocolError, ServerError
from ocm.protocol import (
    MAX_REPLY_PAYLOAD,
    TCRP_HEADER_SIZE,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    ListRooms,
    Reply,
    Request,
    RoomInfo,
    RoomList,
    decode_header,
    decode_tcrp_body,
    encode_client_datagram,
    encode_request,
    parse_reply,
)
from ocm.session import (
    Closed,
    ErrorReply,
    Event,
    EventQueue,
    Gap,
    Message,
    Notice,
    Overflow,
    RoomState,
    SeqTracker,
    Undelivered,
    encode_text,
    fit_text,
    text_limit,
)

__all__ = [
    "DEFAULT_CONFIRM_TIMEOUT",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "ChatClient",
    "ChatOptions",
    "Closed",
    "ErrorReply",
    "Event",
    "Gap",
    "Message",
    "Notice",
    "Overflow",
    "RoomInfo",
    "RoomState",
    "SeqTracker",
    "Undelivered",
    "format_server_address",
    "list_rooms",
    "parse_server_address",
]

# PROTOCOL.md: port 9001 for both TCP and UDP unless the server says otherwise (the
# COMPLETE of CREATE/JOIN carries the UDP port).
DEFAULT_PORT = 9001
# Section 2 asks for a heartbeat at least every idle_timeout / 3. Without word from the
# server the client assumes the default 60 s and beats every 15 s: three heartbeats in a
# row can be lost before the server drops us. A server that sends its idle timeout in the
# admission (an OCM extension) gets a heartbeat every idle_timeout / 3 if that is sooner.
DEFAULT_HEARTBEAT_INTERVAL = 15.0
# One TCRP exchange (connect, ACK, COMPLETE). Creating a protected room costs the server
# one scrypt hash (~40 ms); anything near 10 s means the server is not answering.
DEFAULT_TIMEOUT = 10.0
# How long close() waits for the server's copies of our last messages before LEAVE_ROOM,
# so a message sent right before leaving is relayed, not overtaken by the leave.
DEFAULT_LINGER = 1.0
# Our messages in flight at most. Without a bound a script writes datagrams faster than
# the server (or the receivers) drain their socket buffers, and the kernel drops them
# silently (20,000 piped lines once delivered 6,732). 32 per round trip is thousands of
# messages a second on a LAN, far more than people type, and no socket buffer on the way
# ever holds more than 32 of ours.
DEFAULT_WINDOW = 32
# A copy that has not come back after this long is reported lost (Undelivered). A round
# trip is milliseconds on a LAN and a few hundred on a bad mobile link; 2 s is well past
# both, and short enough that a person still remembers what they typed.
DEFAULT_CONFIRM_TIMEOUT = 2.0
# The UDP receive buffer we ask for. Our window paces what we send, but nothing paces
# the others: while this process is not scheduled (other processes busy on the same
# cores), the room's datagrams wait in this buffer, and the kernel drops what does not
# fit (reported as a Gap). The usual default, 208 KiB, holds about 200 short datagrams
# (the kernel counts ~1 KiB of overhead each); 1 MiB holds five times as many. The
# system may grant less (Linux: net.core.rmem_max).
RECEIVE_BUFFER = 1024 * 1024
# Events waiting for the reader at most. A send-only bot never reads its events; without
# a bound a busy room would grow its memory forever. 10,000 is minutes of a busy room.
DEFAULT_MAX_EVENTS = 10_000


# ---------------------------------------------------------------------------
# Server addresses
# ---------------------------------------------------------------------------


def parse_server_address(
    server: str | tuple[str, int], default_port: int = DEFAULT_PORT
) -> tuple[str, int]:
    """``"HOST[:PORT]"`` or ``(host, port)`` to ``(host, port)``.

    IPv6 addresses take brackets when a port follows (``"[::1]:9001"``); a bare address
    with several colons (``"::1"``) is taken whole, on the default port. An empty host
    means ``localhost``. Raises ValueError with a readable message.
    """
    if isinstance(server, tuple):
        host, port = server
    else:
        text = server.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f'missing "]" in server address "{server}"')
            host, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f'unexpected "{rest}" after "]" in "{server}"')
            port_text = rest[1:] if rest else ""
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, ""
        if port_text:
            if not port_text.isdigit():
                raise ValueError(f'"{port_text}" is not a port number')
            port = int(port_text)
        elif text.endswith(":"):
            raise ValueError(f'missing port after ":" in "{server}"')
        else:
            port = default_port
    host = host or "localhost"
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return host, port


def format_server_address(address: tuple[str, int]) -> str:
    """The inverse of :func:`parse_server_address`: ``host:port`` or ``[v6]:port``."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------
# TCRP over TCP
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Link:
    """Both ends of the TCP connection that obtained a token: the token is bound to our
    IP as the server saw it, so UDP and LEAVE_ROOM must use the same pair."""

    server_ip: str
    local_ip: str


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    # A reply may be far larger than any request: LIST_ROOMS of a busy server is megabytes.
    header = decode_header(
        await reader.readexactly(TCRP_HEADER_SIZE), max_payload=MAX_REPLY_PAYLOAD
    )
    return parse_reply(decode_tcrp_body(header, await reader.readexactly(header.body_size)))


async def _call(
    address: tuple[str, int],
    request: Request,
    *,
    timeout: float,
    link: _Link | None = None,
) -> tuple[Reply, _Link]:
    """One TCRP exchange on a new connection: the COMPLETE, or an exception."""
    where = format_server_address(address)
    host, port = address if link is None else (link.server_ip, address[1])
    local = None if link is None else (link.local_ip, 0)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, local_addr=local)
    except (OSError, TimeoutError) as error:
        raise ConnectionLost(f"cannot reach server {where} ({_reason(error)})") from None
    try:
        peer, mine = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        writer.write(encode_request(request))
        async with asyncio.timeout(timeout):
            await writer.drain()
            ack = await _read_reply(reader)
            if not isinstance(ack, Ack):
                raise ProtocolError(ErrorCode.BAD_REQUEST, "the server skipped its ACK")
            if ack.error is not None:
                raise ServerError(ack.error, ack.message or str(ack.error))
            complete = await _read_reply(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        raise ConnectionLost(f"server {where} closed the connection") from None
    except TimeoutError:
        raise ConnectionLost(f"no answer from server {where} within {timeout:g} s") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return complete, _Link(str(peer[0]), str(mine[0]))


async def list_rooms(
    server: str | tuple[str, int], *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[RoomInfo, ...]:
    """The rooms on ``server`` (LIST_ROOMS), sorted by name as the server sends them."""
    reply, _ = await _call(parse_server_address(server), ListRooms(), timeout=timeout)
    if not isinstance(reply, RoomList):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "LIST_ROOMS answered with another reply")
    return reply.rooms


# ---------------------------------------------------------------------------
# The asyncio adapter
# ---------------------------------------------------------------------------


class _Endpoint(asyncio.DatagramProtocol):
    """The UDP socket's callbacks, handed straight to the client."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._feed(self.client._state.datagram_received(data))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on our connected socket: nothing listens on the server's
        # UDP port any more, so the server (and our token with it) is gone.
        # (Windows reports it as a reset.)
        if isinstance(exc, ConnectionRefusedError | ConnectionResetError):
            self.client._feed(self.client._state.end("lost contact with the server"))


class ChatOptions(TypedDict, total=False):
    """The keyword options of :meth:`ChatClient.create` and :meth:`ChatClient.join`;
    each must be positive."""

    heartbeat_interval: float  # seconds between heartbeats
    timeout: float  # seconds for each TCP exchange (enter, leave)
    linger: float  # seconds close() waits for the copies of our last messages
    window: int  # our messages in flight at most: send() waits beyond
    confirm_timeout: float  # seconds before a message without its copy is Undelivered
    max_events: int  # events kept for the reader at most: the oldest go first


_DEFAULT_OPTIONS: ChatOptions = {
    "heartbeat_interval": DEFAULT_HEARTBEAT_INTERVAL,
    "timeout": DEFAULT_TIMEOUT,
    "linger": DEFAULT_LINGER,
    "window": DEFAULT_WINDOW,
    "confirm_timeout": DEFAULT_CONFIRM_TIMEOUT,
    "max_events": DEFAULT_MAX_EVENTS,
}


def _settled(options: ChatOptions) -> ChatOptions:
    """``options`` with the defaults filled in; ValueError for a value not above 0."""
    unknown = set(options) - set(_DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option {sorted(unknown)[0]!r}")
    settled: ChatOptions = {**_DEFAULT_OPTIONS, **options}
    for key, value in settled.items():
        if not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"{key} must be positive, got {value!r}")
    return settled


def _admitted_name(request: CreateRoom | JoinRoom, admission: Admission) -> str:
    """Our name as the server keeps it: the server's copies of our messages carry that
    spelling, and only it recognises them as ours.

    The server trims the name its own way (U+0020 only, not every Unicode space), so the
    client takes the name from the admission rather than trimming it again: the host of
    a room we created, the last of the members of a room we joined (the server lists
    them in join order, the new member last).
    """
    if isinstance(request, CreateRoom):
        return admission.host
    if admission.members:
        return admission.members[-1]
    return request.username.strip(" ")  # a server that lists nobody: trim as it does


class ChatClient:
    """One member of one room. Make it with :meth:`create` or :meth:`join`.

    Iterate it (``async for event in chat``) for :data:`Event` values; the iteration
    ends after :class:`Closed` or once :meth:`close` is called. Use it as an async
    context manager to leave the room on the way out.
    """

    def __init__(
        self,
        address: tuple[str, int],
        admission: Admission,
        name: str,
        link: _Link,
        **options: Unpack[ChatOptions],
    ) -> None:
        settled = _settled(options)
        self.server = address
        self.room = admission.room
        self.name = name
        self.token = admission.token
        self.udp_port = admission.udp_port
        self.heartbeat_interval = settled["heartbeat_interval"]
        if admission.idle_timeout is not None:
            # Section 2: a heartbeat at least every idle_timeout / 3. A server that says
            # its timeout (an OCM extension) may use a shorter one than our default.
            self.heartbeat_interval = min(self.heartbeat_interval, admission.idle_timeout / 3)
        self.timeout = settled["timeout"]
        self.linger = settled["linger"]
        self.window = settled["window"]
        self.confirm_timeout = settled["confirm_timeout"]
        self.max_events = settled["max_events"]
        self._link = link
        self._state = RoomState(name, admission.host, admission.members)
        self._events = EventQueue(self.max_events)
        self._changed = asyncio.Event()  # replaced by a new one at every change
        self._transport: asyncio.DatagramTransport | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        self._closing = False
        self._close_done = asyncio.Event()
        self._stream_ended = False  # no event will be added any more

    # -- entering ----------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatClient:
        """Create ``room`` (with ``password``, or open) and enter it as its host."""
        return await cls._enter(server, CreateRoom(room, name, password or None), options)

    @classmethod
    async def join(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        **options: Unpack[ChatOptions],
    ) -> ChatClient:
        """Join the existing ``room`` as ``name``."""
        return await cls._enter(server, JoinRoom(room, name, password or None), options)

    @classmethod
    async def _enter(
        cls, server: str | tuple[str, int], request: CreateRoom | JoinRoom, options: ChatOptions
    ) -> ChatClient:
        timeout = _settled(options)["timeout"]  # refuses bad options before any request
        address = parse_server_address(server)
        exchange = asyncio.ensure_future(_call(address, request, timeout=timeout))
        try:
            reply, link = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            # Cancelled (Ctrl-C) after the request left: the server may have let us in.
            # Finish the exchange and leave, or we would stay in the room as a ghost
            # (and a host's room would stay open) until the idle timeout.
            with contextlib.suppress(OCMError, OSError):
                admitted, link = await exchange
                if isinstance(admitted, Admission):
                    leave = LeaveRoom(admitted.room, admitted.token)
                    await _call(address, leave, timeout=timeout, link=link)
            raise
        if not isinstance(reply, Admission):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "CREATE/JOIN answered with another reply")
        client = cls(address, reply, _admitted_name(request, reply), link, **options)
        try:
            await client._open_udp()
        except (OSError, asyncio.CancelledError) as error:
            # We are in the room on the server: leave, or a host would keep it open
            # (and a member would stay as a ghost) until the idle timeout.
            client._stop_timers()
            if client._transport is not None:
                client._transport.close()
            with contextlib.suppress(OCMError, OSError):
                await client._leave()
            if isinstance(error, asyncio.CancelledError):
                raise
            where = format_server_address(address)
            raise ConnectionLost(
                f"cannot open a UDP socket to server {where} ({_reason(error)})"
            ) from None
        return client

    async def _open_udp(self) -> None:
        loop = asyncio.get_running_loop()
        # Section 1: the token is bound to the IP of the TCP connection. Sending from the
        # same local address to the same server address keeps that IP.
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self),
            local_addr=(self._link.local_ip, 0),
            remote_addr=(self._link.server_ip, self.udp_port),
        )
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # a bigger buffer helps, but is not needed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._send_datagram("")  # section 2: the first heartbeat right after CREATE/JOIN
        self._heartbeat = asyncio.create_task(self._beat(), name=f"ocm-heartbeat-{self.room}")

    # -- state ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._state.host

    @property
    def is_host(self) -> bool:
        return self._state.host.casefold() == self.name.casefold()

    @property
    def members(self) -> tuple[str, ...]:
        """Everyone in the room, us included, in the order they arrived."""
        return tuple(self._state.members)

    @property
    def closed(self) -> Closed | None:
        """Why the room is over for us, or None while we are in it."""
        return self._state.ended

    @property
    def unconfirmed(self) -> int:
        """Messages in flight: sent, their copy not back from the server yet."""
        return self._state.unconfirmed

    @property
    def undelivered(self) -> int:
        """Messages given up for lost so far (each was an :class:`Undelivered` event)."""
        return self._state.undelivered

    @property
    def max_text_bytes(self) -> int:
        """The longest text (UTF-8 bytes) :meth:`send` accepts for this member and room
        (:func:`~ocm.session.text_limit`)."""
        return text_limit(self.room, self.token, self.name)

    def fit(self, text: str) -> str:
        """``text`` cut to the longest prefix :meth:`send` accepts, on a character
        boundary: for a bot that quotes others and must never fail on a long quote."""
        return fit_text(text, self.max_text_bytes)

    def check_text(self, text: str) -> bytes:
        """The UTF-8 of ``text`` if :meth:`send` would take it; else the error it raises
        (:func:`~ocm.session.encode_text`: too-long text is refused, never split)."""
        return encode_text(text, self.max_text_bytes)

    # -- sending -----------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send chat text to everyone in the room (us included).

        First waits while ``window`` of our messages are in flight: until a copy comes
        back, or the oldest is given up as :class:`Undelivered` (``confirm_timeout``
        after it was sent), so the wait is bounded. Raises ProtocolError (``too_large``,
        ``bad_request``) for text that cannot be sent, and ConnectionLost once the room
        is over for us.
        """
        self.check_text(text)
        self._check_open()
        # Yield at least once: a script sending from a tight loop must not starve the
        # socket that brings the confirmations (and everyone else's messages) in.
        await asyncio.sleep(0)
        await self._wait_until(lambda: self._state.unconfirmed < self.window or self._over)
        self._check_open()
        self._send_datagram(text)
        self._state.sent(text, asyncio.get_running_loop().time() + self.confirm_timeout)
        self._arm_expiry()

    @property
    def _over(self) -> bool:
        return self._state.ended is not None or self._closing

    def _check_open(self) -> None:
        if self._over:
            ended = self._state.ended
            why = ended.reason if ended is not None else "left the room"
            raise ConnectionLost(f"cannot send, no longer in the room: {why}")

    def _send_datagram(self, text: str) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.sendto(encode_client_datagram(ClientDatagram(self.room, self.token, text)))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._send_datagram("")

    def _arm_expiry(self) -> None:
        """A timer for the next overdue copy, unless one is set (it is the earlier)."""
        deadline = self._state.next_deadline()
        if deadline is None or self._expiry is not None:
            return
        self._expiry_at = deadline
        self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        # The loop may run a timer a clock tick early; it is due all the same.
        now = max(asyncio.get_running_loop().time(), self._expiry_at)
        self._feed(self._state.expire(now))
        self._arm_expiry()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server's copy of every message sent.

        True when none is in flight any more: each copy came back, or its message was
        given up as :class:`Undelivered` (counted in :attr:`undelivered`). False at the
        timeout, or at once when the room is over with messages still in flight.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._wait_until(
                    lambda: not self._state.pending or self._state.ended is not None
                )
        except TimeoutError:
            return False
        return not self._state.pending

    # -- receiving ---------------------------------------------------------------

    def _feed(self, events: list[Event]) -> None:
        self._events.extend(events)
        if self._state.ended is not None:
            self._stop_timers()
            self._stream_ended = True
        self._notify()

    def _notify(self) -> None:
        """Wake every waiter: the window, flush, the reader (each checks its own need)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    def __aiter__(self) -> ChatClient:
        return self

    async def __anext__(self) -> Event:
        await self._wait_until(lambda: bool(self._events) or self._stream_ended)
        event = self._events.take()
        if event is None:
            raise StopAsyncIteration
        return event

    # -- leaving -----------------------------------------------------------------

    async def close(self) -> None:
        """Leave the room (LEAVE_ROOM) and stop. Idempotent; never raises for the network.

        Waits up to ``linger`` seconds for the copies of our last messages first, so the
        leave does not overtake them. The host's leave closes the room for everyone.
        """
        if self._closing:
            await self._close_done.wait()
            return
        self._closing = True
        self._notify()  # a send waiting for the window gives up
        try:
            if self._state.ended is None:
                if self._state.pending:
                    await self.flush(self.linger)
                self._state.leaving = True
                with contextlib.suppress(OCMError, OSError):
                    await self._leave()
                # Set directly, not fed: leaving ends the iteration without a Closed.
                self._state.ended = self._state.ended or Closed("left the room")
            self._stop_timers()
            if self._heartbeat is not None:
                # Wait for the heartbeat to stop without awaiting it directly: awaiting a
                # cancelled task raises CancelledError, and suppressing that would also
                # swallow a cancellation aimed at the task running close().
                self._heartbeat.cancel()
                await asyncio.wait({self._heartbeat})
            if self._transport is not None:
                self._transport.close()
            self._stream_ended = True
            self._notify()
        finally:
            self._close_done.set()

    async def _leave(self) -> None:
        await _call(
            self.server, LeaveRoom(self.room, self.token), timeout=self.timeout, link=self._link
        )

    def _stop_timers(self) -> None:
        if self._heartbeat is not None and not self._heartbeat.done():
            self._heartbeat.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.ended or self._closing else "open"
        return f"<ChatClient {self.name!r} in {self.room!r} on {self.server} ({state})>"
