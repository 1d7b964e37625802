"""ocm.wire.e2e: the keys of an end-to-end room and its text envelope (section 5).

The test vector is docs/protocol.md's (checked against the page too); it was checked
once against the reference Argon2 library (libargon2, argon2id_hash_raw) and HKDF
written out with hmac, independently of ``cryptography``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from ocm.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ocm.wire.e2e import (
    DEFAULT_ITERATIONS,
    DEFAULT_LANES,
    DEFAULT_MEMORY_KIB,
    ENVELOPE_PREFIX,
    FLOOR_ITERATIONS,
    FLOOR_MEMORY_KIB,
    MAX_ITERATIONS,
    MAX_LANES,
    MAX_MEMORY_KIB,
    E2eKeys,
    check_params,
    default_params,
    derive_keys,
    envelope_size,
    max_plain_bytes,
    open_text,
    seal_text,
)
from ocm.wire.tcrp import E2eParams

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

# docs/protocol.md, section 5, "Test vector".
PASSWORD = "correct horse battery staple"
SALT = bytes(range(16))
FLOOR = E2eParams(SALT, FLOOR_MEMORY_KIB, FLOOR_ITERATIONS, 1)
AUTH = "e77da6f372ac734ec01a7940842afc0e0c5145fab21c87468840e7715b50021c"
MESSAGE = "9651a819eed3d3204930106d33e0a16d2a3160638103a19283585cd100c898f2"
NONCE = bytes(range(0xA0, 0xAC))
ENVELOPE = "e2e1:oKGio6SlpqeoqaqrrTCEVDzQod7sbCt+Zo6FKnEDIQD+SsPMeSg="
ACTION_NONCE = bytes(range(0xB0, 0xBC))
ACTION_ENVELOPE = "e2e1:sLGys7S1tre4ubq7GWljKqJiTFUgmttq4SWK649uVy8sGc8jYsut3Qyl"

KEY = bytes.fromhex(MESSAGE)


@pytest.fixture(scope="module")
def keys() -> E2eKeys:
    return derive_keys(PASSWORD, FLOOR)


def test_the_derivation_gives_the_test_vector(keys: E2eKeys) -> None:
    assert (keys.auth.hex(), keys.message.hex()) == (AUTH, MESSAGE)
    assert keys.auth_password == AUTH  # what the server gets: 64 hex digits
    assert AUTH not in repr(keys) and MESSAGE not in repr(keys)


def test_the_derivation_is_deterministic_and_depends_on_every_input(keys: E2eKeys) -> None:
    assert derive_keys(PASSWORD, FLOOR) == keys
    others = [
        derive_keys(PASSWORD + "!", FLOOR),
        derive_keys(PASSWORD, replace(FLOOR, salt=bytes(16))),
        derive_keys(PASSWORD, replace(FLOOR, iterations=3)),
        derive_keys(PASSWORD, replace(FLOOR, memory_kib=FLOOR_MEMORY_KIB + 8)),
        derive_keys(PASSWORD, replace(FLOOR, lanes=2)),
    ]
    seen = {keys.auth, keys.message} | {k.auth for k in others} | {k.message for k in others}
    assert len(seen) == 12  # the auth key and the message key differ, and every input counts


def test_the_envelope_gives_the_test_vector() -> None:
    assert seal_text(KEY, "vault", "alice", "hello, bob", NONCE) == ENVELOPE
    assert open_text(KEY, "vault", "alice", ENVELOPE) == "hello, bob"
    action = "\x01ACTION waves\x01"  # an action stays CTCP inside
    assert seal_text(KEY, "vault", "alice", action, ACTION_NONCE) == ACTION_ENVELOPE
    assert open_text(KEY, "vault", "alice", ACTION_ENVELOPE) == action


def test_docs_protocol_md_carries_the_same_test_vector() -> None:
    page = DOC.read_text(encoding="utf-8")
    (block,) = re.findall(r"<!-- vector: e2e -->\n```text\n(.*?)\n```", page, re.S)
    fields = dict(line.split(": ", 1) for line in block.splitlines())
    assert fields["password"] == PASSWORD
    assert bytes.fromhex(fields["salt"]) == SALT
    assert (fields["memory_kib"], fields["iterations"], fields["lanes"]) == ("19456", "2", "1")
    assert (fields["auth"], fields["message_key"]) == (AUTH, MESSAGE)
    assert (fields["room"], fields["sender"], fields["text"]) == ("vault", "alice", "hello, bob")
    assert bytes.fromhex(fields["nonce"]) == NONCE
    assert fields["envelope"] == ENVELOPE
    # And the page's words for the derivation's fixed strings are the code's.
    assert '`b"ocm e2e v1 server auth"`' in page and '`b"ocm e2e v1 message key"`' in page


def test_the_envelope_layout() -> None:
    data = base64.b64decode(ENVELOPE.removeprefix(ENVELOPE_PREFIX), validate=True)
    assert data[:12] == NONCE and len(data) == 12 + len("hello, bob") + 16
    aad = b"ocm e2e v1\x00vault\x00alice"
    assert ChaCha20Poly1305(KEY).decrypt(NONCE, data[12:], aad) == b"hello, bob"


@pytest.mark.parametrize(
    ("key", "room", "sender"),
    [
        (bytes(32), "vault", "alice"),  # another key
        (KEY, "lobby", "alice"),  # moved to another room
        (KEY, "vault", "bob"),  # re-attributed to another member
        (KEY, "vault", "Alice"),  # the name exactly as relayed
        (KEY, "vaul", "talice"),  # the separator is part of the binding
    ],
)
def test_an_envelope_opens_only_with_its_key_room_and_sender(
    key: bytes, room: str, sender: str
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        open_text(key, room, sender, ENVELOPE)
    assert caught.value.code is ErrorCode.BAD_REQUEST


def _tampered(envelope: str, index: int) -> str:
    data = bytearray(base64.b64decode(envelope.removeprefix(ENVELOPE_PREFIX)))
    data[index] ^= 1
    return ENVELOPE_PREFIX + base64.b64encode(bytes(data)).decode()


@pytest.mark.parametrize(
    "envelope",
    [
        _tampered(ENVELOPE, 0),  # the nonce
        _tampered(ENVELOPE, 14),  # the ciphertext
        _tampered(ENVELOPE, -1),  # the tag
        ENVELOPE[:-4],  # cut short
        "hello, bob",  # not sealed at all
        "e2e2:" + ENVELOPE[5:],  # another version
        ENVELOPE + "!",  # not base64
        ENVELOPE[:-1],  # bad padding
        ENVELOPE[:20] + "é" + ENVELOPE[21:],  # not ASCII
        "e2e1:",  # empty
        ENVELOPE_PREFIX + base64.b64encode(bytes(27)).decode(),  # shorter than nonce + tag
    ],
)
def test_a_damaged_envelope_is_refused(envelope: str) -> None:
    with pytest.raises(RemoteProtocolError):
        open_text(KEY, "vault", "alice", envelope)


def test_a_sealed_text_that_is_not_utf8_is_refused() -> None:
    aad = b"ocm e2e v1\x00vault\x00alice"
    sealed = ChaCha20Poly1305(KEY).encrypt(NONCE, b"\xff\xfe", aad)
    envelope = ENVELOPE_PREFIX + base64.b64encode(NONCE + sealed).decode()
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        open_text(KEY, "vault", "alice", envelope)


def test_the_nonce_must_be_12_bytes() -> None:
    with pytest.raises(ValueError, match="12"):
        seal_text(KEY, "vault", "alice", "hi", bytes(8))


_TEXT = st.characters(exclude_categories=["Cs"])  # no lone surrogates: not UTF-8


@given(
    text=st.text(_TEXT, min_size=1, max_size=300),
    room=st.text(_TEXT, min_size=1, max_size=20),
    sender=st.text(_TEXT, min_size=1, max_size=20),
    nonce=st.binary(min_size=12, max_size=12),
)
def test_any_text_round_trips_and_its_size_is_known(
    text: str, room: str, sender: str, nonce: bytes
) -> None:
    envelope = seal_text(KEY, room, sender, text, nonce)
    assert open_text(KEY, room, sender, envelope) == text
    assert len(envelope) == envelope_size(len(text.encode("utf-8")))
    assert envelope.isascii()


@pytest.mark.parametrize("limit", [0, 5, 32, 33, 37, 40, 41, 100, 3011, 4085, 4090])
def test_max_plain_bytes_is_the_longest_text_whose_envelope_fits(limit: int) -> None:
    longest = max_plain_bytes(limit)
    assert longest >= 0
    if longest:
        assert envelope_size(longest) <= limit
    assert envelope_size(longest + 1) > limit


# -- parameters ------------------------------------------------------------------


def test_a_new_rooms_defaults_are_rfc_9106s_second_option() -> None:
    params = default_params(SALT)
    assert (params.memory_kib, params.iterations, params.lanes) == (65536, 3, 4)
    assert (DEFAULT_MEMORY_KIB, DEFAULT_ITERATIONS, DEFAULT_LANES) == (65536, 3, 4)
    assert params.kdf == "argon2id" and params.salt == SALT
    assert check_params(params) is None


@pytest.mark.parametrize(
    "params",
    [
        FLOOR,
        replace(FLOOR, iterations=3, lanes=4),
        replace(FLOOR, memory_kib=MAX_MEMORY_KIB),
    ],
)
def test_parameters_from_the_floor_up_are_taken(params: E2eParams) -> None:
    assert check_params(params) is None


@pytest.mark.parametrize(
    ("params", "why"),
    [
        (replace(FLOOR, memory_kib=FLOOR_MEMORY_KIB - 1), "too weak"),
        (replace(FLOOR, iterations=1), "too weak"),
        (replace(FLOOR, memory_kib=64, iterations=1), "too weak"),
        (replace(FLOOR, memory_kib=MAX_MEMORY_KIB + 1), "over"),
        (replace(FLOOR, iterations=MAX_ITERATIONS + 1), "over"),  # a join would take minutes
        (replace(FLOOR, memory_kib=64 * 1024, lanes=MAX_LANES + 1), "over"),
        (replace(FLOOR, kdf="scrypt"), "unknown"),
        (replace(FLOOR, salt=bytes(8)), "malformed"),
        (replace(FLOOR, lanes=0), "malformed"),
    ],
)
def test_parameters_below_the_floor_or_over_the_ceiling_are_refused(
    params: E2eParams, why: str
) -> None:
    problem = check_params(params)
    assert problem is not None and why in problem
    with pytest.raises(LocalProtocolError, match=why):
        derive_keys(PASSWORD, params)


def test_no_key_from_an_empty_password() -> None:
    with pytest.raises(LocalProtocolError, match="needs a password"):
        derive_keys("", FLOOR)
