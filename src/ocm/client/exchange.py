"""TCRP exchanges from the client's side: one request, its ACK and COMPLETE, on a
new TCP connection each (section 1).

:func:`call` is the one exchange (used for LIST_ROOMS, CREATE/JOIN and LEAVE_ROOM), and
:func:`list_rooms` the public call for LIST_ROOMS. An exchange for a token (LEAVE_ROOM)
connects from the IP address the token is bound to (:class:`Link`), letting the system
pick the port at connect time where it can (Linux: ``IP_BIND_ADDRESS_NO_PORT``), so that
many recent connections in TIME_WAIT do not make the bind fail. Bytes are cut into messages by
:class:`~ocm.wire.framer.TcrpReader`; an error ACK becomes a
:class:`~ocm.errors.ServerError`, an unreachable server a
:class:`~ocm.errors.ConnectionLost`.

Section 5: every connection starts with STARTTLS and a TLS handshake, checked against
the caller's :class:`~ocm.client.trust.Security` (trust on first use, a pinned key, or
a certificate authority), unless that says ``insecure``: then it is plain TCP, as in
version 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass

from ocm.client.address import format_server_address, parse_server_address
from ocm.client.trust import Expected, Security, accept, client_context, expect
from ocm.errors import ConnectionLost, ErrorCode, RemoteProtocolError, ServerError
from ocm.wire.constants import MAX_REPLY_PAYLOAD
from ocm.wire.framer import TcrpReader
from ocm.wire.tcrp import (
    Ack,
    ListRooms,
    Reply,
    Request,
    RoomInfo,
    RoomList,
    StartTls,
    TcrpMessage,
    TlsReady,
    encode_request,
    parse_reply,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_ENCRYPTION",
    "Channel",
    "Link",
    "call",
    "describe_error",
    "list_rooms",
    "open_from",
    "read_message",
]

# One TCRP exchange (connect, ACK, COMPLETE). Creating a protected room costs the server
# one scrypt hash (~40 ms); anything near 10 s means the server is not answering.
DEFAULT_TIMEOUT = 10.0
# How long closing a connection waits for its unsent bytes: a reply or a LEAVE_ROOM is a
# few hundred bytes, gone in a round trip on any live path.
CLOSE_WAIT = 1.0
# What one read takes off the connection; replies are read through the framer, so a
# large LIST_ROOMS arrives in as many reads as it needs.
_READ_SIZE = 64 * 1024
# Linux: bind() to an address with port 0 only notes the address, and connect() picks the
# port, free for this destination. A plain bind() must pick a port free for every
# destination, which fails sooner when thousands of connections wait in TIME_WAIT.
# (socket.IP_BIND_ADDRESS_NO_PORT is 24; Python names it from 3.12 on.)
_BIND_ADDRESS_NO_PORT: int | None = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)
if _BIND_ADDRESS_NO_PORT is None and sys.platform == "linux":
    _BIND_ADDRESS_NO_PORT = 24
# Section 5: what a server that does not know STARTTLS (unknown_operation: version 1, or
# an OCM server older than TLS) means for the user.
NO_ENCRYPTION = (
    "server {where} does not offer encryption (it does not know STARTTLS: an older "
    "server); --insecure talks to it in plaintext"
)


@dataclass(frozen=True, slots=True)
class Link:
    """Both ends of the TCP connection that obtained a token: the token is bound to our
    IP as the server saw it, so UDP and LEAVE_ROOM must use the same pair."""

    server_ip: str
    local_ip: str


def describe_error(error: BaseException) -> str:
    """Why a connection failed, in a few words on one line ("connection refused").

    Never the exception's own text for an OSError: asyncio's reads "Connect call failed
    ('::1', 9312, 0, 0)", a Python tuple where people write ``[::1]:9312``, and, when
    several addresses of a name failed, "Multiple exceptions: ..." with one per address.
    The reason comes from the error number(s) instead.
    """
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError):
        numbers = [error.errno] if error.errno else _ERRNO.findall(str(error))
        reasons = dict.fromkeys(_strerror(int(number)) for number in numbers)
        return "; ".join(reasons) or "connection failed"
    return " ".join(str(error).split()) or type(error).__name__


# asyncio's "Multiple exceptions: [Errno 111] Connect call failed (...), [Errno 101] ..."
_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _strerror(number: int) -> str:
    if number == errno.ECONNREFUSED:
        return "connection refused"
    try:
        return os.strerror(number).lower()
    except ValueError:
        return f"error {number}"


async def read_message(reader: asyncio.StreamReader, framer: TcrpReader) -> TcrpMessage:
    """The next TCRP message off ``reader``, through ``framer`` (which keeps what is
    left over for the next call). IncompleteReadError if the stream ends first."""
    while (message := framer.next_message()) is None:
        data = await reader.read(_READ_SIZE)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        framer.feed(data)
    return message


async def open_from(
    host: str, port: int, local_ip: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``host``:``port`` from ``local_ip`` (any port). OSError if
    the address cannot be bound (it is no longer ours) or the connection fails."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if _BIND_ADDRESS_NO_PORT is not None:
            with contextlib.suppress(OSError):  # an older kernel: a plain bind
                sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
        sock.bind((local_ip, 0))
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


class Channel:
    """One TCP connection to the server, for one or more exchanges in turn, and then,
    after TUNNEL (section 4), for a tunnel's frames: :attr:`reader` and :attr:`writer`,
    with :meth:`take_rest` for the bytes that came behind the last reply."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        where: str,
        timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self._where = where
        peer, mine = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        self.link = Link(str(peer[0]), str(mine[0]))
        # A reply may be far larger than any request: LIST_ROOMS of a busy server is
        # megabytes.
        self._framer = TcrpReader(max_payload=MAX_REPLY_PAYLOAD)

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        *,
        timeout: float,
        link: Link | None = None,
        security: Security | None = None,
    ) -> Channel:
        """Connect (from ``link``'s local IP, when given: a token is bound to it), and
        secure the connection as ``security`` says (None: ``Security()``, TLS with trust
        on first use). ServerKeyChanged if the server is not who we expect."""
        security = Security() if security is None else security
        where = format_server_address(address)
        try:
            async with asyncio.timeout(timeout):
                if not security.insecure:
                    return await _open_tls(address, link, security, timeout)
                reader, writer = await _connect(address, link)
        except ssl.SSLError as error:
            reason = error.reason or describe_error(error)
            raise ConnectionLost(f"TLS with server {where} failed ({reason})") from None
        except (asyncio.IncompleteReadError, ConnectionResetError, ConnectionAbortedError):
            # During STARTTLS: connected, then closed on us (refused is below).
            raise ConnectionLost(f"server {where} closed the connection") from None
        except (OSError, TimeoutError) as error:
            raise ConnectionLost(f"cannot reach server {where} ({describe_error(error)})") from None
        return cls(reader, writer, where, timeout)

    async def _start_tls(
        self, address: tuple[str, int], security: Security, expected: Expected, verify: bool
    ) -> None:
        """STARTTLS, then the handshake, then the key check (section 5)."""
        try:
            ready = await self.request(StartTls())
        except ServerError as error:
            if error.code is ErrorCode.UNKNOWN_OPERATION:
                raise ConnectionLost(NO_ENCRYPTION.format(where=expected.where)) from None
            raise
        if not isinstance(ready, TlsReady):
            raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "STARTTLS answered wrongly")
        # Bytes behind the COMPLETE came in clear, and would pass for what TLS brought:
        # the response injection of STARTTLS clients (someone on the path writes them).
        if self._framer.take_rest() or getattr(self.reader, "_buffer", b""):
            raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "bytes in clear behind STARTTLS")
        context = client_context(security, verify=verify)
        await self.writer.start_tls(
            context, server_hostname=address[0], ssl_handshake_timeout=self.timeout
        )
        tls = self.writer.get_extra_info("ssl_object")
        certificate = tls.getpeercert(binary_form=True) if tls is not None else None
        if not certificate:
            raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "the server showed no certificate")
        accept(security, expected, certificate, verified=verify)

    async def request(self, request: Request) -> Reply:
        """One exchange: the COMPLETE, or an exception (ServerError for an error ACK)."""
        where, timeout = self._where, self.timeout
        try:
            self.writer.write(encode_request(request))
            async with asyncio.timeout(timeout):
                await self.writer.drain()
                ack = parse_reply(await read_message(self.reader, self._framer))
                if not isinstance(ack, Ack):
                    raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "the server skipped its ACK")
                if ack.error is not None:
                    raise ServerError(ack.error, ack.message or str(ack.error))
                return parse_reply(await read_message(self.reader, self._framer))
        except (asyncio.IncompleteReadError, ConnectionError):
            raise ConnectionLost(f"server {where} closed the connection") from None
        except TimeoutError:
            raise ConnectionLost(f"no answer from server {where} within {timeout:g} s") from None

    def take_rest(self) -> bytes:
        """What arrived behind the last reply (a tunnel's first frames), taken out."""
        return self._framer.take_rest()

    async def close(self) -> None:
        """Close, waiting a moment at most for what is still unsent (a dead path would
        hold wait_closed until TCP gives up, minutes later)."""
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self.writer.wait_closed()

    def abort(self) -> None:
        """Close at once, dropping what is unsent."""
        self.writer.transport.abort()


async def _connect(
    address: tuple[str, int], link: Link | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if link is None:
        return await asyncio.open_connection(*address)
    return await open_from(link.server_ip, address[1], link.local_ip)


async def _open_tls(
    address: tuple[str, int], link: Link | None, security: Security, timeout: float
) -> Channel:
    """A connection after STARTTLS and a TLS handshake that satisfied ``security``.

    On first contact the handshake verifies the certificate (CA and host name) first;
    if that fails, a second connection takes any key, which is remembered (section 5).
    A server known as ``ca`` whose certificate no longer verifies is also connected to
    again, only to learn its key for the error.
    """
    expected = expect(security, address)
    if expected.verify:
        try:
            return await _handshake(address, link, security, expected, timeout, True)
        except ssl.SSLCertVerificationError:
            pass  # no authority vouches for it: a self-signed key, as OCM servers make
    return await _handshake(address, link, security, expected, timeout, False)


async def _handshake(
    address: tuple[str, int],
    link: Link | None,
    security: Security,
    expected: Expected,
    timeout: float,
    verify: bool,
) -> Channel:
    reader, writer = await _connect(address, link)
    channel = Channel(reader, writer, expected.where, timeout)
    try:
        await channel._start_tls(address, security, expected, verify)
    except BaseException:
        channel.abort()
        raise
    return channel


async def call(
    address: tuple[str, int],
    request: Request,
    *,
    timeout: float,
    link: Link | None = None,
    security: Security | None = None,
) -> tuple[Reply, Link]:
    """One TCRP exchange on a new connection: the COMPLETE, or an exception."""
    channel = await Channel.open(address, timeout=timeout, link=link, security=security)
    try:
        return await channel.request(request), channel.link
    finally:
        await channel.close()


async def list_rooms(
    server: str | tuple[str, int],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    security: Security | None = None,
) -> tuple[RoomInfo, ...]:
    """The rooms on ``server`` (LIST_ROOMS), sorted by name as the server sends them."""
    address = parse_server_address(server)
    reply, _ = await call(address, ListRooms(), timeout=timeout, security=security)
    if not isinstance(reply, RoomList):
        raise RemoteProtocolError(ErrorCode.BAD_REQUEST, "LIST_ROOMS answered with another reply")
    return reply.rooms
