"""Unit tests of ocm.wire.framer: a byte stream in, whole TCRP messages out.

TCP may cut a message anywhere and glue several together; the framer must give the
same messages however the bytes arrive, keep what belongs to the next message, and
refuse a header as soon as it is complete (before any body is waited for).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ErrorCode, RemoteProtocolError
from ocm.wire import (
    TCRP_HEADER_SIZE,
    Ack,
    CreateRoom,
    JoinRoom,
    LeaveRoom,
    ListRooms,
    Operation,
    State,
    TcrpReader,
    decode_tcrp,
    encode_header,
    encode_reply,
    encode_request,
)

REQUESTS = [
    encode_request(CreateRoom("lobby", "alice", "secret")),
    encode_request(ListRooms()),
    encode_request(JoinRoom("lobby", "bob")),
    encode_request(LeaveRoom("lobby", "t" * 32)),
    encode_reply(Ack(Operation.LIST_ROOMS)),
]
STREAM = b"".join(REQUESTS)


def read_all(reader: TcrpReader, chunks: list[bytes]) -> list[object]:
    messages: list[object] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (message := reader.next_message()) is not None:
            messages.append(message)
    return messages


def test_nothing_until_a_whole_message_is_in() -> None:
    reader = TcrpReader()
    assert reader.next_message() is None and not reader.started
    reader.feed(REQUESTS[0][:-1])
    assert reader.next_message() is None and reader.started
    reader.feed(REQUESTS[0][-1:])
    assert reader.next_message() == decode_tcrp(REQUESTS[0])
    assert reader.next_message() is None and not reader.started


def test_one_byte_at_a_time() -> None:
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert read_all(TcrpReader(), chunks) == [decode_tcrp(r) for r in REQUESTS]


def test_many_messages_in_one_read() -> None:
    assert read_all(TcrpReader(), [STREAM]) == [decode_tcrp(r) for r in REQUESTS]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_cut_of_the_stream_gives_the_same_messages(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert read_all(TcrpReader(), chunks) == [decode_tcrp(r) for r in REQUESTS]


def test_an_oversized_payload_is_refused_from_the_header_alone() -> None:
    """The size is checked once 32 bytes are in: a peer cannot make us wait for (or
    buffer) a body over the cap."""
    reader = TcrpReader(max_payload=100)
    reader.feed(encode_header(5, Operation.JOIN_ROOM, State.REQUEST, 101))
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_message()
    assert info.value.code is ErrorCode.TOO_LARGE
    assert reader.operation == Operation.JOIN_ROOM


def test_an_unknown_operation_is_refused_and_remembered_for_the_error_ack() -> None:
    reader = TcrpReader()
    reader.feed(bytes([0, 9, 0]) + bytes(TCRP_HEADER_SIZE - 3))
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_message()
    assert info.value.code is ErrorCode.UNKNOWN_OPERATION
    assert reader.operation == 9  # the server answers "operation 9" with its error ACK


def test_a_malformed_body_is_a_remote_protocol_error() -> None:
    reader = TcrpReader()
    reader.feed(encode_header(0, Operation.LIST_ROOMS, State.REQUEST, 3) + b"[1]")
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_message()
    assert info.value.code is ErrorCode.BAD_REQUEST


# ---------------------------------------------------------------------------
# Raw mode: whole messages as bytes, only the sizes checked
# ---------------------------------------------------------------------------


def read_all_raw(reader: TcrpReader, chunks: list[bytes]) -> list[bytes]:
    messages: list[bytes] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (raw := reader.next_raw()) is not None:
            messages.append(raw)
    return messages


def test_raw_one_byte_at_a_time() -> None:
    reader = TcrpReader()
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert read_all_raw(reader, chunks) == REQUESTS
    assert not reader.started


def test_raw_two_pipelined_messages_in_one_feed() -> None:
    reader = TcrpReader()
    reader.feed(REQUESTS[0] + REQUESTS[1] + REQUESTS[2][:5])
    assert reader.next_raw() == REQUESTS[0]
    assert reader.next_raw() == REQUESTS[1]
    assert reader.next_raw() is None and reader.started
    assert reader.take_rest() == REQUESTS[2][:5]  # what follows is kept, not lost


def test_raw_cuts_an_unknown_operation_the_decoder_refuses() -> None:
    """An error ACK echoing operation 9: next_message refuses it, next_raw hands it on
    whole (and the message after it), so a tool can still read the stream."""
    echoed = encode_header(5, 9, State.ACK, 2) + b"lobby{}"
    refusing = TcrpReader()
    refusing.feed(echoed)
    with pytest.raises(RemoteProtocolError) as info:
        refusing.next_message()
    assert info.value.code is ErrorCode.UNKNOWN_OPERATION
    reader = TcrpReader()
    reader.feed(echoed + REQUESTS[1])
    assert reader.next_raw() == echoed and reader.operation == 9
    assert reader.next_raw() == REQUESTS[1]


def test_raw_refuses_an_oversized_size_field_as_next_message_does() -> None:
    header = encode_header(5, Operation.JOIN_ROOM, State.REQUEST, 101)
    codes = []
    for read in (TcrpReader.next_message, TcrpReader.next_raw):
        reader = TcrpReader(max_payload=100)
        reader.feed(header)  # the header alone: refused before any body is waited for
        with pytest.raises(RemoteProtocolError) as info:
            read(reader)
        codes.append(info.value.code)
    assert codes == [ErrorCode.TOO_LARGE, ErrorCode.TOO_LARGE]
    assert reader.take_rest() == header  # raw mode took nothing: the stream can pass on
    at_the_cap = TcrpReader(max_payload=100)
    at_the_cap.feed(encode_header(0, 9, 7, 100) + bytes(100))  # nothing else is checked
    assert at_the_cap.next_raw() == encode_header(0, 9, 7, 100) + bytes(100)
