"""Relay datagrams, the chat on UDP (section 2 of docs/protocol.md): pure
encode/decode, no I/O.

Client to server: RoomNameSize, TokenSize, room, token, text (:class:`ClientDatagram`;
an empty text is a heartbeat). Server to client: Kind, Seq, SenderSize, sender, text
(:class:`ServerDatagram`). :func:`split_client_datagram` is the server's fast path, and
:func:`server_datagram_prefix` the part of a relayed datagram the server encodes once.

Malformed input raises :class:`~ocm.errors.RemoteProtocolError`; a datagram we cannot
encode raises :class:`~ocm.errors.LocalProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ocm.errors import ErrorCode, RemoteProtocolError
from ocm.wire._util import bad, refuse, utf8
from ocm.wire.constants import (
    CLIENT_HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_NAME_BYTES,
    MAX_TOKEN_BYTES,
    SEQ_CYCLE,
    SERVER_HEADER_SIZE,
)

__all__ = [
    "ClientDatagram",
    "Kind",
    "ServerDatagram",
    "decode_client_datagram",
    "decode_server_datagram",
    "encode_client_datagram",
    "encode_server_datagram",
    "next_seq",
    "server_datagram_prefix",
    "split_client_datagram",
]

_SERVER_HEADER = struct.Struct("!BIB")


def next_seq(seq: int) -> int:
    """The Seq after ``seq`` (section 2): 1, 2, ..., 2**32 - 1, then 1 again."""
    return seq % SEQ_CYCLE + 1


class Kind(IntEnum):
    MESSAGE = 1
    NOTICE = 2
    CLOSED = 3
    ERROR = 4


# ---------------------------------------------------------------------------
# Relay datagrams (section 2)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientDatagram:
    """Client to server. An empty ``text`` is a heartbeat."""

    room: str
    token: str
    text: str = ""

    @property
    def is_heartbeat(self) -> bool:
        return not self.text


@dataclass(frozen=True, slots=True)
class ServerDatagram:
    """Server to client. ``sender`` is empty unless ``kind`` is MESSAGE."""

    kind: Kind
    seq: int
    sender: str = ""
    text: str = ""


def split_client_datagram(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a client datagram into raw (room, token, text) without decoding text.

    The server's fast path: routing needs only the token bytes, so UTF-8 checks of
    the text happen once, after authentication.
    """
    size = len(data)
    if size > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {size} bytes exceeds {MAX_DATAGRAM}"
        )
    if size < CLIENT_HEADER_SIZE:
        raise bad(f"datagram shorter than its {CLIENT_HEADER_SIZE}-byte header")
    room_end = CLIENT_HEADER_SIZE + data[0]
    token_end = room_end + data[1]
    if data[0] == 0 or data[1] == 0:
        raise bad("room name and token must not be empty")
    if token_end > size:
        raise bad("sizes point past the end of the datagram")
    return data[CLIENT_HEADER_SIZE:room_end], data[room_end:token_end], data[token_end:]


def decode_client_datagram(data: bytes) -> ClientDatagram:
    room, token, text = split_client_datagram(data)
    token_text = utf8(token, "token")
    if not token_text.isascii():
        raise bad("token must be ASCII")
    return ClientDatagram(utf8(room, "room name"), token_text, utf8(text, "message text"))


def encode_client_datagram(datagram: ClientDatagram) -> bytes:
    room = datagram.room.encode("utf-8")
    token = datagram.token.encode("ascii")
    if not 1 <= len(room) <= MAX_NAME_BYTES or not 1 <= len(token) <= MAX_TOKEN_BYTES:
        raise refuse(f"room name and token must be 1-{MAX_NAME_BYTES} bytes")
    data = bytes((len(room), len(token))) + room + token + datagram.text.encode("utf-8")
    if len(data) > MAX_DATAGRAM:
        raise refuse(f"datagram would be {len(data)} bytes", ErrorCode.TOO_LARGE)
    return data


def encode_server_datagram(datagram: ServerDatagram) -> bytes:
    sender = datagram.sender.encode("utf-8")
    if len(sender) > MAX_NAME_BYTES:
        raise refuse("sender must be at most 255 bytes")
    if sender and datagram.kind is not Kind.MESSAGE:
        raise refuse("only MESSAGE datagrams carry a sender")
    data = _SERVER_HEADER.pack(datagram.kind, datagram.seq, len(sender)) + sender
    data += datagram.text.encode("utf-8")
    if len(data) > MAX_DATAGRAM:
        raise refuse(f"datagram would be {len(data)} bytes", ErrorCode.TOO_LARGE)
    return data


def server_datagram_prefix(kind: Kind, seq: int, sender: bytes = b"") -> bytes:
    """Header plus sender name: the server's preencoded part of a relayed datagram."""
    return _SERVER_HEADER.pack(kind, seq, len(sender)) + sender


def decode_server_datagram(data: bytes) -> ServerDatagram:
    size = len(data)
    if size > MAX_DATAGRAM:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"datagram of {size} bytes exceeds {MAX_DATAGRAM}"
        )
    if size < SERVER_HEADER_SIZE:
        raise bad(f"datagram shorter than its {SERVER_HEADER_SIZE}-byte header")
    raw_kind, seq, sender_size = _SERVER_HEADER.unpack_from(data)
    if raw_kind not in Kind._value2member_map_:
        raise bad(f"unknown datagram kind {raw_kind}")
    kind = Kind(raw_kind)
    if sender_size and kind is not Kind.MESSAGE:
        raise bad("only MESSAGE datagrams carry a sender")
    sender_end = SERVER_HEADER_SIZE + sender_size
    if sender_end > size:
        raise bad("sender size points past the end of the datagram")
    sender = utf8(data[SERVER_HEADER_SIZE:sender_end], "sender")
    return ServerDatagram(kind, seq, sender, utf8(data[sender_end:], "message text"))
