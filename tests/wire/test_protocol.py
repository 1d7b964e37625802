"""Unit tests of ocm.wire: round trips, exact bytes, and every malformed case.

Each malformed case asserts the exact wire error code, so a decoder that raises the
wrong code (or a stray IndexError) fails here. The byte-exact tests pin the layout of
docs/protocol.md: a change of field order or width cannot slip through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ocm.errors import (
    ErrorCode,
    LocalProtocolError,
    OCMError,
    ProtocolError,
    RemoteProtocolError,
)
from ocm.wire import (
    MAX_DATAGRAM,
    MAX_TCRP_PAYLOAD,
    TCRP_HEADER_SIZE,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    Left,
    ListRooms,
    Operation,
    Reply,
    Request,
    RoomInfo,
    RoomList,
    ServerDatagram,
    State,
    TcrpHeader,
    TcrpMessage,
    decode_client_datagram,
    decode_header,
    decode_server_datagram,
    decode_tcrp,
    decode_tcrp_body,
    encode_client_datagram,
    encode_error_ack,
    encode_header,
    encode_reply,
    encode_request,
    encode_server_datagram,
    encode_tcrp,
    parse_reply,
    parse_request,
    server_datagram_prefix,
    split_client_datagram,
    validate_name,
)

BAD = ErrorCode.BAD_REQUEST
TOKEN = "T0k3n-abcdefghijklmnopqrstuvwxyz"


def raw(
    operation: int, state: int, room: bytes = b"", payload: bytes = b"", *, sizes: Any = None
) -> bytes:
    """A TCRP message built by hand; ``sizes`` overrides (room size, payload size)."""
    room_size, payload_size = sizes if sizes is not None else (len(room), len(payload))
    return encode_header(room_size, operation, state, payload_size) + room + payload


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


@contextmanager
def expect(code: ErrorCode) -> Iterator[None]:
    """pytest.raises for a ProtocolError whose code is exactly ``code``."""
    with pytest.raises(ProtocolError) as info:
        yield
    assert info.value.code is code, info.value


def request_from(data: bytes) -> Request:
    return parse_request(decode_tcrp(data))


def reply_from(data: bytes) -> Reply:
    return parse_reply(decode_tcrp(data))


# ---------------------------------------------------------------------------
# Byte-exact encodings (the wire layout cannot drift silently)
# ---------------------------------------------------------------------------


def test_create_room_request_bytes() -> None:
    payload = b'{"username":"alice"}'
    expected = (
        bytes([5, 1, 0])  # RoomNameSize 5, CREATE_ROOM, REQUEST
        + bytes(28)
        + bytes([len(payload)])  # OperationPayloadSize: 29 bytes, big-endian
        + b"lobby"
        + payload
    )
    assert len(expected) == TCRP_HEADER_SIZE + 5 + 20
    assert encode_request(CreateRoom("lobby", "alice")) == expected
    assert bytes.fromhex(
        "050100" + "00" * 28 + "14" + b"lobby".hex() + payload.hex()
    ) == encode_request(CreateRoom("lobby", "alice"))


def test_join_with_password_and_list_bytes() -> None:
    payload = '{"username":"bob","password":"pä"}'.encode()
    assert encode_request(JoinRoom("r", "bob", "pä")) == (
        b"\x01\x02\x00" + bytes(28) + bytes([len(payload)]) + b"r" + payload
    )
    assert encode_request(ListRooms()) == b"\x00\x03\x00" + bytes(28) + b"\x02{}"


def test_payload_size_is_29_bytes_big_endian() -> None:
    header = encode_header(0, 3, 0, 0x0102)
    assert header == b"\x00\x03\x00" + bytes(27) + b"\x01\x02"
    assert decode_header(header) == TcrpHeader(0, Operation.LIST_ROOMS, State.REQUEST, 0x0102)
    biggest = encode_header(255, 4, 2, 2**232 - 1)
    assert biggest == b"\xff\x04\x02" + b"\xff" * 29
    assert len(biggest) == TCRP_HEADER_SIZE


def test_ack_bytes() -> None:
    ok = b'{"status":"ok"}'
    assert encode_reply(Ack(Operation.CREATE_ROOM, "lobby")) == (
        b"\x05\x01\x01" + bytes(28) + bytes([len(ok)]) + b"lobby" + ok
    )
    error = b'{"status":"error","code":"room_exists","message":"taken"}'
    assert encode_reply(Ack(Operation.CREATE_ROOM, "", ErrorCode.ROOM_EXISTS, "taken")) == (
        b"\x00\x01\x01" + bytes(28) + bytes([len(error)]) + error
    )


def test_error_ack_for_an_unknown_operation_bytes() -> None:
    payload = b'{"status":"error","code":"unknown_operation","message":"nope"}'
    assert encode_error_ack(9, "", ErrorCode.UNKNOWN_OPERATION, "nope") == (
        b"\x00\x09\x01" + bytes(28) + bytes([len(payload)]) + payload
    )


def test_complete_bytes() -> None:
    payload = b'{"token":"tok","udp_port":9001,"host":"alice","members":["alice","bob"]}'
    admission = Admission(Operation.JOIN_ROOM, "lobby", "tok", 9001, "alice", ("alice", "bob"))
    assert encode_reply(admission) == (
        b"\x05\x02\x02" + bytes(28) + bytes([len(payload)]) + b"lobby" + payload
    )
    assert encode_reply(Left("lobby")) == b"\x05\x04\x02" + bytes(28) + b"\x02lobby{}"


def test_client_datagram_bytes() -> None:
    assert encode_client_datagram(ClientDatagram("lobby", "tok", "hi")) == b"\x05\x03lobbytokhi"
    assert encode_client_datagram(ClientDatagram("é", "t")) == b"\x02\x01\xc3\xa9t"


def test_server_datagram_bytes() -> None:
    message = ServerDatagram(Kind.MESSAGE, 0x01020304, "bob", "hi")
    assert encode_server_datagram(message) == b"\x01\x01\x02\x03\x04\x03bobhi"
    notice = ServerDatagram(Kind.NOTICE, 7, "", "bob joined")
    assert encode_server_datagram(notice) == b"\x02\x00\x00\x00\x07\x00bob joined"
    closed = ServerDatagram(Kind.CLOSED, 2**32 - 1, "", "bye")
    assert encode_server_datagram(closed) == b"\x03\xff\xff\xff\xff\x00bye"
    assert encode_server_datagram(ServerDatagram(Kind.ERROR, 0)) == b"\x04" + bytes(5)
    assert server_datagram_prefix(Kind.MESSAGE, 2, b"al") == b"\x01\x00\x00\x00\x02\x02al"


def test_wire_numbers() -> None:
    assert [int(o) for o in Operation] == [1, 2, 3, 4, 5, 6, 7, 8]  # 5, 6: section 4; 7, 8: 5
    assert [int(s) for s in State] == [0, 1, 2]
    assert [int(k) for k in Kind] == [1, 2, 3, 4]
    assert {str(c) for c in ErrorCode} == {
        "bad_request",
        "too_large",
        "unknown_operation",
        "room_exists",
        "no_such_room",
        "wrong_password",
        "name_taken",
        "room_full",
        "server_full",
        "rate_limited",
        "invalid_token",
        "encryption_required",
        "not_encrypted",
        "e2e_required",
    }


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

REQUESTS: list[Request] = [
    CreateRoom("lobby", "alice"),
    CreateRoom("Зал ☕", "ålice", "s3cret"),
    JoinRoom("lobby", "bob"),
    JoinRoom("lobby", "bob", "pässword"),
    ListRooms(),
    LeaveRoom("lobby", TOKEN),
    CreateRoom("r" * 255, "u" * 255),
    CreateRoom("é" * 127 + "x", "😀" * 63 + "abc"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_request_round_trip(request_: Request) -> None:
    data = encode_request(request_)
    assert request_from(data) == request_
    # The frame level round-trips too.
    assert encode_tcrp(decode_tcrp(data)) == data


REPLIES: list[Reply] = [
    Ack(Operation.CREATE_ROOM, "lobby"),
    Ack(Operation.LIST_ROOMS),
    Ack(Operation.JOIN_ROOM, "lobby", ErrorCode.WRONG_PASSWORD, "wrong password"),
    *(Ack(Operation.JOIN_ROOM, "r", code, f"because {code}") for code in ErrorCode),
    Ack(Operation.LEAVE_ROOM, "", ErrorCode.INVALID_TOKEN, ""),
    Admission(Operation.CREATE_ROOM, "lobby", TOKEN, 9001, "alice", ("alice",)),
    Admission(Operation.JOIN_ROOM, "lobby", TOKEN, 65535, "alice", ("alice", "bob", "çé")),
    RoomList(()),
    RoomList((RoomInfo("a", 1, False), RoomInfo("b ☕", 1000, True))),
    Left("lobby"),
]


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_reply_round_trip(reply: Reply) -> None:
    data = encode_reply(reply)
    assert reply_from(data) == reply
    assert encode_tcrp(decode_tcrp(data)) == data


def test_ack_ok_property() -> None:
    assert Ack(Operation.JOIN_ROOM).ok
    assert not Ack(Operation.JOIN_ROOM, "", ErrorCode.ROOM_FULL).ok


def test_error_ack_round_trips_through_parse_reply() -> None:
    data = encode_error_ack(Operation.JOIN_ROOM, "lobby", ErrorCode.RATE_LIMITED, "slow down")
    assert reply_from(data) == Ack(
        Operation.JOIN_ROOM, "lobby", ErrorCode.RATE_LIMITED, "slow down"
    )


def test_frame_round_trip_keeps_any_json_object() -> None:
    message = TcrpMessage(
        Operation.JOIN_ROOM,
        State.COMPLETE,
        "r\x01oom",  # frames carry any UTF-8; the name rules are checked one level up
        {"a": [1, 2.5, None, True, {"b": "ü"}], "": -(2**70)},
    )
    assert decode_tcrp(encode_tcrp(message)) == message


def test_empty_payload_means_empty_object() -> None:
    assert decode_tcrp(raw(3, 0)) == TcrpMessage(Operation.LIST_ROOMS, State.REQUEST, "", {})
    assert request_from(raw(3, 0)) == ListRooms()
    assert reply_from(raw(4, 2, b"lobby")) == Left("lobby")


def test_decode_header_then_body_equals_decode_whole() -> None:
    data = encode_request(JoinRoom("lobby", "bob", "pw"))
    header = decode_header(data[:TCRP_HEADER_SIZE])
    assert header.body_size == len(data) - TCRP_HEADER_SIZE
    assert decode_tcrp_body(header, data[TCRP_HEADER_SIZE:]) == decode_tcrp(data)


def test_username_is_trimmed_and_empty_password_is_open() -> None:
    data = raw(1, 0, b"lobby", as_json({"username": "  alice  ", "password": ""}))
    assert request_from(data) == CreateRoom("lobby", "alice", None)
    data = raw(2, 0, b"lobby", as_json({"username": "bob", "password": None}))
    assert request_from(data) == JoinRoom("lobby", "bob", None)


def test_list_rooms_ignores_unknown_fields() -> None:
    assert request_from(raw(3, 0, b"", as_json({"extra": 1}))) == ListRooms()


@pytest.mark.parametrize(
    "datagram",
    [
        ClientDatagram("lobby", TOKEN),
        ClientDatagram("lobby", TOKEN, "hello ☕"),
        ClientDatagram("é" * 127 + "x", "t" * 255, "x" * (MAX_DATAGRAM - 2 - 255 - 255)),
    ],
)
def test_client_datagram_round_trip(datagram: ClientDatagram) -> None:
    data = encode_client_datagram(datagram)
    assert len(data) <= MAX_DATAGRAM
    assert decode_client_datagram(data) == datagram
    room, token, text = split_client_datagram(data)
    assert (room, token, text) == (
        datagram.room.encode(),
        datagram.token.encode(),
        datagram.text.encode(),
    )


def test_heartbeat_is_an_empty_text() -> None:
    assert ClientDatagram("r", "t").is_heartbeat
    assert not ClientDatagram("r", "t", "x").is_heartbeat


@pytest.mark.parametrize(
    "datagram",
    [
        ServerDatagram(Kind.MESSAGE, 1, "alice", "hi"),
        ServerDatagram(Kind.MESSAGE, 2**32 - 1, "a" * 255, "x" * (MAX_DATAGRAM - 6 - 255)),
        ServerDatagram(Kind.MESSAGE, 5, "", ""),
        ServerDatagram(Kind.NOTICE, 3, "", "bob joined"),
        ServerDatagram(Kind.CLOSED, 4, "", "host alice left; the room is closed"),
        ServerDatagram(Kind.ERROR, 0, "", "unknown token for this room"),
        ServerDatagram(Kind.ERROR, 0),
    ],
)
def test_server_datagram_round_trip(datagram: ServerDatagram) -> None:
    assert decode_server_datagram(encode_server_datagram(datagram)) == datagram


# ---------------------------------------------------------------------------
# Malformed TCRP headers and frames
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 31])
def test_truncated_header(size: int) -> None:
    data = encode_request(ListRooms())[:size]
    with expect(BAD):
        decode_header(data)
    with expect(BAD):
        decode_tcrp(data)


def test_header_longer_than_32_bytes() -> None:
    with expect(BAD):
        decode_header(bytes(33))


@pytest.mark.parametrize("operation", [0, 9, 255])
def test_unknown_operation(operation: int) -> None:
    with expect(ErrorCode.UNKNOWN_OPERATION):
        decode_header(encode_header(0, operation, 0, 0))
    with expect(ErrorCode.UNKNOWN_OPERATION):
        decode_tcrp(raw(operation, 0))


@pytest.mark.parametrize("state", [3, 4, 255])
def test_unknown_state(state: int) -> None:
    with expect(BAD):
        decode_header(encode_header(0, 1, state, 0))
    # An unknown state is reported even when the operation is unknown too.
    with expect(BAD):
        decode_header(encode_header(0, 77, state, 0))


@pytest.mark.parametrize(
    "size", [MAX_TCRP_PAYLOAD + 1, 2**32, 2**64, 2**231, 2**232 - 2, 2**232 - 1]
)
def test_oversize_payload(size: int) -> None:
    with expect(ErrorCode.TOO_LARGE):
        decode_header(encode_header(5, 1, 0, size))
    # decode_tcrp refuses on the size alone, before looking for the bytes.
    with expect(ErrorCode.TOO_LARGE):
        decode_tcrp(encode_header(5, 1, 0, size) + b"lobby{}")


def test_payload_size_limit_is_inclusive_and_configurable() -> None:
    header = decode_header(encode_header(0, 3, 0, MAX_TCRP_PAYLOAD))
    assert header.payload_size == MAX_TCRP_PAYLOAD
    with expect(ErrorCode.TOO_LARGE):
        decode_header(encode_header(0, 3, 0, 101), max_payload=100)
    with expect(ErrorCode.TOO_LARGE):
        decode_tcrp(raw(3, 0, b"", b'{"a":' + b"1" * 100 + b"}"), max_payload=100)
    assert decode_tcrp(raw(3, 0, b"", b'{"a":1}'), max_payload=7).payload == {"a": 1}


@pytest.mark.parametrize(
    "data",
    [
        raw(1, 0, b"lobby", b"{}", sizes=(6, 2)),  # room size past the end
        raw(1, 0, b"lobby", b"{}", sizes=(5, 3)),  # payload size past the end
        raw(1, 0, b"", b"", sizes=(255, 0)),
        raw(1, 0, b"lobby", b"{}", sizes=(5, 2**16)),
    ],
)
def test_sizes_that_point_past_the_end(data: bytes) -> None:
    with expect(BAD):
        decode_tcrp(data)


def test_trailing_bytes() -> None:
    data = encode_request(CreateRoom("lobby", "alice"))
    with expect(BAD):
        decode_tcrp(data + b"x")
    with expect(BAD):
        decode_tcrp(data + data)  # two messages are not one


def test_body_of_the_wrong_size() -> None:
    header = TcrpHeader(5, Operation.CREATE_ROOM, State.REQUEST, 2)
    with expect(BAD):
        decode_tcrp_body(header, b"lobby{")
    with expect(BAD):
        decode_tcrp_body(header, b"lobby{}}")


@pytest.mark.parametrize(
    "room", [b"\xff", b"lob\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
)
def test_invalid_utf8_room_name(room: bytes) -> None:
    with expect(BAD):
        decode_tcrp(raw(1, 0, room, b'{"username":"a"}'))


@pytest.mark.parametrize("payload", [b'{"username":"\xff"}', b"\xfe{}", b'{"a":"\xed\xa0\x80"}'])
def test_invalid_utf8_payload(payload: bytes) -> None:
    with expect(BAD):
        decode_tcrp(raw(1, 0, b"lobby", payload))


@pytest.mark.parametrize("payload", [b"[]", b'"text"', b"1", b"null", b"true", b"[{}]"])
def test_json_that_is_not_an_object(payload: bytes) -> None:
    with expect(BAD):
        decode_tcrp(raw(3, 0, b"", payload))


@pytest.mark.parametrize(
    "payload",
    [b"{", b'{"a":}', b"{'a':1}", b'{"a":1,}', b" ", b"{}{}", b'{"a":1' + b"0" * 5000 + b"}"],
)
def test_invalid_json(payload: bytes) -> None:
    with expect(BAD):
        decode_tcrp(raw(3, 0, b"", payload))


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 50_000,
        b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}",
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    ],
)
def test_deeply_nested_json(payload: bytes) -> None:
    assert len(payload) <= MAX_TCRP_PAYLOAD
    with expect(BAD):
        decode_tcrp(raw(3, 0, b"", payload))


# ---------------------------------------------------------------------------
# Malformed typed requests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("operation", [1, 2])
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"password": "x"},
        {"username": 5},
        {"username": None},
        {"username": ["alice"]},
        {"username": True},
        {"username": "alice", "password": 5},
        {"username": "alice", "password": ["x"]},
        {"username": ""},
        {"username": "   "},
        {"username": "u" * 256},
        {"username": "é" * 128},
        {"username": "a\x00b"},
        {"username": "a\x1bb"},
        {"username": "a\nb"},
        {"username": "a\x7fb"},
        {"username": "a\x85b"},
        {"username": "a\ud800b"},  # a lone surrogate from a JSON \u escape
    ],
)
def test_bad_create_or_join_fields(operation: int, payload: dict[str, Any]) -> None:
    message = decode_tcrp(raw(operation, 0, b"lobby", as_json(payload)))
    with expect(BAD):
        parse_request(message)


@pytest.mark.parametrize("operation", [1, 2, 4])
@pytest.mark.parametrize("room", [b"", b"a\x00", b"line\nbreak", b"tab\t", b"\xc2\x9b"])
def test_bad_room_names(operation: int, room: bytes) -> None:
    payload = {"username": "alice", "token": TOKEN}
    message = decode_tcrp(raw(operation, 0, room, as_json(payload)))
    with expect(BAD):
        parse_request(message)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"token": 1},
        {"token": None},
        {"token": ""},
        {"token": "t" * 256},
        {"token": "tökén"},
        {"token": ["abc"]},
    ],
)
def test_bad_leave_token(payload: dict[str, Any]) -> None:
    with expect(BAD):
        request_from(raw(4, 0, b"lobby", as_json(payload)))


@pytest.mark.parametrize("state", [State.ACK, State.COMPLETE])
def test_request_with_a_reply_state(state: State) -> None:
    with expect(BAD):
        request_from(raw(3, state, b"", b"{}"))


def test_validate_name_limits() -> None:
    assert validate_name("x" * 255, "room name") == "x" * 255
    assert validate_name("é" * 127 + "x", "room name") == "é" * 127 + "x"
    assert validate_name("😀", "username") == "😀"
    assert validate_name("a b\u00a0c", "username") == "a b\u00a0c"  # NBSP is not a control
    for bad in ["", "x" * 256, "é" * 128, "a\x00", "\x9f", "a\x7f", "\ud800"]:
        with expect(BAD):
            validate_name(bad, "room name")


# ---------------------------------------------------------------------------
# Malformed replies (the client decodes these)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"status": 1},
        {"status": "maybe"},
        {"status": "error"},
        {"status": "error", "code": "no_such_code"},
        {"status": "error", "code": 3},
        {"status": "error", "code": "room_full", "message": 5},
    ],
)
def test_bad_ack(payload: dict[str, Any]) -> None:
    with expect(BAD):
        reply_from(raw(1, State.ACK, b"lobby", as_json(payload)))


_ADMISSION = {"token": TOKEN, "udp_port": 9001, "host": "alice", "members": ["alice"]}


@pytest.mark.parametrize(
    "change",
    [
        {"token": None},
        {"token": 5},
        {"token": ""},
        {"token": "ţ"},
        {"udp_port": None},
        {"udp_port": True},
        {"udp_port": "9001"},
        {"udp_port": 9001.0},
        {"udp_port": 0},
        {"udp_port": -1},
        {"udp_port": 65536},
        {"host": None},
        {"host": 1},
        {"members": None},
        {"members": "alice"},
        {"members": ["alice", 2]},
        {"members": {"alice": 1}},
    ],
)
@pytest.mark.parametrize("operation", [1, 2])
def test_bad_admission(change: dict[str, Any], operation: int) -> None:
    payload = {**_ADMISSION, **change}
    payload = {k: v for k, v in payload.items() if v is not None}  # None: the field is missing
    with expect(BAD):
        reply_from(raw(operation, State.COMPLETE, b"lobby", as_json(payload)))


def test_admission_baseline_is_valid() -> None:
    reply = reply_from(raw(2, State.COMPLETE, b"lobby", as_json(_ADMISSION)))
    assert reply == Admission(Operation.JOIN_ROOM, "lobby", TOKEN, 9001, "alice", ("alice",))


@pytest.mark.parametrize(
    "rooms",
    [
        None,
        "lobby",
        {"name": "lobby"},
        ["lobby"],
        [{"members": 1, "protected": False}],
        [{"name": 1, "members": 1, "protected": False}],
        [{"name": "a", "protected": False}],
        [{"name": "a", "members": "1", "protected": False}],
        [{"name": "a", "members": True, "protected": False}],
        [{"name": "a", "members": 1}],
        [{"name": "a", "members": 1, "protected": 0}],
        [{"name": "a", "members": 1, "protected": "yes"}],
    ],
)
def test_bad_room_list(rooms: Any) -> None:
    payload = {} if rooms is None else {"rooms": rooms}
    with expect(BAD):
        reply_from(raw(3, State.COMPLETE, b"", as_json(payload)))


def test_reply_with_request_state() -> None:
    with expect(BAD):
        reply_from(raw(4, State.REQUEST, b"lobby", b"{}"))


# ---------------------------------------------------------------------------
# Malformed datagrams
# ---------------------------------------------------------------------------


def client_decoders() -> list[Any]:
    return [split_client_datagram, decode_client_datagram]


@pytest.mark.parametrize("decoder", client_decoders())
@pytest.mark.parametrize("data", [b"", b"\x05"])
def test_client_datagram_shorter_than_header(decoder: Any, data: bytes) -> None:
    with expect(BAD):
        decoder(data)


@pytest.mark.parametrize("decoder", client_decoders())
@pytest.mark.parametrize("data", [b"\x00\x03tok", b"\x05\x00lobby", b"\x00\x00", b"\x00\x00x"])
def test_client_datagram_zero_sizes(decoder: Any, data: bytes) -> None:
    with expect(BAD):
        decoder(data)


@pytest.mark.parametrize("decoder", client_decoders())
@pytest.mark.parametrize("data", [b"\x05\x03lobbyto", b"\x05\x03lob", b"\xff\xff" + b"x" * 509])
def test_client_datagram_sizes_past_the_end(decoder: Any, data: bytes) -> None:
    with expect(BAD):
        decoder(data)


@pytest.mark.parametrize("decoder", [*client_decoders(), decode_server_datagram])
@pytest.mark.parametrize("size", [MAX_DATAGRAM + 1, 65507])
def test_datagram_over_4096_bytes(decoder: Any, size: int) -> None:
    # A well-formed datagram, just too long: the size check comes first.
    data = b"\x01\x01rt" + b"x" * (size - 4)
    with expect(ErrorCode.TOO_LARGE):
        decoder(data)


def test_datagram_of_exactly_4096_bytes_is_fine() -> None:
    data = b"\x01\x01rt" + b"x" * (MAX_DATAGRAM - 4)
    assert len(decode_client_datagram(data).text) == MAX_DATAGRAM - 4
    data = b"\x01" + bytes(5) + b"x" * (MAX_DATAGRAM - 6)
    assert len(decode_server_datagram(data).text) == MAX_DATAGRAM - 6


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x01\xffthi",  # room name
        b"\x01\x01r\xffhi",  # token
        b"\x01\x01rt\xff",  # text
        b"\x01\x01rthi\xc3",  # text cut inside a character
        b"\x01\x01rt\xed\xa0\x80",  # an encoded surrogate
    ],
)
def test_client_datagram_invalid_utf8(data: bytes) -> None:
    split_client_datagram(data)  # the fast path does not look at the text
    with expect(BAD):
        decode_client_datagram(data)


def test_client_datagram_non_ascii_token() -> None:
    with expect(BAD):
        decode_client_datagram(b"\x01\x02r\xc3\xa9hi")


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00\x00\x00\x01"])
def test_server_datagram_shorter_than_header(data: bytes) -> None:
    with expect(BAD):
        decode_server_datagram(data)


@pytest.mark.parametrize("kind", [0, 5, 255])
def test_unknown_datagram_kind(kind: int) -> None:
    with expect(BAD):
        decode_server_datagram(bytes([kind]) + bytes(5) + b"x")


@pytest.mark.parametrize("kind", [Kind.NOTICE, Kind.CLOSED, Kind.ERROR])
def test_sender_on_a_non_message_kind(kind: Kind) -> None:
    with expect(BAD):
        decode_server_datagram(bytes([kind, 0, 0, 0, 1, 3]) + b"bobhi")
    with expect(BAD):
        encode_server_datagram(ServerDatagram(kind, 1, "bob", "hi"))


@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x00\x00\x00\x01\x03bo",  # sender size past the end
        b"\x01\x00\x00\x00\x01\xff",
        b"\x01\x00\x00\x00\x01\x01\xffhi",  # sender is not UTF-8
        b"\x01\x00\x00\x00\x01\x01bhi\xff",  # text is not UTF-8
        b"\x02\x00\x00\x00\x01\x00\xc3",
    ],
)
def test_bad_server_datagram(data: bytes) -> None:
    with expect(BAD):
        decode_server_datagram(data)


# ---------------------------------------------------------------------------
# Encoders refuse what no decoder would accept
# ---------------------------------------------------------------------------


def test_encoders_refuse_oversize_fields() -> None:
    with expect(BAD):
        encode_tcrp(TcrpMessage(Operation.CREATE_ROOM, State.REQUEST, "r" * 256, {}))
    with expect(BAD):
        encode_client_datagram(ClientDatagram("r" * 256, "t"))
    with expect(BAD):
        encode_client_datagram(ClientDatagram("", "t"))
    with expect(BAD):
        encode_client_datagram(ClientDatagram("r", ""))
    with expect(BAD):
        encode_client_datagram(ClientDatagram("r", "t" * 256))
    with expect(ErrorCode.TOO_LARGE):
        encode_client_datagram(ClientDatagram("r", "t", "x" * (MAX_DATAGRAM - 3)))
    with expect(BAD):
        encode_server_datagram(ServerDatagram(Kind.MESSAGE, 1, "s" * 256))
    with expect(ErrorCode.TOO_LARGE):
        encode_server_datagram(ServerDatagram(Kind.NOTICE, 1, "", "x" * (MAX_DATAGRAM - 5)))


def test_decoders_blame_the_peer_and_encoders_blame_us() -> None:
    """h11's split: RemoteProtocolError for bytes we received, LocalProtocolError for
    what we were asked to send; both are ProtocolErrors with the wire code."""
    for decode in (
        lambda: decode_header(b"\x00"),
        lambda: decode_client_datagram(b"\x01"),
        lambda: decode_server_datagram(b"\x01"),
        lambda: parse_request(TcrpMessage(Operation.JOIN_ROOM, State.REQUEST, "", {})),
        lambda: validate_name("", "username"),
    ):
        with pytest.raises(RemoteProtocolError):
            decode()
    for encode in (
        lambda: encode_client_datagram(ClientDatagram("r", "t", "x" * MAX_DATAGRAM)),
        lambda: encode_server_datagram(ServerDatagram(Kind.NOTICE, 1, "bob")),
        lambda: encode_tcrp(TcrpMessage(Operation.LIST_ROOMS, State.REQUEST, "r" * 256, {})),
        lambda: validate_name("", "your name", error=LocalProtocolError),
    ):
        with pytest.raises(LocalProtocolError) as info:
            encode()
        assert isinstance(info.value, ProtocolError) and info.value.code is not None


def test_protocol_error_is_abstract_so_every_one_says_whose_fault_it_was() -> None:
    with pytest.raises(TypeError, match="RemoteProtocolError or LocalProtocolError"):
        ProtocolError(ErrorCode.BAD_REQUEST, "whose?")
    assert RemoteProtocolError(ErrorCode.BAD_REQUEST, "theirs").code is ErrorCode.BAD_REQUEST
    assert LocalProtocolError(ErrorCode.TOO_LARGE, "ours").code is ErrorCode.TOO_LARGE


def test_protocol_error_is_an_ocm_error_with_its_code() -> None:
    with pytest.raises(OCMError) as info:
        decode_header(b"")
    assert isinstance(info.value, ProtocolError)
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert str(info.value).startswith("bad_request: ")


@pytest.mark.parametrize(
    "name",
    ["al\u200bice", "\u202eevil", "a\u2066b", "line\u2028break", "\ufeffbom", "tab\tbed"],
)
def test_invisible_and_control_characters_are_refused_in_names(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_name(name, "username")
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_joiners_stay_allowed_in_names() -> None:
    assert validate_name("a\u200db", "username") == "a\u200db"


def test_username_is_trimmed_of_spaces_only() -> None:
    message = TcrpMessage(Operation.JOIN_ROOM, State.REQUEST, "lobby", {"username": "  bob "})
    assert parse_request(message) == JoinRoom("lobby", "bob")
    tabbed = TcrpMessage(Operation.JOIN_ROOM, State.REQUEST, "lobby", {"username": "\tbob\n"})
    with pytest.raises(ProtocolError):
        parse_request(tabbed)


def test_password_with_a_lone_surrogate_is_a_bad_request() -> None:
    raw = b'{"username":"bob","password":"\\ud800"}'
    data = encode_header(5, Operation.JOIN_ROOM, State.REQUEST, len(raw)) + b"lobby" + raw
    with pytest.raises(ProtocolError) as info:
        parse_request(decode_tcrp(data))
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_admission_carries_the_idle_timeout_when_the_server_says() -> None:
    told = Admission(Operation.JOIN_ROOM, "lobby", "tok", 9001, "alice", ("alice",), 60.0)
    assert parse_reply(decode_tcrp(encode_reply(told))) == told
    silent = Admission(Operation.JOIN_ROOM, "lobby", "tok", 9001, "alice", ("alice",))
    assert b"idle_timeout" not in encode_reply(silent)
    assert parse_reply(decode_tcrp(encode_reply(silent))).idle_timeout is None  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -1, True, "60", [60]])
def test_a_bad_idle_timeout_is_a_bad_request(bad: object) -> None:
    payload = {"token": "tok", "udp_port": 9001, "host": "a", "members": ["a"], "idle_timeout": bad}
    message = TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", payload)
    with pytest.raises(ProtocolError) as info:
        parse_reply(message)
    assert info.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("features", "granted"),
    [
        ("delivery", ()),
        ({"delivery": True}, ()),
        (["delivery", 7, "", "x" * 65, "delivery"], ("delivery",)),
        ([f"f{n}" for n in range(40)], tuple(f"f{n}" for n in range(32))),
    ],
)
def test_odd_features_are_ignored_not_refused(features: object, granted: tuple[str, ...]) -> None:
    """Shared PROTOCOL.md section 3: unknown is ignored. A request with an odd "features"
    value is still a request, for the features it names properly (none: version 1)."""
    message = TcrpMessage(
        Operation.JOIN_ROOM, State.REQUEST, "lobby", {"username": "bob", "features": features}
    )
    assert parse_request(message) == JoinRoom("lobby", "bob", None, granted)
