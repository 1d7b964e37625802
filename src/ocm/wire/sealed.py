"""Sealed relay datagrams (section 5 of docs/protocol.md): encrypted and authenticated,
pure computation, no I/O.

A member admitted over TLS with the ``sealed`` feature gets two keys in its COMPLETE:

* its own *member key*: only it and the server know it. Every datagram it sends is an
  extended datagram of section 3, sealed whole with that key under a Session id that
  names the key (no token in clear), so the server knows who sent it: an observer can
  neither read nor forge one, and cannot reuse a token it never sees;
* the *room key*, shared by the room's members. Everything the server sends to the
  room is sealed once with it (one encryption per chat line, not one per member: the
  relay stays fast), and the same bytes go to every member.

Both use ChaCha20-Poly1305 (RFC 8439) with a 96-bit nonce made of 4 zero bytes and the
sender's 64-bit Counter, which starts at 1 and grows by one per datagram: a key never
sees a nonce twice. The header is the AEAD's associated data, so it cannot be altered
either. A receiver accepts each Counter once, within a window of the newest
:data:`REPLAY_WINDOW`: a captured datagram sent again is dropped (and counted).

:class:`Sealer` seals, :class:`Opener` opens; :func:`session_of` and :func:`key_id_of`
read the clear header. Opening never raises: it returns the inner datagram or a
:class:`Refusal` that says why not (malformed, forged, replayed), cheap enough for the
relay's hot path. Keys and ids come from the caller (the wire reads no randomness).
"""

from __future__ import annotations

import struct
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "DOWN_HEADER_SIZE",
    "DOWN_OVERHEAD",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "REPLAY_WINDOW",
    "SEALED",
    "SEALED_KIND",
    "SEALED_TYPE",
    "SESSION_PREFIX_SIZE",
    "SESSION_SIZE",
    "TAG_SIZE",
    "UP_HEADER_SIZE",
    "UP_OVERHEAD",
    "Opener",
    "Refusal",
    "ReplayWindow",
    "Sealer",
    "down_prefix",
    "is_sealed_down",
    "is_sealed_up",
    "key_id_of",
    "member_opener",
    "room_opener",
    "session_of",
    "up_prefix",
]

# The feature name in the CREATE_ROOM / JOIN_ROOM "features" list and its COMPLETE.
SEALED = "sealed"
# Client to server: Marker 0 and Type 5 (after section 3's DATA, PING, REPAIR, LEAVE).
SEALED_TYPE = 5
# Server to client: Kind 16 (after sections 2 and 3's Kinds 1-10, with room to grow).
SEALED_KIND = 16

KEY_SIZE = 32
SESSION_SIZE = 8
# A Session's first bytes are the server's boot id's (section 3's ``boot``), the rest
# random: a restarted server knows a Session of its predecessor for what it is.
SESSION_PREFIX_SIZE = 4
KEY_ID_SIZE = 4
COUNTER_SIZE = 8
TAG_SIZE = 16
# Marker (1) + Type (1) + Session (8) + Counter (8).
UP_HEADER_SIZE = 2 + SESSION_SIZE + COUNTER_SIZE
# Kind (1) + KeyId (4) + Counter (8).
DOWN_HEADER_SIZE = 1 + KEY_ID_SIZE + COUNTER_SIZE
UP_OVERHEAD = UP_HEADER_SIZE + TAG_SIZE
DOWN_OVERHEAD = DOWN_HEADER_SIZE + TAG_SIZE
# Counters accepted behind the newest one seen: far more than any reordering on a real
# path (a room's counter grows with every datagram the server seals for it).
REPLAY_WINDOW = 2048

_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
_NONCE_PREFIX = bytes(4)
_COUNTER = struct.Struct("!Q")
_MAX_COUNTER = 2**64 - 1


class Refusal(StrEnum):
    """Why a sealed datagram was dropped; the receiver counts each."""

    MALFORMED = "malformed"  # too short to hold a header and a tag
    UNKNOWN = "unknown session"  # names a key the receiver does not hold
    FORGED = "forged"  # the tag does not verify: altered, or not sealed with the key
    REPLAYED = "replayed"  # a Counter already seen, or older than the window


def up_prefix(session: bytes) -> bytes:
    """The clear start of a member's sealed datagrams: Marker 0, Type 5, Session."""
    if len(session) != SESSION_SIZE:
        raise ValueError(f"a Session is {SESSION_SIZE} bytes")
    return bytes((0, SEALED_TYPE)) + session


def down_prefix(key_id: bytes) -> bytes:
    """The clear start of a room's sealed datagrams: Kind 16, KeyId."""
    if len(key_id) != KEY_ID_SIZE:
        raise ValueError(f"a KeyId is {KEY_ID_SIZE} bytes")
    return bytes((SEALED_KIND,)) + key_id


def is_sealed_up(data: bytes) -> bool:
    return len(data) > 1 and data[0] == 0 and data[1] == SEALED_TYPE


def is_sealed_down(data: bytes) -> bool:
    return len(data) > 0 and data[0] == SEALED_KIND


def session_of(data: bytes) -> bytes:
    """The Session of a client's sealed datagram (check :func:`is_sealed_up` first)."""
    return data[2 : 2 + SESSION_SIZE]


def key_id_of(data: bytes) -> bytes:
    """The KeyId of a server's sealed datagram (check :func:`is_sealed_down` first)."""
    return data[1 : 1 + KEY_ID_SIZE]


class ReplayWindow:
    """Which Counters were seen: each is accepted once, and only within
    :data:`REPLAY_WINDOW` of the newest (the sliding window of RFC 4303 and WireGuard)."""

    __slots__ = ("_newest", "_seen")

    def __init__(self) -> None:
        self._newest = 0
        self._seen = 0  # bit i: newest - i was seen

    def accept(self, counter: int) -> bool:
        """Record ``counter``; False if it was seen before or is too old to tell."""
        newest = self._newest
        if counter > newest:
            shift = counter - newest
            self._seen = ((self._seen << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self._newest = counter
            return True
        behind = newest - counter
        if counter == 0 or behind >= REPLAY_WINDOW:
            return False
        bit = 1 << behind
        if self._seen & bit:
            return False
        self._seen |= bit
        return True


class Sealer:
    """Seals datagrams with one key, under one clear prefix, numbering them 1, 2, ...

    The server has one per room (the room key, prefix Kind 16 + KeyId); a client has one
    for its member key (prefix Marker 0 + Type 5 + Session).
    """

    __slots__ = ("_aead", "_counter", "_prefix")

    def __init__(self, key: bytes, prefix: bytes, *, counter: int = 0) -> None:
        """``counter``: the Counter of the last datagram sealed with this key before (0:
        none, the next is 1). A key must never seal two datagrams with one Counter."""
        if len(key) != KEY_SIZE:
            raise ValueError(f"a key is {KEY_SIZE} bytes")
        self._aead = ChaCha20Poly1305(key)
        self._prefix = prefix
        self._counter = counter

    @property
    def counter(self) -> int:
        """The Counter of the last datagram sealed (0: none yet)."""
        return self._counter

    def seal(self, inner: bytes) -> bytes:
        counter = self._counter = self._counter + 1
        if counter > _MAX_COUNTER:  # pragma: no cover - 2**64 datagrams
            raise OverflowError("this key has sealed all the datagrams it may")
        number = _COUNTER.pack(counter)
        header = self._prefix + number
        return header + self._aead.encrypt(_NONCE_PREFIX + number, inner, header)


class Opener:
    """Opens the datagrams sealed with one key whose clear prefix is ``prefix_size``
    bytes, each Counter once (:class:`ReplayWindow`)."""

    __slots__ = ("_aead", "_header_size", "window")

    def __init__(self, key: bytes, prefix_size: int) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a key is {KEY_SIZE} bytes")
        self._aead = ChaCha20Poly1305(key)
        self._header_size = prefix_size + COUNTER_SIZE
        self.window = ReplayWindow()

    def open(self, data: bytes) -> bytes | Refusal:
        """The inner datagram of ``data``, or why it was refused. The caller checked
        the prefix (which key this is); the tag covers it and the Counter."""
        end = self._header_size
        if len(data) < end + TAG_SIZE:
            return Refusal.MALFORMED
        number = data[end - COUNTER_SIZE : end]
        header = data[:end]
        try:
            inner = self._aead.decrypt(_NONCE_PREFIX + number, data[end:], header)
        except InvalidTag:
            return Refusal.FORGED
        # Only an authentic datagram moves the window: a forged Counter cannot push the
        # genuine ones out of it.
        if not self.window.accept(_COUNTER.unpack(number)[0]):
            return Refusal.REPLAYED
        return inner


def member_opener(key: bytes) -> Opener:
    """The server's opener for a member's datagrams."""
    return Opener(key, 2 + SESSION_SIZE)


def room_opener(key: bytes) -> Opener:
    """A member's opener for its room's datagrams."""
    return Opener(key, 1 + KEY_ID_SIZE)
