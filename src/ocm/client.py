"""The OCM client library: join a room from a script, a bot or the terminal UI.

Two layers, like the server:

* :class:`RoomState` is the sans-I/O core. Datagram bytes in, typed events out: it
  orders by Seq (reporting gaps, dropping duplicates), keeps the member list from the
  server's NOTICE texts, and knows when the room has ended for us. No socket, no clock.
* :class:`ChatClient` is the asyncio adapter: TCRP over TCP to get in and out
  (:func:`list_rooms`, :meth:`ChatClient.create`, :meth:`ChatClient.join`, LEAVE_ROOM on
  :meth:`ChatClient.close`), one connected UDP socket for the chat, and a heartbeat task.

All bytes go through :mod:`ocm.protocol`. Refusals raise the one error tree of
:mod:`ocm.errors`: an error ACK is a :class:`~ocm.errors.ServerError` with the wire code,
an unreachable server is :class:`~ocm.errors.ConnectionLost`, a text that cannot be sent
(too long, empty, room already closed) is refused before anything leaves the machine.
This module never prints and never touches the terminal: sanitising text for display is
the front end's job (:mod:`ocm.chatview`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ocm.errors import ConnectionLost, ErrorCode, OCMError, ProtocolError, ServerError
from ocm.protocol import (
    MAX_DATAGRAM,
    SERVER_HEADER_SIZE,
    TCRP_HEADER_SIZE,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    ListRooms,
    Reply,
    Request,
    RoomInfo,
    RoomList,
    decode_header,
    decode_server_datagram,
    decode_tcrp_body,
    encode_client_datagram,
    encode_request,
    parse_reply,
)

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "ChatClient",
    "Closed",
    "ErrorReply",
    "Event",
    "Gap",
    "Message",
    "Notice",
    "RoomInfo",
    "RoomState",
    "SeqTracker",
    "format_server_address",
    "list_rooms",
    "parse_server_address",
]

# PROTOCOL.md: port 9001 for both TCP and UDP unless the server says otherwise (the
# COMPLETE of CREATE/JOIN carries the UDP port).
DEFAULT_PORT = 9001
# Section 2 asks for a heartbeat at least every idle_timeout / 3. A client cannot learn
# the server's idle timeout, so it assumes the default 60 s and beats every 15 s: three
# heartbeats in a row can be lost before the server drops us.
DEFAULT_HEARTBEAT_INTERVAL = 15.0
# One TCRP exchange (connect, ACK, COMPLETE). Creating a protected room costs the server
# one scrypt hash (~40 ms); anything near 10 s means the server is not answering.
DEFAULT_TIMEOUT = 10.0
# How long close() waits for the server's copies of our last messages before LEAVE_ROOM,
# so a message sent right before leaving is relayed, not overtaken by the leave.
DEFAULT_LINGER = 1.0

# Seq is a uint32 counting 1, 2, ..., 2**32 - 1, then 1 again (0 only on ERROR): the
# cycle has 2**32 - 1 values. Comparisons are modulo that (RFC 1982 serial numbers).
SEQ_CYCLE = 0xFFFFFFFF
# Missing Seqs remembered so a datagram that arrives late (UDP may reorder) is still
# delivered instead of being taken for a duplicate.
MAX_REMEMBERED_MISSING = 1024

# The server's NOTICE texts (ocm.registry): "<name> joined", "<name> left", "<name> timed
# out". Names may contain spaces, so the name is everything before the suffix.
_NOTICE = re.compile(r"(?P<name>.+) (?P<what>joined|left|timed out)", re.DOTALL)
# The relay's answer to a datagram whose token it does not know (ocm.relay): the room was
# closed or we were dropped. It may be cut to the size of our datagram, so match a prefix.
_UNKNOWN_TOKEN = "unknown token"


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
# Events
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Chat text from ``sender`` (our own messages come back too: the server's copy
    is the delivery confirmation)."""

    sender: str
    text: str
    seq: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A server line about the room: ``"bob joined"``, ``"bob left"``, ``"bob timed out"``."""

    text: str
    seq: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The room is over for us; always the last event. ``reason`` is the server's text
    (``"host alice left; the room is closed"``, ``"server shutting down"``) or says why
    the client concluded it (token no longer valid, server unreachable)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The server rejected one of our datagrams; ``text`` says why."""

    text: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Datagrams were lost: we expected Seq ``expected`` and got ``got``."""

    expected: int
    got: int

    @property
    def missed(self) -> int:
        return (self.got - self.expected) % SEQ_CYCLE


Event = Message | Notice | Closed | ErrorReply | Gap


# ---------------------------------------------------------------------------
# The sans-I/O core
# ---------------------------------------------------------------------------


def _next_seq(seq: int) -> int:
    return seq % SEQ_CYCLE + 1


class SeqTracker:
    """Orders one room's Seq numbers: in order, gap, late, or duplicate.

    The first Seq seen is the baseline (a member who joins late never sees Seq 1).
    """

    def __init__(self, max_missing: int = MAX_REMEMBERED_MISSING) -> None:
        self.last: int | None = None
        self.max_missing = max_missing
        self._missing: dict[int, None] = {}  # insertion-ordered set: oldest first

    def accept(self, seq: int) -> tuple[bool, Gap | None]:
        """Whether to deliver a datagram with ``seq``, and the gap it reveals if any."""
        last = self.last
        if last is None:
            self.last = seq
            return True, None
        ahead = (seq - last) % SEQ_CYCLE
        if ahead == 0:
            return False, None  # the same datagram again
        if ahead > SEQ_CYCLE // 2:  # behind us: a duplicate, or a late one we missed
            if seq in self._missing:
                del self._missing[seq]
                return True, None
            return False, None
        self.last = seq
        if ahead == 1:
            return True, None
        expected = _next_seq(last)
        # Remember the newest missing numbers only: a huge gap must not grow memory.
        for offset in range(max(1, ahead - self.max_missing), ahead):
            self._missing[(last + offset - 1) % SEQ_CYCLE + 1] = None
        while len(self._missing) > self.max_missing:
            del self._missing[next(iter(self._missing))]
        return True, Gap(expected, seq)


class RoomState:
    """What one member knows about its room, updated by every datagram it receives.

    ``members`` starts from the admission and follows the NOTICE texts; ``unconfirmed``
    counts our messages whose copy has not come back yet.
    """

    def __init__(self, name: str, host: str, members: Sequence[str]) -> None:
        self.name = name
        self.host = host
        self.members: list[str] = list(members)
        self.ended: Closed | None = None
        self.leaving = False  # we sent LEAVE_ROOM
        self.unconfirmed = 0
        self.seq = SeqTracker()
        self.malformed = 0  # datagrams we could not decode (the server broke the protocol)

    def sent(self) -> None:
        self.unconfirmed += 1

    def end(self, reason: str) -> list[Event]:
        """The room is over (locally decided): the last event, once."""
        if self.ended is not None:
            return []
        self.ended = Closed(reason)
        return [self.ended]

    def datagram_received(self, data: bytes) -> list[Event]:
        if self.ended is not None:
            return []
        try:
            datagram = decode_server_datagram(data)
        except ProtocolError:
            self.malformed += 1
            return []
        if datagram.kind is Kind.ERROR:
            self._confirmed()  # an ERROR answers one of our datagrams
            if datagram.text.startswith(_UNKNOWN_TOKEN):
                return self.end(f"no longer in the room (the server says: {datagram.text})")
            return [ErrorReply(datagram.text)]
        events: list[Event] = []
        if datagram.seq:  # section 2: only ERROR carries 0; be lenient and deliver it
            deliver, gap = self.seq.accept(datagram.seq)
            if not deliver:
                return []
            if gap is not None:
                events.append(gap)
        match datagram.kind:
            case Kind.MESSAGE:
                if datagram.sender.casefold() == self.name.casefold():
                    self._confirmed()
                events.append(Message(datagram.sender, datagram.text, datagram.seq))
            case Kind.NOTICE:
                self._follow(datagram.text)
                events.append(Notice(datagram.text, datagram.seq))
            case Kind.CLOSED:
                if self.leaving:  # the CLOSED our own (host's) leave caused: not news
                    self.ended = Closed(datagram.text)
                    return []
                events += self.end(datagram.text)
        return events

    def _confirmed(self) -> None:
        self.unconfirmed = max(0, self.unconfirmed - 1)

    def _follow(self, text: str) -> None:
        match = _NOTICE.fullmatch(text)
        if match is None:
            return
        name = match["name"]
        folded = name.casefold()
        present = [m for m in self.members if m.casefold() == folded]
        if match["what"] == "joined":
            if not present:
                self.members.append(name)
        else:
            for member in present:
                self.members.remove(member)


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
    header = decode_header(await reader.readexactly(TCRP_HEADER_SIZE))
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
        *,
        heartbeat_interval: float,
        timeout: float,
        linger: float,
    ) -> None:
        self.server = address
        self.room = admission.room
        self.name = name
        self.token = admission.token
        self.udp_port = admission.udp_port
        self.heartbeat_interval = heartbeat_interval
        self.timeout = timeout
        self.linger = linger
        self._link = link
        self._state = RoomState(name, admission.host, admission.members)
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._confirmed = asyncio.Event()
        self._confirmed.set()
        self._closing = False
        self._close_done = asyncio.Event()
        self._stream_ended = False  # the end marker is queued
        self._finished = False  # the iterator has returned its last event

    # -- entering ----------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        linger: float = DEFAULT_LINGER,
    ) -> ChatClient:
        """Create ``room`` (with ``password``, or open) and enter it as its host."""
        return await cls._enter(
            server,
            CreateRoom(room, name, password or None),
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            linger=linger,
        )

    @classmethod
    async def join(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        linger: float = DEFAULT_LINGER,
    ) -> ChatClient:
        """Join the existing ``room`` as ``name``."""
        return await cls._enter(
            server,
            JoinRoom(room, name, password or None),
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            linger=linger,
        )

    @classmethod
    async def _enter(
        cls,
        server: str | tuple[str, int],
        request: CreateRoom | JoinRoom,
        *,
        heartbeat_interval: float,
        timeout: float,
        linger: float,
    ) -> ChatClient:
        if not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
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
        # The server trims the name; ours must match its copy to recognise our messages.
        name = request.username.strip()
        client = cls(
            address,
            reply,
            name,
            link,
            heartbeat_interval=heartbeat_interval,
            timeout=timeout,
            linger=linger,
        )
        try:
            await client._open_udp()
        except OSError as error:
            # We are in the room on the server: leave, or a host would keep it open
            # until its idle timeout.
            with contextlib.suppress(OCMError, OSError):
                await client._leave()
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
        """Messages sent whose copy has not come back from the server yet."""
        return self._state.unconfirmed

    @property
    def max_text_bytes(self) -> int:
        """The longest text (UTF-8 bytes) :meth:`send` accepts for this member and room.

        Two limits of section 2: our datagram (2 + room + token + text) and the relayed
        one (6 + sender name + text) must each fit in 4096 bytes.
        """
        ours = MAX_DATAGRAM - 2 - len(self.room.encode()) - len(self.token.encode())
        relayed = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(self.name.encode())
        return min(ours, relayed)

    def check_text(self, text: str) -> bytes:
        """The UTF-8 of ``text`` if :meth:`send` would take it; else the error it raises.

        Too-long text is refused, never split: splitting would interleave the parts with
        other members' messages and cut words or characters.
        """
        if not text:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "an empty message cannot be sent")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the message is not valid Unicode") from None
        limit = self.max_text_bytes
        if len(data) > limit:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"message too long: {len(data)} bytes, at most {limit} (not sent)",
            )
        return data

    # -- sending -----------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send chat text to everyone in the room (us included).

        Raises ProtocolError (``too_large``, ``bad_request``) for text that cannot be
        sent, and ConnectionLost once the room is over for us.
        """
        self.check_text(text)
        ended = self._state.ended
        if ended is not None or self._closing:
            why = ended.reason if ended is not None else "left the room"
            raise ConnectionLost(f"cannot send, no longer in the room: {why}")
        self._send_datagram(text)
        self._state.sent()
        self._confirmed.clear()

    def _send_datagram(self, text: str) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        self._transport.sendto(encode_client_datagram(ClientDatagram(self.room, self.token, text)))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._send_datagram("")

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server's copy of every message sent.

        True when all came back. A copy that never comes (the datagram was lost) ends the
        wait at the timeout.
        """
        if self._state.ended is not None:
            return self._state.unconfirmed == 0
        try:
            async with asyncio.timeout(timeout):
                await self._confirmed.wait()
        except TimeoutError:
            return False
        return True

    # -- receiving ---------------------------------------------------------------

    def _feed(self, events: list[Event]) -> None:
        for event in events:
            self._events.put_nowait(event)
        if self._state.unconfirmed == 0:
            self._confirmed.set()
        if self._state.ended is not None:
            self._stop_heartbeat()
            self._end_stream()

    def _end_stream(self) -> None:
        self._confirmed.set()  # nothing more will be confirmed
        if not self._stream_ended:
            self._stream_ended = True
            self._events.put_nowait(None)  # the end of the stream, after any Closed

    def __aiter__(self) -> ChatClient:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        event = await self._events.get()
        if event is None:
            self._finished = True
            self._events.put_nowait(None)  # for any other reader
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
        try:
            if self._state.ended is None:
                if self._state.unconfirmed:
                    await self.flush(self.linger)
                self._state.leaving = True
                with contextlib.suppress(OCMError, OSError):
                    await self._leave()
                # Set directly, not fed: leaving ends the iteration without a Closed.
                self._state.ended = self._state.ended or Closed("left the room")
            self._stop_heartbeat()
            if self._heartbeat is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._heartbeat
            if self._transport is not None:
                self._transport.close()
            self._end_stream()
        finally:
            self._close_done.set()

    async def _leave(self) -> None:
        await _call(
            self.server, LeaveRoom(self.room, self.token), timeout=self.timeout, link=self._link
        )

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None and not self._heartbeat.done():
            self._heartbeat.cancel()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.ended or self._closing else "open"
        return f"<ChatClient {self.name!r} in {self.room!r} on {self.server} ({state})>"
