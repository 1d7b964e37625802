"""Relay datagrams inside a TCP connection (section 4 of docs/protocol.md): no I/O.

After TUNNEL's COMPLETE a connection carries frames, in both directions: a uint16
big-endian length, then that many bytes of one relay datagram, in the layouts of
sections 2 and 3 unchanged (the client sends extended datagrams, the server the
datagrams it would send over UDP). The frame is the datagram's boundary that TCP does
not keep. :class:`FrameReader` is fed bytes and hands back whole datagrams, as
:class:`~ocm.wire.framer.TcrpReader` does for TCRP messages.

Also here: the names of section 4's features, ``tunnel`` and ``resume``.
"""

from __future__ import annotations

import struct

from ocm.wire._util import bad, refuse
from ocm.wire.constants import MAX_DATAGRAM
from ocm.wire.sealed import UP_OVERHEAD

__all__ = [
    "FRAME_HEADER_SIZE",
    "FRAME_LENGTH",
    "MAX_FRAME",
    "RESUME",
    "TUNNEL",
    "FrameReader",
    "encode_frame",
]

TUNNEL = "tunnel"
RESUME = "resume"

# A frame's Length field; public for the server's hot path, which packs it without
# encode_frame's checks (the relay only ever hands it datagrams that fit).
FRAME_LENGTH = struct.Struct("!H")
FRAME_HEADER_SIZE = FRAME_LENGTH.size
# A frame holds one datagram as UDP would carry it: up to MAX_DATAGRAM bytes, and a
# sealed one (section 5) that much plus its header and tag (the client's overhead is
# the larger of the two directions').
MAX_FRAME = MAX_DATAGRAM + UP_OVERHEAD


def encode_frame(datagram: bytes) -> bytes:
    """One datagram as a frame. A datagram is 1 to MAX_FRAME bytes."""
    if not 0 < len(datagram) <= MAX_FRAME:
        raise refuse(f"a tunnelled datagram is 1-{MAX_FRAME} bytes, got {len(datagram)}")
    return FRAME_LENGTH.pack(len(datagram)) + datagram


class FrameReader:
    """Fed bytes with :meth:`feed`, returns whole datagrams from :meth:`next_frame`.

    A length of 0 or over MAX_FRAME raises :class:`~ocm.errors.RemoteProtocolError`
    (``bad_request``) as soon as its two bytes are in: the stream is out of step after
    that, and the connection is closed. Memory stays bounded: the caller feeds more only
    when :meth:`next_frame` has returned None, so at most one read beyond a frame waits.
    """

    def __init__(self, data: bytes = b"") -> None:
        self._buffer = bytearray(data)  # what arrived behind TUNNEL's COMPLETE, if anything

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def started(self) -> bool:
        """Whether part of a frame is buffered (its sender owes us the rest)."""
        return bool(self._buffer)

    def next_frame(self) -> bytes | None:
        """The next whole datagram, or None until more bytes are fed."""
        buffer = self._buffer
        if len(buffer) < FRAME_HEADER_SIZE:
            return None
        (size,) = FRAME_LENGTH.unpack_from(buffer)
        if not 0 < size <= MAX_FRAME:
            raise bad(f"a tunnel frame is 1-{MAX_FRAME} bytes, got {size}")
        end = FRAME_HEADER_SIZE + size
        if len(buffer) < end:
            return None
        datagram = bytes(buffer[FRAME_HEADER_SIZE:end])
        del buffer[:end]
        return datagram
