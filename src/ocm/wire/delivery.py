"""The ``delivery`` extension of the relay (docs/protocol.md, section 3): pure
encode/decode, no I/O.

Version 1 relays a chat line at most once and tells nobody what was lost. A member that
negotiates ``delivery`` (a ``features`` list in CREATE_ROOM / JOIN_ROOM, granted in the
COMPLETE) speaks these datagrams instead of the version 1 client layout:

Client to server, an *extended datagram*. Its first byte is 0, which no version 1
datagram can start with (a room name has 1-255 bytes), so the two layouts never mix up:

* :class:`Data` -- chat text with the member's own message number (1, 2, ...), so the
  server relays each message once however often it arrives, and the sender can resend
  until it is confirmed;
* :class:`Ping` -- the heartbeat, which the server answers with the room's latest Seq;
* :class:`Repair` -- "send me these Seqs again" (ranges);
* :class:`Leave` -- leave the room without a TCP connection.

Server to client, new Kinds after version 1's four, with version 1's 6-byte header
(Kind, Seq, SenderSize) and a kind-specific body:

* :class:`Chat` (5) -- a MESSAGE that also carries the sender's message number;
* :class:`Status` (6) -- the answer to a Ping: Seq is the room's latest;
* :class:`Accepted` (7) -- the answer to a Data already relayed: under which Seq;
* :class:`Lost` (8) -- the answer to a Repair of Seqs the server no longer keeps;
* :class:`Departed` (9) -- the answer to a Leave; with the ``relayed`` feature it says
  how far the server relayed the member's messages, so that those it never relayed are
  known for sure;
* :class:`Restarted` (10) -- the answer to a Ping that names an earlier incarnation of
  the server (its ``boot`` id): every room of that one is gone.

Version 1's MESSAGE, NOTICE, CLOSED and ERROR keep their layout; an ERROR that answers a
Data carries the Data's message number in its Seq field (version 1 puts 0 there).

Malformed input raises :class:`~ocm.errors.RemoteProtocolError`; a datagram we cannot
encode raises :class:`~ocm.errors.LocalProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ocm.errors import ErrorCode, RemoteProtocolError
from ocm.wire._util import bad, refuse, utf8
from ocm.wire.constants import MAX_DATAGRAM, MAX_NAME_BYTES, MAX_TOKEN_BYTES, SERVER_HEADER_SIZE
from ocm.wire.datagrams import ServerDatagram, decode_server_datagram, encode_server_datagram

__all__ = [
    "BOOT_SIZE",
    "CHAT_OVERHEAD",
    "DELIVERY",
    "EXTENDED_HEADER_SIZE",
    "MAX_REPAIR_COUNT",
    "MAX_REPAIR_RANGES",
    "MSG_NO_SIZE",
    "RELAYED",
    "SERVER_HEADER",
    "Accepted",
    "Chat",
    "ClientType",
    "Data",
    "DeliveryKind",
    "Departed",
    "Extended",
    "Leave",
    "Lost",
    "Ping",
    "Received",
    "Repair",
    "Restarted",
    "Status",
    "chat_prefix",
    "data_body",
    "decode_extended",
    "decode_received",
    "encode_extended",
    "encode_received",
    "is_extended",
    "leave_body",
    "ping_body",
    "repair_body",
    "split_extended",
]

# The feature name in the CREATE_ROOM / JOIN_ROOM "features" list and its COMPLETE.
DELIVERY = "delivery"
# Granted with DELIVERY only: DEPARTED, and LEAVE_ROOM's COMPLETE, say up to which of the
# member's message numbers the server relayed.
RELAYED = "relayed"
# Marker (1) + Type (1) + TokenSize (1), then the token.
EXTENDED_HEADER_SIZE = 3
# The MsgNo (uint32) of a DATA and of a CHAT.
MSG_NO_SIZE = 4
# A CHAT is this many bytes, plus the sender's name and the text.
CHAT_OVERHEAD = SERVER_HEADER_SIZE + MSG_NO_SIZE
# The server's incarnation id, sent in the COMPLETE as 16 hex digits, in a Ping as bytes.
BOOT_SIZE = 8
# A Repair asks for at most this many ranges, each of at most MAX_REPAIR_COUNT Seqs: one
# datagram of requests can never ask for more than the server's history holds anyway.
MAX_REPAIR_RANGES = 64
MAX_REPAIR_COUNT = 0xFFFF

_U32 = struct.Struct("!I")
_RANGE = struct.Struct("!IH")
SERVER_HEADER = struct.Struct("!BIB")  # Kind, Seq, SenderSize: section 2's header


class ClientType(IntEnum):
    """Byte 1 of an extended datagram."""

    DATA = 1
    PING = 2
    REPAIR = 3
    LEAVE = 4


class DeliveryKind(IntEnum):
    """Byte 0 of a server datagram, after version 1's MESSAGE, NOTICE, CLOSED, ERROR."""

    CHAT = 5
    STATUS = 6
    ACCEPTED = 7
    LOST = 8
    DEPARTED = 9
    RESTARTED = 10


# ---------------------------------------------------------------------------
# Client to server
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """Chat text, the member's ``msg_no``-th message (1, 2, ...; uint32)."""

    token: str
    msg_no: int
    text: str


@dataclass(frozen=True, slots=True)
class Ping:
    """The heartbeat. ``nonce`` comes back in the :class:`Status`; ``boot`` is the
    server incarnation the member joined (from the COMPLETE)."""

    token: str
    nonce: int
    boot: bytes


@dataclass(frozen=True, slots=True)
class Repair:
    """Send again the Seqs ``first .. first + count - 1`` of each range."""

    token: str
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave the room (as LEAVE_ROOM does, without a TCP connection)."""

    token: str


Extended = Data | Ping | Repair | Leave


def is_extended(data: bytes) -> bool:
    """Whether a client datagram has the extended layout (first byte 0)."""
    return bool(data) and data[0] == 0


def split_extended(data: bytes) -> tuple[int, bytes, bytes]:
    """(type byte, raw token, body) of an extended datagram: the server's fast path,
    which authenticates the token before it looks at the body."""
    size = len(data)
    if size > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {size} bytes exceeds {MAX_DATAGRAM}"
        )
    if size < EXTENDED_HEADER_SIZE or data[0] != 0:
        raise bad("not an extended datagram")
    token_end = EXTENDED_HEADER_SIZE + data[2]
    if data[2] == 0:
        raise bad("token must not be empty")
    if token_end > size:
        raise bad("token size points past the end of the datagram")
    return data[1], data[EXTENDED_HEADER_SIZE:token_end], data[token_end:]


def _u32(body: bytes, what: str) -> int:
    if len(body) < _U32.size:
        raise bad(f"{what} needs 4 bytes")
    value: int = _U32.unpack_from(body)[0]
    return value


# The bodies of the extended Types, each parsed in one place: by decode_extended, and by
# the server's relay, which splits the datagram itself (split_extended) to authenticate
# the token before it reads the body.


def data_body(body: bytes) -> tuple[int, bytes]:
    """A DATA body: (MsgNo, text bytes, not decoded: the relay checks them its way)."""
    msg_no = _u32(body, "message number")
    if msg_no == 0:
        raise bad("message numbers start at 1")
    if len(body) == _U32.size:
        raise bad("a Data carries text")
    return msg_no, body[_U32.size :]


def ping_body(body: bytes) -> tuple[int, bytes]:
    """A PING body: (Nonce, Boot)."""
    if len(body) != _U32.size + BOOT_SIZE:
        raise bad(f"a Ping body is {_U32.size + BOOT_SIZE} bytes")
    return _u32(body, "nonce"), body[_U32.size :]


def repair_body(body: bytes) -> tuple[tuple[int, int], ...]:
    """A REPAIR body: its ranges (First, Count)."""
    if not body or len(body) % _RANGE.size or len(body) // _RANGE.size > MAX_REPAIR_RANGES:
        raise bad(f"a Repair holds 1-{MAX_REPAIR_RANGES} ranges of {_RANGE.size} bytes")
    ranges = tuple(_RANGE.iter_unpack(body))
    if any(count == 0 or first == 0 for first, count in ranges):
        raise bad("a repair range starts at Seq 1 or later and is not empty")
    return ranges


def leave_body(body: bytes) -> None:
    """A LEAVE body: nothing."""
    if body:
        raise bad("a Leave has no body")


def decode_extended(data: bytes) -> Extended:
    raw_type, raw_token, body = split_extended(data)
    token = utf8(raw_token, "token")
    if not token.isascii():
        raise bad("token must be ASCII")
    match raw_type:
        case ClientType.DATA:
            msg_no, text = data_body(body)
            return Data(token, msg_no, utf8(text, "message text"))
        case ClientType.PING:
            return Ping(token, *ping_body(body))
        case ClientType.REPAIR:
            return Repair(token, repair_body(body))
        case ClientType.LEAVE:
            leave_body(body)
            return Leave(token)
    raise bad(f"unknown extended datagram type {raw_type}")


def encode_extended(datagram: Extended) -> bytes:
    token = datagram.token.encode("ascii")
    if not 1 <= len(token) <= MAX_TOKEN_BYTES:
        raise refuse(f"token must be 1-{MAX_TOKEN_BYTES} bytes")
    match datagram:
        case Data(_, msg_no, text):
            if not 1 <= msg_no <= 0xFFFFFFFF or not text:
                raise refuse("a Data has a message number from 1 and text")
            kind, body = ClientType.DATA, _U32.pack(msg_no) + text.encode("utf-8")
        case Ping(_, nonce, boot):
            if len(boot) != BOOT_SIZE:
                raise refuse(f"boot is {BOOT_SIZE} bytes")
            kind, body = ClientType.PING, _U32.pack(nonce) + boot
        case Repair(_, ranges):
            if not 1 <= len(ranges) <= MAX_REPAIR_RANGES:
                raise refuse(f"a Repair holds 1-{MAX_REPAIR_RANGES} ranges")
            if any(
                not (1 <= first <= 0xFFFFFFFF and 1 <= count <= MAX_REPAIR_COUNT)
                for first, count in ranges
            ):
                raise refuse("repair ranges start at Seq 1 and hold 1-65535 Seqs")
            kind, body = ClientType.REPAIR, b"".join(_RANGE.pack(*r) for r in ranges)
        case Leave():
            kind, body = ClientType.LEAVE, b""
    data = bytes((0, kind, len(token))) + token + body
    if len(data) > MAX_DATAGRAM:
        raise refuse(f"datagram would be {len(data)} bytes", ErrorCode.TOO_LARGE)
    return data


# ---------------------------------------------------------------------------
# Server to client
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chat:
    """A MESSAGE that also says which of its sender's messages it is."""

    seq: int
    sender: str
    msg_no: int
    text: str


@dataclass(frozen=True, slots=True)
class Status:
    """The answer to a Ping: ``seq`` is the room's latest Seq, ``nonce`` the Ping's."""

    seq: int
    nonce: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """Message ``msg_no`` was relayed already, as ``seq`` (0: too long ago to say)."""

    seq: int
    msg_no: int


@dataclass(frozen=True, slots=True)
class Lost:
    """The Seqs ``first .. first + count - 1`` are older than the server's history."""

    first: int
    count: int


@dataclass(frozen=True, slots=True)
class Departed:
    """The member is out of the room (the answer to a Leave).

    ``relayed`` (the ``relayed`` feature; None without it) is the member's highest
    message number the server dealt with: every message up to it was relayed (or
    refused with an ERROR), none after it was or ever will be, as the member is gone.
    """

    relayed: int | None = None


@dataclass(frozen=True, slots=True)
class Restarted:
    """The server restarted since the member joined: its room and token are gone."""

    text: str


Received = ServerDatagram | Chat | Status | Accepted | Lost | Departed | Restarted


def chat_prefix(seq: int, sender: bytes, msg_no: int) -> bytes:
    """Everything of a :class:`Chat` before its text: the relay's per-message part."""
    return SERVER_HEADER.pack(DeliveryKind.CHAT, seq, len(sender)) + sender + _U32.pack(msg_no)


def encode_received(datagram: Received) -> bytes:
    match datagram:
        case ServerDatagram():
            return encode_server_datagram(datagram)
        case Chat(seq, sender, msg_no, text):
            name = sender.encode("utf-8")
            if not 1 <= len(name) <= MAX_NAME_BYTES:
                raise refuse(f"sender must be 1-{MAX_NAME_BYTES} bytes")
            data = chat_prefix(seq, name, msg_no) + text.encode("utf-8")
        case Status(seq, nonce):
            data = SERVER_HEADER.pack(DeliveryKind.STATUS, seq, 0) + _U32.pack(nonce)
        case Accepted(seq, msg_no):
            data = SERVER_HEADER.pack(DeliveryKind.ACCEPTED, seq, 0) + _U32.pack(msg_no)
        case Lost(first, count):
            data = SERVER_HEADER.pack(DeliveryKind.LOST, first, 0) + _U32.pack(count)
        case Departed(relayed):
            data = SERVER_HEADER.pack(DeliveryKind.DEPARTED, 0, 0)
            if relayed is not None:
                data += _U32.pack(relayed)
        case Restarted(text):
            data = SERVER_HEADER.pack(DeliveryKind.RESTARTED, 0, 0) + text.encode("utf-8")
    if len(data) > MAX_DATAGRAM:
        raise refuse(f"datagram would be {len(data)} bytes", ErrorCode.TOO_LARGE)
    return data


def decode_received(data: bytes) -> Received:
    """Any server datagram a ``delivery`` member can receive: version 1's kinds (as
    :class:`~ocm.wire.datagrams.ServerDatagram`) and the extension's."""
    if len(data) < SERVER_HEADER_SIZE or data[0] < DeliveryKind.CHAT:
        return decode_server_datagram(data)  # version 1, and its errors
    if len(data) > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}"
        )
    raw_kind, seq, sender_size = SERVER_HEADER.unpack_from(data)
    if raw_kind not in DeliveryKind._value2member_map_:
        raise bad(f"unknown datagram kind {raw_kind}")
    kind = DeliveryKind(raw_kind)
    if sender_size and kind is not DeliveryKind.CHAT:
        raise bad("only CHAT datagrams carry a sender")
    sender_end = SERVER_HEADER_SIZE + sender_size
    if sender_end > len(data):
        raise bad("sender size points past the end of the datagram")
    body = data[sender_end:]
    match kind:
        case DeliveryKind.CHAT:
            if not sender_size:
                raise bad("a CHAT names its sender")
            sender = utf8(data[SERVER_HEADER_SIZE:sender_end], "sender")
            return Chat(seq, sender, _u32(body, "message number"), utf8(body[4:], "text"))
        case DeliveryKind.STATUS:
            return Status(seq, _exactly_u32(body, "STATUS"))
        case DeliveryKind.ACCEPTED:
            return Accepted(seq, _exactly_u32(body, "ACCEPTED"))
        case DeliveryKind.LOST:
            count = _exactly_u32(body, "LOST")
            if seq == 0 or count == 0:
                raise bad("LOST names a non-empty range from Seq 1")
            return Lost(seq, count)
        case DeliveryKind.DEPARTED:
            if seq:
                raise bad("DEPARTED has Seq 0")
            if not body:
                return Departed()
            return Departed(_exactly_u32(body, "DEPARTED"))
        case DeliveryKind.RESTARTED:
            return Restarted(utf8(body, "text"))
    raise AssertionError("unreachable")  # pragma: no cover


def _exactly_u32(body: bytes, what: str) -> int:
    if len(body) != _U32.size:
        raise bad(f"a {what} body is {_U32.size} bytes")
    return _u32(body, what)
