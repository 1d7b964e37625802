"""The server tests' kit: what more than one test module uses to watch a real server
(its metrics endpoint scraped and parsed, a delivery member's UDP peer registered, the
datagrams a peer or a tunnel receives decoded). The cluster tests use it too.

prometheus_client parses the metrics text here, as a test dependency only: the server
never imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import suppress

from prometheus_client.parser import text_string_to_metric_families

from ocm.server.app import OCMServer
from ocm.server.exposition import CONTENT_TYPE
from ocm.wire import Admission
from ocm.wire.delivery import Ping, Received, Status, decode_received, encode_extended
from tests.kit import LOOPBACK, MS, TunnelPeer, UdpPeer

# ---------------------------------------------------------------------------
# The metrics endpoint
# ---------------------------------------------------------------------------

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


async def http(port: int, request: bytes, timeout: float = 2000 * MS) -> bytes:
    """Send ``request`` on a new connection; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read(-1)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers by lower-case name, body) of a whole HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("ascii").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return status, headers, body


async def scrape(server: OCMServer) -> Samples:
    """Every sample of ``GET /metrics``, parsed by prometheus_client: (name, labels) -> value."""
    assert server.metrics_port is not None
    status, headers, body = split(await http(server.metrics_port, get("/metrics")))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(body)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".encode()


# ---------------------------------------------------------------------------
# Delivery members (section 3) and tunnels (section 4)
# ---------------------------------------------------------------------------


def boot(admission: Admission) -> bytes:
    return bytes.fromhex(admission.boot or "")


async def received(peer: UdpPeer, timeout: float = 1000 * MS) -> Received:
    return decode_received(await peer.recv_raw(timeout))


async def tunnelled(peer: TunnelPeer, timeout: float = 1000 * MS) -> Received:
    return decode_received(await peer.recv(timeout))


async def on_udp(admission: Admission, *, local_host: str = LOOPBACK) -> UdpPeer:
    """A delivery member's UDP peer, registered by a PING (its STATUS taken)."""
    peer = await UdpPeer.open(admission.udp_port, local_host=local_host)
    peer.send_raw(encode_extended(Ping(admission.token, 1, boot(admission))))
    assert isinstance(await received(peer), Status)
    return peer
