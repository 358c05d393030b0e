"""What an LLM call (or a question to a person) knows about where it is made.

:class:`RunScope` is what every step execution of one run shares: the engine's
:class:`~trellis.engine.services.Services`, the run's budget guard, journal and result, and
the budget reservations made against prices. :class:`StepScope` is one step execution
(step, element, round, attempt) within it. The runner creates both; the LLM and human
handles only read them, so they never import the runner.
"""

from __future__ import annotations

from typing import Any

from trellis.engine.budget import BudgetGuard, Reservation
from trellis.engine.events import Emitter
from trellis.engine.journal import Journal
from trellis.engine.results import CallRecord, RunResult, StepRecord
from trellis.engine.services import Services
from trellis.errors import ConfigurationError
from trellis.flow.policy import Cache, RetryPolicy
from trellis.models.base import ModelRequest, Usage
from trellis.models.tokens import estimate_request_tokens, estimate_tool_tokens

__all__ = ["RunScope", "StepScope"]


class RunScope:
    """What the step executions of one run share (one per run)."""

    __slots__ = (
        "call_numbers",
        "deadlines",
        "emit",
        "guard",
        "journal",
        "result",
        "services",
        "unbudgeted",
    )

    def __init__(
        self,
        services: Services,
        guard: BudgetGuard,
        journal: Journal | None,
        result: RunResult,
        emit: Emitter | None = None,
    ) -> None:
        self.services = services
        self.guard = guard
        self.journal = journal
        self.result = result
        #: The run's event emitter; None when nobody observes the run (then no event is
        #: built at all).
        self.emit = emit
        self.call_numbers: dict[str, int] = {}  # LLM calls made so far, per step
        #: No budget on the guard or any parent (budgets are fixed when a guard is made):
        #: a call then reserves nothing, so no estimate is made for it (see reserve_free).
        self.unbudgeted = _unbudgeted(guard)
        #: The attempts' deadlines on the run's event loop (``trellis.engine.llm``: shared
        #: by the loop's runs), looked up by the first call that has one.
        self.deadlines: Any = None

    def reserve_free(self) -> Reservation | None:
        """The reservation of a call when no budget applies (None when one does: use
        :meth:`reserve`). It is what :meth:`reserve` would return then, an empty guard
        chain, without the estimate, the coroutine and the chain walk."""
        return Reservation(0, 0.0, ()) if self.unbudgeted else None

    async def reserve(self, model: str, request: ModelRequest) -> Reservation:
        """Reserve ``request``'s estimated tokens (and their cost) against the budgets."""
        guard = self.guard
        budget = guard.budget
        prompt = estimate_request_tokens(request) + estimate_tool_tokens(request)
        completion = request.max_tokens or budget.reserve_output_tokens
        estimate = Usage(prompt, completion)
        cost = 0.0
        if guard.needs_prices:
            price = self.services.prices.price(model)
            if price is None:
                raise ConfigurationError(
                    f"a USD budget is set but model {model!r} has no price; add it under "
                    "[prices] in trellis.toml or pass prices= to Config"
                )
            cost = price.cost(estimate)
        return await guard.reserve(estimate.total_tokens, cost)

    def settle(
        self, reservation: Reservation, model: str, usage: Usage, cost: float | None = None
    ) -> float | None:
        """Replace ``reservation`` by what the attempt used; return its cost (None: unknown).
        ``cost`` (a reply's own, recorded cost) wins over pricing ``usage``."""
        if cost is None:
            cost = self.services.prices.cost(model, usage)
        self.guard.settle(reservation, usage.total_tokens, cost or 0.0)
        return cost

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await self.services.sleep(seconds)


def _unbudgeted(guard: BudgetGuard) -> bool:
    current: BudgetGuard | None = guard
    while current is not None:
        if not current.budget.unlimited:
            return False
        current = current.parent
    return True


class StepScope:
    """One step execution (step, element, round, attempt): what its LLM calls need."""

    __slots__ = (
        "attempt",
        "cache",
        "default_model",
        "index",
        "policy",
        "record",
        "records",
        "round",
        "run",
        "seq",
    )

    def __init__(
        self,
        run: RunScope,
        record: StepRecord,
        policy: RetryPolicy,
        default_model: str | None,
        index: int | None,
        round: int | None,
        attempt: int,
        cache: Cache | None,
    ) -> None:
        self.run = run
        self.record = record
        self.policy = policy
        self.default_model = default_model
        self.index = index
        self.round = round
        self.attempt = attempt
        self.cache = cache
        self.seq = 0  # calls made by this execution, for stable journal keys
        self.records: list[CallRecord] = []  # attempts made by this execution

    def journal_key(self) -> str:
        """Where the next call is made: stable across a resume of the same code."""
        self.seq += 1
        return f"{self.record.name}|{self.index}|{self.round}|{self.attempt}|{self.seq}"

    def next_call(self) -> int:
        counters = self.run.call_numbers
        n = counters.get(self.record.name, 0) + 1
        counters[self.record.name] = n
        return n

    def add_call(self, record: CallRecord) -> None:
        self.records.append(record)
        self.run.result.calls.append(record)
        self.record.usage.add_attempt(record)
        self.run.result.usage.add_attempt(record)
