"""Client-side rate limiting: requests and tokens per minute, shared by every caller.

One :class:`RequestPacer` lives on each provider instance, and the engine shares a provider
instance between every branch of every run that uses the same binding, so the limits hold
for the whole engine (a batch, a server) rather than per run.

Semantics:

* **Token buckets with continuous refill** (:class:`~trellis.models.token_bucket.TokenBucket`,
  the bucket the mock server's admission limiter uses too). ``rpm`` refills ``rpm / 60``
  requests a second, ``tpm`` refills ``tpm / 60`` tokens a second. Each bucket holds at
  most ``burst_s`` seconds of refill (one second by default, and never less than one
  request), so requests are spread evenly instead of being sent as one burst a minute: a
  provider that enforces its limit over sub-minute windows sees no spike. The long-run
  rate is exactly the configured one.
* **Oversized requests never deadlock.** A request whose token estimate is larger than the
  token bucket waits until the bucket is full, then proceeds and leaves the bucket in debt;
  later requests wait for the debt to be repaid. So the long-run token rate still holds.
* **Estimates are corrected.** :meth:`RequestPacer.acquire` takes the *estimated* tokens
  (prompt estimate plus the output allowance); :meth:`RequestPacer.settle` swaps them for the
  real usage once it is known, refunding (or charging) the difference.
* **Server headers only tighten.** :meth:`RequestPacer.observe` takes what a response said
  (remaining requests / tokens and when they reset): a bucket holding more than the server
  says remains is lowered to it, and a limit that hit zero pauses every caller until its
  reset time (at most :data:`MAX_PAUSE_S`). This also works with no ``rpm`` / ``tpm``
  configured, so a batch against a server that sends such headers avoids most 429s.
  Observed values never raise a bucket above its configured limits.
* **Fair.** Callers are served strictly first come, first served: a small request never
  overtakes a large one that is waiting for tokens.

* **Shared across processes.** :meth:`RequestPacer.share` hands the configured ``rpm`` /
  ``tpm`` to a :class:`SharedRate` (the Ray executor's workers lease blocks of permits from
  one actor, see :mod:`trellis.cluster.limits`): every permit is then taken from it and
  every settlement reported to it, and this pacer's own buckets only keep what a server's
  headers taught it (pauses and stated limits, which only tighten).

Waiting uses an injectable ``sleep`` and ``clock`` (``asyncio.sleep`` and
``time.monotonic`` by default) so that tests can drive the limiter with a fake clock.
Waiting happens inside the provider's ``complete``, so it counts toward the engine's
per-attempt timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from trellis.models.token_bucket import TokenBucket, per_minute_capacity

__all__ = ["MAX_PAUSE_S", "Permit", "RequestPacer", "SharedRate"]

#: The longest pause a rate-limit header (or a retry-after) can impose on every caller.
#: Longer waits are left to the server's 429 and the engine's retry-after handling, so a
#: far-away reset time does not turn every waiting call into a per-attempt timeout.
MAX_PAUSE_S = 60.0


@dataclass(slots=True)
class Permit:
    """What one :meth:`RequestPacer.acquire` took: one request and ``tokens`` tokens."""

    tokens: int
    settled: bool = False


class SharedRate(Protocol):
    """Requests and tokens per minute shared with other processes (reserve-then-settle)."""

    async def take(self, tokens: int) -> None:
        """Wait until one request and ``tokens`` tokens fit the shared limits; take them."""

    def settle(self, tokens: int, actual_tokens: int) -> None:
        """Replace a taken estimate of ``tokens`` by the tokens really used."""


class RequestPacer:
    """Requests-per-minute and tokens-per-minute limits; see the module docstring.

    ``rpm`` / ``tpm`` of ``None`` leave that dimension unlimited (server headers can still
    pause it). ``burst_s`` is how many seconds of refill a bucket holds.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for label, value in (("rpm", rpm), ("tpm", tpm), ("burst_s", burst_s)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        self.rpm = rpm
        self.tpm = tpm
        self.burst_s = burst_s
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = TokenBucket.per_minute(rpm, burst_s, now) if rpm is not None else None
        self._tokens = TokenBucket.per_minute(tpm, burst_s, now) if tpm is not None else None
        self._paused_until = -math.inf
        self._queue: deque[asyncio.Event] = deque()
        self._changed: asyncio.Event | None = None
        self._shared: SharedRate | None = None
        self._own: tuple[TokenBucket | None, TokenBucket | None] | None = None

    def __repr__(self) -> str:
        return f"RequestPacer(rpm={self.rpm!r}, tpm={self.tpm!r})"

    # -- introspection (tests, diagnostics) -------------------------------------------------

    @property
    def waiting(self) -> int:
        """Callers currently queued in :meth:`acquire`."""
        return len(self._queue)

    @property
    def paused_for(self) -> float:
        """Seconds until a header-imposed pause ends (0 when there is none)."""
        return max(0.0, self._paused_until - self._clock())

    def available(self) -> tuple[float | None, float | None]:
        """The (requests, tokens) the buckets hold now; ``None`` for an unlimited one."""
        now = self._clock()
        out: list[float | None] = []
        for bucket in (self._requests, self._tokens):
            if bucket is None:
                out.append(None)
            else:
                bucket.refill(now)
                out.append(bucket.level)
        return out[0], out[1]

    @property
    def shared(self) -> SharedRate | None:
        """Where the configured limits are taken from, when shared (see :meth:`share`)."""
        return self._shared

    def share(self, shared: SharedRate | None) -> None:
        """Take the configured ``rpm`` / ``tpm`` from ``shared`` from now on (None: from
        this pacer's own buckets again). Limits learned from headers stay local."""
        if shared is not None and self._shared is None:
            self._own = (self._requests, self._tokens)
            # Keep only what headers set up (a learned bucket when none was configured).
            self._requests = None if self.rpm is not None else self._requests
            self._tokens = None if self.tpm is not None else self._tokens
        elif shared is None and self._own is not None:
            self._requests, self._tokens = self._own
            self._own = None
        self._shared = shared

    # -- acquiring --------------------------------------------------------------------------

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait until one request and ``tokens`` tokens fit, take them, return the permit.

        Callers are served in arrival order. Cancelling a waiting caller removes it from
        the queue without taking anything.
        """
        tokens = max(0, int(tokens))
        permit = await self._local(tokens)  # header pauses first: a shared permit is used at once
        if self._shared is not None:
            await self._shared.take(tokens)
        return permit

    async def _local(self, tokens: int) -> Permit:
        if not self._queue and self._delay(tokens) <= 0.0:
            self._take(tokens)
            return Permit(tokens)
        turn = asyncio.Event()
        self._queue.append(turn)
        try:
            if self._queue[0] is not turn:
                await turn.wait()
            while True:
                delay = self._delay(tokens)
                if delay <= 0.0:
                    self._take(tokens)
                    return Permit(tokens)
                await self._wait(delay)
        finally:
            head = bool(self._queue) and self._queue[0] is turn
            with contextlib.suppress(ValueError):
                self._queue.remove(turn)
            if head and self._queue:
                self._queue[0].set()

    def _delay(self, tokens: int) -> float:
        now = self._clock()
        delay = max(0.0, self._paused_until - now)
        if self._requests is not None:
            self._requests.refill(now)
            delay = max(delay, self._requests.delay(1.0))
        if self._tokens is not None and tokens > 0:
            self._tokens.refill(now)
            delay = max(delay, self._tokens.delay(float(tokens)))
        return delay

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.take(1.0)
        if self._tokens is not None:
            self._tokens.take(tokens)

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if a settlement refunds tokens meanwhile."""
        changed = self._changed = asyncio.Event()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
            if self._changed is changed:
                self._changed = None

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- corrections ------------------------------------------------------------------------

    def settle(self, permit: Permit, actual_tokens: int) -> None:
        """Replace the permit's estimate by the tokens really used (once per permit)."""
        if permit.settled:
            return
        permit.settled = True
        if self._shared is not None:
            self._shared.settle(permit.tokens, max(0, int(actual_tokens)))
        bucket = self._tokens
        if bucket is None:
            return
        diff = permit.tokens - max(0, int(actual_tokens))
        if diff == 0:
            return
        bucket.refill(self._clock())
        bucket.give_back(diff)
        if diff > 0:
            self._wake()

    def observe(
        self,
        remaining_requests: float | None = None,
        remaining_tokens: float | None = None,
        reset_requests_s: float | None = None,
        reset_tokens_s: float | None = None,
        *,
        limit_requests: float | None = None,
        limit_tokens: float | None = None,
    ) -> None:
        """Tighten the limits to what a server response said; never loosen them.

        A per-minute limit the server states (``x-ratelimit-limit-*``) becomes a bucket
        when none was configured, or lowers a configured one that is higher, so a batch
        paces itself to the server without being told its limit. A remaining count of 0
        (or less) pauses all callers until its reset (capped at :data:`MAX_PAUSE_S`); a
        positive count lowers the matching bucket to it.
        """
        now = self._clock()
        self._requests = self._learn(self._requests, limit_requests, remaining_requests, now)
        self._tokens = self._learn(self._tokens, limit_tokens, remaining_tokens, now)
        for bucket, remaining, reset in (
            (self._requests, remaining_requests, reset_requests_s),
            (self._tokens, remaining_tokens, reset_tokens_s),
        ):
            if remaining is None or not math.isfinite(remaining):
                continue
            if remaining <= 0:
                if reset is not None and math.isfinite(reset) and reset > 0:
                    self._pause_until(now + min(reset, MAX_PAUSE_S))
                if bucket is not None:
                    bucket.refill(now)
                    bucket.lower_to(0.0)
            elif bucket is not None:
                bucket.refill(now)
                bucket.lower_to(float(remaining))

    def _learn(
        self,
        bucket: TokenBucket | None,
        limit: float | None,
        remaining: float | None,
        now: float,
    ) -> TokenBucket | None:
        if limit is None or not math.isfinite(limit) or limit <= 0:
            return bucket
        if bucket is None:
            learned = TokenBucket.per_minute(limit, self.burst_s, now)
            if remaining is not None and math.isfinite(remaining):
                learned.lower_to(max(0.0, remaining))
            return learned
        bucket.refill(now)
        bucket.slow_to(limit / 60.0, per_minute_capacity(limit, self.burst_s))
        return bucket

    def pause(self, seconds: float) -> None:
        """Hold every caller for ``seconds`` (capped at :data:`MAX_PAUSE_S`), e.g. after a
        429 that said how long to wait. Never shortens an existing pause."""
        if math.isfinite(seconds) and seconds > 0:
            self._pause_until(self._clock() + min(seconds, MAX_PAUSE_S))

    def _pause_until(self, deadline: float) -> None:
        self._paused_until = max(self._paused_until, deadline)
