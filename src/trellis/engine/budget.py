"""Budget enforcement: reserve before a call, settle after it, stop before a limit is crossed.

A guard may have a parent (a batch's guard above each item's), so one call is checked
against every enclosing budget. All of this runs on one event loop: no locks needed.
A call that would exceed a limit only because of calls still in flight waits for them.

A resumed batch's guard starts with what earlier processes of the batch spent
(:meth:`BudgetGuard.preload`); spending replayed from the journal is then already counted
there and is not charged to it again. ``on_change`` is told of every call reserved and
settled (the CLI keeps a durable tally of a batch's spending with it).

A guard may also be *shared* (:attr:`BudgetGuard.shared`, a :class:`SharedBudget`): its
limits then hold for many processes at once (the Ray executor's workers, see
:mod:`trellis.cluster.limits`). Every reservation against it is also taken from the shared
allowance, and every settlement and charge reported to it; the local counters only count
this process's part.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from trellis.errors import BudgetExceededError
from trellis.flow.policy import Budget

__all__ = ["BudgetGuard", "Refusal", "Reservation", "SharedBudget"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a shared budget refused a call: the limit (``max_calls``, ``max_tokens`` or
    ``max_usd``), its value and what the spending would have been with the call."""

    which: str
    limit: float
    would_be: float


class SharedBudget(Protocol):
    """A budget's allowance shared with other processes (reserve-then-settle, as here)."""

    async def take(self, tokens: int, cost: float) -> Refusal | None:
        """Take one call, ``tokens`` and ``cost`` (estimates) from the allowance, waiting
        while calls in flight elsewhere may still free room; a :class:`Refusal` when the
        call cannot fit what has been spent."""

    def settle(self, tokens: int, cost: float, used_tokens: int, used_cost: float) -> None:
        """Replace a taken estimate (``tokens``, ``cost``) by what the call really used."""

    def charge(self, tokens: int, cost: float, calls: int) -> None:
        """Count spending that happened before (a journaled call replayed)."""


@dataclass(slots=True)
class Reservation:
    tokens: int
    cost: float
    guards: tuple[BudgetGuard, ...]
    settled: bool = False


class BudgetGuard:
    """``clock``: the monotonic time source of the wall-time limit (``max_seconds``): the
    engine's ``Clock.monotonic``; a guard and its parents must share one."""

    def __init__(
        self,
        budget: Budget | None,
        *,
        parent: BudgetGuard | None = None,
        label: str = "run",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget or Budget()
        self.parent = parent
        self.label = label
        self.clock = clock
        self.started = clock()
        self.spent_usd = 0.0
        self.spent_tokens = 0
        self.calls = 0
        self.turns = 0
        self.reserved_usd = 0.0
        self.reserved_tokens = 0
        self.exhausted: BudgetExceededError | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.preloaded = False  # earlier spending (replays included) is already counted
        self.on_change: Callable[[BudgetGuard], None] | None = None
        #: Limits shared with other processes (see the module docs); None: this one only.
        self.shared: SharedBudget | None = None

    def preload(self, calls: int, tokens: int, usd: float) -> None:
        """Count what earlier attempts of the same work spent (a resumed batch's previous
        processes, in flight at a kill included). Journal replays are part of it, so
        :meth:`charge` no longer counts them against this guard."""
        self.calls += calls
        self.spent_tokens += tokens
        self.spent_usd += usd
        self.preloaded = True

    def _chain(self) -> tuple[BudgetGuard, ...]:
        chain: list[BudgetGuard] = []
        guard: BudgetGuard | None = self
        while guard is not None:
            if not guard.budget.unlimited:
                chain.append(guard)
            guard = guard.parent
        return tuple(chain)

    @property
    def needs_prices(self) -> bool:
        return any(g.budget.max_usd is not None for g in self._chain())

    def deadline(self) -> float | None:
        """The earliest monotonic deadline of this guard and its parents, if any."""
        ends = [
            g.started + g.budget.max_seconds
            for g in self._chain()
            if g.budget.max_seconds is not None
        ]
        return min(ends) if ends else None

    def check_time(self) -> None:
        for g in self._chain():
            limit = g.budget.max_seconds
            if limit is not None:
                elapsed = g.clock() - g.started
                if elapsed >= limit:
                    raise g._error("max_seconds", limit, elapsed, "wall time")

    def time_exceeded(self) -> BudgetExceededError:
        """The error for the guard whose wall-time deadline is the earliest."""
        timed = [g for g in self._chain() if g.budget.max_seconds is not None]
        guard = min(timed, key=lambda g: g.started + (g.budget.max_seconds or 0.0))
        limit = guard.budget.max_seconds or 0.0
        return guard._error("max_seconds", limit, guard.clock() - guard.started, "wall time")

    async def reserve(self, tokens: int, cost: float) -> Reservation:
        """Reserve an estimated call against this guard and its parents.

        Raises when the call would exceed a limit on what has actually been spent. When it
        fits the spend but not the spend plus what calls in flight have reserved, it waits
        for those calls to settle and checks again, so a concurrent batch neither overshoots
        nor gives up early.
        """
        chain = self._chain()
        while True:
            blocking = self._blocking(chain, tokens, cost)
            if blocking is None:
                break
            waiter = asyncio.get_running_loop().create_future()
            blocking._waiters.append(waiter)
            await waiter
        self.check_time()
        for g in chain:
            if g.shared is not None:
                refusal = await g.shared.take(tokens, cost)
                if refusal is not None:
                    raise g.refuse(refusal)
        for g in chain:
            g.calls += 1
            g.reserved_tokens += tokens
            g.reserved_usd += cost
            if g.on_change is not None:
                g.on_change(g)
        return Reservation(tokens, cost, chain)

    @staticmethod
    def _blocking(chain: tuple[BudgetGuard, ...], tokens: int, cost: float) -> BudgetGuard | None:
        """Raise if the call cannot fit; return a guard to wait on if it may fit later."""
        wait_on: BudgetGuard | None = None
        for g in chain:
            b = g.budget
            if g.exhausted is not None:
                raise g.exhausted
            if b.max_calls is not None and g.calls + 1 > b.max_calls:
                raise g._error("max_calls", b.max_calls, g.calls + 1, "LLM calls")
            if b.max_tokens is not None:
                if g.spent_tokens + tokens > b.max_tokens:
                    raise g._error("max_tokens", b.max_tokens, g.spent_tokens + tokens, "tokens")
                if g.spent_tokens + g.reserved_tokens + tokens > b.max_tokens:
                    wait_on = wait_on or g
            if b.max_usd is not None:
                if g.spent_usd + cost > b.max_usd:
                    raise g._error("max_usd", b.max_usd, g.spent_usd + cost, "USD")
                if g.spent_usd + g.reserved_usd + cost > b.max_usd:
                    wait_on = wait_on or g
        return wait_on

    def count_turn(self) -> None:
        """One more agent turn; raise if it would exceed a ``max_turns`` budget."""
        chain = self._chain()
        for g in chain:
            limit = g.budget.max_turns
            if limit is not None and g.turns + 1 > limit:
                raise g._error("max_turns", limit, g.turns + 1, "agent turns")
        for g in chain:
            g.turns += 1

    def charge(self, tokens: int, cost: float, calls: int = 1) -> None:
        """Count spending that happened before this guard existed (a journaled call replayed
        on resume was paid for once; it counts against the budget, it is not paid again)."""
        guard: BudgetGuard | None = self
        while guard is not None:
            if not guard.preloaded:
                guard.calls += calls
                guard.spent_tokens += tokens
                guard.spent_usd += cost
                if guard.shared is not None:
                    guard.shared.charge(tokens, cost, calls)
            guard = guard.parent

    def settle(self, reservation: Reservation, tokens: int, cost: float) -> None:
        if reservation.settled:
            return
        reservation.settled = True
        for g in reservation.guards:
            g.reserved_tokens -= reservation.tokens
            g.reserved_usd -= reservation.cost
            g.spent_tokens += tokens
            g.spent_usd += cost
            if g.shared is not None:
                g.shared.settle(reservation.tokens, reservation.cost, tokens, cost)
            waiters, g._waiters = g._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if g.on_change is not None:
                g.on_change(g)
        if not reservation.guards:
            self.spent_tokens += tokens
            self.spent_usd += cost

    def refuse(self, refusal: Refusal) -> BudgetExceededError:
        """The error for a shared budget's refusal (it exhausts this guard)."""
        return self._error(refusal.which, refusal.limit, refusal.would_be, _UNITS[refusal.which])

    def _error(self, which: str, limit: float, would_be: float, unit: str) -> BudgetExceededError:
        shown = f"{limit:g}" if which != "max_usd" else f"${limit:.4f}"
        after = f"{would_be:g}" if which != "max_usd" else f"${would_be:.4f}"
        err = BudgetExceededError(
            f"{self.label} budget {which}={shown} would be exceeded ({unit}: {after} "
            f"with this call); stopped before it",
            budget=which,
            limit=float(limit),
            spent=float(would_be),
        )
        if which != "max_seconds":
            self.exhausted = err
        return err


_UNITS = {"max_calls": "LLM calls", "max_tokens": "tokens", "max_usd": "USD"}
