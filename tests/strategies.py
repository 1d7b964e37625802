"""Hypothesis strategies for the OCM wire protocol: valid messages and their mutations.

Valid values follow the rules of section 1 and 2 of docs/protocol.md exactly, so that
encode-then-decode must be the identity for every one of them. :func:`mutated` turns
valid encodings into nearly-valid bytes: random bytes rarely get past the first size
check, a flipped or truncated real message reaches the deep branches of a decoder.

The strategy functions are cached: building a strategy costs more than drawing from it,
and the composites below draw from them once per example.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ocm.errors import ErrorCode
from ocm.wire import (
    MAX_DATAGRAM,
    MAX_NAME_BYTES,
    MAX_TOKEN_BYTES,
    SERVER_HEADER_SIZE,
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
    TcrpMessage,
    reply_message,
    request_message,
)

# Any Unicode scalar value: surrogates cannot be encoded as UTF-8 at all.
_ANY_CHAR = st.characters(codec="utf-8")
# Name characters: no surrogates, no control characters (Cc is exactly the C0, DEL and
# C1 ranges the protocol forbids in names) and none of the invisible characters OCM
# refuses (docs/protocol.md, field rules).
INVISIBLE = "\u200b\u200e\u200f\u2028\u2029\ufeff" + "".join(
    map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
)
_NAME_CHAR = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=INVISIBLE)


def _cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


@st.composite
def _long_text(draw: st.DrawFn, alphabet: st.SearchStrategy[str], limit: int) -> str:
    """Text up to ``limit`` UTF-8 bytes; sometimes a repeated chunk right up to the limit."""
    if draw(st.booleans()):
        return _cut_utf8(draw(st.text(alphabet, max_size=64)), limit)
    chunk = draw(st.text(alphabet, min_size=1, max_size=8))
    return _cut_utf8(chunk * (limit // len(chunk.encode("utf-8")) + 1), limit)


@cache
def texts(limit: int) -> st.SearchStrategy[str]:
    """Any text (control characters allowed) of at most ``limit`` UTF-8 bytes."""
    return _long_text(_ANY_CHAR, limit) if limit > 0 else st.just("")


@cache
def names() -> st.SearchStrategy[str]:
    """Valid room names: 1-255 UTF-8 bytes, no control characters."""
    return _long_text(_NAME_CHAR, MAX_NAME_BYTES).filter(bool)


@cache
def usernames() -> st.SearchStrategy[str]:
    """Valid usernames: names that the server's trimming leaves unchanged."""
    return names().map(str.strip).filter(bool)


@cache
def tokens() -> st.SearchStrategy[str]:
    """Valid tokens: 1-255 ASCII characters (the protocol treats them as opaque)."""
    return st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=MAX_TOKEN_BYTES)


@cache
def passwords() -> st.SearchStrategy[str | None]:
    # An empty password means an open room and decodes as None, so "" is not generated.
    return st.none() | st.text(_ANY_CHAR, min_size=1, max_size=40)


# -- TCRP ----------------------------------------------------------------------------


# Feature lists as clients send them: none (version 1), the known one, unknown names.
_features = st.lists(
    st.sampled_from(["delivery", "tunnel", "x" * 64, "é"]), max_size=4, unique=True
).map(tuple)


@cache
def requests() -> st.SearchStrategy[Request]:
    return st.one_of(
        st.builds(CreateRoom, names(), usernames(), passwords(), _features),
        st.builds(JoinRoom, names(), usernames(), passwords(), _features),
        st.just(ListRooms()),
        st.builds(LeaveRoom, names(), tokens()),
    )


_short_text = st.text(_ANY_CHAR, max_size=40)


@cache
def replies() -> st.SearchStrategy[Reply]:
    operations = st.sampled_from(Operation)
    return st.one_of(
        st.builds(Ack, operations, names() | st.just("")),
        st.builds(Ack, operations, names() | st.just(""), st.sampled_from(ErrorCode), _short_text),
        st.builds(
            Admission,
            st.sampled_from([Operation.CREATE_ROOM, Operation.JOIN_ROOM]),
            names(),
            tokens(),
            st.integers(1, 65535),
            usernames(),
            st.lists(usernames(), max_size=8).map(tuple),
            st.none() | st.floats(0.001, 1e6),
            _features,
            st.none() | st.integers(0, 2**32 - 1),
            st.none() | st.binary(min_size=8, max_size=8).map(bytes.hex),
            st.none() | st.integers(0, 2**32 - 1),
        ),
        st.builds(
            RoomList,
            st.lists(
                st.builds(RoomInfo, names(), st.integers(0, 2**31), st.booleans()), max_size=8
            ).map(tuple),
        ),
        st.builds(Left, names()),
    )


_json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    _short_text,
)


@cache
def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        _json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_short_text, inner, max_size=4),
        max_leaves=8,
    )


# Strings on the edges of the field rules: empty, blank, too long, not ASCII, controls.
_EDGE_STRINGS = st.sampled_from(["", "   ", "x" * 256, "é" * 128, "tök", "a\x00b", "a\x85b"])


def _near(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right type (so the next check is reached), sometimes anything."""
    return st.one_of(valid, valid, _json_scalars)


_room_entries = st.fixed_dictionaries(
    {},
    optional={
        "name": _near(names()),
        "members": _near(st.integers(-1, 10)),
        "protected": _near(st.booleans()),
    },
)
# For each field the typed parsers read: values near what it must hold.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "username": _near(usernames() | _EDGE_STRINGS),
    "password": _near(_short_text | _EDGE_STRINGS),
    "token": _near(tokens() | _EDGE_STRINGS),
    "status": _near(st.sampled_from(["ok", "error", "maybe", ""])),
    "code": _near(st.sampled_from([*ErrorCode, "no_such_code", ""])),
    "message": _near(_short_text),
    "udp_port": _near(st.integers(-1, 70000) | st.sampled_from([0, 1, 65535, 65536])),
    "host": _near(usernames()),
    "members": _near(st.lists(_near(usernames()), max_size=3)),
    "rooms": _near(st.lists(st.one_of(_room_entries, _room_entries, _json_scalars), max_size=3)),
    "features": _near(st.lists(_near(st.sampled_from(["delivery", "", "x" * 65])), max_size=3)),
    "seq": _near(st.integers(-1, 2**32) | st.sampled_from([0, 2**32 - 1, 2**32])),
    "boot": _near(st.sampled_from(["0123456789abcdef", "0123456789ABCDEF", "12", ""])),
    "history": _near(st.integers(-1, 2**32)),
}
FIELD_KEYS = tuple(FIELD_VALUES)


@st.composite
def _field_payloads(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(FIELD_KEYS), max_size=6, unique=True))
    return {key: draw(FIELD_VALUES[key]) for key in keys}


@cache
def payloads() -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects: mostly made of the fields the parsers read, some random ones."""
    return _field_payloads() | st.dictionaries(_short_text, json_values(), max_size=3)


@cache
def tcrp_messages() -> st.SearchStrategy[TcrpMessage]:
    """Frames with any operation, state, room text and (mostly field-shaped) payload."""
    return st.builds(
        TcrpMessage,
        st.sampled_from(Operation),
        st.sampled_from(State),
        texts(MAX_NAME_BYTES),
        payloads(),
    )


@st.composite
def nearly_valid_messages(draw: st.DrawFn) -> TcrpMessage:
    """A valid request or reply frame with a field or two dropped, replaced or added.

    Random payloads seldom hold a whole valid reply; this reaches every field check
    behind the first one (a bad udp_port in an otherwise valid Admission, ...).
    """
    message = draw(st.one_of(requests().map(request_message), replies().map(reply_message)))
    payload = dict(message.payload)
    for _ in range(draw(st.sampled_from([1, 1, 2]))):
        how = draw(st.sampled_from(["drop", "replace", "replace", "replace", "add"]))
        if how == "drop" and payload:
            del payload[draw(st.sampled_from(sorted(payload)))]
        else:
            keys = sorted(payload) if how == "replace" and payload else FIELD_KEYS
            key = draw(st.sampled_from(keys))
            payload[key] = draw(FIELD_VALUES.get(key, _json_scalars))
    # Now and then the wrong state for the payload (a reply sent as a request ...).
    state = draw(st.sampled_from([message.state] * 8 + list(State)))
    return TcrpMessage(message.operation, state, message.room, payload)


# -- relay datagrams -----------------------------------------------------------------


@st.composite
def client_datagrams(draw: st.DrawFn) -> ClientDatagram:
    room = draw(names())
    token = draw(tokens())
    budget = MAX_DATAGRAM - 2 - len(room.encode("utf-8")) - len(token)
    return ClientDatagram(room, token, draw(texts(budget)))


@st.composite
def server_datagrams(draw: st.DrawFn) -> ServerDatagram:
    kind = draw(st.sampled_from(Kind))
    sender = draw(texts(MAX_NAME_BYTES)) if kind is Kind.MESSAGE else ""
    budget = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(sender.encode("utf-8"))
    return ServerDatagram(kind, draw(st.integers(0, 2**32 - 1)), sender, draw(texts(budget)))


# -- mutations -----------------------------------------------------------------------

# Bytes that sit on the edges of the formats: empty sizes, maximal sizes, the first
# byte of a multi-byte UTF-8 sequence, a lone continuation byte, the largest kind.
_INTERESTING = st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x7F, 0x80, 0xC3, 0xFF])


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with 1-4 mutations: flip, set, truncate, extend, insert, delete."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete"]))
        # Mutations near the start hit the headers: bias the position towards them.
        position = draw(st.integers(0, max(len(data) - 1, 0)) | st.integers(0, 40))
        position = min(position, max(len(data) - 1, 0))
        if how == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif how == "set" and data:
            data[position] = draw(_INTERESTING)
        elif how == "truncate":
            del data[position:]
        elif how == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif how == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete" and data:
            del data[position]
    return bytes(data)


# Enough examples to find the edge cases the strategies aim at, few enough that the
# whole module runs in a few seconds. No deadline: a slow CI runner is not a bug.
FAST = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# For the tests whose examples are nested structures (about 3 ms each to generate).
HEAVY = settings(FAST, max_examples=300)


def repeated(limit: int) -> st.SearchStrategy[bytes]:
    """Random bytes repeated up to around ``limit``: cheap long inputs for size checks."""
    return st.tuples(st.binary(min_size=1, max_size=16), st.integers(1, limit)).map(
        lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]]
    )
