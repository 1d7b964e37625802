"""End-to-end rooms (section 5 of docs/protocol.md): the keys and the text envelope,
pure computation, no I/O.

A member of an end-to-end room derives two keys from the room's password and the
room's :class:`~ocm.wire.tcrp.E2eParams` (:func:`derive_keys`): Argon2id (RFC 9106) makes
a master key, HKDF-SHA256 (RFC 5869) splits it into

* the *auth key*, which the client gives the server as the room's password (in hex,
  :attr:`E2eKeys.auth_password`): the server stores and checks it as it does any
  password, and learns nothing from it about the other key;
* the *message key*, which never leaves the members: every chat text is sealed with it
  (:func:`seal_text`) into an ``e2e1:`` envelope the server relays but cannot read, and
  opened by the others (:func:`open_text`).

The envelope binds the room's name and the sender's name (as the server relays it) as
associated data, so the server can neither move a message to another room nor
attribute it to another member. :func:`check_params` is the client's floor: a server
must not talk a joiner into a cheap derivation, which would make the password easy to
guess from the auth key the joiner sends. The nonce comes from the caller (the wire
draws no random numbers); opening failures raise
:class:`~ocm.errors.RemoteProtocolError` (``bad_request``).

``cryptography`` is imported only when a key is derived or a text sealed or opened:
``ocm server`` and the client's parser, which load this module for its names and
limits, still start from the standard library alone.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ocm.errors import ErrorCode, LocalProtocolError
from ocm.wire._util import bad
from ocm.wire.tcrp import E2eParams

__all__ = [
    "AUTH_INFO",
    "DEFAULT_ITERATIONS",
    "DEFAULT_LANES",
    "DEFAULT_MEMORY_KIB",
    "E2E",
    "ENVELOPE_PREFIX",
    "FLOOR_ITERATIONS",
    "FLOOR_MEMORY_KIB",
    "KEY_SIZE",
    "MAX_ITERATIONS",
    "MAX_LANES",
    "MAX_MEMORY_KIB",
    "MESSAGE_INFO",
    "NONCE_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "E2eKeys",
    "check_params",
    "default_params",
    "derive_keys",
    "envelope_size",
    "max_plain_bytes",
    "open_text",
    "seal_text",
]

# The feature name in JOIN_ROOM's (and CREATE_ROOM's) "features" and in the COMPLETE.
E2E = "e2e"
# What a sealed chat text starts with: the envelope's version 1.
ENVELOPE_PREFIX = "e2e1:"
KEY_SIZE = 32
NONCE_SIZE = 12  # ChaCha20-Poly1305 (RFC 8439): 96 random bits per message
TAG_SIZE = 16
SALT_SIZE = 16  # a creator's salt: 128 random bits (RFC 9106 recommends 16 bytes)
# HKDF's info strings: one key for the server, one for the members.
AUTH_INFO = b"ocm e2e v1 server auth"
MESSAGE_INFO = b"ocm e2e v1 message key"
_AAD_PREFIX = b"ocm e2e v1\x00"

# A creator's defaults: RFC 9106's second recommended option (section 4), for machines
# without 2 GiB to spare: 64 MiB, 3 passes, 4 lanes (about 0.1 s on a laptop core pair).
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_ITERATIONS = 3
DEFAULT_LANES = 4
# The floor a client derives with at least: OWASP's minimum for Argon2id (Password
# Storage Cheat Sheet: 19 MiB, 2 passes, 1 lane). Below it a server could hand joiners
# a KDF cheap enough to guess the password from the auth key they send.
FLOOR_MEMORY_KIB = 19 * 1024
FLOOR_ITERATIONS = 2
# And the most memory it spends: RFC 9106's first recommended option, 2 GiB. More would
# let a server make every joiner's machine swap (the wire allows up to 4 GiB).
MAX_MEMORY_KIB = 2 * 1024 * 1024
# And the most passes and lanes (RFC 9106's options use 1-3 passes, 4 lanes): the wire
# allows 64 of each, which would make a join take minutes.
MAX_ITERATIONS = 10
MAX_LANES = 16


@dataclass(frozen=True, slots=True)
class E2eKeys:
    """The two keys of an end-to-end room, derived from its password."""

    auth: bytes  # 32 bytes, for the server: the password it checks
    message: bytes  # 32 bytes, for the members only: seals every chat text

    @property
    def auth_password(self) -> str:
        """What CREATE_ROOM and JOIN_ROOM carry as ``password``: 64 lowercase hex digits."""
        return self.auth.hex()

    def __repr__(self) -> str:  # never a key in a log line or a traceback
        return "E2eKeys(...)"


def default_params(salt: bytes) -> E2eParams:
    """A new room's parameters with ``salt`` (16 random bytes from the caller)."""
    return E2eParams(salt, DEFAULT_MEMORY_KIB, DEFAULT_ITERATIONS, DEFAULT_LANES)


def check_params(params: E2eParams) -> str | None:
    """Why a client must not derive with ``params``, or None when it may: below the
    floor (too cheap to guess against), over the memory ceiling, or an unknown KDF."""
    if params.kdf != "argon2id":
        return f'unknown key derivation "{params.kdf}"'
    if params.memory_kib < FLOOR_MEMORY_KIB or params.iterations < FLOOR_ITERATIONS:
        return (
            f"the key derivation is too weak (memory {params.memory_kib} KiB, "
            f"{params.iterations} passes; at least {FLOOR_MEMORY_KIB} KiB and "
            f"{FLOOR_ITERATIONS} passes)"
        )
    if params.memory_kib > MAX_MEMORY_KIB:
        return f"the key derivation asks for {params.memory_kib} KiB, over {MAX_MEMORY_KIB}"
    if params.iterations > MAX_ITERATIONS or params.lanes > MAX_LANES:
        # A server could otherwise make every joiner spend minutes deriving.
        return (
            f"the key derivation asks for {params.iterations} passes and {params.lanes} lanes,"
            f" over {MAX_ITERATIONS} and {MAX_LANES}"
        )
    if params.lanes < 1 or params.memory_kib < 8 * params.lanes or len(params.salt) < SALT_SIZE:
        return "the key derivation's parameters are malformed"
    return None


def derive_keys(password: str, params: E2eParams) -> E2eKeys:
    """The room's keys from ``password`` (UTF-8) and ``params``: slow on purpose (tens
    to hundreds of milliseconds, ``params.memory_kib`` of memory), so an adapter runs it
    off its event loop. Refuses parameters :func:`check_params` refuses
    (LocalProtocolError, ``bad_request``): the floor holds whoever calls."""
    problem = check_params(params)
    if problem is not None:
        raise LocalProtocolError(ErrorCode.BAD_REQUEST, problem)
    if not password:
        raise LocalProtocolError(ErrorCode.BAD_REQUEST, "an end-to-end room needs a password")
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            ErrorCode.BAD_REQUEST, "the password is not valid Unicode"
        ) from None
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    master = Argon2id(
        salt=params.salt,
        length=KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    ).derive(secret)
    return E2eKeys(_expand(master, AUTH_INFO), _expand(master, MESSAGE_INFO))


def _expand(master: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(master)


def _aad(room: str, sender: str) -> bytes:
    return _AAD_PREFIX + room.encode("utf-8") + b"\x00" + sender.encode("utf-8")


def seal_text(key: bytes, room: str, sender: str, text: str, nonce: bytes) -> str:
    """``text`` (the chat text as a normal room would carry it) sealed for ``room`` as
    sent by ``sender``: ``"e2e1:"`` and the base64 of nonce || ciphertext || tag.
    ``nonce`` is 12 random bytes, never used twice with ``key``."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    sealed = ChaCha20Poly1305(key).encrypt(nonce, text.encode("utf-8"), _aad(room, sender))
    return ENVELOPE_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def open_text(key: bytes, room: str, sender: str, envelope: str) -> str:
    """The text inside ``envelope``, a chat text ``sender`` sent in ``room``.

    RemoteProtocolError (``bad_request``) when it is not an envelope, not base64, too
    short, fails the tag (another key, room or sender, or altered) or is not UTF-8.
    """
    if not envelope.startswith(ENVELOPE_PREFIX):
        raise bad("not an end-to-end envelope")
    try:
        data = base64.b64decode(envelope[len(ENVELOPE_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise bad("the envelope is not base64") from None
    if len(data) < NONCE_SIZE + TAG_SIZE:
        raise bad("the envelope is too short")
    nonce, sealed = data[:NONCE_SIZE], data[NONCE_SIZE:]
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    try:
        plain = ChaCha20Poly1305(key).decrypt(nonce, sealed, _aad(room, sender))
    except InvalidTag:
        raise bad("the envelope does not open: another key, room or sender, or altered") from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the envelope's text is not valid UTF-8") from None


def envelope_size(text_bytes: int) -> int:
    """The bytes of the envelope of a text of ``text_bytes`` UTF-8 bytes."""
    return len(ENVELOPE_PREFIX) + 4 * -(-(NONCE_SIZE + text_bytes + TAG_SIZE) // 3)


def max_plain_bytes(limit: int) -> int:
    """The longest text (UTF-8 bytes) whose envelope fits in ``limit`` bytes (0 if none)."""
    groups = (limit - len(ENVELOPE_PREFIX)) // 4
    return max(0, 3 * groups - NONCE_SIZE - TAG_SIZE)
