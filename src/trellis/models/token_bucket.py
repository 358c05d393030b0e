"""The one token bucket, shared by the client-side pacer and the mock server's limiter.

A :class:`TokenBucket` holds up to ``capacity`` units and refills continuously at ``rate``
units a second. It knows nothing about clocks, waiting or HTTP: callers pass ``now`` (a
monotonic time in seconds) to :meth:`TokenBucket.refill` and ask :meth:`TokenBucket.delay`
how long an amount is away. Two roles are built on it:

* :class:`~trellis.providers.ratelimit.RequestPacer` (client side): spaces a provider's
  requests and tokens so they stay under a per-minute limit, and waits.
* :class:`~trellis.mockserver.limits.AdmissionLimiter` (server side): admits or refuses
  each request with a 429, as a provider's gateway does.

The level may go below zero (a request larger than the bucket, output tokens charged after
the fact): the debt is repaid by the refill before anything else fits.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TokenBucket", "per_minute_capacity"]

#: How far short of an amount a bucket may be and still count as holding it: refill
#: arithmetic is inexact, and float noise must never make a caller wait.
DEFAULT_TOLERANCE: Final = 1e-9


def per_minute_capacity(limit: float, burst_s: float, *, at_least: float = 1.0) -> float:
    """The capacity of a bucket refilled at ``limit`` a minute that holds ``burst_s``
    seconds of refill, and never less than ``at_least`` (one request)."""
    return max(at_least, limit / 60.0 * burst_s)


class TokenBucket:
    """``level`` refills at ``rate`` units a second up to ``capacity``; see the module docs."""

    __slots__ = ("capacity", "level", "rate", "tolerance", "updated")

    def __init__(
        self, capacity: float, rate: float, now: float, *, tolerance: float = DEFAULT_TOLERANCE
    ) -> None:
        if not (capacity > 0 and rate > 0):
            raise ValueError(
                f"a token bucket needs a positive capacity and rate, got {capacity} and {rate}"
            )
        self.capacity = capacity
        self.rate = rate
        self.level = capacity
        self.updated = now
        self.tolerance = tolerance

    @classmethod
    def per_minute(
        cls,
        limit: float,
        burst_s: float,
        now: float,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> TokenBucket:
        """A bucket refilled at ``limit`` a minute, holding ``burst_s`` seconds of refill
        (at least one unit); it starts full."""
        return cls(per_minute_capacity(limit, burst_s), limit / 60.0, now, tolerance=tolerance)

    def __repr__(self) -> str:
        return f"TokenBucket(level={self.level:g}/{self.capacity:g}, rate={self.rate:g}/s)"

    def refill(self, now: float) -> None:
        """Add what flowed in since the last refill (never above ``capacity``)."""
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, amount: float) -> float:
        """Seconds until ``amount`` (at most a full bucket) is available; 0 if it is now.

        An amount larger than the bucket waits for a full bucket, so it never deadlocks;
        taking it then leaves the bucket in debt."""
        need = min(amount, self.capacity)
        short = need - self.level
        return 0.0 if short <= self.tolerance else short / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` (the level may go below zero)."""
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return ``amount`` (an overestimate), never above ``capacity``."""
        self.level = min(self.capacity, self.level + amount)

    def lower_to(self, level: float) -> None:
        """Hold at most ``level`` (a server said that much remains); never raises it."""
        self.level = min(self.level, level)

    def slow_to(self, rate: float, capacity: float) -> None:
        """Refill at ``rate`` into ``capacity`` when that is slower; never speeds it up."""
        if rate < self.rate:
            self.rate = rate
            self.capacity = capacity
            self.level = min(self.level, capacity)
