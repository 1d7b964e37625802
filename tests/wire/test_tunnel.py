"""Unit tests of section 4 on the wire (docs/protocol.md): the tunnel's frames, and the
TUNNEL and RESUME messages with their COMPLETEs.

A frame is the boundary TCP does not keep: a uint16 big-endian length, then one relay
datagram. The reader must cut a stream into the same datagrams however it is split,
and refuse a length no datagram can have as soon as the length is in, before waiting
for a body that may never come.
"""

from __future__ import annotations

import pytest

from ocm.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from ocm.wire import (
    MAX_DATAGRAM,
    Admission,
    Operation,
    State,
    TcrpMessage,
    decode_tcrp,
    encode_reply,
    encode_request,
    encode_tcrp,
    parse_reply,
    parse_request,
)
from ocm.wire.delivery import Data, Ping, encode_extended
from ocm.wire.tcrp import Reply, Request, Resume, Resumed, Tunnel, Tunnelled
from ocm.wire.tunnel import (
    FRAME_HEADER_SIZE,
    MAX_FRAME,
    RESUME,
    TUNNEL,
    FrameReader,
    encode_frame,
)

TOKEN = "T0k3n-abcdefghijklmnopqrstuvwxyz"
SECRET = "s3cret-ABCDEFGHIJKLMNOPQRSTUVWX"
DATAGRAMS = [
    b"x",
    encode_extended(Ping(TOKEN, 7, bytes(8))),
    encode_extended(Data(TOKEN, 1, "héllo")),
    bytes(range(256)) * 16,  # MAX_DATAGRAM bytes, every byte value
]


def frames(data: bytes, reader: FrameReader | None = None) -> list[bytes]:
    """Every whole datagram in ``data``, fed at once."""
    reader = reader or FrameReader()
    reader.feed(data)
    out = []
    while (datagram := reader.next_frame()) is not None:
        out.append(datagram)
    return out


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


def test_a_frame_is_a_big_endian_length_then_the_datagram() -> None:
    assert FRAME_HEADER_SIZE == 2
    assert encode_frame(b"abc") == b"\x00\x03abc"
    assert encode_frame(bytes(MAX_DATAGRAM)) == b"\x10\x00" + bytes(MAX_DATAGRAM)
    assert (TUNNEL, RESUME) == ("tunnel", "resume")


@pytest.mark.parametrize("datagram", DATAGRAMS, ids=lambda d: f"{len(d)}B")
def test_frame_round_trip(datagram: bytes) -> None:
    assert frames(encode_frame(datagram)) == [datagram]


def test_several_frames_in_one_feed_come_out_in_order() -> None:
    stream = b"".join(encode_frame(d) for d in DATAGRAMS)
    reader = FrameReader()
    assert frames(stream, reader) == DATAGRAMS
    assert not reader.started  # nothing left over


def test_a_stream_fed_a_byte_at_a_time() -> None:
    """Each datagram comes out as soon as its last byte is in, not before nor later."""
    stream = b"".join(encode_frame(d) for d in DATAGRAMS)
    ends = [sum(FRAME_HEADER_SIZE + len(d) for d in DATAGRAMS[: i + 1]) for i in range(4)]
    reader = FrameReader()
    out: list[tuple[int, bytes]] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (datagram := reader.next_frame()) is not None:
            out.append((i + 1, datagram))
    assert out == list(zip(ends, DATAGRAMS, strict=True))


def test_a_frame_comes_out_only_once_whole() -> None:
    reader = FrameReader()
    reader.feed(b"\x00")
    assert reader.started and reader.next_frame() is None
    reader.feed(b"\x03ab")
    assert reader.started and reader.next_frame() is None  # the length is in, not the body
    reader.feed(b"c\x00")
    assert reader.next_frame() == b"abc"
    assert reader.started  # the next frame's first byte
    assert reader.next_frame() is None


def test_started_is_false_on_an_empty_reader() -> None:
    reader = FrameReader()
    assert not reader.started
    assert reader.next_frame() is None


def test_the_bytes_behind_the_complete_start_the_reader() -> None:
    """The TCRP reader may have read past TUNNEL's COMPLETE: those bytes are frames."""
    reader = FrameReader(encode_frame(b"first") + b"\x00\x06sec")
    assert reader.started
    assert reader.next_frame() == b"first"
    assert reader.next_frame() is None
    reader.feed(b"ond")
    assert reader.next_frame() == b"second"
    assert not reader.started


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 0xFFFF])
def test_an_impossible_length_is_refused_once_its_two_bytes_are_in(length: int) -> None:
    """Refused before any body arrives: nothing waits for 64 KiB that will not come."""
    reader = FrameReader()
    reader.feed(length.to_bytes(2, "big")[:1])
    assert reader.next_frame() is None  # one byte: not a length yet
    reader.feed(length.to_bytes(2, "big")[1:])
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_frame()
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_an_impossible_length_after_a_good_frame() -> None:
    reader = FrameReader()
    reader.feed(encode_frame(b"ok") + b"\x00\x00")
    assert reader.next_frame() == b"ok"
    with pytest.raises(RemoteProtocolError):
        reader.next_frame()


@pytest.mark.parametrize("size", [0, MAX_FRAME + 1])
def test_encode_frame_refuses_what_no_datagram_can_be(size: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(bytes(size))
    assert info.value.code is ErrorCode.BAD_REQUEST


# ---------------------------------------------------------------------------
# TUNNEL and RESUME
# ---------------------------------------------------------------------------


def payload_of(data: bytes) -> dict[str, object]:
    payload: dict[str, object] = decode_tcrp(data).payload
    return payload


@pytest.mark.parametrize(
    ("request_", "operation", "payload"),
    [
        (Tunnel("lobby", TOKEN), Operation.TUNNEL, {"token": TOKEN}),
        (
            Resume("lobby", TOKEN, SECRET),
            Operation.RESUME,
            {"token": TOKEN, "secret": SECRET},
        ),
    ],
)
def test_request_round_trip(request_: Request, operation: Operation, payload: object) -> None:
    data = encode_request(request_)
    message = decode_tcrp(data)
    assert (message.operation, message.state, message.room) == (operation, State.REQUEST, "lobby")
    assert message.payload == payload
    assert parse_request(message) == request_
    assert encode_tcrp(message) == data


@pytest.mark.parametrize(
    "reply", [Tunnelled("lobby"), Resumed("lobby", SECRET, 0), Resumed("ç", SECRET, 2**32 - 1)]
)
def test_reply_round_trip(reply: Reply) -> None:
    data = encode_reply(reply)
    assert decode_tcrp(data).state is State.COMPLETE
    assert parse_reply(decode_tcrp(data)) == reply


def test_complete_payloads() -> None:
    assert payload_of(encode_reply(Tunnelled("lobby"))) == {}
    assert payload_of(encode_reply(Resumed("lobby", SECRET, 5))) == {"secret": SECRET, "seq": 5}


@pytest.mark.parametrize(
    ("operation", "payload"),
    [
        (Operation.TUNNEL, {}),
        (Operation.TUNNEL, {"token": ""}),
        (Operation.TUNNEL, {"token": 7}),
        (Operation.TUNNEL, {"token": "tök"}),
        (Operation.RESUME, {"secret": SECRET}),
        (Operation.RESUME, {"token": TOKEN}),
        (Operation.RESUME, {"token": TOKEN, "secret": ""}),
        (Operation.RESUME, {"token": TOKEN, "secret": None}),
        (Operation.RESUME, {"token": TOKEN, "secret": "x" * 256}),
    ],
)
def test_a_request_without_its_token_or_secret_is_refused(
    operation: Operation, payload: dict[str, object]
) -> None:
    message = TcrpMessage(operation, State.REQUEST, "lobby", payload)
    with pytest.raises(ProtocolError) as info:
        parse_request(decode_tcrp(encode_tcrp(message)))
    assert info.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "payload", [{"seq": 1}, {"secret": SECRET}, {"secret": SECRET, "seq": -1}, {"secret": ""}]
)
def test_a_resumed_without_its_secret_or_seq_is_refused(payload: dict[str, object]) -> None:
    message = TcrpMessage(Operation.RESUME, State.COMPLETE, "lobby", payload)
    with pytest.raises(ProtocolError) as info:
        parse_reply(message)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_an_admission_with_resume_round_trips() -> None:
    admission = Admission(
        Operation.JOIN_ROOM,
        "lobby",
        TOKEN,
        9001,
        "alice",
        ("alice", "bob"),
        60.0,
        ("delivery", "tunnel", "resume"),
        3,
        "0011223344556677",
        1024,
        SECRET,
    )
    data = encode_reply(admission)
    assert payload_of(data)["resume"] == SECRET
    assert parse_reply(decode_tcrp(data)) == admission


def test_a_delivery_admission_without_resume_is_byte_identical_to_before() -> None:
    """No "resume" key at all (not null): what section 3 clients got stays the same."""
    admission = Admission(
        Operation.CREATE_ROOM,
        "lobby",
        TOKEN,
        9001,
        "alice",
        ("alice",),
        60.0,
        ("delivery",),
        0,
        "0011223344556677",
        1024,
    )
    body = (
        b'{"token":"T0k3n-abcdefghijklmnopqrstuvwxyz","udp_port":9001,"host":"alice",'
        b'"members":["alice"],"idle_timeout":60.0,"features":["delivery"],"seq":0,'
        b'"boot":"0011223344556677","history":1024}'
    )
    header = bytes([5, Operation.CREATE_ROOM, State.COMPLETE]) + len(body).to_bytes(29, "big")
    assert encode_reply(admission) == header + b"lobby" + body


@pytest.mark.parametrize("secret", ["", 5, "é" * 3])
def test_an_admission_with_a_bad_resume_secret_is_refused(secret: object) -> None:
    payload = {"token": TOKEN, "udp_port": 9001, "host": "a", "members": ["a"], "resume": secret}
    message = TcrpMessage(Operation.JOIN_ROOM, State.COMPLETE, "lobby", payload)
    with pytest.raises(ProtocolError) as info:
        parse_reply(message)
    assert info.value.code is ErrorCode.BAD_REQUEST
