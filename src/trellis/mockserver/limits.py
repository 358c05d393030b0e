"""Server-side rate limits for the mock server: requests and tokens per minute.

:class:`AdmissionLimiter` admits or refuses each request, as a provider's gateway does (the
client-side counterpart, which waits instead, is
:class:`~trellis.providers.ratelimit.RequestPacer`; both are built on
:class:`~trellis.models.token_bucket.TokenBucket`). Each limited dimension (requests,
tokens) is a token bucket refilled continuously at
``limit / 60`` per second, as the providers describe theirs. The bucket reported in the
headers holds a whole minute (``limit``), so ``remaining`` and ``reset`` read like a real
provider's: after one request at 5000 RPM, ``remaining`` is 4999 and the reset is
``12ms``. Providers also enforce limits over shorter periods ("60 RPM may be enforced as
1 request per second"); ``burst_s`` models that with a second, smaller bucket holding
``limit * burst_s / 60`` (at least one request): with the default ``burst_s=1``, ``rpm=60``
admits one immediate request and answers the next with 429. ``burst_s=60`` turns it off.

Tokens: a request is admitted when its estimated input tokens are available (a request
larger than a bucket needs that bucket full), they are taken at once, and its output
tokens are taken when the reply is known (the bucket may go below zero, which delays the
next requests). A request whose input alone exceeds the per-minute limit is refused for
good ("request too large").

A refused request takes nothing; ``retry_after_s`` is when enough capacity will be back,
and its 429 reports ``remaining`` 0 for the limit that refused it, resetting in
``retry_after_s`` (as a provider's does, even when only the burst bucket is empty). A "too
large" 429 reports the real levels.
With ``per_model`` every model name gets its own buckets, otherwise the server has one set.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from trellis.models.token_bucket import TokenBucket, per_minute_capacity

__all__ = [
    "Admission",
    "AdmissionLimiter",
    "DimensionState",
    "LimitSnapshot",
    "format_duration",
    "format_rfc3339",
]

Dimension = Literal["requests", "tokens"]
_EPSILON = 1e-6  # capacity units: float noise never makes a request wait (the bucket's tolerance)


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it (Go style):
    ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    ms = max(0, math.ceil(seconds * 1000.0 - 1e-6))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_rfc3339(epoch_s: float) -> str:
    """An RFC 3339 UTC time, rounded up to the second (``2025-05-01T12:00:05Z``), as in
    Anthropic's ``anthropic-ratelimit-*-reset`` headers."""
    moment = _dt.datetime.fromtimestamp(math.ceil(epoch_s), tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Limit:
    """One dimension: the per-minute bucket that is reported, and the burst bucket."""

    __slots__ = ("buckets", "limit", "minute")

    def __init__(self, limit: int, burst_s: float, now: float, *, at_least: float) -> None:
        self.limit = limit
        rate = limit / 60.0
        self.minute = TokenBucket(float(limit), rate, now, tolerance=_EPSILON)
        self.buckets = [self.minute]
        burst = per_minute_capacity(limit, burst_s, at_least=at_least)
        if burst < limit:
            self.buckets.append(TokenBucket(burst, rate, now, tolerance=_EPSILON))

    def refill(self, now: float) -> None:
        for b in self.buckets:
            b.refill(now)

    def wait_for(self, amount: float) -> float:
        return max(b.delay(amount) for b in self.buckets)

    def take(self, amount: float) -> None:
        for b in self.buckets:
            b.take(amount)

    def state(self) -> DimensionState:
        m = self.minute
        remaining = max(0, math.floor(m.level + 1e-9))
        return DimensionState(self.limit, remaining, max(0.0, (m.capacity - m.level) / m.rate))


@dataclass(frozen=True, slots=True)
class DimensionState:
    """One dimension as the headers report it."""

    limit: int
    remaining: int
    reset_s: float  # until the per-minute bucket is full again


@dataclass(frozen=True, slots=True)
class LimitSnapshot:
    """The limits of one model after a request, for the rate-limit headers."""

    requests: DimensionState | None
    tokens: DimensionState | None
    wall_time: float  # epoch seconds "now", for absolute reset times


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a request may go ahead; if not, which limit refused it and for how long."""

    allowed: bool
    snapshot: LimitSnapshot
    retry_after_s: float | None = None  # None: retrying will not help (too large)
    dimension: Dimension | None = None
    limit: int = 0
    requested: int = 0
    used: int = 0  # of the refusing limit, over the last minute (for the error message)

    @property
    def too_large(self) -> bool:
        return not self.allowed and self.retry_after_s is None


class AdmissionLimiter:
    """The server side of requests- and tokens-per-minute limits: admits a request or
    refuses it with when to retry (see the module docs)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        burst_s: float = 1.0,
        per_model: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if burst_s <= 0:
            raise ValueError(f"burst_s must be positive, got {burst_s}")
        self.rpm = rpm
        self.tpm = tpm
        self.burst_s = burst_s
        self.per_model = per_model
        self._clock = clock
        self._wall = wall_clock
        self._scopes: dict[str, dict[Dimension, _Limit]] = {}

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def reset(self) -> None:
        """Forget all usage: every bucket is full again."""
        self._scopes.clear()

    def _scope(self, model: str) -> dict[Dimension, _Limit]:
        key = model if self.per_model else "*"
        scope = self._scopes.get(key)
        if scope is None:
            now = self._clock()
            scope = {}
            if self.rpm is not None:
                scope["requests"] = _Limit(self.rpm, self.burst_s, now, at_least=1.0)
            if self.tpm is not None:
                scope["tokens"] = _Limit(self.tpm, self.burst_s, now, at_least=1.0)
            self._scopes[key] = scope
        now = self._clock()
        for lim in scope.values():
            lim.refill(now)
        return scope

    def _snapshot(
        self,
        scope: dict[Dimension, _Limit],
        exhausted: Dimension | None = None,
        wait_s: float = 0.0,
    ) -> LimitSnapshot:
        """The headers' view of ``scope``; the ``exhausted`` dimension (the one that just
        refused a request, perhaps in its burst bucket) reports nothing remaining until
        ``wait_s`` from now, when the refused request would fit (a client that pauses until
        the reset then waits as long as the 429's retry-after says, not for a full bucket)."""
        states: dict[Dimension, DimensionState] = {}
        for dim, lim in scope.items():
            state = lim.state()
            states[dim] = replace(state, remaining=0, reset_s=wait_s) if dim == exhausted else state
        return LimitSnapshot(
            requests=states.get("requests"), tokens=states.get("tokens"), wall_time=self._wall()
        )

    def snapshot(self, model: str) -> LimitSnapshot:
        return self._snapshot(self._scope(model))

    def admit(self, model: str, tokens: int) -> Admission:
        """Take one request and ``tokens`` input tokens, or say why not (taking nothing)."""
        scope = self._scope(model)
        tok = scope.get("tokens")
        if tok is not None and tokens > tok.limit:
            return Admission(False, self._snapshot(scope), None, "tokens", tok.limit, tokens)
        wait, blocked = 0.0, None
        costs: dict[Dimension, float] = {"requests": 1.0, "tokens": float(tokens)}
        for dim, lim in scope.items():
            w = lim.wait_for(costs[dim])
            if w > wait:
                wait, blocked = w, dim
        if blocked is not None:
            lim = scope[blocked]
            used = lim.limit - lim.state().remaining
            return Admission(
                False,
                self._snapshot(scope, blocked, wait),
                wait,
                blocked,
                lim.limit,
                int(costs[blocked]),
                used,
            )
        for dim, lim in scope.items():
            lim.take(costs[dim])
        return Admission(True, self._snapshot(scope))

    def record_tokens(self, model: str, tokens: int) -> None:
        """Take tokens used after admission (the reply's output tokens)."""
        tok = self._scope(model).get("tokens")
        if tok is not None and tokens > 0:
            tok.take(float(tokens))
