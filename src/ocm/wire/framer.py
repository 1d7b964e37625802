"""Cutting a TCP byte stream into TCRP messages, without doing the reading.

TCP delivers bytes, not messages: a request may arrive a byte at a time, or ten
pipelined requests in one read. :class:`TcrpReader` is fed whatever arrived and hands
back whole messages, the way h11's ``ReceiveBuffer`` and websockets' ``StreamReader``
do; the server's connection handler, the client's exchange and the test kit all read
through it, each with its own socket and its own timeouts.

Memory stays bounded: the header's size field is checked against ``max_payload`` as
soon as the 32 header bytes are in, before the body is waited for, and the caller feeds
more only when :meth:`TcrpReader.next_message` has returned None.

Tools that pass messages through or look at bytes the decoder would refuse (a proxy, an
ACK echoing an unknown operation, a hostile peer's replies) cut the stream with
:meth:`TcrpReader.next_raw` instead: the same cut (:func:`~ocm.wire.tcrp.body_size`),
the sizes checked, nothing decoded.
"""

from __future__ import annotations

from ocm.wire.constants import MAX_TCRP_PAYLOAD, TCRP_HEADER_SIZE
from ocm.wire.tcrp import TcrpHeader, TcrpMessage, body_size, decode_header, decode_tcrp_body

__all__ = ["TcrpReader"]


class TcrpReader:
    """Fed bytes with :meth:`feed`, returns whole messages from :meth:`next_message`.

    A malformed header or body raises :class:`~ocm.errors.RemoteProtocolError` (with the
    wire code) from :meth:`next_message`; the stream cannot be trusted after that, and the
    caller answers and closes. :attr:`operation` is the raw operation byte of the last
    header seen, so an error ACK can name an operation the decoder refused.

    :meth:`next_raw` is the raw mode: whole messages as bytes, only their sizes checked.
    A reader is used in one mode or the other, never both: :meth:`next_message` holds
    a decoded header while it waits for its body, which :meth:`next_raw` would not see.
    """

    def __init__(self, *, max_payload: int = MAX_TCRP_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.operation: int | None = None
        self._buffer = bytearray()
        self._header: TcrpHeader | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def started(self) -> bool:
        """Whether part of a message is buffered (its sender owes us the rest)."""
        return self._header is not None or bool(self._buffer)

    def take_rest(self) -> bytes:
        """What is buffered beyond the last whole message, taken out: the first bytes of
        a tunnel's frames (section 4), which follow TUNNEL's messages at once."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest

    def next_message(self) -> TcrpMessage | None:
        """The next whole message, or None until more bytes are fed."""
        if self._header is None:
            if len(self._buffer) < TCRP_HEADER_SIZE:
                return None
            raw = bytes(self._buffer[:TCRP_HEADER_SIZE])
            del self._buffer[:TCRP_HEADER_SIZE]
            self.operation = raw[1]
            self._header = decode_header(raw, max_payload=self.max_payload)
        size = self._header.body_size
        if len(self._buffer) < size:
            return None
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        header, self._header = self._header, None
        return decode_tcrp_body(header, body)

    def next_raw(self) -> bytes | None:
        """The next whole message's bytes (header and body), or None until more are fed.

        Only the header's size fields are read (the payload size checked against
        ``max_payload``, ``too_large`` as from :meth:`next_message`); the operation and
        state are not decoded, so a message the decoder would refuse is still cut whole.
        After an error nothing is taken: :meth:`take_rest` returns the refused header
        and what follows it, for a tool that passes the stream on as it came.
        """
        buffer = self._buffer
        if len(buffer) < TCRP_HEADER_SIZE:
            return None
        header = bytes(buffer[:TCRP_HEADER_SIZE])
        self.operation = header[1]
        end = TCRP_HEADER_SIZE + body_size(header, max_payload=self.max_payload)
        if len(buffer) < end:
            return None
        raw = bytes(buffer[:end])
        del buffer[:end]
        return raw
