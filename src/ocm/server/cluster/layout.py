"""How the cluster's state is laid out in Redis: key names and the values' formats.

Pure: no I/O. The Lua scripts (:mod:`ocm.server.cluster.scripts`, whose docstring lists
every key) and :class:`~ocm.server.cluster.redis_backend.RedisBackend` both follow it;
the scripts name the keys they derive in the same way (``'ocm:members:' .. room``).

A member's value (``ocm:members:NAME``) is its node id (16 hex digits), its place in the
room's join order (10 digits; the host's is 0) and its name: the node owns it, the place
orders COMPLETE's member list, the name is the one to announce.
"""

from __future__ import annotations

import json

from ocm.server.guards import canonical_ip
from ocm.server.passwords import PasswordHash
from ocm.wire.tcrp import E2eParams

__all__ = [
    "BUS",
    "EPOCH",
    "NAME_START",
    "NODES",
    "NODE_ID_SIZE",
    "NODE_PREFIX",
    "ROOMS",
    "counter_of",
    "e2e_text",
    "fails_key",
    "history_key",
    "hosted_key",
    "member_name",
    "member_place",
    "member_value",
    "members_key",
    "node_key",
    "parse_e2e",
    "parse_password",
    "password_text",
    "published_key",
    "room_key",
    "safe_url",
    "seq_key",
]

BUS = "ocm:bus"  # the one channel every room's entries are published on
ROOMS = "ocm:rooms"
NODES = "ocm:nodes"
NODE_PREFIX = "ocm:node:"
EPOCH = "ocm:epoch"
NODE_ID_SIZE = 8  # bytes: 16 hex digits, the first 16 characters of a member's value
PLACE_DIGITS = 10
NAME_START = 2 * NODE_ID_SIZE + PLACE_DIGITS


def room_key(name: str) -> str:
    return f"ocm:room:{name}"


def members_key(name: str) -> str:
    return f"ocm:members:{name}"


def seq_key(name: str) -> str:
    return f"ocm:seq:{name}"


def history_key(name: str) -> str:
    return f"ocm:history:{name}"


def hosted_key(ip: str) -> str:
    return f"ocm:hosted:{canonical_ip(ip)}"


def fails_key(ip: str) -> str:
    return f"ocm:fails:{canonical_ip(ip)}"


def node_key(node: str) -> str:
    return NODE_PREFIX + node


def published_key(node: str) -> str:
    return f"ocm:published:{node}"


def member_value(node: str, place: int, name: str) -> str:
    return f"{node}{place:0{PLACE_DIGITS}d}{name}"


def member_place(value: str) -> int:
    return int(value[2 * NODE_ID_SIZE : NAME_START])


def member_name(value: str) -> str:
    return value[NAME_START:]


def counter_of(entry_id: bytes) -> int:
    """The room counter of a stream entry's ID (``COUNTER-1``)."""
    return int(entry_id.split(b"-", 1)[0])


def password_text(password: PasswordHash | None) -> str:
    """A room password as the store keeps it: scrypt's salt and digest in hex (empty:
    an open room), never the password."""
    return "" if password is None else f"{password.salt.hex()}:{password.digest.hex()}"


def parse_password(text: bytes) -> PasswordHash | None:
    """:func:`password_text` read back; ValueError if it is not one."""
    if not text:
        return None
    salt, digest = text.decode("ascii").split(":")
    return PasswordHash(bytes.fromhex(salt), bytes.fromhex(digest))


def e2e_text(e2e: E2eParams | None) -> str:
    """An end-to-end room's KDF parameters as the store keeps them (JSON; empty: none)."""
    if e2e is None:
        return ""
    return json.dumps(
        {
            "salt": e2e.salt.hex(),
            "memory_kib": e2e.memory_kib,
            "iterations": e2e.iterations,
            "lanes": e2e.lanes,
            "kdf": e2e.kdf,
        }
    )


def parse_e2e(text: bytes | None) -> E2eParams | None:
    """:func:`e2e_text` read back; ValueError (or KeyError) if it is not one."""
    if not text:
        return None
    fields = json.loads(text)
    return E2eParams(
        bytes.fromhex(fields["salt"]),
        int(fields["memory_kib"]),
        int(fields["iterations"]),
        int(fields["lanes"]),
        str(fields["kdf"]),
    )


def safe_url(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
