"""Cluster-wide rate limits and batch budgets: one Ray actor per batch, leased in blocks.

In one process, a model's ``rpm`` / ``tpm`` are a pair of token buckets
(:class:`~trellis.providers.ratelimit.RequestPacer`) and a batch budget is a
:class:`~trellis.engine.budget.BudgetGuard`, both reserve-then-settle. On Ray, every worker
is its own process, so the driver starts one :class:`LimitsActor` per batch (named
``trellis-limits-<batch key>``) that holds the buckets and the budget, and every worker
takes from it **in blocks**, so a call costs no actor round trip of its own:

**Rate limits** (:class:`RatePool`, a :class:`~trellis.providers.ratelimit.SharedRate`).
The actor's buckets refill at the configured rate and hold :data:`RATE_BURST_S` seconds of
it (the client pacer's burst). A worker with callers waiting asks for as many request
permits as it has waiting callers (with their estimated tokens each); the actor grants them
once at least a block is available (``rate * LEASE_PERIOD_S`` permits, at least one),
waiting in the actor until then (workers are served first come, first served), so one
round trip brings a block and a worker makes about one per :data:`LEASE_PERIOD_S` however
many calls it sends. A granted permit is used within :data:`PERMIT_HOLD_S` or never, so
what a server sees in any window is at most ``rate * (RATE_BURST_S + PERMIT_HOLD_S)``
above the rate: 0.75 s of the limit, below the usual one-second burst of a provider.
Settling a call gives its unused estimate back to the worker's block (or, once the block
is stale, to the actor with the worker's next lease); more tokens than estimated are
charged the same way, and stale permits go back unused (a request never sent is as if
never taken). A killed worker's permits are simply never used: the buckets refill,
nothing to reclaim.

**Batch budgets** (:class:`BudgetAllowance`, a :class:`~trellis.engine.budget.SharedBudget`).
A worker reserves each call (one call, its estimated tokens and USD) from an *allowance* it
leased from the actor; when the allowance is short it asks for a block: what it needs, and
up to ``1 / (2 * workers)`` of what is still free. The actor only grants what is free
(``limit - spent - everything leased``) so the estimates reserved across the cluster never
exceed a limit, as in one process; a call that does not fit what has been *spent* is
refused (the batch stops, :class:`~trellis.errors.BudgetExceededError`), and one that fits
the spending but not the leases waits while the holders hand their unused allowance back
(they do within :data:`FLUSH_S`). Real usage is reported as each call settles (batched
every :data:`FLUSH_S`), so the spend is exact. **The bound:** estimates reserved never
exceed the limit; spending can pass it only by what calls used above their estimates (as
in one process), and a refusal reaches the other workers within :data:`FLUSH_S`, during
which they spend at most the allowance they hold (never beyond the limit's estimates).

**A worker that dies holding an allowance** stops reporting: after
:data:`ALLOWANCE_TTL_S` without a report (a live worker reports every :data:`FLUSH_S`
while it holds any), or at once when the driver sees it die, the actor reclaims it: its
unused allowance is free again and what it had in flight counts as spent (it may have been
paid). A worker that reports after its allowance was reclaimed is told so and starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from trellis.engine.budget import Refusal
from trellis.flow.policy import Budget
from trellis.models.token_bucket import TokenBucket

__all__ = [
    "ALLOWANCE_TTL_S",
    "FLUSH_S",
    "LEASE_PERIOD_S",
    "PERMIT_HOLD_S",
    "RATE_BURST_S",
    "Answer",
    "BudgetAllowance",
    "ClusterLimits",
    "LimitsActor",
    "RatePool",
    "Report",
    "actor_name",
]

#: Seconds of refill the actor's rate buckets hold (the client pacer's burst).
RATE_BURST_S = 0.5
#: A worker leases at least this many seconds of a rate's permits at a time.
LEASE_PERIOD_S = 0.2
#: A leased permit not used within this many seconds is dropped.
PERMIT_HOLD_S = 0.25
#: How often a worker holding a budget allowance reports its spending (and heartbeats).
FLUSH_S = 0.2
#: A worker silent this long loses its allowance (it is presumed dead).
ALLOWANCE_TTL_S = 5.0

_TOL = 1e-9
_UNITS = ("max_calls", "max_tokens", "max_usd")

Triple = tuple[float, float, float]


def actor_name(key: str) -> str:
    """The name of batch ``key``'s limits actor."""
    return f"trellis-limits-{key}"


def _add(a: Triple, b: Triple, sign: float = 1.0) -> Triple:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2])


@dataclass(frozen=True, slots=True)
class Report:
    """What a worker tells the actor: what it spent since its last report (calls, tokens,
    USD, really used), the allowance it holds unused and the estimates it has in flight."""

    spent: Triple = (0.0, 0.0, 0.0)
    unused: Triple = (0.0, 0.0, 0.0)
    inflight: Triple = (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Answer:
    """The actor's reply: a grant (added to the worker's allowance), a refusal, or neither
    (wait ``wait_s`` and ask again); ``contended``: give unused allowance back;
    ``expired``: the worker's allowance was reclaimed (drop what it holds unused)."""

    grant: Triple | None = None
    refusal: Refusal | None = None
    wait_s: float = 0.0
    contended: bool = False
    expired: bool = False


@dataclass(slots=True)
class _Worker:
    seen: float
    unused: Triple = (0.0, 0.0, 0.0)
    inflight: Triple = (0.0, 0.0, 0.0)


@dataclass(slots=True)
class _Rate:
    requests: TokenBucket | None
    tokens: TokenBucket | None
    block: int
    granted: int = 0
    leases: int = 0
    asked: int = 0


class LimitsActor:
    """The state behind one batch's shared limits (run as a Ray actor; see module docs).

    ``budget``: the batch budget (None: rate limits only); ``spent``: what earlier
    processes of the batch spent (calls, tokens, USD: the driver's preloaded guard);
    ``workers``: how many workers share it (the size of a budget block)."""

    def __init__(
        self,
        budget: Budget | None = None,
        spent: Triple = (0.0, 0.0, 0.0),
        workers: int = 2,
        *,
        allowance_ttl_s: float = ALLOWANCE_TTL_S,
    ) -> None:
        self.configure(budget, spent, workers, allowance_ttl_s=allowance_ttl_s)
        self._rates: dict[str, _Rate] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def configure(
        self,
        budget: Budget | None = None,
        spent: Triple = (0.0, 0.0, 0.0),
        workers: int = 2,
        *,
        allowance_ttl_s: float = ALLOWANCE_TTL_S,
    ) -> None:
        """Set the batch's budget (an actor started ahead of its batch is configured so)."""
        budget = budget or Budget()
        self.limits: Triple = (
            math.inf if budget.max_calls is None else float(budget.max_calls),
            math.inf if budget.max_tokens is None else float(budget.max_tokens),
            math.inf if budget.max_usd is None else float(budget.max_usd),
        )
        self.spent: Triple = (float(spent[0]), float(spent[1]), float(spent[2]))
        self.workers = max(1, workers)
        self.allowance_ttl_s = allowance_ttl_s
        self._workers: dict[str, _Worker] = {}
        self._expired: set[str] = set()
        self._contended_until = -math.inf
        self.exhausted: Refusal | None = None

    # -- rate limits ----------------------------------------------------------------------

    async def rate(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        want: int,
        tokens: int,
        owed: float,
        unused: int = 0,
    ) -> tuple[int, float, float]:
        """:meth:`try_rate`, waiting in the actor (first come, first served per binding)
        until a block is granted: one round trip per block, however long the wait."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            while True:
                n, granted, wait = self.try_rate(key, rpm, tpm, want, tokens, owed, unused)
                if n:
                    self._rates[key].asked += 1
                    return n, granted, 0.0
                owed, unused = 0.0, 0
                await asyncio.sleep(wait)

    def try_rate(
        self,
        key: str,
        rpm: float | None,
        tpm: float | None,
        want: int,
        tokens: int,
        owed: float,
        unused: int = 0,
    ) -> tuple[int, float, float]:
        """Up to ``want`` request permits of ``tokens`` tokens each for binding ``key``:
        ``(permits, tokens granted, seconds to wait when none)``. ``owed``: tokens the
        worker gives back (or, negative, is charged) from earlier settlements; ``unused``:
        permits it never used (given back: a request never sent is as if never taken)."""
        now = time.monotonic()
        rate = self._rates.get(key)
        if rate is None:
            rb = TokenBucket.per_minute(rpm, RATE_BURST_S, now) if rpm else None
            tb = TokenBucket.per_minute(tpm, RATE_BURST_S, now) if tpm else None
            block = max(1, math.floor((rpm or 0) / 60.0 * LEASE_PERIOD_S))
            rate = self._rates[key] = _Rate(rb, tb, block)
        for bucket in (rate.requests, rate.tokens):
            if bucket is not None:
                bucket.refill(now)
        if rate.requests is not None and unused > 0:
            rate.requests.give_back(float(unused))
        if rate.tokens is not None and owed:
            if owed > 0:
                rate.tokens.give_back(owed)
            else:
                rate.tokens.take(-owed)
        per = max(0, tokens) if rate.tokens is not None else 0
        wanted = max(1, want)
        block = min(wanted, rate.block)
        if rate.tokens is not None and per > 0:
            block = max(1, min(block, math.floor(rate.tokens.capacity / per)))
        n = 0
        while n < wanted and self._fits(rate, n + 1, per):
            n += 1
        if n < block:
            return 0, 0.0, self._wait(rate, block, per)
        if rate.requests is not None:
            rate.requests.take(n)
        if rate.tokens is not None:
            rate.tokens.take(n * per)
        rate.granted += n
        rate.leases += 1
        return n, float(n * per), 0.0

    @staticmethod
    def _fits(rate: _Rate, n: int, per: int) -> bool:
        if rate.requests is not None and rate.requests.level + _TOL < n:
            return False
        bucket = rate.tokens
        if bucket is not None and per > 0:
            need = n * per
            if need > bucket.capacity:  # oversized: one request, once the bucket is full
                return n == 1 and bucket.level + _TOL >= bucket.capacity
            if bucket.level + _TOL < need:
                return False
        return True

    @staticmethod
    def _wait(rate: _Rate, n: int, per: int) -> float:
        wait = 0.0
        if rate.requests is not None:
            wait = max(wait, (n - rate.requests.level) / rate.requests.rate)
        bucket = rate.tokens
        if bucket is not None and per > 0:
            need = min(float(n * per), bucket.capacity)
            wait = max(wait, (need - bucket.level) / bucket.rate)
        return max(wait, 0.001)

    def rate_stats(self) -> dict[str, tuple[int, int, int]]:
        """Per binding: (permits granted, leases granted, round trips asking for them)."""
        return {key: (r.granted, r.leases, r.asked) for key, r in self._rates.items()}

    # -- the budget -----------------------------------------------------------------------

    def budget(self, worker: str, report: Report, need: Triple | None = None) -> Answer:
        """Take ``worker``'s report; with ``need`` (one call's estimate), grant a block that
        covers it, refuse it, or say how long to wait."""
        now = time.monotonic()
        self._reclaim_silent(now)
        self.spent = _add(self.spent, report.spent)
        if worker in self._expired:
            # Its allowance was reclaimed: what it held in flight is counted already.
            self._expired.discard(worker)
            self._workers[worker] = _Worker(now, inflight=(0.0, 0.0, 0.0))
            return Answer(expired=True, refusal=self.exhausted)
        state = self._workers.get(worker)
        if state is None:
            state = self._workers[worker] = _Worker(now)
        state.seen, state.unused, state.inflight = now, report.unused, report.inflight
        contended = now < self._contended_until
        if need is None or self.exhausted is not None:
            return Answer(refusal=self.exhausted if need is not None else None, contended=contended)
        inflight = (0.0, 0.0, 0.0)
        held = (0.0, 0.0, 0.0)
        for w in self._workers.values():
            inflight = _add(inflight, w.inflight)
            held = _add(held, _add(w.unused, w.inflight))
        short = tuple(max(0.0, need[d] - state.unused[d]) for d in range(3))
        # Refused on what is spent (calls: counted when reserved, as in one process).
        committed = (self.spent[0] + inflight[0], self.spent[1], self.spent[2])
        for d in range(3):
            if short[d] > _TOL and committed[d] + need[d] > self.limits[d] + _TOL:
                self.exhausted = Refusal(_UNITS[d], self.limits[d], committed[d] + need[d])
                return Answer(refusal=self.exhausted)
        free = tuple(self.limits[d] - self.spent[d] - held[d] for d in range(3))
        if any(short[d] > free[d] + _TOL for d in range(3)):
            self._contended_until = now + 3 * FLUSH_S
            return Answer(wait_s=FLUSH_S / 2, contended=True)
        grant = []
        for d in range(3):
            if math.isinf(free[d]):
                grant.append(0.0)
                continue
            block = max(short[d], free[d] / (2 * self.workers))
            if d == 0:
                block = float(math.ceil(block - _TOL))
            grant.append(max(0.0, min(free[d], block)))
        granted: Triple = (grant[0], grant[1], grant[2])
        state.unused = _add(state.unused, granted)
        return Answer(grant=granted, contended=contended)

    def _reclaim_silent(self, now: float) -> None:
        for worker, state in list(self._workers.items()):
            if now - state.seen > self.allowance_ttl_s and state != _Worker(state.seen):
                self.reclaim(worker)

    def reclaim(self, worker: str) -> None:
        """``worker`` is gone: its unused allowance is free, its calls in flight spent."""
        state = self._workers.pop(worker, None)
        if state is None:
            return
        self.spent = _add(self.spent, state.inflight)
        self._expired.add(worker)

    def totals(self) -> tuple[float, float, float, Refusal | None]:
        """Calls (reserved, as one process counts them), tokens and USD spent, and the
        refusal that exhausted the budget, if one did."""
        inflight = (0.0, 0.0, 0.0)
        for w in self._workers.values():
            inflight = _add(inflight, w.inflight)
        return self.spent[0] + inflight[0], self.spent[1], self.spent[2], self.exhausted


# -- the worker side ------------------------------------------------------------------------


class RatePool:
    """A worker's block of one binding's shared request and token permits (module docs)."""

    def __init__(self, actor: Any, key: str, rpm: float | None, tpm: float | None) -> None:
        self.actor = actor
        self.key = key
        self.rpm = rpm
        self.tpm = tpm
        self.requests = 0
        self.tokens = 0.0
        self.valid_until = -math.inf
        self.owed = 0.0
        self.unused = 0
        self.leases = 0
        self._waiting = 0
        self._lock = asyncio.Lock()

    async def take(self, tokens: int) -> None:
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    if time.monotonic() > self.valid_until:
                        self._expire()
                    if self.requests >= 1 and (self.tpm is None or self.tokens + _TOL >= tokens):
                        self.requests -= 1
                        if self.tpm is not None:
                            self.tokens -= tokens
                        return
                    await asyncio.sleep(0)  # callers arriving together share one lease
                    owed, self.owed = self.owed, 0.0
                    unused, self.unused = self.unused, 0
                    try:
                        n, granted, wait = await self.actor.rate.remote(
                            self.key, self.rpm, self.tpm, self._waiting, tokens, owed, unused
                        )
                    except BaseException:
                        self.owed += owed
                        self.unused += unused
                        raise
                    self.leases += 1
                    if n:
                        self.requests += n
                        self.tokens += granted
                        self.valid_until = time.monotonic() + PERMIT_HOLD_S
                    else:
                        await asyncio.sleep(wait)
        finally:
            self._waiting -= 1

    def _expire(self) -> None:
        # A stale permit is never used (what the server sees stays paced): it goes back.
        self.unused += self.requests
        self.requests = 0
        if self.tokens > 0:
            self.owed += self.tokens
            self.tokens = 0.0

    def settle(self, tokens: int, actual_tokens: int) -> None:
        if self.tpm is None:
            return
        diff = float(tokens - actual_tokens)
        if time.monotonic() <= self.valid_until:
            self.tokens += diff
        else:
            self.owed += diff


@dataclass(slots=True)
class _Local:
    unused: Triple = (0.0, 0.0, 0.0)
    inflight: Triple = (0.0, 0.0, 0.0)
    spent: Triple = (0.0, 0.0, 0.0)  # not reported yet
    refusal: Refusal | None = None
    contended: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class BudgetAllowance:
    """A worker's part of a batch budget shared through the actor (module docs)."""

    def __init__(self, actor: Any, worker: str, budget: Budget) -> None:
        self.actor = actor
        self.worker = worker
        #: Which of (calls, tokens, USD) the budget limits; the others are only counted.
        self.limited = (
            budget.max_calls is not None,
            budget.max_tokens is not None,
            budget.max_usd is not None,
        )
        self.state = _Local()
        self.calls = 0  # round trips, for tests and diagnostics
        self._lock = asyncio.Lock()

    @property
    def refusal(self) -> Refusal | None:
        return self.state.refusal

    async def take(self, tokens: int, cost: float) -> Refusal | None:
        need: Triple = (1.0, float(tokens), float(cost))
        limited = self.limited
        taken: Triple = (
            need[0] if limited[0] else 0.0,
            need[1] if limited[1] else 0.0,
            need[2] if limited[2] else 0.0,
        )
        s = self.state
        while True:
            if s.refusal is not None:
                return s.refusal
            if self._covers(taken):
                s.unused = _add(s.unused, taken, -1.0)
                s.inflight = _add(s.inflight, need)
                return None
            async with self._lock:
                if self._covers(taken) or s.refusal is not None:
                    continue
                answer = await self._exchange(need)
            if answer.grant is None and answer.refusal is None and not answer.expired:
                await asyncio.sleep(answer.wait_s)

    def _covers(self, taken: Triple) -> bool:
        unused = self.state.unused
        return all(unused[d] + _TOL >= taken[d] for d in range(3))

    async def _exchange(self, need: Triple | None) -> Answer:
        s = self.state
        report = Report(s.spent, s.unused, s.inflight)
        answer: Answer = await self.actor.budget.remote(self.worker, report, need)
        self.calls += 1
        s.spent = _add(s.spent, report.spent, -1.0)
        if answer.expired:
            s.unused = (0.0, 0.0, 0.0)
        if answer.grant is not None:
            s.unused = _add(s.unused, answer.grant)
        if answer.refusal is not None:
            s.refusal = answer.refusal
        s.contended = answer.contended
        return answer

    def settle(self, tokens: int, cost: float, used_tokens: int, used_cost: float) -> None:
        s = self.state
        s.inflight = _add(s.inflight, (1.0, float(tokens), float(cost)), -1.0)
        s.spent = _add(s.spent, (1.0, float(used_tokens), float(used_cost)))

    def charge(self, tokens: int, cost: float, calls: int) -> None:
        s = self.state
        s.spent = _add(s.spent, (float(calls), float(tokens), float(cost)))

    def holding(self) -> bool:
        s = self.state
        return any(abs(x) > _TOL for x in (*s.unused, *s.inflight, *s.spent))

    async def flush(self, *, release: bool = False) -> None:
        """Report spending (and heartbeat); give unused allowance back when others wait for
        it, or with ``release`` (the worker is done with the batch)."""
        s = self.state
        async with self._lock:
            if release or s.contended:
                s.unused = (0.0, 0.0, 0.0)
            await self._exchange(None)
            if s.contended and any(x > _TOL for x in s.unused):
                s.unused = (0.0, 0.0, 0.0)
                await self._exchange(None)


class ClusterLimits:
    """A worker's view of one batch's limits actor: a rate pool per binding, the budget
    allowance when the batch has a budget, and the loop that reports spending."""

    def __init__(self, actor: Any, worker: str, budget: Budget | None) -> None:
        self.actor = actor
        self.worker = worker
        self.pools: dict[str, RatePool] = {}
        self.allowance = BudgetAllowance(actor, worker, budget) if budget is not None else None
        self._flusher: asyncio.Task[None] | None = None

    def pool(self, key: str, rpm: float | None, tpm: float | None) -> RatePool:
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = RatePool(self.actor, key, rpm, tpm)
        return pool

    def start(self) -> None:
        if self.allowance is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        allowance = self.allowance
        assert allowance is not None
        while True:
            await asyncio.sleep(FLUSH_S)
            if allowance.holding() or allowance.state.contended:
                with contextlib.suppress(Exception):  # the actor gone: the batch is ending
                    await allowance.flush()

    async def close(self) -> None:
        """Report the last spending and give the unused allowance back."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.allowance is not None:
            with contextlib.suppress(Exception):
                await self.allowance.flush(release=True)


def rate_key(model: Any) -> str:
    """What identifies one rate limit across workers: the model's name and endpoint."""
    return f"{model.name}@{getattr(model, 'base_url', '')}"


def shares_rate(model: Any) -> Any:
    """``model``'s pacer if it has configured limits to share (an HTTP provider's), else
    None. Duck-typed: the cluster does not import the providers."""
    limiter = getattr(model, "limiter", None)
    if limiter is None or not callable(getattr(limiter, "share", None)):
        return None
    if getattr(limiter, "rpm", None) is None and getattr(limiter, "tpm", None) is None:
        return None
    return limiter
