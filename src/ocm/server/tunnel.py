"""A tunnelled member's way out: relay datagrams written to its TCP connection
(section 4 of docs/protocol.md).

After TUNNEL, the TCRP adapter (:mod:`ocm.server.tcp`) reads the member's frames and
hands each datagram to the relay as if it had come over UDP, from the connection's
*tunnel address*: its IP and the negated TCP port, which no UDP address can be. The
relay and the registry then treat that address like any other: it becomes the member's
address, and the room's datagrams for it come here, through the UDP endpoint's
``tunnels`` table (:class:`~ocm.server.udp.RelayEndpoint`).

A member that does not read must not slow the room nor grow the server's memory. Its
frames are written without waiting; once more than ``max_buffer`` bytes wait unsent,
the tunnel is cut (the connection aborted): the member stays in the room, and its
client opens a new tunnel and repairs what it missed from the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from ocm.server.registry import Address
from ocm.wire.tunnel import FRAME_LENGTH

__all__ = ["TunnelLink", "tunnel_address"]

log = logging.getLogger("ocm.server.tunnel")

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


def tunnel_address(ip: str, tcp_port: int) -> Address:
    """The address a tunnel stands for in the registry: never a UDP address."""
    return (ip, -tcp_port)


class TunnelLink:
    """The server's end of one tunnel: frames out, bounded."""

    def __init__(
        self, address: Address, transport: asyncio.WriteTransport, max_buffer: int
    ) -> None:
        self.address = address
        self.max_buffer = max_buffer
        self.closed = False
        self.cut = False  # closed because its reader fell max_buffer behind
        self._transport = transport

    def send(self, datagram: bytes) -> bool:
        """Write one datagram as a frame, or cut the tunnel if its reader is too far behind;
        whether it was written (the metrics count copies sent)."""
        if self.closed:
            return False
        transport = self._transport
        if transport.is_closing():
            # The peer reset the connection (or the server is closing it): the handler
            # has not run its ``finally`` yet. A write now goes nowhere, and asyncio would
            # log "socket.send() raised exception." for each after the first few.
            self.closed = True
            return False
        if transport.get_write_buffer_size() > self.max_buffer:
            log.info(
                "cutting the tunnel of %s: over %d bytes unread", self.address[0], self.max_buffer
            )
            self.cut = True
            self._reset()
            self.close()
            return False
        transport.write(FRAME_LENGTH.pack(len(datagram)) + datagram)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._transport.abort()  # what waits unsent is dropped, not delivered late

    def _reset(self) -> None:
        """Make the close a reset. A plain close of a socket whose peer reads nothing
        queues a FIN behind the unsent bytes: the kernel keeps them (up to the send
        buffer) in an orphaned socket, and the peer is never told it was cut."""
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
