"""Every server limit in one place: its default and why, its unit, and its flag.

:class:`Limits` is the list. Each field is made by :func:`seconds` or :func:`count`,
which keep the unit, the flag's help text and the flag's argument type in the field's
metadata; the comment above a field says why its default is what it is. ``ocm server``
builds its limit flags from :func:`flags` (``--idle-timeout`` for ``idle_timeout``) and
the README's flag table is :func:`markdown_rows`, so a new limit is one field here, plus
the code that enforces it. Standard library and :mod:`ocm.wire` only.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from ocm.wire.constants import MAX_TCRP_PAYLOAD

__all__ = [
    "Flag",
    "Limits",
    "count",
    "flags",
    "markdown_rows",
    "positive_count",
    "positive_seconds",
    "seconds",
]


def positive_seconds(text: str) -> float:
    """The argument type of a limit in seconds: a positive number, fractions allowed."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def positive_count(text: str) -> int:
    """The argument type of a limit that counts things: a whole number, at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def seconds(default: float, help: str) -> float:
    """A :class:`Limits` field in seconds; ``help`` is the flag's help text."""
    return field(
        default=default, metadata={"unit": "seconds", "type": positive_seconds, "help": help}
    )


def count(default: int, unit: str, help: str) -> int:
    """A :class:`Limits` field counting ``unit`` (plural: "rooms"); ``help`` as above."""
    return field(default=default, metadata={"unit": unit, "type": positive_count, "help": help})


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server lets its clients make it hold: each field is an ``ocm server`` flag.

    The order of the fields is the order of the flags in ``ocm server --help`` and in
    the README's table.
    """

    # A member silent this long is dropped, and a silent host closes its room. The client
    # heartbeats every 15 s (section 2 asks for idle_timeout / 3), so three heartbeats in
    # a row can be lost before a live member is dropped, while a member that vanished
    # without LEAVE_ROOM is gone within a minute.
    idle_timeout: float = seconds(
        60.0, "seconds of silence before a member is dropped (fractions allowed)"
    )
    # Generous for a laptop or small VPS: a room with its host is about 0.8 KB, so a full
    # server holds about 8 MB of rooms. Beyond it CREATE_ROOM is server_full.
    max_rooms: int = count(10_000, "rooms", "rooms on the server")
    # Generous for a laptop or small VPS too: about 0.5 KB a member, and one chat line is
    # this many datagrams (1,000 copies of up to 4 KB fit the relay's send buffer).
    max_members: int = count(1_000, "members", "members per room")
    # Rooms one client IP may host at once: without it one address could take every room
    # (server_full for everyone else) and make LIST_ROOMS megabytes long.
    max_rooms_per_ip: int = count(20, "rooms", "rooms one client IP may host at once")
    # Per client IP, and in all: bounds the file descriptors and buffers an attacker can
    # pin. A client needs one connection per request; the benchmark's opens 16 at most.
    max_connections_per_ip: int = count(32, "connections", "open TCP connections per client IP")
    # The server raises its open-file limit to fit this many, or lowers this to fit
    # (fit_connections_to_file_limit): many systems start processes at 1,024 files.
    max_connections: int = count(4096, "connections", "open TCP connections in all")
    # Real requests are a few hundred bytes; the cap bounds what one connection can make
    # the server buffer (the wire's MAX_TCRP_PAYLOAD, 64 KiB).
    max_payload: int = count(MAX_TCRP_PAYLOAD, "bytes", "largest TCRP payload, in bytes")
    # A message that has started must be complete within this time: a peer trickling one
    # byte a second holds a connection for at most this long. The same bound applies to a
    # reply the peer will not read (a write that stalls this long aborts the connection).
    message_timeout: float = seconds(5.0, "seconds to send a whole TCRP message once started")
    # Section 1: a connection that sends nothing for this long is closed. A client sends
    # its request as soon as it connects; only idle or hostile peers wait.
    tcp_idle_timeout: float = seconds(10.0, "seconds an idle TCP connection is kept")
    # Password hashes (scrypt, 16 MiB and ~40 ms of CPU each) computed at once: bounds the
    # memory and CPU that a crowd of password guesses can take from the relay.
    max_concurrent_hashes: int = count(
        2, "hashes", "password hashes (scrypt, 16 MiB each) computed at once"
    )
    # Wrong passwords per client IP before rate_limited, and the window they are counted
    # in: a person mistyping gets a few tries, a guesser gets 5 a minute.
    max_password_failures: int = count(
        5, "failures", "wrong passwords per client IP per window before rate_limited"
    )
    failure_window: float = seconds(60.0, "seconds over which wrong passwords are counted")
    # ERROR replies per source IP per second (a token bucket: a burst of as many, then
    # this many a second): enough for a person to see why a message bounced, too few to
    # make the server a useful reflector.
    error_replies_per_second: int = count(
        5, "replies", "UDP ERROR replies per source IP per second"
    )
    # The delivery extension (docs/protocol.md, section 3). A room keeps its last Seqs so
    # that a member can fetch what UDP lost: 1,024 is minutes of a busy room, and what a
    # reader whose socket overflowed during a flood needs back. Memory: at most
    # --history-bytes per room, so --max-rooms x --history-bytes in all (2.5 GiB for
    # 10,000 full rooms), plus 41 bytes of Python per datagram kept (2.8 GiB in all; a
    # room of short lines holds far less). docs/security.md.
    history_messages: int = count(1024, "messages", "datagrams of history kept per room")
    history_bytes: int = count(256 * 1024, "bytes", "bytes of history kept per room")
    # Repair datagrams one member may get a second (and as many in a burst): a member
    # that missed a whole flood gets it back in about a second, and a member cannot make
    # the server send more than this however it asks.
    repair_rate: int = count(1000, "datagrams", "repair datagrams per member per second")
    # Delivery members get a room's CLOSED eight times: at once and after each of 7
    # intervals, so that at 20% loss one member in 390,000 misses all eight. A server
    # shutting down lingers that long (1.4 s) before it stops.
    closed_resend_interval: float = seconds(
        0.2, "seconds between the copies of a CLOSED (delivery members)"
    )
    # Section 4: what a tunnelled member's connection may hold unsent. A reader that
    # falls this far behind (a minute of a busy room) is cut off, its tunnel closed,
    # rather than slowing the room or growing the server's memory; it stays a member,
    # and its client opens a new tunnel and repairs what it missed from the history.
    tunnel_buffer: int = count(
        256 * 1024, "bytes", "bytes queued for one tunnelled member before its tunnel is cut"
    )


@dataclass(frozen=True, slots=True)
class Flag:
    """One field of :class:`Limits` as ``ocm server`` shows it."""

    name: str  # the field, and the flag's argparse dest: "idle_timeout"
    option: str  # "--idle-timeout"
    type: Callable[[str], float]  # positive_seconds or positive_count
    default: float
    unit: str  # "seconds", "rooms", ...
    help: str


def flags(limits: type[Limits] = Limits) -> tuple[Flag, ...]:
    """The flags of ``limits``' fields, in order: the option is the field's name in
    kebab case."""
    defaults = limits()
    return tuple(
        Flag(
            name=f.name,
            option="--" + f.name.replace("_", "-"),
            type=f.metadata["type"],
            default=getattr(defaults, f.name),
            unit=f.metadata["unit"],
            help=f.metadata["help"],
        )
        for f in fields(limits)
    )


def markdown_rows(limits: type[Limits] = Limits) -> list[str]:
    """The limit rows of the README's server flag table: flag, default, meaning."""
    return [
        f"| `{f.option}` | `{_written(f.default)}` | {_marked(f.help)} |" for f in flags(limits)
    ]


def _written(number: float) -> str:
    """A default as a person types it: 60.0 as 60, 0.5 as 0.5."""
    return f"{number:g}" if isinstance(number, float) else str(number)


# A snake_case word of a help text is a name from the protocol (an error code such as
# rate_limited): the README shows it as code.
_SNAKE_CASE = re.compile(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b")


def _marked(help: str) -> str:
    return _SNAKE_CASE.sub(lambda word: f"`{word[0]}`", help)
