"""TCRP, the room-control protocol on TCP (section 1 of docs/protocol.md): pure
encode/decode, no I/O.

Two levels:

* frames: :class:`TcrpHeader` and :class:`TcrpMessage` (operation, state, room, JSON
  payload), read and written by :func:`decode_header`, :func:`decode_tcrp_body`,
  :func:`decode_tcrp` and :func:`encode_tcrp` (and fed from a byte stream by
  :class:`ocm.wire.framer.TcrpReader`); :func:`body_size` is the cut alone, the sizes
  of a header whose operation and state are not read;
* typed messages: the requests (:class:`CreateRoom`, :class:`JoinRoom`,
  :class:`ListRooms`, :class:`LeaveRoom`, section 4's :class:`Tunnel` and
  :class:`Resume`, section 5's :class:`StartTls` and :class:`LookupRoom`) and replies
  (:class:`Ack`, :class:`Admission`, :class:`RoomList`, :class:`Left`,
  :class:`Tunnelled`, :class:`Resumed`, :class:`TlsReady`, :class:`RoomDetails`),
  converted with
  :func:`parse_request` / :func:`encode_request` and :func:`parse_reply` /
  :func:`encode_reply`. Field rules are checked here.

Malformed input raises :class:`~ocm.errors.RemoteProtocolError` with the wire error
code; a message we cannot encode raises :class:`~ocm.errors.LocalProtocolError`.
Nothing else escapes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ocm.errors import ErrorCode, RemoteProtocolError
from ocm.wire._util import bad, refuse, utf8
from ocm.wire.constants import (
    MAX_NAME_BYTES,
    MAX_TCRP_PAYLOAD,
    MAX_TOKEN_BYTES,
    PAYLOAD_SIZE_BYTES,
    SEQ_CYCLE,
    TCRP_HEADER_SIZE,
)
from ocm.wire.names import validate_name

__all__ = [
    "Ack",
    "Admission",
    "CreateRoom",
    "E2eParams",
    "JoinRoom",
    "LeaveRoom",
    "Left",
    "ListRooms",
    "LookupRoom",
    "Operation",
    "Reply",
    "Request",
    "Resume",
    "Resumed",
    "RoomDetails",
    "RoomInfo",
    "RoomList",
    "SealedKeys",
    "StartTls",
    "State",
    "TcrpHeader",
    "TcrpMessage",
    "TlsReady",
    "Tunnel",
    "Tunnelled",
    "body_size",
    "decode_header",
    "decode_tcrp",
    "decode_tcrp_body",
    "encode_error_ack",
    "encode_header",
    "encode_reply",
    "encode_request",
    "encode_tcrp",
    "parse_reply",
    "parse_request",
    "reply_message",
    "request_message",
]


class Operation(IntEnum):
    CREATE_ROOM = 1
    JOIN_ROOM = 2
    LIST_ROOMS = 3
    LEAVE_ROOM = 4
    # Section 4 of docs/protocol.md, each granted as a feature of the same name.
    TUNNEL = 5  # the connection carries the member's relay datagrams from then on
    RESUME = 6  # the member moves its token to the connection's IP address
    # Section 5.
    STARTTLS = 7  # after its COMPLETE the connection carries TLS
    LOOKUP_ROOM = 8  # what a client must know before it joins: an e2e room's KDF salt


class State(IntEnum):
    REQUEST = 0
    ACK = 1
    COMPLETE = 2


# ---------------------------------------------------------------------------
# TCRP frames (section 1)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcrpHeader:
    """The 32-byte TCRP header. ``operation`` is an :class:`Operation`."""

    room_name_size: int
    operation: Operation
    state: State
    payload_size: int

    @property
    def body_size(self) -> int:
        return self.room_name_size + self.payload_size


@dataclass(frozen=True, slots=True)
class TcrpMessage:
    """One TCRP message: header fields plus the decoded room name and JSON object."""

    operation: Operation
    state: State
    room: str
    payload: dict[str, Any]


def body_size(header: bytes, *, max_payload: int = MAX_TCRP_PAYLOAD) -> int:
    """The size of the body (room name and payload) a raw 32-byte TCRP header announces.

    Only the size fields are read, not the operation or the state: this is the cut of
    :func:`decode_header` and of :meth:`ocm.wire.framer.TcrpReader.next_raw` alike.
    Raises ProtocolError: ``bad_request`` for a short header, ``too_large`` for a
    payload size over ``max_payload``.
    """
    if len(header) != TCRP_HEADER_SIZE:
        raise bad(f"TCRP header must be {TCRP_HEADER_SIZE} bytes, got {len(header)}")
    payload_size = int.from_bytes(header[3:TCRP_HEADER_SIZE], "big")
    if payload_size > max_payload:
        raise RemoteProtocolError(
            ErrorCode.TOO_LARGE, f"payload of {payload_size} bytes exceeds {max_payload}"
        )
    return header[0] + payload_size


def decode_header(data: bytes, *, max_payload: int = MAX_TCRP_PAYLOAD) -> TcrpHeader:
    """Decode a 32-byte TCRP header.

    Raises ProtocolError: ``bad_request`` for a short header or unknown state,
    ``unknown_operation`` for an operation outside 1-8, ``too_large`` for a payload
    size over ``max_payload`` (:func:`body_size`). The checks run in that order so that
    a server can still answer an unknown operation (it knows the state was a request).
    """
    if len(data) != TCRP_HEADER_SIZE:
        raise bad(f"TCRP header must be {TCRP_HEADER_SIZE} bytes, got {len(data)}")
    room_name_size, raw_operation, raw_state = data[0], data[1], data[2]
    if raw_state not in State._value2member_map_:
        raise bad(f"unknown state {raw_state}")
    if raw_operation not in Operation._value2member_map_:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_OPERATION, f"unknown operation {raw_operation}")
    payload_size = body_size(data, max_payload=max_payload) - room_name_size
    return TcrpHeader(room_name_size, Operation(raw_operation), State(raw_state), payload_size)


def _decode_payload(data: bytes) -> dict[str, Any]:
    if not data:
        return {}  # section 1: an empty payload means {}
    text = utf8(data, "payload")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise bad("payload is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad("payload must be a JSON object")
    return value


def decode_tcrp_body(header: TcrpHeader, body: bytes) -> TcrpMessage:
    """Decode the body that follows ``header`` (exactly ``header.body_size`` bytes)."""
    if len(body) != header.body_size:
        raise bad(f"body must be {header.body_size} bytes, got {len(body)}")
    room = utf8(body[: header.room_name_size], "room name")
    payload = _decode_payload(body[header.room_name_size :])
    return TcrpMessage(header.operation, header.state, room, payload)


def decode_tcrp(data: bytes, *, max_payload: int = MAX_TCRP_PAYLOAD) -> TcrpMessage:
    """Decode one whole TCRP message; the bytes must hold exactly one."""
    header = decode_header(data[:TCRP_HEADER_SIZE], max_payload=max_payload)
    body = data[TCRP_HEADER_SIZE:]
    if len(body) < header.body_size:
        raise bad("sizes point past the end of the message")
    if len(body) > header.body_size:
        raise bad("trailing bytes after the message")
    return decode_tcrp_body(header, body)


def encode_header(room_name_size: int, operation: int, state: int, payload_size: int) -> bytes:
    return bytes((room_name_size, operation, state)) + payload_size.to_bytes(
        PAYLOAD_SIZE_BYTES, "big"
    )


def encode_tcrp(message: TcrpMessage) -> bytes:
    room = message.room.encode("utf-8")
    if len(room) > MAX_NAME_BYTES:
        raise refuse(f"room name must be at most {MAX_NAME_BYTES} bytes")
    payload = json.dumps(message.payload, ensure_ascii=False, separators=(",", ":")).encode()
    return encode_header(len(room), message.operation, message.state, len(payload)) + room + payload


# ---------------------------------------------------------------------------
# Typed requests and replies (section 1, the operation table)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class E2eParams:
    """Section 5: how an end-to-end room's members derive its keys from its password
    (Argon2id, RFC 9106). The creator chooses them; the server keeps and tells them."""

    salt: bytes  # 16-64 bytes, random per room
    memory_kib: int
    iterations: int
    lanes: int
    kdf: str = "argon2id"  # the only one defined


@dataclass(frozen=True, slots=True)
class CreateRoom:
    room: str
    username: str
    password: str | None = None  # None or "": an open room
    # Extensions the client speaks (section 3 of docs/protocol.md), e.g. ("delivery",).
    # Empty: a version 1 request, byte for byte.
    features: tuple[str, ...] = ()
    # Section 5: an end-to-end room; ``password`` is then the key derived for the server.
    e2e: E2eParams | None = None


@dataclass(frozen=True, slots=True)
class JoinRoom:
    room: str
    username: str
    password: str | None = None
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListRooms:
    pass


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    room: str
    token: str


@dataclass(frozen=True, slots=True)
class Tunnel:
    """Section 4: carry the token's relay datagrams on this connection from now on."""

    room: str
    token: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Section 4: bind the token to this connection's IP; ``secret`` proves it is ours."""

    room: str
    token: str
    secret: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Section 5: the next bytes on the connection, after the COMPLETE, are TLS's."""


@dataclass(frozen=True, slots=True)
class LookupRoom:
    """Section 5: what a client must know about ``room`` before it joins."""

    room: str


Request = CreateRoom | JoinRoom | ListRooms | LeaveRoom | Tunnel | Resume | StartTls | LookupRoom


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's immediate answer. ``error`` is None for ``{"status": "ok"}``."""

    operation: Operation
    room: str = ""
    error: ErrorCode | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Admission:
    """COMPLETE of CREATE_ROOM and JOIN_ROOM: the member's ticket into the room."""

    operation: Operation
    room: str
    token: str
    udp_port: int
    host: str
    members: tuple[str, ...]
    # OCM extension: the server's idle timeout in seconds, so a client can heartbeat at
    # least every idle_timeout / 3 as section 2 asks. None when the server does not say.
    idle_timeout: float | None = None
    # Section 3: the extensions the server granted (a subset of those asked for) and,
    # with "delivery": the room's last Seq when the member entered (it receives every
    # later one), the server's incarnation id (16 hex digits) and how many Seqs of the
    # room the server keeps for repair.
    features: tuple[str, ...] = ()
    seq: int | None = None
    boot: str | None = None
    history: int | None = None
    # Section 4, with "resume": the secret that moves the token to another address.
    resume: str | None = None
    # Section 5, with "sealed": the keys of the member's datagrams and of the room's.
    sealed: SealedKeys | None = None


@dataclass(frozen=True, slots=True)
class SealedKeys:
    """Section 5: a sealed member's Session id and key, and its room's KeyId and key."""

    session: bytes  # 8 bytes
    key: bytes  # 32 bytes: the member's datagrams to the server
    room_key_id: bytes  # 4 bytes
    room_key: bytes  # 32 bytes: the server's datagrams to the room


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    members: int
    protected: bool


@dataclass(frozen=True, slots=True)
class RoomList:
    """COMPLETE of LIST_ROOMS."""

    rooms: tuple[RoomInfo, ...]


@dataclass(frozen=True, slots=True)
class Left:
    """COMPLETE of LEAVE_ROOM. ``relayed``: as in DEPARTED (section 3), for a member
    granted the ``relayed`` feature; None otherwise (version 1: an empty payload)."""

    room: str
    relayed: int | None = None


@dataclass(frozen=True, slots=True)
class Tunnelled:
    """COMPLETE of TUNNEL: the next byte on the connection is the first frame's."""

    room: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """COMPLETE of RESUME: the token is bound to the new IP. ``secret`` replaces the one
    used (each secret moves the token once); ``seq`` is the room's latest Seq."""

    room: str
    secret: str
    seq: int


@dataclass(frozen=True, slots=True)
class TlsReady:
    """COMPLETE of STARTTLS: the client starts the TLS handshake next."""


@dataclass(frozen=True, slots=True)
class RoomDetails:
    """COMPLETE of LOOKUP_ROOM. ``e2e`` is set for an end-to-end room."""

    room: str
    members: int
    protected: bool
    e2e: E2eParams | None = None


Reply = Ack | Admission | RoomList | Left | Tunnelled | Resumed | TlsReady | RoomDetails


def _field(payload: dict[str, Any], key: str, kind: type, *, required: bool = True) -> Any:
    if key not in payload or (not required and payload[key] is None):
        if required:
            raise bad(f'missing field "{key}"')
        return None
    value = payload[key]
    # bool is an int subclass: a JSON true is not a port number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad(f'field "{key}" must be {kind.__name__}')
    return value


def _username(payload: dict[str, Any]) -> str:
    # Section 1: trimmed of spaces. Only spaces: a tab or newline is a control
    # character, refused by validate_name rather than silently removed.
    return validate_name(_field(payload, "username", str).strip(" "), "username")


def _password(payload: dict[str, Any]) -> str | None:
    password: str | None = _field(payload, "password", str, required=False)
    if password:
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON "\\ud800" escape
            raise bad("password is not valid Unicode") from None
    return password or None


def _token(value: str, what: str = "token") -> str:
    if not 1 <= len(value) <= MAX_TOKEN_BYTES or not value.isascii():
        raise bad(f"{what} must be 1-{MAX_TOKEN_BYTES} ASCII characters")
    return value


def parse_request(message: TcrpMessage) -> Request:
    """Turn a decoded REQUEST into a typed request, checking every field rule."""
    if message.state is not State.REQUEST:
        raise bad(f"expected a REQUEST, got {message.state.name}")
    payload = message.payload
    match message.operation:
        case Operation.CREATE_ROOM | Operation.JOIN_ROOM:
            room = validate_name(message.room, "room name")
            username, password = _username(payload), _password(payload)
            if message.operation is Operation.JOIN_ROOM:
                return JoinRoom(room, username, password, _features(payload))
            e2e = None if payload.get("e2e") is None else _e2e_params(payload["e2e"])
            return CreateRoom(room, username, password, _features(payload), e2e)
        case Operation.LIST_ROOMS:
            return ListRooms()
        case Operation.LEAVE_ROOM:
            room = validate_name(message.room, "room name")
            return LeaveRoom(room, _token(_field(payload, "token", str)))
        case Operation.TUNNEL:
            room = validate_name(message.room, "room name")
            return Tunnel(room, _token(_field(payload, "token", str)))
        case Operation.RESUME:
            room = validate_name(message.room, "room name")
            token = _token(_field(payload, "token", str))
            return Resume(room, token, _token(_field(payload, "secret", str), "secret"))
        case Operation.STARTTLS:
            return StartTls()
        case Operation.LOOKUP_ROOM:
            return LookupRoom(validate_name(message.room, "room name"))
    raise AssertionError("unreachable")  # pragma: no cover


def request_message(request: Request) -> TcrpMessage:
    match request:
        case CreateRoom(room, username, password, features) | JoinRoom(
            room, username, password, features
        ):
            operation = (
                Operation.CREATE_ROOM if isinstance(request, CreateRoom) else Operation.JOIN_ROOM
            )
            payload: dict[str, Any] = {"username": username}
            if password:
                payload["password"] = password
            if features:
                payload["features"] = list(features)
            if isinstance(request, CreateRoom) and request.e2e is not None:
                payload["e2e"] = _e2e_json(request.e2e)
            return TcrpMessage(operation, State.REQUEST, room, payload)
        case ListRooms():
            return TcrpMessage(Operation.LIST_ROOMS, State.REQUEST, "", {})
        case LeaveRoom(room, token):
            return TcrpMessage(Operation.LEAVE_ROOM, State.REQUEST, room, {"token": token})
        case Tunnel(room, token):
            return TcrpMessage(Operation.TUNNEL, State.REQUEST, room, {"token": token})
        case Resume(room, token, secret):
            payload = {"token": token, "secret": secret}
            return TcrpMessage(Operation.RESUME, State.REQUEST, room, payload)
        case StartTls():
            return TcrpMessage(Operation.STARTTLS, State.REQUEST, "", {})
        case LookupRoom(room):
            return TcrpMessage(Operation.LOOKUP_ROOM, State.REQUEST, room, {})
    raise AssertionError("unreachable")  # pragma: no cover


def encode_request(request: Request) -> bytes:
    return encode_tcrp(request_message(request))


def reply_message(reply: Reply) -> TcrpMessage:
    match reply:
        case Ack(operation, room, None, _):
            return TcrpMessage(operation, State.ACK, room, {"status": "ok"})
        case Ack(operation, room, error, text):
            payload: dict[str, Any] = {"status": "error", "code": str(error), "message": text}
            return TcrpMessage(operation, State.ACK, room, payload)
        case Admission(
            operation, room, token, udp_port, host, members, idle_timeout, features, seq, boot
        ):
            payload = {"token": token, "udp_port": udp_port, "host": host, "members": list(members)}
            if idle_timeout is not None:
                payload["idle_timeout"] = idle_timeout
            if features:
                payload["features"] = list(features)
            extensions = (("seq", seq), ("boot", boot), ("history", reply.history))
            for key, value in (*extensions, ("resume", reply.resume)):
                if value is not None:
                    payload[key] = value
            if reply.sealed is not None:
                keys = reply.sealed
                payload["sealed"] = {
                    "session": keys.session.hex(),
                    "key": keys.key.hex(),
                    "room_key_id": keys.room_key_id.hex(),
                    "room_key": keys.room_key.hex(),
                }
            return TcrpMessage(operation, State.COMPLETE, room, payload)
        case RoomList(rooms):
            listed = [
                {"name": r.name, "members": r.members, "protected": r.protected} for r in rooms
            ]
            return TcrpMessage(Operation.LIST_ROOMS, State.COMPLETE, "", {"rooms": listed})
        case Left(room, relayed):
            payload = {} if relayed is None else {"relayed": relayed}
            return TcrpMessage(Operation.LEAVE_ROOM, State.COMPLETE, room, payload)
        case Tunnelled(room):
            return TcrpMessage(Operation.TUNNEL, State.COMPLETE, room, {})
        case Resumed(room, secret, seq):
            payload = {"secret": secret, "seq": seq}
            return TcrpMessage(Operation.RESUME, State.COMPLETE, room, payload)
        case TlsReady():
            return TcrpMessage(Operation.STARTTLS, State.COMPLETE, "", {})
        case RoomDetails(room, members, protected, e2e):
            payload = {"members": members, "protected": protected}
            if e2e is not None:
                payload["e2e"] = _e2e_json(e2e)
            return TcrpMessage(Operation.LOOKUP_ROOM, State.COMPLETE, room, payload)
    raise AssertionError("unreachable")  # pragma: no cover


def encode_reply(reply: Reply) -> bytes:
    return encode_tcrp(reply_message(reply))


def encode_error_ack(operation: int, room: str, error: ErrorCode, text: str) -> bytes:
    """An error ACK that may answer an operation byte outside :class:`Operation`."""
    payload = {"status": "error", "code": str(error), "message": text}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    room_bytes = room.encode("utf-8")[:MAX_NAME_BYTES] if room else b""
    return encode_header(len(room_bytes), operation, State.ACK, len(body)) + room_bytes + body


def _idle_timeout(payload: dict[str, Any]) -> float | None:
    if payload.get("idle_timeout") is None:
        return None  # a server that does not say (the field is an OCM extension)
    value = payload["idle_timeout"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise bad('field "idle_timeout" must be a positive number')
    return float(value)


# A client may name this many features, each this long at most: bounded, and far more
# than the protocol will ever define.
MAX_FEATURES = 32
MAX_FEATURE_NAME = 64


def _features(payload: dict[str, Any]) -> tuple[str, ...]:
    """The "features" list of a request or COMPLETE (section 3): absent means none.

    Lenient on purpose (shared PROTOCOL.md, section 3: unknown is ignored): a value that
    is not a list counts as none, and entries that are not feature names are skipped,
    so a client that sends something odd there still gets version 1, never an error.
    """
    value = payload.get("features")
    if not isinstance(value, list):
        return ()
    names = [
        f for f in value[:MAX_FEATURES] if isinstance(f, str) and 0 < len(f) <= MAX_FEATURE_NAME
    ]
    return tuple(dict.fromkeys(names))  # in order, once each


def _optional_count(payload: dict[str, Any], key: str, limit: int) -> int | None:
    value: int | None = _field(payload, key, int, required=False)
    if value is not None and not 0 <= value <= limit:
        raise bad(f'field "{key}" out of range')
    return value


def _boot(payload: dict[str, Any]) -> str | None:
    value: str | None = _field(payload, "boot", str, required=False)
    if value is not None and (len(value) != 16 or not all(c in "0123456789abcdef" for c in value)):
        raise bad('field "boot" must be 16 lowercase hex digits')
    return value


def _optional_secret(payload: dict[str, Any], key: str) -> str | None:
    value: str | None = _field(payload, key, str, required=False)
    return None if value is None else _token(value, f'field "{key}"')


# Section 5: the bounds of an e2e room's KDF parameters as the wire carries them. The
# client that derives a key applies its own floor (ocm.client), so a server cannot talk
# it into a cheap derivation that would make the password easy to guess.
MIN_SALT, MAX_SALT = 16, 64
MAX_KDF_MEMORY_KIB = 4 * 1024 * 1024  # 4 GiB
MAX_KDF_ITERATIONS = 64
MAX_KDF_LANES = 64
_HEX = re.compile(r"[0-9a-f]*")


def _hex(value: Any, what: str, sizes: range) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        raise bad(f'field "{what}" must be lowercase hex digits')
    if len(value) // 2 not in sizes:
        raise bad(f'field "{what}" must be {sizes.start}-{sizes.stop - 1} bytes')
    return bytes.fromhex(value)


def _e2e_params(value: Any) -> E2eParams:
    if not isinstance(value, dict):
        raise bad('field "e2e" must be a JSON object')
    kdf = _field(value, "kdf", str)
    if kdf != "argon2id":
        raise bad(f'unknown e2e kdf "{kdf}"')
    bounds = {"memory_kib": MAX_KDF_MEMORY_KIB, "iterations": MAX_KDF_ITERATIONS}
    numbers = {key: _field(value, key, int) for key in ("memory_kib", "iterations", "lanes")}
    for key, number in numbers.items():
        if not 1 <= number <= bounds.get(key, MAX_KDF_LANES):
            raise bad(f'e2e field "{key}" out of range')
    if numbers["memory_kib"] < 8 * numbers["lanes"]:
        raise bad('e2e field "memory_kib" must be at least 8 per lane')
    salt = _hex(_field(value, "salt", str), "salt", range(MIN_SALT, MAX_SALT + 1))
    return E2eParams(salt, numbers["memory_kib"], numbers["iterations"], numbers["lanes"], kdf)


def _e2e_json(params: E2eParams) -> dict[str, Any]:
    return {
        "kdf": params.kdf,
        "salt": params.salt.hex(),
        "memory_kib": params.memory_kib,
        "iterations": params.iterations,
        "lanes": params.lanes,
    }


def _sealed_keys(value: Any) -> SealedKeys | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad('field "sealed" must be a JSON object')
    return SealedKeys(
        _hex(_field(value, "session", str), "session", range(8, 9)),
        _hex(_field(value, "key", str), "key", range(32, 33)),
        _hex(_field(value, "room_key_id", str), "room_key_id", range(4, 5)),
        _hex(_field(value, "room_key", str), "room_key", range(32, 33)),
    )


def _room_info(value: Any) -> RoomInfo:
    if not isinstance(value, dict):
        raise bad("each room must be a JSON object")
    return RoomInfo(
        _field(value, "name", str), _field(value, "members", int), _field(value, "protected", bool)
    )


def parse_reply(message: TcrpMessage) -> Reply:
    """Turn a decoded ACK or COMPLETE into a typed reply (the client side)."""
    payload = message.payload
    if message.state is State.ACK:
        status = _field(payload, "status", str)
        if status == "ok":
            return Ack(message.operation, message.room)
        if status != "error":
            raise bad(f'unknown ACK status "{status}"')
        raw_code = _field(payload, "code", str)
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            raise bad(f'unknown error code "{raw_code}"') from None
        text = _field(payload, "message", str, required=False) or ""
        return Ack(message.operation, message.room, code, text)
    if message.state is not State.COMPLETE:
        raise bad("expected an ACK or COMPLETE, got a REQUEST")
    match message.operation:
        case Operation.CREATE_ROOM | Operation.JOIN_ROOM:
            members = _field(payload, "members", list)
            if not all(isinstance(m, str) for m in members):
                raise bad('field "members" must be a list of strings')
            udp_port = _field(payload, "udp_port", int)
            if not 0 < udp_port < 65536:
                raise bad(f"udp_port {udp_port} out of range")
            return Admission(
                message.operation,
                message.room,
                _token(_field(payload, "token", str)),
                udp_port,
                _field(payload, "host", str),
                tuple(members),
                _idle_timeout(payload),
                _features(payload),
                _optional_count(payload, "seq", 0xFFFFFFFF),
                _boot(payload),
                _optional_count(payload, "history", 0xFFFFFFFF),
                _optional_secret(payload, "resume"),
                _sealed_keys(payload.get("sealed")),
            )
        case Operation.LIST_ROOMS:
            rooms = _field(payload, "rooms", list)
            return RoomList(tuple(_room_info(r) for r in rooms))
        case Operation.LEAVE_ROOM:
            return Left(message.room, _optional_count(payload, "relayed", SEQ_CYCLE))
        case Operation.TUNNEL:
            return Tunnelled(message.room)
        case Operation.RESUME:
            seq = _optional_count(payload, "seq", 0xFFFFFFFF)
            if seq is None:
                raise bad('missing field "seq"')
            return Resumed(message.room, _token(_field(payload, "secret", str), "secret"), seq)
        case Operation.STARTTLS:
            return TlsReady()
        case Operation.LOOKUP_ROOM:
            members = _field(payload, "members", int)
            e2e = None if payload.get("e2e") is None else _e2e_params(payload["e2e"])
            return RoomDetails(message.room, members, _field(payload, "protected", bool), e2e)
    raise AssertionError("unreachable")  # pragma: no cover
