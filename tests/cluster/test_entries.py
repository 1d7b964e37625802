"""ocm.server.cluster.entries: what travels on the bus round-trips, and anything else
raises MalformedEntry (a node skips it), never another exception."""

from __future__ import annotations

from contextlib import suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocm.server.cluster.entries import (
    ENTRY_KINDS,
    BusMessage,
    Entry,
    MalformedEntry,
    decode_bus_message,
    decode_entry,
    encode_bus_message,
    encode_entry,
    field,
)
from ocm.wire.datagrams import Kind
from ocm.wire.delivery import DeliveryKind
from tests.strategies import FAST, names, usernames

KINDS = sorted(int(kind) for kind in ENTRY_KINDS)
# Bus messages with names of up to 255 bytes are slow to draw: fewer of them.
LIGHT = settings(FAST, max_examples=150)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(KINDS))
    sender = draw(usernames()).encode() if kind in (Kind.MESSAGE, DeliveryKind.CHAT) else b""
    msg_no = draw(st.integers(0, 2**64 - 1)) if kind == DeliveryKind.CHAT else 0
    return Entry(kind, draw(st.binary(max_size=600)), sender, msg_no)


@st.composite
def bus_messages(draw: st.DrawFn) -> BusMessage:
    rid = draw(st.text(st.characters(max_codepoint=0x7F), max_size=32))
    return BusMessage(draw(names()), rid, draw(st.integers(0, 10**19)), draw(entries()))


@FAST
@given(entries())
def test_an_entry_round_trips(entry: Entry) -> None:
    assert decode_entry(encode_entry(entry)) == entry


@LIGHT
@given(bus_messages())
def test_a_bus_message_round_trips(message: BusMessage) -> None:
    assert decode_bus_message(encode_bus_message(message)) == message


def test_the_text_takes_the_rest_even_when_it_looks_like_fields() -> None:
    entry = Entry(DeliveryKind.CHAT, b"3:abc4:", b"bob", 7)
    data = encode_entry(entry)
    assert data == b"1:" + b"%d" % DeliveryKind.CHAT + b"3:bob1:73:abc4:"
    assert decode_entry(data) == entry


GOOD = encode_bus_message(BusMessage("lobby", "ab12", 5, Entry(Kind.NOTICE, b"bob joined")))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOOD[:3],  # truncated inside the first field
        GOOD[: len(field(b"lobby")) + 2],  # truncated inside the second
        b"x:lobby" + GOOD[7:],  # a length that is not digits
        b"-5:lobby" + GOOD[7:],
        b"5 :lobby" + GOOD[7:],
        b"\xd9\xa5:lobby" + GOOD[7:],  # a non-ASCII digit
        b"99:lobby",  # a length past the end
        field(b"lobby") + field(b"ab12") + field(b"") + encode_entry(Entry(Kind.NOTICE, b"x")),
        field(b"lobby") + field(b"ab12") + field(b"5") + field(b"99") + field(b"") + field(b"0"),
        field(b"\xff") + field(b"ab12") + field(b"5") + encode_entry(Entry(Kind.NOTICE, b"x")),
        field(b"lobby") + field(b"\xe9") + field(b"5") + encode_entry(Entry(Kind.NOTICE, b"x")),
        b"1" * 30 + b":x",  # a length with no colon within 21 bytes
    ],
)
def test_malformed_bus_messages_raise_malformed_entry(data: bytes) -> None:
    with pytest.raises(MalformedEntry):
        decode_bus_message(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"1:",
        field(b"%d" % Kind.NOTICE) + field(b""),  # no msg_no field
        field(b"%d" % Kind.NOTICE) + b"4:ab",  # a sender past the end
        field(b"99") + field(b"") + field(b"0") + b"text",  # unknown kind
        field(b"x") + field(b"") + field(b"0"),
        field(b"%d" % Kind.NOTICE) + field(b"") + field(b"-1"),
        field(b"%d" % Kind.NOTICE) + field(b"") + field(b"1" * 21),  # msg_no too long
    ],
)
def test_malformed_entries_raise_malformed_entry(data: bytes) -> None:
    with pytest.raises(MalformedEntry):
        decode_entry(data)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_malformed_entry_only(data: bytes) -> None:
    for decode in (decode_entry, decode_bus_message):
        with suppress(MalformedEntry):
            decode(data)


@LIGHT
@given(bus_messages(), st.data())
def test_a_cut_or_altered_bus_message_decodes_or_raises_malformed_entry_only(
    message: BusMessage, data: st.DataObject
) -> None:
    encoded = encode_bus_message(message)
    cut = encoded[: data.draw(st.integers(0, len(encoded)))]
    position = data.draw(st.integers(0, max(0, len(encoded) - 1)))
    altered = bytearray(encoded)
    if altered:
        altered[position] = data.draw(st.integers(0, 255))
    for candidate in (cut, bytes(altered)):
        with suppress(MalformedEntry):
            decode_bus_message(candidate)
