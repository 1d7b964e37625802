"""The client's asyncio adapter: :class:`ChatClient`, one member of one room.

Around the sans-I/O cores of :mod:`ocm.client.session` (Seq order, members,
confirmations, the heartbeat schedule; the event queue; the text limits) and
:mod:`ocm.client.delivery` (the delivery extension), the same split
as the server's registry under its adapters. :class:`ChatClient` enters and leaves over
TCRP (:mod:`ocm.client.exchange`), carries the chat on one connected UDP socket (or a
TCP tunnel, below), and has one timer that it re-arms from the core's
``next_deadline()`` after every change. Only this module reads the clock (and draws the
random numbers that jitter the heartbeat).

It asks for the delivery extension (section 3 of docs/protocol.md) when it enters,
unless the ``delivery`` option is False. When the server grants it, the core is a
:class:`DeliveryState`: every message of the room arrives once and in order (gaps are
repaired), ours are resent until the server confirms them, a restarted server ends the
session at its first answer, and :meth:`ChatClient.close` leaves with a LEAVE datagram.
The adapter sends whatever datagrams the core makes and feeds it what arrives.

It also asks for section 4's ``tunnel`` and ``resume``. When the core doubts the path
(``DeliveryState.path_trouble``: no answer since it was taken, two silent heartbeat
intervals, our token refused from this address, a send that says our network is gone,
a tunnel that closed), the adapter looks into it over TCP (:meth:`ChatClient._recover`):
a new connection from wherever we are now, RESUME, then UDP again or a tunnel on that
connection. If TCP fails too, within one more heartbeat interval, the server is gone:
three intervals after its last word.

Otherwise (a version 1 server, or ``delivery=False``) the core is a
:class:`RoomState` and everything is version 1: the adapter sends heartbeats and chat
datagrams itself, when the timer fires overdue copies are reported, and close() leaves
with LEAVE_ROOM over TCP.

In an end-to-end room (section 5) the adapter derives the room's keys from its
password (off the event loop) before it enters, and sends the server only the auth key;
:class:`~ocm.client.e2e.RoomCipher` seals our texts before the core sees them and opens
the core's events before the reader does, so the cores, which match our copies and
repair gaps on the wire's bytes, never need the plaintext.

Refusals raise the one error tree of :mod:`ocm.errors`: an error ACK is a
:class:`~ocm.errors.ServerError` with the wire code, an unreachable server is
:class:`~ocm.errors.ConnectionLost`, a text that cannot be sent (too long, empty) is a
:class:`~ocm.errors.LocalProtocolError`, refused before anything leaves the machine.

UDP has no flow control of its own, so the client brings a little: at most ``window`` of
our messages are in flight (sent, the server's copy not back yet) and :meth:`ChatClient.send`
waits for room in the window. Version 1: a copy that has not come back after
``confirm_timeout`` seconds is reported as :class:`Undelivered`. With delivery a message
is resent until confirmed, and Undelivered only when the room ends for us with it still
in flight. Events wait for their reader in a bounded buffer; a reader that falls
``max_events`` behind loses the oldest, reported as :class:`Overflow`.
This module never prints and never touches the terminal: sanitising text for display is
the front end's job (:mod:`ocm.ui.chatview`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import secrets
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypedDict, Unpack

from ocm.client.address import format_server_address, parse_server_address
from ocm.client.delivery import (
    CHECK_INTERVALS,
    FEATURES,
    LIVENESS_INTERVALS,
    MAX_RECOVERIES,
    REFUSED_HERE,
    STOPPED_ANSWERING,
    DeliveryState,
    delivery_granted,
    restarted_reason,
)
from ocm.client.e2e import RoomCipher
from ocm.client.events import (
    COULD_NOT_RESUME,
    DROPPED,
    NETWORK_GONE,
    Closed,
    Event,
    PathChanged,
)
from ocm.client.exchange import DEFAULT_TIMEOUT, Channel, Link, call, describe_error
from ocm.client.session import (
    DEFAULT_HEARTBEAT_INTERVAL,
    EventQueue,
    RoomState,
    encode_text,
    fit_text,
    text_limit,
)
from ocm.client.trust import Security
from ocm.errors import (
    ConnectionLost,
    ErrorCode,
    LocalProtocolError,
    OCMError,
    ProtocolError,
    RemoteProtocolError,
    ServerError,
    ServerKeyChanged,
)
from ocm.wire.datagrams import ClientDatagram, Kind, encode_client_datagram, server_datagram_prefix
from ocm.wire.delivery import RELAYED, DeliveryKind
from ocm.wire.e2e import (
    E2E,
    NONCE_SIZE,
    SALT_SIZE,
    E2eKeys,
    check_params,
    default_params,
    derive_keys,
)
from ocm.wire.sealed import (
    SEALED,
    Refusal,
    Sealer,
    is_sealed_down,
    key_id_of,
    room_opener,
    up_prefix,
)
from ocm.wire.tcrp import (
    Admission,
    CreateRoom,
    E2eParams,
    JoinRoom,
    LeaveRoom,
    Left,
    LookupRoom,
    Reply,
    Resume,
    Resumed,
    RoomDetails,
    Tunnel,
    Tunnelled,
)
from ocm.wire.texts import UnknownToken, format_action, format_refusal
from ocm.wire.tunnel import TUNNEL, FrameReader, encode_frame

__all__ = [
    "DEFAULT_CONFIRM_TIMEOUT",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_WINDOW",
    "LEAVE_WAIT",
    "LOST_CONTACT",
    "ChatClient",
    "ChatOptions",
]

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
# With delivery, close() resends LEAVE until DEPARTED for this long at most, then falls
# back to LEAVE_ROOM over TCP: a lossy path gets several tries (the LEAVE is resent
# every retransmission timeout), and a host's room still closes within about a second.
LEAVE_WAIT = 1.0
# Why the room ended when the server's UDP port is closed (ICMP port unreachable).
LOST_CONTACT = "lost contact with the server"
# What one read takes off a tunnel: many frames at once in a busy room.
_TUNNEL_READ_SIZE = 64 * 1024
# Section 4: what the reader is told when the chat moves to another path.
OVER_TCP = "UDP blocked here; chatting over TCP"
RESUMED = "the network changed; still in the room"
TUNNEL_CLOSED = "the TCP connection to the server closed"
# What a UDP send reports when our address or route went away: a laptop that left its
# Wi-Fi, a socket bound to an address the machine no longer has.
_NETWORK_GONE = frozenset(
    code
    for name in ("EADDRNOTAVAIL", "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH")
    if (code := getattr(errno, name, None)) is not None
)
# Section 5: the one ERROR a sealed member accepts in clear (the server's, whole).
_UNKNOWN_TOKEN_ERROR = (
    server_datagram_prefix(Kind.ERROR, 0) + format_refusal(UnknownToken()).encode()
)
# Troubles after which UDP may work again from a new address.
_SILENT = frozenset({STOPPED_ANSWERING, NETWORK_GONE})


class _Endpoint(asyncio.DatagramProtocol):
    """The UDP socket's callbacks, handed straight to the client."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._datagram_received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on our connected socket: nothing listens on the server's
        # UDP port any more, or a firewall rejects UDP. (Windows reports it as a reset.)
        if isinstance(exc, ConnectionRefusedError | ConnectionResetError):
            self.client._udp_refused()
        elif isinstance(exc, OSError) and exc.errno in _NETWORK_GONE:
            # Our address or route went away (another network): ask TCP at once
            # rather than after two silent heartbeat intervals.
            self.client._network_gone()


class ChatOptions(TypedDict, total=False):
    """The keyword options of :meth:`ChatClient.create` and :meth:`ChatClient.join`;
    each number must be positive (``history``: zero or more)."""

    heartbeat_interval: float  # seconds between heartbeats
    timeout: float  # seconds for each TCP exchange (enter, leave)
    linger: float  # seconds close() waits for the copies of our last messages
    window: int  # our messages in flight at most: send() waits beyond
    confirm_timeout: float  # version 1: seconds before a message without its copy is Undelivered
    max_events: int  # events kept for the reader at most: the oldest go first
    delivery: bool  # ask for the delivery extension (False: a version 1 member)
    history: int  # with delivery: the room's last N Seqs, delivered first (history=True)
    tcp: bool  # carry the chat over a TCP tunnel from the start (networks that block UDP)
    security: Security  # section 5: TLS and whom to trust, for every TCP connection


_DEFAULT_OPTIONS: ChatOptions = {
    "heartbeat_interval": DEFAULT_HEARTBEAT_INTERVAL,
    "timeout": DEFAULT_TIMEOUT,
    "linger": DEFAULT_LINGER,
    "window": DEFAULT_WINDOW,
    "confirm_timeout": DEFAULT_CONFIRM_TIMEOUT,
    "max_events": DEFAULT_MAX_EVENTS,
    "delivery": True,
    "history": 0,
    "tcp": False,
    "security": Security(),
}


def _settled(options: ChatOptions) -> ChatOptions:
    """``options`` with the defaults filled in; TypeError for an unknown option or a
    ``delivery`` that is not a bool, ValueError for a number out of range."""
    unknown = set(options) - set(_DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option {sorted(unknown)[0]!r}")
    settled: ChatOptions = {**_DEFAULT_OPTIONS, **options}
    for key, value in settled.items():
        if key == "security":
            if not isinstance(value, Security):
                raise TypeError(f"security must be a Security, got {value!r}")
        elif key in ("delivery", "tcp"):
            if not isinstance(value, bool):
                raise TypeError(f"{key} must be True or False, got {value!r}")
        elif key == "history":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"history must be a whole number, 0 or more, got {value!r}")
        elif not (isinstance(value, int | float) and value > 0):
            raise ValueError(f"{key} must be positive, got {value!r}")
    if settled["tcp"] and not settled["delivery"]:
        raise ValueError("tcp=True needs the delivery extension (delivery=True)")
    return settled


def _features(options: ChatOptions) -> tuple[str, ...]:
    """What to ask for in CREATE_ROOM / JOIN_ROOM: the extensions by default."""
    return FEATURES if options.get("delivery", True) else ()


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


async def _admit(
    address: tuple[str, int],
    request: CreateRoom | JoinRoom,
    timeout: float,
    *,
    security: Security,
    require_e2e: bool = False,
) -> tuple[Reply, Link, E2eKeys | None]:
    """CREATE_ROOM or JOIN_ROOM on one connection: the COMPLETE, the link, and an
    end-to-end room's keys (section 5), or None.

    An end-to-end create derives the keys first and sends the auth key as the password.
    A join with a password asks LOOKUP_ROOM first, on the same connection: for an
    end-to-end room it derives the keys (with the server's parameters, if they clear
    the floor) and sends the auth key, never the password. A server that does not know
    LOOKUP_ROOM has no such rooms, and closes the connection after its refusal: the
    join goes on a new one, as before. Without a password there is nothing to look up
    (an end-to-end room refuses it: ``e2e_required``). With ``require_e2e`` a join
    goes on only if the server says the room is end-to-end: a server that claims it is
    not would otherwise be sent the password itself.
    """
    keys: E2eKeys | None = None
    password = request.password
    if isinstance(request, CreateRoom) and request.e2e is not None:
        assert password is not None  # create() checked
        keys = await _derive(password, request.e2e)
        request = replace(request, password=keys.auth_password, features=(*request.features, E2E))
    channel = await Channel.open(address, timeout=timeout, security=security)
    try:
        if isinstance(request, JoinRoom) and password:
            details = await _lookup(channel, request.room)
            if require_e2e and (details is None or details.e2e is None):
                where = format_server_address(address)
                raise RemoteProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f'server {where} says room "{request.room}" is not end-to-end encrypted:'
                    " not sending it the password",
                )
            if details is None:  # an older server, which closed the connection
                await channel.close()
                channel = await Channel.open(address, timeout=timeout, security=security)
            elif details.e2e is not None:
                _check_e2e_security(security)
                problem = check_params(details.e2e)
                if problem is not None:
                    raise RemoteProtocolError(
                        ErrorCode.BAD_REQUEST,
                        f'room "{request.room}" is end-to-end encrypted, but {problem}:'
                        " not joining, the password would be easy to guess",
                    )
                keys = await _derive(password, details.e2e)
                request = replace(
                    request, password=keys.auth_password, features=(*request.features, E2E)
                )
        reply = await channel.request(request)
        if (
            isinstance(request, CreateRoom)
            and isinstance(reply, Admission)
            and keys is not None
            and E2E not in reply.features
        ):
            # A server that ignored the e2e field made a plain protected room: joiners
            # would not know to derive the key. Leave it rather than chat in it.
            with contextlib.suppress(OCMError, OSError):
                await channel.request(LeaveRoom(reply.room, reply.token))
            where = format_server_address(address)
            raise RemoteProtocolError(
                ErrorCode.BAD_REQUEST, f"server {where} does not support end-to-end rooms"
            )
        return reply, channel.link, keys
    finally:
        await channel.close()


def _check_e2e_security(security: Security | None) -> None:
    """An end-to-end room is not entered in plaintext: its auth key would cross the
    network in clear, and anyone on the path could guess the password from it offline
    (section 5). LocalProtocolError, before anything more is sent."""
    if security is not None and security.insecure:
        raise LocalProtocolError(
            ErrorCode.BAD_REQUEST,
            "an end-to-end room is not entered without encryption (--insecure): its key"
            " would cross the network in clear",
        )


async def _lookup(channel: Channel, room: str) -> RoomDetails | None:
    """LOOKUP_ROOM on ``channel``: the room's details, or None from a server that does
    not know the operation (``unknown_operation``)."""
    try:
        details = await channel.request(LookupRoom(room))
    except ServerError as error:
        if error.code is ErrorCode.UNKNOWN_OPERATION:
            return None
        raise
    if not isinstance(details, RoomDetails):
        raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "LOOKUP_ROOM answered wrongly")
    return details


async def _derive(password: str, params: E2eParams) -> E2eKeys:
    """The room's keys, derived off the event loop (tens of milliseconds of CPU and
    ``params.memory_kib`` of memory, on purpose)."""
    return await asyncio.to_thread(derive_keys, password, params)


class ChatClient:
    """One member of one room. Make it with :meth:`create` or :meth:`join`.

    Iterate it (``async for event in chat``) for :data:`Event` values; the iteration
    ends after :class:`Closed` or once :meth:`close` is called. Use it as an async
    context manager to leave the room on the way out. :attr:`delivery` says whether the
    server granted the delivery extension, :attr:`e2e` whether the room is end-to-end
    encrypted.
    """

    def __init__(
        self,
        address: tuple[str, int],
        admission: Admission,
        name: str,
        link: Link,
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
        self._loop = asyncio.get_running_loop()
        # With delivery, close() waits this long for DEPARTED before LEAVE_ROOM.
        self.leave_wait = LEAVE_WAIT
        self._left = False  # what close() returns: the server confirmed we are out
        # With delivery: the Seq we entered at (a position of the core's, as it starts),
        # the end of the history asked for.
        self._entered_at = admission.seq or 0
        self._state: RoomState | DeliveryState
        self.delivery = delivery_granted(admission)
        if self.delivery:
            assert admission.seq is not None and admission.boot is not None
            history = settled["history"]
            if admission.history is not None:  # never more than the server keeps
                history = min(history, admission.history)
            self._state = DeliveryState(
                name,
                admission.host,
                admission.members,
                room=admission.room,
                token=admission.token,
                seq=admission.seq,
                boot=bytes.fromhex(admission.boot),
                heartbeat_interval=self.heartbeat_interval,
                now=self._loop.time(),
                history=history,
                random=random.random,
                relayed=RELAYED in admission.features,
            )
        else:
            self._state = RoomState(
                name,
                admission.host,
                admission.members,
                heartbeat_interval=self.heartbeat_interval,
                now=self._loop.time(),
            )
        self.tcp = settled["tcp"]
        # Section 5: every TCP connection of ours (enter, tunnel, resume, leave) is TLS,
        # checked as this says, unless it says insecure.
        self.security = settled["security"]
        # Section 5: with sealed datagrams, ours are sealed with our member key and the
        # room's opened with the room key; anything else from the server is dropped and
        # counted (sealed_refused), but for the two hints below (_unsealed).
        keys = admission.sealed if SEALED in admission.features else None
        self._sealer = None if keys is None else Sealer(keys.key, up_prefix(keys.session))
        self._opener = None if keys is None else room_opener(keys.room_key)
        self._room_key_id = b"" if keys is None else keys.room_key_id
        self.encrypted = self._sealer is not None
        self.sealed_refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)
        self._restart_hinted = False  # a RESTARTED in clear: believed once RESUME fails
        # Section 4: the secret that moves our token to another address (given only
        # over TCP), and whether the server carries the chat over TCP.
        self._secret = admission.resume
        self._can_tunnel = self.delivery and TUNNEL in admission.features
        if isinstance(self._state, DeliveryState):
            self._state.recoverable = self._can_tunnel or self._secret is not None
        self._tunnel: Channel | None = None  # the chat's path when not UDP
        self._tunnel_reader: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._events = EventQueue(self.max_events)
        self._changed = asyncio.Event()  # replaced by a new one at every change
        self._transport: asyncio.DatagramTransport | None = None
        # The one timer, for the core's next deadline (aioquic's get_timer): overdue
        # copies and heartbeats.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._closing = False
        self._close_done = asyncio.Event()
        self._stream_ended = False  # no event will be added any more
        # Section 5: an end-to-end room's message key (set by _enter), or None.
        self._cipher: RoomCipher | None = None

    # -- entering ----------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        *,
        e2e: bool | E2eParams = False,
        **options: Unpack[ChatOptions],
    ) -> ChatClient:
        """Create ``room`` (with ``password``, or open) and enter it as its host.

        ``e2e``: an end-to-end room (section 5 of docs/protocol.md), whose texts the
        server relays but cannot read: True derives its keys from ``password`` with
        Argon2id at RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes),
        or give the :class:`~ocm.wire.tcrp.E2eParams` (at least the client's floor,
        :func:`~ocm.wire.e2e.check_params`). It needs a password (LocalProtocolError
        otherwise, before anything is sent).
        """
        params: E2eParams | None = None
        if e2e is not False:
            if not password:
                raise LocalProtocolError(
                    ErrorCode.BAD_REQUEST, "an end-to-end room needs a password"
                )
            params = default_params(secrets.token_bytes(SALT_SIZE)) if e2e is True else e2e
        if params is not None:
            _check_e2e_security(options.get("security"))
        request = CreateRoom(room, name, password or None, _features(options), params)
        return await cls._enter(server, request, options)

    @classmethod
    async def join(
        cls,
        server: str | tuple[str, int],
        room: str,
        name: str,
        password: str | None = None,
        *,
        e2e: bool = False,
        **options: Unpack[ChatOptions],
    ) -> ChatClient:
        """Join the existing ``room`` as ``name``.

        With a password the client first asks the server about the room (LOOKUP_ROOM,
        section 5): an end-to-end room's keys are derived from the password, and only
        the auth key is sent, never the password itself (:attr:`e2e` is then True).
        ``e2e=True`` insists on it: if the server says the room is not end-to-end, the
        join stops there (RemoteProtocolError) and the password is not sent.
        """
        if e2e and not password:
            raise LocalProtocolError(
                ErrorCode.BAD_REQUEST, "an end-to-end room is joined with its password"
            )
        if e2e:
            _check_e2e_security(options.get("security"))
        request = JoinRoom(room, name, password or None, _features(options))
        return await cls._enter(server, request, options, require_e2e=e2e)

    @classmethod
    async def _enter(
        cls,
        server: str | tuple[str, int],
        request: CreateRoom | JoinRoom,
        options: ChatOptions,
        *,
        require_e2e: bool = False,
    ) -> ChatClient:
        settled = _settled(options)  # refuses bad options before any request
        timeout, security = settled["timeout"], settled["security"]
        address = parse_server_address(server)
        exchange = asyncio.ensure_future(
            _admit(address, request, timeout, security=security, require_e2e=require_e2e)
        )
        try:
            reply, link, keys = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            # Cancelled (Ctrl-C) after the request left: the server may have let us in.
            # Finish the exchange and leave, or we would stay in the room as a ghost
            # (and a host's room would stay open) until the idle timeout.
            with contextlib.suppress(OCMError, OSError):
                admitted, link, _ = await exchange
                if isinstance(admitted, Admission):
                    leave = LeaveRoom(admitted.room, admitted.token)
                    await call(address, leave, timeout=timeout, link=link, security=security)
            raise
        if not isinstance(reply, Admission):
            raise RemoteProtocolError(
                ErrorCode.BAD_REQUEST, "CREATE/JOIN answered with another reply"
            )
        client = cls(address, reply, _admitted_name(request, reply), link, **options)
        if keys is not None:
            client._cipher = RoomCipher(client.room, client.name, keys)
        try:
            if client.tcp:
                await client._open_tunnel_first()
            else:
                await client._open_udp()
        except (OSError, OCMError, asyncio.CancelledError) as error:
            # We are in the room on the server: leave, or a host would keep it open
            # (and a member would stay as a ghost) until the idle timeout.
            client._stop_timers()
            if client._transport is not None:
                client._transport.close()
            if client._tunnel is not None:
                await client._close_tunnel()
            with contextlib.suppress(OCMError, OSError):
                await client._leave()
            if isinstance(error, OCMError | asyncio.CancelledError):
                raise
            where = format_server_address(address)
            raise ConnectionLost(
                f"cannot open a UDP socket to server {where} ({describe_error(error)})"
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
        if isinstance(self._state, DeliveryState):
            self._transmit()  # the first PING (and the history REPAIR) the core made
        else:
            self._send_datagram("")  # section 2: the first heartbeat right after CREATE/JOIN
        self._arm_timer()

    async def _open_tunnel_first(self) -> None:
        """``tcp=True``: the chat goes over a tunnel from the start (section 4)."""
        if not self._can_tunnel:
            where = format_server_address(self.server)
            raise ConnectionLost(f"server {where} cannot carry the chat over TCP")
        channel = await Channel.open(
            self.server, timeout=self.timeout, link=self._link, security=self.security
        )
        try:
            await self._start_tunnel(channel)
        except BaseException:
            await channel.close()
            raise
        if isinstance(self._state, DeliveryState):
            self._state.reliable = True  # TCP resends for us
        self._transmit()  # the first PING (and the history REPAIR)
        self._arm_timer()

    async def _start_tunnel(self, channel: Channel) -> None:
        """TUNNEL on ``channel``, which then carries the chat: UDP is no longer used."""
        if not isinstance(await channel.request(Tunnel(self.room, self.token)), Tunnelled):
            raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "TUNNEL answered wrongly")
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        old, self._tunnel = self._tunnel, channel
        if self._tunnel_reader is not None:
            self._tunnel_reader.cancel()
        self._tunnel_reader = asyncio.ensure_future(self._read_tunnel(channel))
        if old is not None:
            old.abort()  # broken already: nothing in it is worth waiting for

    async def _read_tunnel(self, channel: Channel) -> None:
        """Feed the tunnel's datagrams to the core until it closes; then the path is in
        doubt (resume, and tunnel again)."""
        frames = FrameReader(channel.take_rest())
        try:
            while True:
                while (datagram := frames.next_frame()) is not None:
                    self._datagram_received(datagram)
                data = await channel.reader.read(_TUNNEL_READ_SIZE)
                if not data:
                    break
                frames.feed(data)
        except (OSError, ProtocolError):
            pass  # reset, or out of step: a new tunnel starts clean
        state = self._state
        if self._tunnel is channel and isinstance(state, DeliveryState):
            state.path_lost(TUNNEL_CLOSED)
            self._check_path()

    async def _close_tunnel(self) -> None:
        if self._tunnel_reader is not None:
            self._tunnel_reader.cancel()
            self._tunnel_reader = None
        if self._tunnel is not None:
            tunnel, self._tunnel = self._tunnel, None
            await tunnel.close()

    def _check_path(self) -> None:
        """Start a recovery when the core doubts the path (section 4), once at a time."""
        state = self._state
        if (
            isinstance(state, DeliveryState)
            and state.path_trouble is not None
            and state.ended is None
            and self._recovery is None
            and not self._closing
        ):
            self._recovery = asyncio.ensure_future(self._recover(state, state.path_trouble))

    async def _recover(self, state: DeliveryState, trouble: str) -> None:
        """Find out over TCP what became of our path, and take another (section 4).

        A new connection, from whatever address the system gives us now, RESUMEs the
        token there (the server rebinds it; the room sees nothing). Then, if UDP
        reached the server (only our address changed), the chat stays on UDP, from a
        new socket if our address is new; if UDP went unanswered, was refused again
        right after a resume, or a tunnel closed, the chat goes over a tunnel on that
        connection. If TCP fails too within the budget, the server is gone; if it
        refuses the token, we are out of the room.
        """
        channel: Channel | None = None
        try:
            if state.recoveries >= MAX_RECOVERIES:
                raise ConnectionLost("paths restored in a row, and nothing but refusals")
            # One heartbeat interval in all (CHECK_INTERVALS): the server has been silent
            # for two already, and the verdict is due within three (the person waits for
            # it). A network that went away gets the three intervals it had before: the
            # next one may still be coming up.
            intervals = LIVENESS_INTERVALS if trouble == NETWORK_GONE else CHECK_INTERVALS
            async with asyncio.timeout(intervals * self.heartbeat_interval):
                channel = await self._connect_anywhere()
                moved = channel.link.local_ip != self._link.local_ip
                if self._secret is not None:
                    await self._resume(channel, self._secret)
                if state.ended is not None or self._closing:
                    return  # the room ended meanwhile, or we are leaving: no new path
                refused_once = trouble == REFUSED_HERE and not state.recoveries
                udp_works = refused_once or (trouble in _SILENT and moved)
                if self._tunnel is None and (udp_works or not self._can_tunnel):
                    if moved or self._transport is None:
                        await self._reopen_udp()
                    notice = RESUMED if trouble == REFUSED_HERE or moved else None
                else:
                    first = self._tunnel is None
                    await self._start_tunnel(channel)
                    channel = None  # the tunnel's now
                    notice = OVER_TCP if first else None  # a new tunnel for an old: no news
        except ServerError as error:
            if error.code is ErrorCode.INVALID_TOKEN:
                state.out = True  # dropped meanwhile (or the room closed): nothing to leave
                unknown = format_refusal(UnknownToken())
                reason = f"{DROPPED} (the server says: {unknown})"
                if self._restart_hinted:  # section 5: the RESTARTED in clear was true
                    reason = restarted_reason(self.room)
            else:
                reason = f"{COULD_NOT_RESUME} ({error.message})"
            await self._give_up(state, reason)
        except ServerKeyChanged as error:
            # Not a lost server: another key answers where ours was (section 5). Say so,
            # as entering would, rather than that the server stopped answering.
            await self._give_up(state, error.message)
        except (OCMError, OSError, TimeoutError):
            lost = {LOST_CONTACT: LOST_CONTACT, NETWORK_GONE: NETWORK_GONE}
            await self._give_up(state, lost.get(trouble, STOPPED_ANSWERING))
        else:
            if state.ended is None and not self._closing:
                self._restart_hinted = False  # we are in: whatever said otherwise lied
                state.path_restored(self._loop.time(), reliable=self._tunnel is not None)
                if notice is not None:
                    self._feed([PathChanged(notice)])
                self._transmit()
                self._arm_timer()
        finally:
            self._recovery = None
            if channel is not None:
                await channel.close()

    async def _resume(self, channel: Channel, secret: str) -> None:
        """RESUME on ``channel``: our token is bound to its address from now on, and the
        next secret is the one to use."""
        resumed = await channel.request(Resume(self.room, self.token, secret))
        if not isinstance(resumed, Resumed):
            raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "RESUME answered wrongly")
        self._secret = resumed.secret
        self._link = channel.link

    async def _connect_anywhere(self) -> Channel:
        """A new connection to the server from whatever address we have now, tried
        again after a short pause while it fails (a new network may still be coming
        up); the caller's timeout ends the tries."""
        pause = 0.25
        while True:
            try:
                return await Channel.open(self.server, timeout=self.timeout, security=self.security)
            except ConnectionLost:
                await asyncio.sleep(pause)
                pause = min(2 * pause, 2.0)

    async def _give_up(self, state: DeliveryState, reason: str) -> None:
        """No path to the server: the room is over for us, and the tunnel closed."""
        if not self._closing:
            self._feed(state.end(reason))
            await self._close_tunnel()

    def _udp_refused(self) -> None:
        """ICMP port unreachable on our UDP socket: nothing listens on the server's UDP
        port any more (the server is gone), or a firewall on the way rejects UDP. With
        section 4, TCP tells which; else the server is taken for gone."""
        state = self._state
        if isinstance(state, DeliveryState) and state.recoverable:
            state.path_lost(LOST_CONTACT)
            self._check_path()
        else:
            self._feed(state.end(LOST_CONTACT))

    def _network_gone(self) -> None:
        state = self._state
        if isinstance(state, DeliveryState):
            state.path_lost(NETWORK_GONE)
            self._check_path()

    async def _reopen_udp(self) -> None:
        """A new UDP socket from our (new) address: the old one is bound to the old."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await self._open_udp()

    @property
    def e2e(self) -> bool:
        """Whether the room is end-to-end encrypted (section 5): our texts leave sealed
        with a key the server does not have, and others' are opened here."""
        return self._cipher is not None

    @property
    def undecryptable(self) -> int:
        """Messages of an end-to-end room dropped because they did not open (another
        key, or forged or altered on the way); the first from each sender is reported
        as a :class:`~ocm.client.events.Notice`."""
        return 0 if self._cipher is None else self._cipher.undecryptable

    @property
    def over_tcp(self) -> bool:
        """Whether the chat goes over a TCP tunnel (section 4) rather than UDP."""
        return self._tunnel is not None

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
    def server_lost(self) -> bool:
        """Whether the room ended because we lost the server rather than by its word:
        it stopped answering (:data:`~ocm.client.delivery.STOPPED_ANSWERING`), it
        restarted (the room is gone with it), its UDP port closed (``"lost contact
        with the server"``), our network went away, or it would not move our token to
        where we are now (section 4). False while we are in the room, and after a
        CLOSED."""
        ended = self._state.ended
        if ended is None:
            return False
        lost = (STOPPED_ANSWERING, restarted_reason(self.room), LOST_CONTACT, NETWORK_GONE)
        return ended.reason in lost or ended.reason.startswith(COULD_NOT_RESUME)

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
        (:func:`~ocm.client.session.text_limit`)."""
        limit = text_limit(self.room, self.token, self.name, delivery=self.delivery)
        return limit if self._cipher is None else self._cipher.limit(limit)

    def fit(self, text: str) -> str:
        """``text`` cut to the longest prefix :meth:`send` accepts, on a character
        boundary: for a bot that quotes others and must never fail on a long quote."""
        return fit_text(text, self.max_text_bytes)

    def check_text(self, text: str) -> bytes:
        """The UTF-8 of ``text`` if :meth:`send` would take it; else the error it raises
        (:func:`~ocm.client.session.encode_text`: too-long text is refused, never split)."""
        return encode_text(text, self.max_text_bytes)

    # -- sending -----------------------------------------------------------------

    async def send(self, text: str) -> None:
        """Send chat text to everyone in the room (us included).

        First waits while ``window`` of our messages are in flight: until one is
        confirmed, or (version 1) the oldest is given up as :class:`Undelivered`
        (``confirm_timeout`` after it was sent). With delivery a message is resent until
        confirmed; the wait ends at the latest when the room ends for us (a server that
        stops answering does so within three heartbeat intervals). Raises ProtocolError
        (``too_large``, ``bad_request``) for text that cannot be sent, and ConnectionLost
        once the room is over for us.
        """
        self.check_text(text)
        self._check_open()
        # Yield at least once: a script sending from a tight loop must not starve the
        # socket that brings the confirmations (and everyone else's messages) in.
        await asyncio.sleep(0)
        await self._wait_until(lambda: self._state.unconfirmed < self.window or self._over)
        self._check_open()
        if self._cipher is not None:  # the core and the server see only the envelope
            text = self._cipher.seal(text, secrets.token_bytes(NONCE_SIZE))
        state = self._state
        if isinstance(state, DeliveryState):
            state.send(text, self._loop.time())
            self._transmit()
        else:
            self._send_datagram(text)
            state.sent(text, self._loop.time() + self.confirm_timeout)
        self._arm_timer()

    async def send_action(self, words: str) -> None:
        """Send an action (``/me waves``: ``words`` is ``"waves"``), which every reader
        gets as a :class:`Message` with ``action=True``. As :meth:`send`, whose limit
        counts the action's wire text (:func:`~ocm.wire.texts.format_action`)."""
        await self.send(format_action(words))

    @property
    def _over(self) -> bool:
        return self._state.ended is not None or self._closing

    def _check_open(self) -> None:
        if self._over:
            ended = self._state.ended
            why = ended.reason if ended is not None else "left the room"
            raise ConnectionLost(f"cannot send, no longer in the room: {why}")

    def _send_datagram(self, text: str) -> None:
        """Version 1: send a chat datagram (or, with no text, a heartbeat)."""
        assert self._transport is not None and isinstance(self._state, RoomState)
        if self._transport.is_closing():
            return
        self._transport.sendto(encode_client_datagram(ClientDatagram(self.room, self.token, text)))
        self._state.datagram_sent(self._loop.time())

    def _transmit(self) -> None:
        """With delivery: send every datagram the core has made."""
        assert isinstance(self._state, DeliveryState)
        datagrams = self._state.datagrams_to_send()
        if self._sealer is not None:
            datagrams = [self._sealer.seal(datagram) for datagram in datagrams]
        if self._tunnel is not None:
            if datagrams and not self._tunnel.writer.is_closing():
                self._tunnel.writer.write(b"".join(map(encode_frame, datagrams)))
            return
        if self._transport is None or self._transport.is_closing():
            return
        for data in datagrams:
            self._transport.sendto(data)

    def _arm_timer(self) -> None:
        """Arm the timer for the core's next deadline, unless it is armed for sooner
        (firing early is harmless: nothing is due, and it re-arms)."""
        deadline = self._state.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # The loop may run a timer a clock tick early; it is due all the same.
        now = max(self._loop.time(), self._timer_at)
        state = self._state
        if isinstance(state, DeliveryState):
            self._feed(state.handle_timer(now))
            self._transmit()
            self._check_path()
        else:
            self._feed(state.expire(now))
            if state.heartbeat_due(now):
                self._send_datagram("")
        self._arm_timer()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the server confirmed every message sent.

        True when none is in flight any more: each was confirmed, or given up as
        :class:`Undelivered` (counted in :attr:`undelivered`; with delivery only when
        the room ended). False at the timeout, or at once when the room is over with
        messages still in flight.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._wait_until(
                    lambda: not self._state.unconfirmed or self._state.ended is not None
                )
        except TimeoutError:
            return False
        return not self._state.unconfirmed

    async def catch_up(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the history asked for on entering (the
        ``history`` option) is all in the event buffer: each message delivered, or
        skipped when the server no longer had it.

        True when it is (at once without history or the delivery extension); False at
        the timeout, or when the room ended first. For a script that reads the history
        and leaves: leaving at once could leave before the history arrived.
        """
        state = self._state

        def caught_up() -> bool:
            if not isinstance(state, DeliveryState):
                return True
            return state.delivered >= self._entered_at or state.ended is not None

        try:
            async with asyncio.timeout(timeout):
                await self._wait_until(caught_up)
        except TimeoutError:
            return False
        return isinstance(state, RoomState) or state.delivered >= self._entered_at

    # -- receiving ---------------------------------------------------------------

    def _datagram_received(self, data: bytes) -> None:
        state = self._state
        if self._opener is not None:
            opened = self._unseal(data)
            if opened is None:
                return
            data = opened
        if isinstance(state, DeliveryState):
            self._feed(state.datagram_received(data, self._loop.time()))
            self._transmit()
            self._arm_timer()  # a gap to repair may be due sooner than the timer
            self._check_path()
        else:
            self._feed(state.datagram_received(data))

    def _unseal(self, data: bytes) -> bytes | None:
        """Section 5: the datagram inside a sealed one of our room's, or None (dropped,
        counted). Two datagrams in clear get through, as hints that cannot end the chat
        by themselves: an ERROR "unknown token" (the server does not know our Session)
        and RESTARTED. The first makes the core doubt the path, and the recovery's
        RESUME over TLS says whether we are still in; the second does the same, and is
        believed only if that RESUME is refused."""
        assert self._opener is not None
        if is_sealed_down(data):
            if key_id_of(data) != self._room_key_id:
                self.sealed_refused[Refusal.UNKNOWN] += 1
                return None
            opened = self._opener.open(data)
            if isinstance(opened, Refusal):
                self.sealed_refused[opened] += 1
                return None
            return opened
        if data[:1] == bytes((DeliveryKind.RESTARTED,)):
            self._restart_hinted = True
            state = self._state
            if isinstance(state, DeliveryState):
                state.path_lost(REFUSED_HERE)
                self._check_path()
            return None
        if data == _UNKNOWN_TOKEN_ERROR:
            state = self._state
            if isinstance(state, DeliveryState) and state.recoverable:
                return data  # the core takes it for a doubt, which RESUME settles
            # Nothing to check it with (no resume granted): an ERROR anyone could send
            # must not end the chat; if we really are out, the silence will say so.
        self.sealed_refused[Refusal.MALFORMED] += 1  # nothing in clear reaches the person
        return None

    def _feed(self, events: list[Event]) -> None:
        if self._cipher is not None:  # section 5: the reader sees plaintext
            events = self._cipher.open_events(events)
        self._events.extend(events)
        if self._state.ended is not None:
            self._stop_timers()
            # close() ends the stream itself, after what its leave has to say.
            self._stream_ended = self._stream_ended or not self._closing
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

    def ready_events(self, limit: int) -> list[Event]:
        """Up to ``limit`` events that are already waiting, oldest first, without
        waiting for more: none when nothing is waiting (or the stream is over).

        For a reader that shows a burst in one go: after each event of ``async for``,
        take what else is there. The iteration goes on with the events left after them
        (and ends after :class:`Closed`, whichever of the two took it).
        """
        events: list[Event] = []
        while len(events) < limit and (event := self._events.take()) is not None:
            events.append(event)
        return events

    # -- leaving -----------------------------------------------------------------

    async def close(self) -> bool:
        """Leave the room and stop. Idempotent; never raises for the network.

        Waits for a recovery under way (section 4) to end, then up to ``linger`` seconds
        for the confirmation of our last messages, so the leave does not overtake them.
        With delivery it sends LEAVE and resends it until the server answers DEPARTED,
        for ``leave_wait`` seconds (1 s) at most, then falls back to LEAVE_ROOM over TCP
        (with the resume secret: after a RESUME from wherever we are now, as our address
        may have changed); version 1 sends LEAVE_ROOM. The host's leave closes the room
        for everyone.

        Returns True when the server confirmed that we are out of the room (DEPARTED,
        the COMPLETE of LEAVE_ROOM, or, when the room had ended already, the server's
        CLOSED, RESTARTED, or, without a resume secret, an unknown-token ERROR); False
        when leaving failed (no answer at all) or the room ended without the server's
        word (it stopped answering).
        Every call returns the first call's answer.
        """
        if self._closing:
            await self._close_done.wait()
            return self._left
        self._closing = True
        self._notify()  # a send waiting for the window gives up
        state = self._state
        if self._recovery is not None:
            # Let it finish (each of its steps is bounded): cancelled after its RESUME
            # left, we would not know the secret the server now expects.
            await asyncio.wait({self._recovery}, timeout=self.timeout)
            if self._recovery is not None:
                self._recovery.cancel()
        try:
            if state.ended is None and state.unconfirmed:
                await self.flush(self.linger)
            if state.ended is not None:
                self._left = state.out  # over already: nothing to leave
            elif isinstance(state, DeliveryState):
                self._left = await self._leave_by_datagram(state)
            else:
                state.leaving = True
                self._left = await self._leave_by_tcp() or state.out
            # Set directly, not fed: leaving ends the iteration without a Closed.
            state.ended = state.ended or Closed("left the room")
            self._stop_timers()
            if self._transport is not None:
                self._transport.close()
            await self._close_tunnel()
            self._stream_ended = True
            self._notify()
        finally:
            self._close_done.set()
        return self._left

    async def _leave_by_datagram(self, state: DeliveryState) -> bool:
        """LEAVE until DEPARTED (the core resends it), then LEAVE_ROOM as a fallback.
        Either answer says which of our messages in flight the server relayed (the
        ``relayed`` feature); with neither, nobody can tell."""
        try:
            return await self._leave_and_settle(state)
        finally:
            self._feed(state.give_up_outgoing())  # still unsettled: not certain

    async def _leave_and_settle(self, state: DeliveryState) -> bool:
        self._feed(state.leave(self._loop.time()))  # without relayed: Undelivered now
        self._transmit()
        self._arm_timer()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.leave_wait):
                await self._wait_until(lambda: state.ended is not None)
        if state.out:
            return True
        # No DEPARTED: the LEAVEs or their answers were lost, or the UDP path is closed.
        # The core keeps resending LEAVE meanwhile; whichever is answered first counts.
        try:
            self._feed(state.departed(await self._leave()))
        except ServerError as error:
            if error.code is ErrorCode.INVALID_TOKEN:
                # The server no longer knows the token: most likely a LEAVE arrived and
                # its DEPARTED was lost. The server answers DEPARTED to a repeated LEAVE
                # too, so wait for one once more.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.leave_wait):
                        await self._wait_until(lambda: state.ended is not None)
            return state.out
        except (OCMError, OSError):
            return state.out
        return True

    async def _leave_by_tcp(self) -> bool:
        try:
            await self._leave()
        except (OCMError, OSError):
            return False
        return True

    async def _leave(self) -> int | None:
        """LEAVE_ROOM over TCP. With a resume secret, from wherever we are now, with a
        RESUME first (section 4): our address may have changed since the token was
        bound. A RESUME refused with ``invalid_token`` means the server no longer knows
        the token, which a caller takes as a LEAVE_ROOM refused the same way. Returns
        the COMPLETE's ``relayed`` (the feature; else None)."""
        leave = LeaveRoom(self.room, self.token)
        if self._secret is None:
            reply, _ = await call(
                self.server, leave, timeout=self.timeout, link=self._link, security=self.security
            )
        else:
            channel = await Channel.open(self.server, timeout=self.timeout, security=self.security)
            try:
                await self._resume(channel, self._secret)
                reply = await channel.request(leave)
            finally:
                await channel.close()
        return reply.relayed if isinstance(reply, Left) else None

    def _stop_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._state.ended or self._closing else "open"
        return f"<ChatClient {self.name!r} in {self.room!r} on {self.server} ({state})>"
