"""Property tests (hypothesis) over every decoder of the wire protocol.

Two claims, for every decoder:

* arbitrary bytes only ever produce a decoded value or a ProtocolError with a wire
  code (never an IndexError, UnicodeDecodeError, KeyError, RecursionError ...);
* encode then decode is the identity for every valid message.

Inputs come three ways: plain random bytes, valid encodings mutated a few bytes at a
time (tests/strategies.py), and frames with a consistent header around random bodies;
the last two reach the branches behind the size checks that random bytes never pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ErrorCode, ProtocolError
from ocm.wire import (
    MAX_DATAGRAM,
    MAX_NAME_BYTES,
    MAX_TCRP_PAYLOAD,
    MAX_TOKEN_BYTES,
    PAYLOAD_SIZE_BYTES,
    TCRP_HEADER_SIZE,
    Ack,
    Admission,
    ClientDatagram,
    CreateRoom,
    JoinRoom,
    Kind,
    LeaveRoom,
    ListRooms,
    Operation,
    Reply,
    Request,
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
    encode_header,
    encode_reply,
    encode_request,
    encode_server_datagram,
    encode_tcrp,
    parse_reply,
    parse_request,
    split_client_datagram,
)
from tests import strategies as ocm_st

T = TypeVar("T")

FAST = ocm_st.FAST
HEAVY = ocm_st.HEAVY


def decode_or_protocol_error(decoder: Callable[[bytes], T], data: bytes) -> T | None:
    """``decoder(data)``, or None when it raised a ProtocolError with a wire code."""
    try:
        return decoder(data)
    except ProtocolError as error:
        assert isinstance(error.code, ErrorCode)
        assert error.message
        return None


# -- inputs --------------------------------------------------------------------------

tcrp_encodings = st.one_of(
    ocm_st.requests().map(encode_request),
    ocm_st.replies().map(encode_reply),
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# JSON that is valid but not an object, lone surrogates from \u escapes, nesting
# deeper than the interpreter's recursion limit, numbers too long to convert.
_ODD_PAYLOADS = [
    b"[]",
    b"1",
    b"null",
    b'"x"',
    b'{"username":"\\ud800x","password":"\\udfff"}',
    b'{"token":"\\u00e9"}',
    b'{"status":"error","code":"\\ud800"}',
    b"[" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"udp_port":1' + b"0" * 5000 + b"}",
]


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """A header whose sizes (nearly) match a random room name and payload."""
    # Mostly a valid room name: an invalid one is refused before the payload is read.
    if draw(st.integers(0, 3)):
        room = draw(ocm_st.names()).encode()
    else:
        room = draw(st.binary(max_size=24) | st.sampled_from([b"", b"\xff", b"a\x00"]))
    payload = draw(
        st.binary(max_size=48)
        | ocm_st.payloads().map(_json_bytes)
        | ocm_st.mutated(ocm_st.payloads().map(_json_bytes))
        | st.sampled_from(_ODD_PAYLOADS)
    )
    # Mostly a header that decodes, so the body checks are reached.
    operation = draw(st.integers(1, 4) | st.integers(0, 255))
    state = draw(st.integers(0, 2) | st.integers(0, 255))
    honest = draw(st.integers(0, 9)) > 0
    room_size = len(room) if honest else draw(st.integers(0, 255))
    delta = 0 if honest else draw(st.sampled_from([-1, 1, 2**100]))
    payload_size = max(len(payload) + delta, 0)
    return encode_header(room_size, operation, state, payload_size) + room + payload


tcrp_inputs = st.one_of(
    st.binary(max_size=120),
    ocm_st.mutated(tcrp_encodings),
    framed(),
)

# Header-shaped bytes: any first three bytes, and a size field near every edge (0, the
# 64 KiB limit, 2**232 - 1). Headers cut from mutated messages are in tcrp_inputs.
_payload_sizes = st.one_of(
    st.integers(0, 2**232 - 1),
    st.integers(MAX_TCRP_PAYLOAD - 2, MAX_TCRP_PAYLOAD + 2),
    st.integers(2**232 - 3, 2**232 - 1),
)
header_inputs = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=TCRP_HEADER_SIZE, max_size=TCRP_HEADER_SIZE),
    st.builds(
        encode_header,
        st.integers(0, 255),
        st.integers(1, 4) | st.integers(0, 255),
        st.integers(0, 2) | st.integers(0, 255),
        _payload_sizes,
    ),
)


def _with_header(header: st.SearchStrategy[bytes], body_size: int) -> st.SearchStrategy[bytes]:
    """A random header followed by random or UTF-8 bytes: sizes land near the body."""
    body = st.binary(max_size=body_size) | ocm_st.texts(body_size).map(str.encode)
    return st.tuples(header, body).map(b"".join)


_small = st.integers(0, 12)
client_inputs = st.one_of(
    st.binary(max_size=64),
    _with_header(st.tuples(_small, _small).map(bytes), 30),
    ocm_st.repeated(MAX_DATAGRAM + 64),
    ocm_st.mutated(ocm_st.client_datagrams().map(encode_client_datagram)),
)

server_inputs = st.one_of(
    st.binary(max_size=64),
    _with_header(
        st.builds(
            lambda kind, seq, size: bytes([kind]) + seq.to_bytes(4, "big") + bytes([size]),
            st.integers(0, 5),
            st.integers(0, 2**32 - 1),
            _small,
        ),
        30,
    ),
    ocm_st.repeated(MAX_DATAGRAM + 64),
    ocm_st.mutated(ocm_st.server_datagrams().map(encode_server_datagram)),
)


# ---------------------------------------------------------------------------
# arbitrary bytes: a value or a ProtocolError, nothing else
# ---------------------------------------------------------------------------


@FAST
@given(header_inputs)
def test_decode_header_never_crashes(data: bytes) -> None:
    header = decode_or_protocol_error(decode_header, data)
    if header is not None:
        assert isinstance(header, TcrpHeader)
        assert header.payload_size <= MAX_TCRP_PAYLOAD
        # A header that decodes is exactly its own encoding.
        assert (
            encode_header(
                header.room_name_size, header.operation, header.state, header.payload_size
            )
            == data
        )


@HEAVY
@given(tcrp_inputs)
def test_tcrp_decoders_and_parsers_never_crash(data: bytes) -> None:
    header = decode_or_protocol_error(decode_header, data[:TCRP_HEADER_SIZE])
    message = decode_or_protocol_error(decode_tcrp, data)
    if header is not None:
        assert header.payload_size <= MAX_TCRP_PAYLOAD
        # The server's path: header first, then exactly the body it announced.
        body = data[TCRP_HEADER_SIZE : TCRP_HEADER_SIZE + header.body_size]
        from_parts = decode_or_protocol_error(lambda b: decode_tcrp_body(header, b), body)
        if message is not None:
            assert from_parts == message
    else:
        assert message is None
    if message is None:
        return
    assert isinstance(message, TcrpMessage)
    assert isinstance(message.payload, dict)
    decode_or_protocol_error(lambda _: parse_request(message), data)
    decode_or_protocol_error(lambda _: parse_reply(message), data)


def _is_valid_name(name: str) -> bool:
    """Section 1, written out again so the test does not trust validate_name."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 1 <= size <= MAX_NAME_BYTES and not any(
        ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in ocm_st.INVISIBLE for c in name
    )


def _check_request(message: TcrpMessage) -> None:
    request = decode_or_protocol_error(lambda _: parse_request(message), b"")
    if request is None:
        return
    assert message.state is State.REQUEST
    match request:
        case CreateRoom(room, username, password) | JoinRoom(room, username, password):
            assert _is_valid_name(room)
            assert _is_valid_name(username) and username == username.strip()
            assert password is None or (isinstance(password, str) and password)
        case LeaveRoom(room, token):
            assert _is_valid_name(room)
            assert token.isascii() and 1 <= len(token) <= MAX_TOKEN_BYTES
        case ListRooms():
            pass
    # Whatever was accepted survives its own encoding.
    assert parse_request(decode_tcrp(encode_request(request))) == request


def _check_reply(message: TcrpMessage) -> None:
    reply = decode_or_protocol_error(lambda _: parse_reply(message), b"")
    if reply is None:
        return
    assert message.state is not State.REQUEST
    if isinstance(reply, Admission):
        assert 0 < reply.udp_port < 65536
        assert reply.token.isascii() and 1 <= len(reply.token) <= MAX_TOKEN_BYTES
        assert all(isinstance(m, str) for m in reply.members)
    if isinstance(reply, Ack) and reply.error is not None:
        assert isinstance(reply.error, ErrorCode)
    assert parse_reply(decode_tcrp(encode_reply(reply))) == reply


@HEAVY
@given(ocm_st.tcrp_messages() | ocm_st.nearly_valid_messages())
def test_parsers_accept_only_valid_fields(message: TcrpMessage) -> None:
    # Frames with payloads made of the very fields the parsers read (and random ones):
    # each typed parser either refuses with a ProtocolError or returns a value that
    # obeys the rules and survives its own encoding. The frame itself round-trips.
    assert decode_tcrp(encode_tcrp(message)) == message
    _check_request(message)
    _check_reply(message)


@FAST
@given(client_inputs)
def test_client_datagram_decoders_never_crash(data: bytes) -> None:
    parts = decode_or_protocol_error(split_client_datagram, data)
    decoded = decode_or_protocol_error(decode_client_datagram, data)
    if parts is not None:
        room, token, text = parts
        assert bytes([len(room), len(token)]) + room + token + text == data
        assert 1 <= len(room) <= MAX_NAME_BYTES and 1 <= len(token) <= MAX_TOKEN_BYTES
        assert len(data) <= MAX_DATAGRAM
    else:
        assert decoded is None  # the full decoder is never more lenient than the split
    if decoded is not None:
        # Decoding is one-to-one: the value re-encodes to exactly the bytes received.
        assert encode_client_datagram(decoded) == data


@FAST
@given(server_inputs)
def test_decode_server_datagram_never_crashes(data: bytes) -> None:
    decoded = decode_or_protocol_error(decode_server_datagram, data)
    if decoded is not None:
        assert isinstance(decoded.kind, Kind)
        assert decoded.kind is Kind.MESSAGE or not decoded.sender
        assert encode_server_datagram(decoded) == data


# ---------------------------------------------------------------------------
# encode then decode is the identity
# ---------------------------------------------------------------------------


@FAST
@given(ocm_st.requests())
def test_request_round_trip(request: Request) -> None:
    data = encode_request(request)
    assert parse_request(decode_tcrp(data)) == request
    header = decode_header(data[:TCRP_HEADER_SIZE])
    assert header.state is State.REQUEST
    assert TCRP_HEADER_SIZE + header.body_size == len(data)


@FAST
@given(ocm_st.replies())
def test_reply_round_trip(reply: Reply) -> None:
    data = encode_reply(reply)
    assert parse_reply(decode_tcrp(data)) == reply
    assert decode_header(data[:TCRP_HEADER_SIZE]).state is not State.REQUEST


@FAST
@given(
    st.integers(0, 255),
    st.sampled_from(Operation),
    st.sampled_from(State),
    st.integers(0, MAX_TCRP_PAYLOAD),
)
def test_header_round_trip(room_size: int, operation: Operation, state: State, size: int) -> None:
    data = encode_header(room_size, operation, state, size)
    assert len(data) == TCRP_HEADER_SIZE == 3 + PAYLOAD_SIZE_BYTES
    assert decode_header(data) == TcrpHeader(room_size, operation, state, size)


@FAST
@given(ocm_st.client_datagrams())
def test_client_datagram_round_trip(datagram: ClientDatagram) -> None:
    data = encode_client_datagram(datagram)
    assert len(data) <= MAX_DATAGRAM
    assert decode_client_datagram(data) == datagram


@FAST
@given(ocm_st.server_datagrams())
def test_server_datagram_round_trip(datagram: ServerDatagram) -> None:
    data = encode_server_datagram(datagram)
    assert len(data) <= MAX_DATAGRAM
    assert decode_server_datagram(data) == datagram
