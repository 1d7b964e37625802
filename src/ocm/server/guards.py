"""Rate limiters that keep one client IP from costing the others.

:class:`FailureLimiter` counts wrong passwords per IP in a sliding window (guessing);
:class:`ErrorReplyLimiter` is a token bucket per IP for UDP ERROR replies (reflection).
Both take ``now`` and remember a bounded number of IPs. :class:`LogLimiter` keeps a
flood (of guesses, of bad datagrams) from flooding the log as well.
"""

from __future__ import annotations

from collections import deque

from ocm.server.limits import Limits

__all__ = ["ErrorReplyLimiter", "FailureLimiter", "LogLimiter", "canonical_ip", "held_back"]

_DEFAULTS = Limits()  # the defaults of a limiter made alone (in a unit test)


def canonical_ip(ip: str) -> str:
    """Fold an IPv4-mapped IPv6 address (::ffff:1.2.3.4, from a dual-stack socket)."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


class FailureLimiter:
    """Counts failures per client IP in a sliding window (wrong passwords, bad tokens).

    The table is bounded: past ``max_tracked`` IPs the stalest is forgotten, so a flood
    of sources cannot grow memory without limit.
    """

    def __init__(
        self,
        max_failures: int = _DEFAULTS.max_password_failures,
        window: float = _DEFAULTS.failure_window,
        max_tracked: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, ip: str, now: float) -> deque[float] | None:
        times = self._failures.get(ip)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[ip]
            return None
        return times

    def blocked(self, ip: str, now: float) -> bool:
        times = self._recent(canonical_ip(ip), now)
        return times is not None and len(times) >= self.max_failures

    def record(self, ip: str, now: float) -> int:
        """Count a failure of ``ip``; return its failures within the window, this one
        included: ``max_failures`` the first time it is blocked (the server logs that
        once per block, not once per try)."""
        ip = canonical_ip(ip)  # one client, whichever socket family it came through
        times = self._recent(ip, now)
        if times is None:
            if len(self._failures) >= self.max_tracked:
                del self._failures[next(iter(self._failures))]
            times = self._failures[ip] = deque(maxlen=self.max_failures)
        times.append(now)
        return len(times)


class ErrorReplyLimiter:
    """A token bucket per source IP, bounded in how many IPs it remembers."""

    def __init__(
        self, rate: float = _DEFAULTS.error_replies_per_second, max_tracked: int = 10_000
    ) -> None:
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


class LogLimiter:
    """A token bucket for log lines: ``burst`` lines at once, then ``rate`` a second.

    For lines a client can cause at will (a wrong password, a datagram with a bad
    token): an attacker must not flood the log, nor the disk under it. The lines held
    back are counted, and the next line let through says how many (:func:`held_back`).
    """

    def __init__(self, rate: float = 1.0, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None
        self._held = 0

    def allow(self, now: float) -> int | None:
        """None to hold this line back (it is counted); else how many were held back
        since the last line let through (usually 0)."""
        if self._last is not None:
            elapsed = max(0.0, now - self._last)  # a clock that steps back refills nothing
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self._held += 1
            return None
        self._tokens -= 1.0
        held, self._held = self._held, 0
        return held


def held_back(count: int) -> str:
    """What to add to a line that :meth:`LogLimiter.allow` let through after ``count``
    lines it held back."""
    return f" (and {count} more like it, not logged)" if count else ""
