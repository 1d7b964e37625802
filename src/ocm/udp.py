"""The UDP adapter: moves relay datagrams between the socket and :class:`RelayCore`.

Bytes arrive, the core says what to send, the endpoint sends it. Nothing here looks
inside a datagram.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

from ocm.registry import Outgoing
from ocm.relay import RelayCore

__all__ = ["RelayEndpoint"]

log = logging.getLogger("ocm.udp")


class RelayEndpoint(asyncio.DatagramProtocol):
    def __init__(self, core: RelayCore, clock: Callable[[], float]) -> None:
        self.core = core
        self._clock = clock
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            outgoing = self.core.datagram_received(data, addr, self._clock())
        except Exception:
            # A bug must cost one datagram, never the relay.
            log.exception("unexpected error handling a datagram from %s", addr[0])
            return
        self.send(outgoing)

    def send(self, outgoing: Iterable[Outgoing]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for item in outgoing:
            datagram = item.datagram
            for address in item.addresses:
                transport.sendto(datagram, address)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: its idle timeout will
        # remove it; nothing to do now.
        log.debug("UDP error: %s", exc)
