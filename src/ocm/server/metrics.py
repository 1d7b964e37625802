"""``ocm server --metrics-port``: the server's counts for Prometheus, over plain HTTP.

Two parts. :func:`snapshot` reads the counts off the running server's parts (registry,
relay, UDP endpoint, TCRP handler) into an :class:`~ocm.server.exposition.Snapshot`;
:mod:`ocm.server.exposition` renders it, purely. :class:`MetricsEndpoint` is a tiny
HTTP/1.1 server on asyncio streams that knows nothing of either: ``GET /metrics`` (or
``HEAD``) is answered 200 with whatever its ``body`` callable returns, any other path
404, another method 405, anything that is not an HTTP/1.x request head 400 (431 when
the head is too large), and every answer closes its connection.

The endpoint is for the operator, not the internet: it listens on 127.0.0.1 unless told
otherwise (``--metrics-host``), speaks no TLS and asks no password. It is still built
for hostile peers: a request head is at most :data:`MAX_HEAD` bytes and must arrive
whole within ``--message-timeout``, answers must be taken within the same time, and at
most :data:`MAX_CONNECTIONS` connections are served at once (more are reset at once).
Nothing a peer sends is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ocm.server.exposition import CONTENT_TYPE, ClusterState, Snapshot

if TYPE_CHECKING:
    from ocm.server.registry import RoomRegistry
    from ocm.server.relay import RelayCore
    from ocm.server.tcp import TcrpHandler
    from ocm.server.udp import RelayEndpoint

__all__ = ["MAX_CONNECTIONS", "MAX_HEAD", "PATH", "MetricsEndpoint", "snapshot"]

log = logging.getLogger("ocm.server.metrics")

PATH = "/metrics"
# A scraper's request head is a few hundred bytes (Prometheus sends about 300); 8 KiB is
# what common servers allow a whole head, and all a peer can make us buffer.
MAX_HEAD = 8 * 1024
# A Prometheus server or two, and an operator's curl: more at once is not a scrape.
MAX_CONNECTIONS = 8

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class MetricsEndpoint:
    """An HTTP/1.1 listener that serves ``body()`` at :data:`PATH`, one request per
    connection. Start it on a bound socket with :meth:`start`; :meth:`close` is idempotent.
    """

    def __init__(
        self,
        body: Callable[[], str],
        *,
        timeout: float,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._body = body
        self.timeout = timeout  # for the whole request head, and for the answer
        self.max_connections = max_connections
        self.port = 0  # the bound port, once started
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, sock: socket.socket) -> None:
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD)

    async def close(self) -> None:
        """Stop listening, cut the connections open, and wait for their handlers."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            # Reset at once: an answer would need its request read first (closing with
            # unread bytes resets the connection anyway, answer and all). A scraper
            # tries again at its next interval.
            writer.transport.abort()
            return
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._answer(reader)
            writer.write(answer)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # gone, or too slow: nothing to answer
        except Exception:
            log.exception("unexpected error on a metrics connection; closing it")
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # an answer the peer would not take
            else:
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        """The whole answer to the request on ``reader``."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _answer(431, "request head too large\n")
        status, method = parse_request_line(head)
        if status != 200:
            return _answer(status, _REASONS[status].lower() + "\n", allow=status == 405)
        try:
            text = self._body()
        except Exception:
            log.exception("unexpected error rendering the metrics")
            return _answer(500, "internal error\n")
        return _answer(200, text, content_type=CONTENT_TYPE, head_only=method == "HEAD")


def parse_request_line(head: bytes) -> tuple[int, str]:
    """(200, method) for a GET or HEAD of :data:`PATH`; else the status to answer
    (400, 404 or 405) and the method, if any. Headers are not needed, nor read."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return 400, ""
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return 400, ""
    if target.split("?", 1)[0] != PATH:
        return 404, method
    if method not in ("GET", "HEAD"):
        return 405, method
    return 200, method


def _answer(
    status: int,
    text: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: bool = False,
    head_only: bool = False,
) -> bytes:
    body = text.encode("utf-8")
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body)


# ---------------------------------------------------------------------------
# What the server counts
# ---------------------------------------------------------------------------


def snapshot(
    *,
    registry: RoomRegistry,
    relay: RelayCore,
    endpoint: RelayEndpoint,
    tcrp: TcrpHandler,
    version: str,
    start_time: float,
    cluster: ClusterState | None = None,
) -> Snapshot:
    """The server's counts now. Costs one pass over the rooms, and while any tunnel is
    open one over the members' addresses too (which of them are a tunnel's)."""
    members = udp = tunnelled = 0
    for room in registry.rooms.values():
        members += len(room.members)
        udp += len(room.addresses)
    if endpoint.tunnels:  # only then can an address be a tunnel's (a negative port)
        tunnelled = sum(
            1 for room in registry.rooms.values() for address in room.addresses if address[1] < 0
        )
    dropped: dict[str, int] = {str(reason): n for reason, n in relay.refused.items()}
    dropped |= {
        "duplicate": relay.duplicates,  # a DATA again: confirmed, not relayed again
        "unknown_type": relay.unknown,  # an extended Type this server does not know
        "no_room_to_wait": relay.not_held,  # an early DATA with no room to wait
        "send_queue_full": endpoint.dropped,  # copies not sent
        "server_error": endpoint.failed,  # a bug cost the datagram (logged)
    }
    return Snapshot(
        version=version,
        start_time=start_time,
        rooms=len(registry.rooms),
        members={"udp": udp - tunnelled, "tunnel": tunnelled, "none": members - udp},
        tunnels=sum(1 for link in endpoint.tunnels.values() if not link.closed),
        tcp_connections=len(tcrp.writers),
        datagrams_received=endpoint.received,
        datagrams_sent=endpoint.sent,
        dropped=dropped,
        requests=dict(tcrp.requests),
        relayed=relay.relayed,
        repaired=relay.repaired,
        cluster=cluster,
    )
