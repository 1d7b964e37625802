"""The relay core: what the server does with each UDP datagram (section 2).

Bytes and a source address in, :class:`~ocm.registry.Outgoing` datagrams out, time
passed in. It checks every datagram on its own (size, layout, token, room, source IP,
UTF-8), so one malformed datagram costs its sender an ERROR and nobody else anything.

Reflection: an unauthenticated datagram is never answered with more bytes than it
carried, and each source IP gets at most ``error_rate`` ERRORs per second.
"""

from __future__ import annotations

from ocm.errors import ProtocolError
from ocm.protocol import (
    MAX_DATAGRAM,
    SERVER_HEADER_SIZE,
    Kind,
    server_datagram_prefix,
    split_client_datagram,
)
from ocm.registry import Address, Outgoing, RoomRegistry

__all__ = ["Answer", "ErrorReplyLimiter", "RelayCore"]

# ERROR replies per source IP per second: enough for a person to see why a message
# bounced, too few to make the server a useful reflector.
DEFAULT_ERROR_RATE = 5.0

# What the relay sends for one datagram: one datagram, to each of these addresses.
Answer = tuple[bytes, tuple[Address, ...]]

_MESSAGE = Kind.MESSAGE
_ERROR_PREFIX = server_datagram_prefix(Kind.ERROR, 0)


class ErrorReplyLimiter:
    """A token bucket per source IP, bounded in how many IPs it remembers."""

    def __init__(self, rate: float = DEFAULT_ERROR_RATE, max_tracked: int = 10_000) -> None:
        self.rate = rate
        self.max_tracked = max_tracked
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last refill)

    def allow(self, ip: str, now: float) -> bool:
        tokens, last = self._buckets.pop(ip, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_tracked:
            del self._buckets[next(iter(self._buckets))]  # forget the least recently seen
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return False
        self._buckets[ip] = (tokens - 1.0, now)
        return True


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
        # Fast path, inlined from protocol.split_client_datagram: a chat datagram is
        # parsed with two index reads and three slices.
        if 2 <= size <= MAX_DATAGRAM and data[0] and data[1]:
            room_end = 2 + data[0]
            token_end = room_end + data[1]
            if token_end <= size:
                member = self.registry.authenticate(
                    data[2:room_end], data[room_end:token_end], address[0]
                )
                if member is None:
                    return self._refuse(address, now, size, "unknown token for this room")
                self.registry.touch(member, address, now)
                if token_end == size:
                    return None  # a heartbeat: registered, not relayed
                text = data[token_end:]
                room = member.room
                relayed_size = SERVER_HEADER_SIZE + len(member.name_bytes) + len(text)
                if relayed_size > MAX_DATAGRAM:
                    limit = MAX_DATAGRAM - SERVER_HEADER_SIZE - len(member.name_bytes)
                    return self._refuse(address, now, None, f"message too long: max {limit} bytes")
                # ASCII is valid UTF-8 and much cheaper to recognise than to decode.
                if not text.isascii():
                    try:
                        text.decode("utf-8")
                    except UnicodeDecodeError:
                        return self._refuse(address, now, None, "message text is not valid UTF-8")
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
