"""The Prometheus text format (version 0.0.4): a :class:`Snapshot` of counts in, text out.

Pure: no sockets, no clock, nothing of the server's objects. :mod:`ocm.server.metrics`
takes the snapshot from the running server and serves :func:`render`'s text over HTTP;
tests render snapshots they make by hand. Names follow Prometheus' conventions: the
``ocm_`` prefix, ``_total`` for counters, base units (seconds), a HELP and a TYPE line
per family, label values escaped (``\\``, ``"`` and newlines).

Only counts leave the server this way: no room or user name, token, address or text is
ever a label value (docs/security.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CONTENT_TYPE",
    "ClusterState",
    "Family",
    "Sample",
    "Snapshot",
    "escape_help",
    "escape_label_value",
    "format_value",
    "render",
    "render_families",
]

# What a scraper is told it gets: the text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One line of a family: its labels (name -> value) and its value."""

    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its name, ``counter`` or ``gauge``, its help text and its samples."""

    name: str
    kind: Kind
    help: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the server counts, at one moment: everything :func:`render` exports."""

    version: str  # ocm.__version__
    start_time: float  # Unix time the server started
    rooms: int = 0
    members: Mapping[str, int] = field(default_factory=dict)  # path (udp, tunnel, none)
    tunnels: int = 0  # tunnels open
    tcp_connections: int = 0  # TCRP connections open (tunnels included)
    datagrams_received: int = 0  # over UDP and through tunnels
    datagrams_sent: int = 0  # each copy to each address, UDP and tunnels
    dropped: Mapping[str, int] = field(default_factory=dict)  # reason -> datagrams
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (op, result)
    relayed: int = 0  # chat lines relayed to their room
    repaired: int = 0  # datagrams sent again on a member's REPAIR
    # A cluster node's (ocm server --redis); None on a server on its own.
    cluster: ClusterState | None = None


@dataclass(frozen=True, slots=True)
class ClusterState:
    """A cluster node's link to its store (Redis)."""

    up: bool
    rtt_seconds: float | None  # the last PING's round trip (None: none answered yet)
    queued: int  # entries waiting to be sent to the store


def render(snapshot: Snapshot) -> str:
    """The exposition text of ``snapshot``: one family per metric, in a fixed order."""
    s = snapshot
    return render_families(
        [
            *_cluster_families(s.cluster),
            _family(
                "ocm_build_info",
                "gauge",
                "The OCM version this server runs (always 1).",
                [((("version", s.version),), 1)],
            ),
            _family(
                "ocm_start_time_seconds",
                "gauge",
                "Unix time at which this server started listening.",
                [((), s.start_time)],
            ),
            _family("ocm_rooms", "gauge", "Rooms open.", [((), s.rooms)]),
            _family(
                "ocm_members",
                "gauge",
                "Members in a room, by the path their datagrams take: udp, tunnel (TCP),"
                " or none (no datagram from them yet).",
                [((("path", path),), n) for path, n in sorted(s.members.items())],
            ),
            _family(
                "ocm_tunnels",
                "gauge",
                "Tunnels open (members chatting over TCP).",
                [((), s.tunnels)],
            ),
            _family(
                "ocm_tcp_connections",
                "gauge",
                "TCRP connections open, tunnels included.",
                [((), s.tcp_connections)],
            ),
            _family(
                "ocm_datagrams_received_total",
                "counter",
                "Relay datagrams received, over UDP and through tunnels.",
                [((), s.datagrams_received)],
            ),
            _family(
                "ocm_datagrams_sent_total",
                "counter",
                "Relay datagrams sent: each copy to each member, over UDP and tunnels.",
                [((), s.datagrams_sent)],
            ),
            _family(
                "ocm_datagrams_dropped_total",
                "counter",
                "Datagrams refused or dropped, by reason: a received datagram the relay"
                " refused, did not relay or could not handle, or a copy not sent"
                " (send_queue_full).",
                [((("reason", why),), n) for why, n in sorted(s.dropped.items())],
            ),
            _family(
                "ocm_tcrp_requests_total",
                "counter",
                "TCRP requests answered, by operation and result (ok or the error code).",
                [
                    ((("operation", op), ("result", result)), n)
                    for (op, result), n in sorted(s.requests.items())
                ],
            ),
            _family(
                "ocm_relayed_messages_total",
                "counter",
                "Chat lines relayed to their room.",
                [((), s.relayed)],
            ),
            _family(
                "ocm_repaired_datagrams_total",
                "counter",
                "Datagrams sent again at a member's request (REPAIR).",
                [((), s.repaired)],
            ),
        ]
    )


def _cluster_families(cluster: ClusterState | None) -> list[Family]:
    if cluster is None:
        return []
    rtt = [] if cluster.rtt_seconds is None else [((), cluster.rtt_seconds)]
    return [
        _family(
            "ocm_redis_up",
            "gauge",
            "1 while the cluster's Redis answers, else 0.",
            [((), int(cluster.up))],
        ),
        _family(
            "ocm_redis_rtt_seconds",
            "gauge",
            "Round trip of the last PING to the cluster's Redis.",
            rtt,
        ),
        _family(
            "ocm_cluster_queued_entries",
            "gauge",
            "Room entries waiting to be sent to the cluster's Redis.",
            [((), cluster.queued)],
        ),
    ]


def _family(
    name: str,
    kind: Kind,
    help: str,
    samples: Iterable[tuple[tuple[tuple[str, str], ...], float]],
) -> Family:
    return Family(name, kind, help, tuple(Sample(labels, value) for labels, value in samples))


def render_families(families: Iterable[Family]) -> str:
    """The text of ``families``: HELP, TYPE, then each sample, a newline after each line.

    A family without samples keeps its HELP and TYPE (a scraper then knows the name).
    Names are checked: a bad one is a bug here, never something a client sent.
    """
    lines: list[str] = []
    for family in families:
        if not _METRIC_NAME.fullmatch(family.name):
            raise ValueError(f"not a metric name: {family.name!r}")
        if family.kind == "counter" and not family.name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {family.name!r}")
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            lines.append(f"{family.name}{_labels(sample.labels)} {format_value(sample.value)}")
    return "".join(line + "\n" for line in lines)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    for name, _ in labels:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"not a label name: {name!r}")
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed
    escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text as the format writes it: backslash and line feed escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: whole numbers without a fraction, and +Inf, -Inf, NaN by name."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)
