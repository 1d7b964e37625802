"""Unit and property tests of ocm.wire.delivery, the delivery extension's datagrams.

Exact bytes pin the layouts of docs/protocol.md section 3; every malformed case must be a
RemoteProtocolError with a wire code, and arbitrary bytes must never crash a decoder.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ocm.wire import ClientDatagram, Kind, ServerDatagram, encode_client_datagram
from ocm.wire.delivery import (
    BOOT_SIZE,
    MAX_REPAIR_RANGES,
    Accepted,
    Chat,
    Data,
    Departed,
    Extended,
    Leave,
    Lost,
    Ping,
    Received,
    Repair,
    Restarted,
    Status,
    chat_prefix,
    decode_extended,
    decode_received,
    encode_extended,
    encode_received,
    is_extended,
    split_extended,
)
from tests import strategies as ocm_st

TOKEN = "k3Vq9XbT0wZr6mJ2pL8sYc4nHd1fGa7e"
BOOT = bytes.fromhex("0011223344556677")
u32 = st.integers(0, 2**32 - 1)
seq = st.integers(1, 2**32 - 1)

extended: st.SearchStrategy[Extended] = st.one_of(
    st.builds(Data, ocm_st.tokens(), seq, ocm_st.texts(3000).filter(bool)),
    st.builds(Ping, ocm_st.tokens(), u32, st.binary(min_size=BOOT_SIZE, max_size=BOOT_SIZE)),
    st.builds(
        Repair,
        ocm_st.tokens(),
        st.lists(st.tuples(seq, st.integers(1, 0xFFFF)), min_size=1, max_size=64).map(tuple),
    ),
    st.builds(Leave, ocm_st.tokens()),
)
received: st.SearchStrategy[Received] = st.one_of(
    st.builds(Chat, u32, ocm_st.usernames(), u32, ocm_st.texts(3000)),
    st.builds(Status, u32, u32),
    st.builds(Accepted, u32, u32),
    st.builds(Lost, seq, st.integers(1, 2**32 - 1)),
    st.just(Departed()),
    st.builds(Restarted, ocm_st.texts(100)),
    st.builds(
        ServerDatagram,
        st.sampled_from([Kind.NOTICE, Kind.CLOSED]),
        u32,
        st.just(""),
        ocm_st.texts(100),
    ),
)


@given(extended)
def test_extended_round_trip(datagram: Extended) -> None:
    assert decode_extended(encode_extended(datagram)) == datagram


@given(received)
def test_received_round_trip(datagram: Received) -> None:
    assert decode_received(encode_received(datagram)) == datagram


@given(st.binary(max_size=64) | ocm_st.mutated(extended.map(encode_extended)))
def test_extended_decoder_never_crashes(data: bytes) -> None:
    try:
        decode_extended(data)
    except RemoteProtocolError as error:
        assert isinstance(error.code, ErrorCode)


@given(st.binary(max_size=64) | ocm_st.mutated(received.map(encode_received)))
def test_received_decoder_never_crashes(data: bytes) -> None:
    try:
        decode_received(data)
    except RemoteProtocolError as error:
        assert isinstance(error.code, ErrorCode)


@given(ocm_st.client_datagrams())
def test_a_version_1_datagram_is_never_extended(datagram: ClientDatagram) -> None:
    """Version 1 starts with RoomNameSize 1-255: the first byte tells the layouts apart."""
    assert not is_extended(encode_client_datagram(datagram))


def test_exact_bytes() -> None:
    token = TOKEN.encode()
    assert encode_extended(Data(TOKEN, 3, "hi")) == b"\x00\x01\x20" + token + b"\x00\x00\x00\x03hi"
    assert encode_extended(Ping(TOKEN, 0x01020304, BOOT)) == (
        b"\x00\x02\x20" + token + b"\x01\x02\x03\x04" + BOOT
    )
    assert encode_extended(Repair(TOKEN, ((7, 2), (10, 1)))) == (
        b"\x00\x03\x20" + token + b"\x00\x00\x00\x07\x00\x02\x00\x00\x00\x0a\x00\x01"
    )
    assert encode_extended(Leave(TOKEN)) == b"\x00\x04\x20" + token
    assert (
        encode_received(Chat(7, "bob", 3, "hi")) == b"\x05\x00\x00\x00\x07\x03bob\x00\x00\x00\x03hi"
    )
    assert chat_prefix(7, b"bob", 3) + b"hi" == encode_received(Chat(7, "bob", 3, "hi"))
    assert encode_received(Status(9, 5)) == b"\x06\x00\x00\x00\x09\x00\x00\x00\x00\x05"
    assert encode_received(Accepted(9, 3)) == b"\x07\x00\x00\x00\x09\x00\x00\x00\x00\x03"
    assert encode_received(Lost(1, 4)) == b"\x08\x00\x00\x00\x01\x00\x00\x00\x00\x04"
    assert encode_received(Departed()) == b"\x09\x00\x00\x00\x00\x00"
    assert encode_received(Restarted("x")) == b"\x0a\x00\x00\x00\x00\x00x"


def test_split_gives_the_server_the_token_before_the_body() -> None:
    data = encode_extended(Data(TOKEN, 1, "hi"))
    assert split_extended(data) == (1, TOKEN.encode(), b"\x00\x00\x00\x01hi")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01", ErrorCode.BAD_REQUEST),  # shorter than the header
        (b"\x00\x01\x00", ErrorCode.BAD_REQUEST),  # empty token
        (b"\x00\x01\x05tok", ErrorCode.BAD_REQUEST),  # token past the end
        (b"\x00\x09\x01t", ErrorCode.BAD_REQUEST),  # unknown type
        (b"\x00\x01\x01t\x00\x00\x00\x00hi", ErrorCode.BAD_REQUEST),  # message number 0
        (b"\x00\x01\x01t\x00\x00\x00\x01", ErrorCode.BAD_REQUEST),  # a Data without text
        (b"\x00\x01\x01t\x00\x00\x00\x01\xff", ErrorCode.BAD_REQUEST),  # not UTF-8
        (b"\x00\x02\x01t\x00\x00\x00\x01", ErrorCode.BAD_REQUEST),  # a Ping without boot
        (b"\x00\x03\x01t", ErrorCode.BAD_REQUEST),  # a Repair without ranges
        (b"\x00\x03\x01t\x00\x00\x00\x01\x00", ErrorCode.BAD_REQUEST),  # a cut range
        (b"\x00\x03\x01t\x00\x00\x00\x01\x00\x00", ErrorCode.BAD_REQUEST),  # empty range
        (b"\x00\x03\x01t\x00\x00\x00\x00\x00\x01", ErrorCode.BAD_REQUEST),  # from Seq 0
        (b"\x00\x03\x01t" + b"\x00\x00\x00\x01\x00\x01" * 65, ErrorCode.BAD_REQUEST),
        (b"\x00\x04\x01tx", ErrorCode.BAD_REQUEST),  # a Leave with a body
        (b"\x00\x04\x01\xff", ErrorCode.BAD_REQUEST),  # a token that is not ASCII
        (b"\x00\x01\x01t" + b"x" * 4096, ErrorCode.TOO_LARGE),
    ],
)
def test_malformed_extended_datagrams(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_extended(data)
    assert info.value.code is code


@pytest.mark.parametrize(
    "data",
    [
        b"\x05\x00\x00\x00\x01\x00\x00\x00\x00\x01",  # a CHAT without a sender
        b"\x05\x00\x00\x00\x01\x03bob\x00",  # a CHAT with a cut message number
        b"\x06\x00\x00\x00\x01\x00\x00\x00",  # a STATUS without its nonce
        b"\x06\x00\x00\x00\x01\x03bob\x00\x00\x00\x00",  # a sender where none belongs
        b"\x08\x00\x00\x00\x00\x00\x00\x00\x00\x01",  # LOST from Seq 0
        b"\x09\x00\x00\x00\x01\x00",  # DEPARTED with a Seq
        b"\x0b\x00\x00\x00\x00\x00",  # unknown kind
        b"\x0a\x00\x00\x00\x00\x00\xff",  # RESTARTED text not UTF-8
    ],
)
def test_malformed_server_datagrams(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_received(data)


def test_version_1_kinds_decode_as_before() -> None:
    notice = ServerDatagram(Kind.NOTICE, 8, "", "carol joined")
    assert decode_received(encode_received(notice)) == notice


def test_encoders_refuse_what_cannot_be_sent() -> None:
    for datagram in (
        Data(TOKEN, 0, "hi"),
        Data(TOKEN, 1, ""),
        Data(TOKEN, 1, "x" * 4096),
        Ping(TOKEN, 1, b"short"),
        Repair(TOKEN, ()),
        Repair(TOKEN, ((1, 1),) * (MAX_REPAIR_RANGES + 1)),
        Repair(TOKEN, ((0, 1),)),
        Leave(""),
    ):
        with pytest.raises(LocalProtocolError):
            encode_extended(datagram)
    with pytest.raises(LocalProtocolError):
        encode_received(Chat(1, "", 1, "hi"))
