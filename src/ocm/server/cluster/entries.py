"""What travels between the nodes of a cluster: room entries and the bus's messages.

Pure encode and decode, no I/O. An :class:`Entry` is one thing said in a room (a chat
line, a NOTICE, a CLOSED), as the node that says it hands it to the store's publish
script; the script numbers it with the room's counter and publishes a bus message
(:func:`encode_bus_message`) that every node turns into datagrams for its own members.
The Lua scripts (:mod:`ocm.server.cluster.scripts`) build the same bytes, so the format
is one a script can write: fields of ``<decimal length>:<bytes>``, the last field of an
entry (its text) taking the rest.

A malformed message (a bug, or something else writing on the channel) raises
:class:`MalformedEntry`: the node logs it and skips it; it never stops reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ocm.wire.datagrams import Kind
from ocm.wire.delivery import DeliveryKind

__all__ = [
    "BusMessage",
    "Entry",
    "MalformedEntry",
    "Op",
    "decode_bus_message",
    "decode_entry",
    "encode_bus_message",
    "encode_entry",
    "field",
]

# Kinds an entry can have: what the relay sends to a room.
ENTRY_KINDS = frozenset({Kind.MESSAGE, Kind.NOTICE, Kind.CLOSED, DeliveryKind.CHAT})


class Op(StrEnum):
    """What a publish does to a room besides saying its entry (the publish script's
    ``op``, word for word)."""

    SAY = "say"  # say the entry
    LEAVE = "leave"  # a member leaves, then the entry (its NOTICE) is said
    CLOSE = "close"  # the entry (its CLOSED) is said, then the room is gone
    DROP = "drop"  # the room is gone, nothing said (a create its node could not finish)
    UNRESERVE = "unreserve"  # a member is gone, nothing said (a join not finished, or
    # one that left while its node numbered the room itself)


class MalformedEntry(ValueError):
    """Bytes on the bus that are not an entry or a bus message."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing said in a room, before the cluster numbers it.

    ``kind`` is the datagram kind it becomes (MESSAGE for a version 1 member's line,
    CHAT for a delivery member's, NOTICE, CLOSED); ``sender`` and ``msg_no`` are the
    line's sender and its message number (CHAT only); ``text`` is the UTF-8 text.
    """

    kind: int
    text: bytes
    sender: bytes = b""
    msg_no: int = 0


@dataclass(frozen=True, slots=True)
class BusMessage:
    """An entry as published: its room (name and incarnation) and its number there."""

    room: str
    rid: str
    counter: int
    entry: Entry


def field(value: bytes) -> bytes:
    """One ``<length>:<bytes>`` field (the scripts' ``f()``)."""
    return b"%d:%b" % (len(value), value)


def encode_entry(entry: Entry) -> bytes:
    return (
        field(b"%d" % entry.kind) + field(entry.sender) + field(b"%d" % entry.msg_no) + entry.text
    )


def decode_entry(data: bytes) -> Entry:
    (kind, sender, msg_no), offset = _fields(data, 0, 3)
    number = _number(kind)
    if number not in ENTRY_KINDS:
        raise MalformedEntry(f"an entry of unknown kind {number}")
    return Entry(number, data[offset:], sender, _number(msg_no))


def encode_bus_message(message: BusMessage) -> bytes:
    return (
        field(message.room.encode("utf-8"))
        + field(message.rid.encode("ascii"))
        + field(b"%d" % message.counter)
        + encode_entry(message.entry)
    )


def decode_bus_message(data: bytes) -> BusMessage:
    (room, rid, counter), offset = _fields(data, 0, 3)
    try:
        name, incarnation = room.decode("utf-8"), rid.decode("ascii")
    except UnicodeDecodeError as error:
        raise MalformedEntry("a room name or incarnation that is not text") from error
    return BusMessage(name, incarnation, _number(counter), decode_entry(data[offset:]))


def _fields(data: bytes, offset: int, count: int) -> tuple[list[bytes], int]:
    values: list[bytes] = []
    for _ in range(count):
        colon = data.find(b":", offset, offset + 21)
        if colon < 0:
            raise MalformedEntry("a field without its length")
        size = _number(data[offset:colon])
        end = colon + 1 + size
        if end > len(data):
            raise MalformedEntry("a field longer than the message")
        values.append(data[colon + 1 : end])
        offset = end
    return values, offset


def _number(digits: bytes) -> int:
    if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
        raise MalformedEntry(f"not a number: {digits[:24]!r}")
    return int(digits)
