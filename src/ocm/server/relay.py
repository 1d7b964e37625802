"""The relay core: what the server does with each UDP datagram (section 2).

Bytes and a source address in, :class:`~ocm.server.registry.Outgoing` datagrams out, time
passed in. It checks every datagram on its own (size, layout, token, room, source IP,
UTF-8), so one malformed datagram costs its sender an ERROR and nobody else anything.

Reflection: an unauthenticated datagram is never answered with more bytes than it
carried, and each source IP gets at most ``Limits.error_replies_per_second`` ERRORs a second.
"""

from __future__ import annotations

from ocm.errors import ProtocolError
from ocm.server.guards import ErrorReplyLimiter
from ocm.server.registry import Address, Outgoing, RoomRegistry
from ocm.wire.constants import CLIENT_HEADER_SIZE, MAX_DATAGRAM, SERVER_HEADER_SIZE
from ocm.wire.datagrams import Kind, server_datagram_prefix, split_client_datagram
from ocm.wire.texts import NotUtf8, TooLong, UnknownToken, format_refusal

__all__ = ["Answer", "RelayCore"]

# What the relay sends for one datagram: one datagram, to each of these addresses.
Answer = tuple[bytes, tuple[Address, ...]]

_MESSAGE = Kind.MESSAGE
_ERROR_PREFIX = server_datagram_prefix(Kind.ERROR, 0)
_UNKNOWN_TOKEN = format_refusal(UnknownToken())
_NOT_UTF8 = format_refusal(NotUtf8())


class RelayCore:
    """Turns client datagrams into relayed MESSAGEs and ERROR replies."""

    def __init__(self, registry: RoomRegistry, errors: ErrorReplyLimiter | None = None) -> None:
        self.registry = registry
        self.errors = errors or ErrorReplyLimiter()
        # Counters for logs and tests: what was dropped and why.
        self.relayed = 0
        self.rejected = 0

    def datagram_received(self, data: bytes, address: Address, now: float) -> list[Outgoing]:
        """Handle one client datagram from ``address``; return what to send."""
        answer = self.answer(data, address, now)
        return [] if answer is None else [Outgoing(*answer)]

    def answer(self, data: bytes, address: Address, now: float) -> Answer | None:
        """:meth:`datagram_received` for the UDP adapter's hot path.

        The relay answers a datagram with at most one datagram (to the room, or an
        ERROR to the sender), so it returns that pair, or None, and a relayed chat line
        allocates nothing but the datagram itself.
        """
        size = len(data)
        # Fast path, inlined from wire.datagrams.split_client_datagram: a chat datagram
        # is parsed with two index reads and three slices.
        if CLIENT_HEADER_SIZE <= size <= MAX_DATAGRAM and data[0] and data[1]:
            room_end = CLIENT_HEADER_SIZE + data[0]
            token_end = room_end + data[1]
            if token_end <= size:
                member = self.registry.authenticate(
                    data[CLIENT_HEADER_SIZE:room_end], data[room_end:token_end], address[0]
                )
                if member is None:
                    return self._refuse(address, now, size, _UNKNOWN_TOKEN)
                self.registry.touch(member, address, now)
                if token_end == size:
                    return None  # a heartbeat: registered, not relayed
                text = data[token_end:]
                room = member.room
                relayed_size = SERVER_HEADER_SIZE + len(member.name_bytes) + len(text)
                if relayed_size > MAX_DATAGRAM:
                    limit = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(member.name_bytes)
                    return self._refuse(address, now, None, format_refusal(TooLong(limit)))
                # ASCII is valid UTF-8 and much cheaper to recognise than to decode.
                if not text.isascii():
                    try:
                        text.decode("utf-8")
                    except UnicodeDecodeError:
                        return self._refuse(address, now, None, _NOT_UTF8)
                self.relayed += 1
                prefix = server_datagram_prefix(_MESSAGE, room.next_seq(), member.name_bytes)
                return prefix + text, room.addresses
        try:
            split_client_datagram(data)
        except ProtocolError as error:
            return self._refuse(address, now, size, error.message)
        raise AssertionError("fast path and decoder disagree")  # pragma: no cover

    def _refuse(self, address: Address, now: float, cap: int | None, why: str) -> Answer | None:
        """An ERROR to ``address``; ``cap`` bounds its size for unauthenticated senders."""
        self.rejected += 1
        if not self.errors.allow(address[0], now):
            return None
        reply = _ERROR_PREFIX + why.encode("utf-8")
        if cap is not None:
            if cap < SERVER_HEADER_SIZE:
                return None  # even a bare header would be more than we received
            reply = reply[:cap]
        return reply, (address,)
