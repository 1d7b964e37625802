"""Unit and property tests of ocm.wire.sealed: sealed datagrams (docs/protocol.md,
section 5) sealed, opened, altered, replayed and reordered, with no server.

Two known-answer vectors pin the layouts byte for byte; each is also computed here
straight from ChaCha20-Poly1305 and the layout as written down (nonce = 4 zero bytes and
the Counter, the clear header as associated data), so a change of layout, of nonce or of
associated data is caught whichever way it goes.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from ocm.wire.delivery import Data, Status, encode_extended, encode_received
from ocm.wire.sealed import (
    DOWN_HEADER_SIZE,
    DOWN_OVERHEAD,
    KEY_SIZE,
    REPLAY_WINDOW,
    SEALED_KIND,
    SEALED_TYPE,
    SESSION_SIZE,
    TAG_SIZE,
    UP_HEADER_SIZE,
    UP_OVERHEAD,
    Opener,
    Refusal,
    ReplayWindow,
    Sealer,
    down_prefix,
    is_sealed_down,
    is_sealed_up,
    key_id_of,
    member_opener,
    room_opener,
    session_of,
    up_prefix,
)

MEMBER_KEY = bytes(range(32))
ROOM_KEY = bytes(range(32, 64))
SESSION = bytes.fromhex("0011223344556677")
KEY_ID = bytes.fromhex("a1b2c3d4")
INNER_UP = encode_extended(Data("tok", 1, "hi"))  # 00 01 03 "tok" 00000001 "hi"
INNER_DOWN = encode_received(Status(5, 9))  # 06 00000005 00000009

inners = st.binary(min_size=0, max_size=600)


def member_sealer(key: bytes = MEMBER_KEY, session: bytes = SESSION) -> Sealer:
    return Sealer(key, up_prefix(session))


def room_sealer(key: bytes = ROOM_KEY, key_id: bytes = KEY_ID) -> Sealer:
    return Sealer(key, down_prefix(key_id))


def by_hand(key: bytes, header: bytes, counter: int, inner: bytes) -> bytes:
    """Section 5 written out: ChaCha20-Poly1305, nonce 4 zero bytes + Counter (uint64
    big-endian), the clear header (with the Counter) as associated data."""
    assert header[-8:] == struct.pack("!Q", counter)
    nonce = bytes(4) + struct.pack("!Q", counter)
    return header + ChaCha20Poly1305(key).encrypt(nonce, inner, header)


# ---------------------------------------------------------------------------
# known answers: the layouts, byte for byte
# ---------------------------------------------------------------------------


def test_a_members_datagram_known_answer() -> None:
    sealer = member_sealer()
    sealer.seal(b"\x00\x02first")  # Counter 1
    sealed = sealer.seal(INNER_UP)  # Counter 2
    assert sealed == bytes.fromhex(
        "0005"  # Marker 0, Type 5
        "0011223344556677"  # Session
        "0000000000000002"  # Counter, uint64 big-endian
        "4dcbb383651667"  # ChaCha20 of the 14 inner bytes ...
        "54cd3fd0a4e842"
        "ef64e6a7279870f533adcccef88d"  # ... and the 16-byte Poly1305 tag
    )
    header = bytes((0, SEALED_TYPE)) + SESSION + struct.pack("!Q", 2)
    assert sealed == by_hand(MEMBER_KEY, header, 2, INNER_UP)
    assert len(sealed) == len(INNER_UP) + UP_OVERHEAD == len(INNER_UP) + 18 + 16


def test_a_rooms_datagram_known_answer() -> None:
    sealed = room_sealer().seal(INNER_DOWN)
    assert sealed == bytes.fromhex(
        "10"  # Kind 16
        "a1b2c3d4"  # KeyId
        "0000000000000001"  # Counter
        "5557dab61305c70eba09"  # the 10 inner bytes, encrypted
        "5d7d0949538f90aedc6721ba27c857f3"  # the tag
    )
    header = bytes((SEALED_KIND,)) + KEY_ID + struct.pack("!Q", 1)
    assert sealed == by_hand(ROOM_KEY, header, 1, INNER_DOWN)
    assert len(sealed) == len(INNER_DOWN) + DOWN_OVERHEAD == len(INNER_DOWN) + 13 + 16


@given(inners, st.integers(1, 50))
def test_sealing_matches_the_layout_for_any_datagram(inner: bytes, counter: int) -> None:
    sealer = room_sealer()
    for _ in range(counter - 1):
        sealer.seal(b"")
    header = bytes((SEALED_KIND,)) + KEY_ID + struct.pack("!Q", counter)
    assert sealer.seal(inner) == by_hand(ROOM_KEY, header, counter, inner)


def test_the_clear_header_is_read_without_a_key() -> None:
    up = member_sealer().seal(INNER_UP)
    down = room_sealer().seal(INNER_DOWN)
    assert is_sealed_up(up) and not is_sealed_down(up)
    assert is_sealed_down(down) and not is_sealed_up(down)
    assert session_of(up) == SESSION
    assert key_id_of(down) == KEY_ID
    assert not is_sealed_up(b"") and not is_sealed_up(b"\x00") and not is_sealed_down(b"")
    assert not is_sealed_up(INNER_UP)  # an extended DATA in clear: Marker 0, Type 1
    assert (UP_HEADER_SIZE, DOWN_HEADER_SIZE, TAG_SIZE) == (18, 13, 16)


def test_wrong_sizes_of_key_session_and_key_id_are_refused() -> None:
    with pytest.raises(ValueError):
        Sealer(bytes(KEY_SIZE - 1), up_prefix(SESSION))
    with pytest.raises(ValueError):
        Opener(bytes(KEY_SIZE + 1), 10)
    with pytest.raises(ValueError):
        up_prefix(bytes(SESSION_SIZE - 1))
    with pytest.raises(ValueError):
        down_prefix(bytes(5))


# ---------------------------------------------------------------------------
# round trips and Counters
# ---------------------------------------------------------------------------


@given(st.lists(inners, min_size=1, max_size=8))
def test_a_members_datagrams_open_with_its_key(datagrams: list[bytes]) -> None:
    sealer, opener = member_sealer(), member_opener(MEMBER_KEY)
    for inner in datagrams:
        assert opener.open(sealer.seal(inner)) == inner


@given(st.lists(inners, min_size=1, max_size=8))
def test_a_rooms_datagrams_open_with_the_room_key(datagrams: list[bytes]) -> None:
    sealer, opener = room_sealer(), room_opener(ROOM_KEY)
    for inner in datagrams:
        assert opener.open(sealer.seal(inner)) == inner


def test_the_counter_starts_at_1_and_grows_by_one() -> None:
    sealer = member_sealer()
    assert sealer.counter == 0
    for expected in range(1, 6):
        sealed = sealer.seal(b"x")
        assert sealer.counter == expected
        assert sealed[UP_HEADER_SIZE - 8 : UP_HEADER_SIZE] == struct.pack("!Q", expected)
    # The same inner bytes never seal alike: each has its own nonce.
    assert len({member_sealer().seal(b"x"), sealer.seal(b"x"), sealer.seal(b"x")}) == 3


def test_a_datagram_sealed_with_another_key_is_forged() -> None:
    sealed = member_sealer(key=bytes(32)).seal(INNER_UP)
    assert member_opener(MEMBER_KEY).open(sealed) is Refusal.FORGED
    # The member key does not open the room's datagrams, nor the room key the member's.
    assert room_opener(MEMBER_KEY).open(room_sealer(MEMBER_KEY).seal(b"x")) == b"x"
    assert room_opener(ROOM_KEY).open(member_sealer().seal(b"x")) is Refusal.FORGED


def test_a_rooms_opener_does_not_open_a_members_datagram_of_the_same_key() -> None:
    """The header sizes differ (13 and 18 bytes): the associated data never matches."""
    up = member_sealer(key=ROOM_KEY).seal(b"x")
    assert room_opener(ROOM_KEY).open(up) is Refusal.FORGED
    down = room_sealer(key=MEMBER_KEY).seal(b"x" * 10)
    assert member_opener(MEMBER_KEY).open(down) is Refusal.FORGED


# ---------------------------------------------------------------------------
# alteration: every byte is covered by the tag
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_altering_any_byte_of_a_members_datagram_is_forged(flip: int) -> None:
    sealed = member_sealer().seal(INNER_UP)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= flip
        opener = member_opener(MEMBER_KEY)
        assert opener.open(bytes(altered)) is Refusal.FORGED, position
        assert opener.open(sealed) == INNER_UP  # the genuine one still opens, once


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_altering_any_byte_of_a_rooms_datagram_is_forged(flip: int) -> None:
    sealed = room_sealer().seal(INNER_DOWN)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= flip
        opener = room_opener(ROOM_KEY)
        assert opener.open(bytes(altered)) is Refusal.FORGED, position
        assert opener.open(sealed) == INNER_DOWN


@given(inners, st.data())
def test_any_alteration_is_forged(inner: bytes, data: st.DataObject) -> None:
    sealed = member_sealer().seal(inner)
    position = data.draw(st.integers(0, len(sealed) - 1))
    flip = data.draw(st.integers(1, 255))
    altered = bytearray(sealed)
    altered[position] ^= flip
    assert member_opener(MEMBER_KEY).open(bytes(altered)) is Refusal.FORGED


@given(inners, st.integers(1, 40))
def test_a_cut_or_lengthened_datagram_is_refused(inner: bytes, cut: int) -> None:
    sealed = member_sealer().seal(inner)
    shorter = sealed[:-cut]
    expected = Refusal.MALFORMED if len(shorter) < UP_OVERHEAD else Refusal.FORGED
    assert member_opener(MEMBER_KEY).open(shorter) is expected
    assert member_opener(MEMBER_KEY).open(sealed + bytes(cut)) is Refusal.FORGED


def test_too_short_to_hold_a_header_and_a_tag_is_malformed() -> None:
    sealed = member_sealer().seal(b"")  # header and tag only: the shortest there is
    assert len(sealed) == UP_OVERHEAD
    assert member_opener(MEMBER_KEY).open(sealed) == b""
    opener = member_opener(MEMBER_KEY)
    for size in range(UP_OVERHEAD):
        assert opener.open(sealed[:size]) is Refusal.MALFORMED, size
    down = room_sealer().seal(b"")
    for size in range(DOWN_OVERHEAD):
        assert room_opener(ROOM_KEY).open(down[:size]) is Refusal.MALFORMED, size
    assert opener.window.accept(1)  # nothing malformed moved the window


# ---------------------------------------------------------------------------
# replay and the window
# ---------------------------------------------------------------------------


def test_a_datagram_opens_once() -> None:
    sealer, opener = member_sealer(), member_opener(MEMBER_KEY)
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    assert opener.open(first) == b"one"
    assert opener.open(first) is Refusal.REPLAYED
    assert opener.open(second) == b"two"
    assert opener.open(first) is Refusal.REPLAYED
    assert opener.open(second) is Refusal.REPLAYED


def test_out_of_order_within_the_window_opens_once_each() -> None:
    sealer, opener = room_sealer(), room_opener(ROOM_KEY)
    sealed = [sealer.seal(b"%d" % n) for n in range(1, REPLAY_WINDOW + 1)]
    # The newest first, then every older one within the window, backwards.
    for n in range(REPLAY_WINDOW, 0, -1):
        assert opener.open(sealed[n - 1]) == b"%d" % n, n
    for datagram in sealed:
        assert opener.open(datagram) is Refusal.REPLAYED
    # Interleaved: odd Counters first, then the even ones they overtook.
    sealed = [sealer.seal(b"%d" % n) for n in range(1, 101)]
    for datagram in sealed[::2] + sealed[1::2]:
        assert isinstance(opener.open(datagram), bytes)
    assert all(opener.open(datagram) is Refusal.REPLAYED for datagram in sealed)


def test_the_window_holds_exactly_2048_counters() -> None:
    sealer, opener = member_sealer(), member_opener(MEMBER_KEY)
    sealed = [sealer.seal(b"%d" % n) for n in range(1, REPLAY_WINDOW + 2)]  # 1 .. 2049
    assert opener.open(sealed[-1]) == b"%d" % (REPLAY_WINDOW + 1)
    # Counter 2 is 2047 behind the newest (2049): the oldest still accepted.
    assert opener.open(sealed[1]) == b"2"
    # Counter 1 is 2048 behind: too old to tell, refused though it never came.
    assert opener.open(sealed[0]) is Refusal.REPLAYED
    assert opener.open(sealed[1]) is Refusal.REPLAYED


def test_a_far_jump_forgets_the_older_counters() -> None:
    window = ReplayWindow()
    assert window.accept(5)
    assert window.accept(5 + REPLAY_WINDOW + 100)
    assert not window.accept(5)
    assert not window.accept(100)  # 2053 behind: outside the window
    assert window.accept(5 + REPLAY_WINDOW + 100 - (REPLAY_WINDOW - 1))  # the oldest within
    assert not window.accept(0)


@given(st.lists(st.integers(1, 3 * REPLAY_WINDOW), max_size=60))
def test_the_window_against_a_model(counters: list[int]) -> None:
    """Accepted: new, and less than REPLAY_WINDOW behind the newest accepted so far."""
    window = ReplayWindow()
    seen: set[int] = set()
    newest = 0
    for counter in counters:
        expected = counter not in seen and newest - counter < REPLAY_WINDOW
        assert window.accept(counter) is expected, (counter, newest)
        if expected:
            seen.add(counter)
            newest = max(newest, counter)


def test_counter_zero_is_never_accepted() -> None:
    window = ReplayWindow()
    assert not window.accept(0)
    assert window.accept(1)
    assert not window.accept(0)


def test_a_forged_datagram_does_not_move_the_window() -> None:
    sealer, opener = member_sealer(), member_opener(MEMBER_KEY)
    first = sealer.seal(b"first")
    # A forgery far ahead: were it believed, it would push Counter 1 out of the window.
    ahead = bytearray(sealer.seal(b"x"))
    ahead[UP_HEADER_SIZE - 8 : UP_HEADER_SIZE] = struct.pack("!Q", 10 * REPLAY_WINDOW)
    assert opener.open(bytes(ahead)) is Refusal.FORGED
    assert opener.open(first) == b"first"


def test_a_forged_datagram_does_not_use_up_its_counter() -> None:
    sealer, opener = member_sealer(), member_opener(MEMBER_KEY)
    genuine = sealer.seal(b"genuine")
    forged = bytearray(genuine)
    forged[-1] ^= 1
    assert opener.open(bytes(forged)) is Refusal.FORGED
    assert opener.open(genuine) == b"genuine"
