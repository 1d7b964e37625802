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
import re
import socket
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from ocm.errors import ConnectionLost, ErrorCode, OCMError, ProtocolError, ServerError
from ocm.protocol import (
    MAX_DATAGRAM,
    MAX_REPLY_PAYLOAD,
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

# Seq is a uint32 counting 1, 2, ..., 2**32 - 1, then 1 again (0 only on ERROR): the
# cycle has 2**32 - 1 values. Comparisons are modulo that (RFC 1982 serial numbers).
SEQ_CYCLE = 0xFFFFFFFF
# Missing Seqs remembered so a datagram that arrives late (UDP may reorder) is still
# delivered instead of being taken for a duplicate.
MAX_REMEMBERED_MISSING = 1024
# The first Seq a member sees is its baseline, but the datagram sent just before it may
# arrive just after it. Every datagram we get was sent after we joined, so a number a
# little below the baseline is such a late one, never a duplicate: this many are taken.
BASELINE_SLACK = 32

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


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Our message ``text`` did not come back from the server within the confirm timeout:
    most likely lost on the way (UDP does not retransmit). Nobody saw it; send it again
    if it matters."""

    text: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """The reader fell behind: the ``dropped`` oldest events were discarded unread."""

    dropped: int


Event = Message | Notice | Closed | ErrorReply | Gap | Undelivered | Overflow


# ---------------------------------------------------------------------------
# The sans-I/O core
# ---------------------------------------------------------------------------


def _next_seq(seq: int) -> int:
    return seq % SEQ_CYCLE + 1


def _previous_seq(seq: int, back: int) -> int:
    return (seq - back - 1) % SEQ_CYCLE + 1


class SeqTracker:
    """Orders one room's Seq numbers: in order, gap, late, or duplicate.

    The first Seq seen is the baseline (a member who joins late never sees Seq 1). The
    :data:`BASELINE_SLACK` numbers below it count as missing, so one that was overtaken
    by the baseline is delivered late rather than dropped as a duplicate.
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
            self._remember(_previous_seq(seq, back) for back in range(BASELINE_SLACK, 0, -1))
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
        # Remember the newest missing numbers only: a huge gap must not grow memory.
        skipped = range(max(1, ahead - self.max_missing), ahead)
        self._remember((last + offset - 1) % SEQ_CYCLE + 1 for offset in skipped)
        return True, Gap(_next_seq(last), seq)

    def _remember(self, missing: Iterable[int]) -> None:
        """Note Seqs that may still arrive late, oldest first; forget the oldest beyond
        ``max_missing``."""
        for seq in missing:
            self._missing[seq] = None
        while len(self._missing) > self.max_missing:
            del self._missing[next(iter(self._missing))]


class RoomState:
    """What one member knows about its room, updated by every datagram it receives.

    ``members`` starts from the admission and follows the NOTICE texts; ``pending`` holds
    our messages whose copy has not come back yet, each with the time (on the adapter's
    clock) after which :meth:`expire` reports it :class:`Undelivered`.
    """

    def __init__(self, name: str, host: str, members: Sequence[str]) -> None:
        self.name = name
        self.host = host
        self.members: list[str] = list(members)
        self.ended: Closed | None = None
        self.leaving = False  # we sent LEAVE_ROOM
        self.pending: deque[tuple[str, float]] = deque()  # (text, deadline), oldest first
        self.undelivered = 0  # messages reported Undelivered so far
        self.seq = SeqTracker()
        self.malformed = 0  # datagrams we could not decode (the server broke the protocol)

    @property
    def unconfirmed(self) -> int:
        return len(self.pending)

    def sent(self, text: str, deadline: float) -> None:
        """We sent ``text``; its copy should be back by ``deadline``."""
        self.pending.append((text, deadline))

    def expire(self, now: float) -> list[Event]:
        """Our messages whose copy is overdue at ``now``: given up for lost."""
        events: list[Event] = []
        # Deadlines grow in sending order (one timeout for all), so the overdue come first.
        while self.pending and self.pending[0][1] <= now and self.ended is None:
            self.undelivered += 1
            events.append(Undelivered(self.pending.popleft()[0]))
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next, or None."""
        if self.ended is not None or not self.pending:
            return None
        return self.pending[0][1]

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
            # The refusal of one of our messages; which one it does not say: the oldest.
            if self.pending:
                self.pending.popleft()
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
                    self._confirmed(datagram.text)
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

    def _confirmed(self, text: str) -> None:
        # Matched by text, not taken in order: when one message is lost, the next copy
        # must not confirm it in its place. A copy that comes after its message was
        # given up for lost matches nothing.
        for index, (sent, _) in enumerate(self.pending):
            if sent == text:
                del self.pending[index]
                return

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
        self.timeout = settled["timeout"]
        self.linger = settled["linger"]
        self.window = settled["window"]
        self.confirm_timeout = settled["confirm_timeout"]
        self.max_events = settled["max_events"]
        self._link = link
        self._state = RoomState(name, admission.host, admission.members)
        self._events: deque[Event] = deque()
        self._overflowed = 0  # events dropped since the reader last took one
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
        # The server trims the name; ours must match its copy to recognise our messages.
        client = cls(address, reply, request.username.strip(), link, **options)
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
        """The longest text (UTF-8 bytes) :meth:`send` accepts for this member and room.

        Two limits of section 2: our datagram (2 + room + token + text) and the relayed
        one (6 + sender name + text) must each fit in 4096 bytes.
        """
        ours = MAX_DATAGRAM - 2 - len(self.room.encode()) - len(self.token.encode())
        relayed = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(self.name.encode())
        return min(ours, relayed)

    def fit(self, text: str) -> str:
        """``text`` cut to the longest prefix :meth:`send` accepts, on a character
        boundary: for a bot that quotes others and must never fail on a long quote."""
        return text.encode("utf-8")[: self.max_text_bytes].decode("utf-8", errors="ignore")

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
        for event in events:
            if len(self._events) >= self.max_events:
                # Nobody reads (a send-only bot): forget the oldest, say how many.
                self._events.popleft()
                self._overflowed += 1
            self._events.append(event)
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
        if self._overflowed:  # the dropped were the oldest: report them first
            dropped, self._overflowed = self._overflowed, 0
            return Overflow(dropped)
        if self._events:
            return self._events.popleft()
        raise StopAsyncIteration

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
                with contextlib.suppress(asyncio.CancelledError):
                    await self._heartbeat
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
