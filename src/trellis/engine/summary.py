"""What a batch did, as data: items, routes taken, retries, tokens, cost, latency.

``summarize(results, prices)`` is public API (``tl.summarize``, ``tl.BatchSummary``): the
figures ``trellis run`` prints after a batch, for any list of :class:`RunResult` values —
those ``Engine.run_many`` yields, or recorded ones read back. Pure functions over the
results and a price table; nothing here prints (``trellis.cli.render`` draws it), and
``BatchSummary.to_dict()`` is the ``--json`` shape.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from trellis.engine.human import leaf_questions
from trellis.engine.results import CallRecord, RunResult, Stats
from trellis.models.base import Usage
from trellis.models.pricing import Price, PriceTable

__all__ = [
    "BatchSummary",
    "Counterfactual",
    "Latency",
    "ModelUsage",
    "StepRoutes",
    "SummaryBuilder",
    "WaitingStep",
    "adjustment_warnings",
    "percentile",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class StepRoutes:
    """How the items went through one step."""

    step: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: int = 0
    #: decision kind ("when", "branch", "skip", "loop") -> outcome ("run", "skip", ...) -> items
    decisions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: logical ``llm.generate`` calls by the role they asked for ("small": 38, "large": 22)
    calls_by_role: dict[str, int] = field(default_factory=dict)
    #: successful attempts by the model that answered
    answers_by_model: dict[str, int] = field(default_factory=dict)
    #: logical calls answered by a fallback (not the model their first attempt went to)
    fallbacks: int = 0
    rounds: int = 0  # loop rounds, summed over items
    elements: int = 0  # mapped elements, summed over items
    element_failures: int = 0
    waiting: int = 0  # items where this step waits for a person

    @property
    def ran(self) -> int:
        """Items whose step code ran (done or failed)."""
        return self.done + self.failed


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Attempts, tokens and cost of one ``provider:model`` over the batch."""

    model: str
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: float  # the priced attempts' cost
    unpriced_attempts: int

    @property
    def cost_known(self) -> bool:
        return self.unpriced_attempts == 0


@dataclass(frozen=True, slots=True)
class Counterfactual:
    """An *estimate* of an all-``model`` run from this batch's own calls, against what the
    batch actually cost.

    Method: the priced attempts of the steps every item runs are re-priced at ``model``'s
    price (with this batch's tokens). Attempts of steps that ran only because a ``when=``
    or ``tl.branch`` condition held are left out (``left_out_attempts``): an all-``model``
    run need not make them (a cascade's escalation is not needed when the first answer
    already comes from ``model``), so an escalated item counts once, never twice. The
    limit: the estimate leaves out conditional work an all-``model`` run would still do,
    and the tokens are this batch's, not ``model``'s. A measured baseline comes from
    ``trellis eval`` (run or replay the all-``model`` variant)."""

    model: str
    cost_usd: float  # the estimated cost of an all-``model`` run
    actual_usd: float  # what the batch did cost (every priced attempt)
    saved_usd: float
    saved_pct: float
    left_out_attempts: int = 0  # attempts of conditional steps, not re-priced
    method: str = (
        "always-run steps' calls re-priced; conditional (when=/branch) steps' calls left out"
    )


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-item wall time (``RunResult.duration_s``) over the items that ran."""

    items: int
    p50: float
    p95: float
    max: float
    mean: float


@dataclass(frozen=True, slots=True)
class WaitingStep:
    """A step of a waiting run that asks a person (``StepRecord.question``)."""

    run_id: str
    step: str
    question: dict[str, Any]

    @classmethod
    def of(cls, result: RunResult) -> list[WaitingStep]:
        """The questions a run waits on, in step order (none unless it is waiting); a
        sub-flow step's are those waiting inside it, each by its path (``review/approve``)."""
        return [
            cls(result.run_id, path, question)
            for name, record in result.steps.items()
            if record.status == "waiting" and record.question is not None
            for path, question in (
                leaf_questions(name, record.question) or [(name, record.question)]
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        q = self.question
        return {
            "run_id": self.run_id,
            "step": self.step,
            "prompt": q.get("prompt"),
            "type": q.get("type"),
            "error": q.get("error"),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSummary:
    """What a batch did (``trellis run --input-file`` prints it; ``to_dict()`` is its
    ``--json``): items by outcome and why they failed, each step's routes and decisions,
    LLM calls, attempts and failed attempts by failure mode, tokens, cost (priced part and
    unpriced attempts) by model, the savings estimate against an all-large-model run
    (:class:`Counterfactual`), per-item latency and throughput, and the questions of
    items waiting for a person. Built by :func:`summarize` or :class:`SummaryBuilder`."""

    total: int
    done: int
    failed: int  # items that failed (not done, not waiting)
    not_started: int  # failed before running (the batch budget was already spent)
    #: error type (with the budget's name for budget errors) -> items failed by it
    failures: dict[str, int]
    failure_examples: dict[str, str]  # error type -> the first message seen
    steps: tuple[StepRoutes, ...]
    calls: int  # llm.generate() calls that returned a value
    attempts: int  # requests sent, failed attempts and re-asks included
    retries: dict[str, int]  # failure mode -> failed attempts ("malformed": 3, ...)
    input_tokens: int
    output_tokens: int
    cost_usd: float  # priced attempts only
    unpriced_attempts: int
    models: tuple[ModelUsage, ...]  # most expensive first
    counterfactual: Counterfactual | None
    latency: Latency | None
    wall_s: float | None
    items_per_s: float | None
    waiting: int = 0  # items waiting for a person's input
    questions: tuple[WaitingStep, ...] = ()  # what they wait for, in item order
    #: how providers changed requests to get them accepted ("model: note"), once each
    adjustments: tuple[str, ...] = ()

    @property
    def cost_known(self) -> bool:
        return self.unpriced_attempts == 0

    @property
    def started(self) -> int:
        return self.total - self.not_started

    @property
    def cost_per_item(self) -> float | None:
        """Cost divided by the items that ran."""
        return self.cost_usd / self.started if self.started else None

    @property
    def failed_attempts(self) -> int:
        return sum(self.retries.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [{**asdict(s), "ran": s.ran} for s in self.steps]
        data["questions"] = [q.to_dict() for q in self.questions]
        data["cost_known"] = self.cost_known
        data["cost_per_item"] = self.cost_per_item
        return data


def adjustment_warnings(calls: Iterable[CallRecord]) -> list[str]:
    """Each distinct request adjustment in ``calls`` (a parameter the server rejected,
    dropped or renamed; a clamped temperature) as ``"model: note"``, first seen first."""
    seen: dict[str, None] = {}
    for call in calls:
        for note in call.adjustments:
            seen.setdefault(f"{call.model}: {note}")
    return list(seen)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _never_started(result: RunResult) -> bool:
    return (
        result.status == "failed"
        and not result.calls
        and result.duration_s == 0.0
        and all(s.status == "cancelled" for s in result.steps.values())
    )


def _failure_key(result: RunResult) -> tuple[str, str]:
    error = result.error
    if error is None:
        return "Failed", "the run did not finish"
    key = f"{error.type} ({error.budget})" if error.budget else error.type
    return key, error.message


_OUTCOME_ORDER = {"run": 0, "skip": 1, "continue": 2, "stop": 3}


def _ordered(outcomes: Counter[str]) -> dict[str, int]:
    return dict(sorted(outcomes.items(), key=lambda kv: (_OUTCOME_ORDER.get(kv[0], 9), kv[0])))


def _latency(durations: Sequence[float]) -> Latency | None:
    if not durations:
        return None
    return Latency(
        items=len(durations),
        p50=percentile(durations, 50),
        p95=percentile(durations, 95),
        max=max(durations),
        mean=sum(durations) / len(durations),
    )


def _item_order(result: RunResult) -> tuple[int, str]:
    """Batch items (``<batch>.<index>``) by index, other runs by id."""
    _, _, tail = result.run_id.rpartition(".")
    return (int(tail), "") if tail.isdigit() else (-1, result.run_id)


class _StepTally:
    """One step's counts over the results added so far."""

    __slots__ = ("answers", "decisions", "extra", "fallbacks", "roles", "status")

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.decisions: dict[str, Counter[str]] = {}
        self.roles: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.extra: Counter[str] = Counter()
        self.fallbacks = 0

    def routes(self, name: str) -> StepRoutes:
        status, extra = self.status, self.extra
        return StepRoutes(
            step=name,
            done=status["done"],
            skipped=status["skipped"],
            failed=status["failed"],
            cancelled=status["cancelled"],
            decisions={k: _ordered(v) for k, v in self.decisions.items()},
            calls_by_role=dict(self.roles.most_common()),
            answers_by_model=dict(self.answers.most_common()),
            fallbacks=self.fallbacks,
            rounds=extra["rounds"],
            elements=extra["elements"],
            element_failures=extra["element_failures"],
            waiting=status["waiting"],
        )


class SummaryBuilder:
    """A :class:`BatchSummary` built one result at a time: :meth:`add` each result as it
    comes (any order), then :meth:`summary`. It keeps counts and sums, not the results, so
    a batch of any size can be summarised while its results are dropped as they finish
    (only each item's duration, for the percentiles, and the questions of waiting items
    are kept)."""

    def __init__(self) -> None:
        self.total = self.done = self.not_started = 0
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.usage = Stats()  # summed over the items (failed attempts by mode included)
        self.steps: dict[str, _StepTally] = {}  # every step seen (records, decisions, calls)
        self.order: list[str] = []  # the steps some result has a record of, first seen first
        self.models: dict[str, Counter[str]] = {}
        self.model_costs: dict[str, float] = {}
        # The counterfactual's sums: per model, the always-run steps' priced calls.
        self.repriceable: dict[str, Counter[str]] = {}
        self.actual_usd = 0.0
        self.left_out = 0
        self.durations = array("d")  # 8 bytes an item
        self.waiting: list[tuple[tuple[int, str], list[WaitingStep]]] = []
        self.adjustments: dict[str, None] = {}

    def add(self, result: RunResult) -> None:
        """Count one item's result."""
        self.total += 1
        if result.status == "done":
            self.done += 1
        elif result.status == "waiting":
            self.waiting.append((_item_order(result), WaitingStep.of(result)))
        else:
            key, message = _failure_key(result)
            self.failures[key] += 1
            self.examples.setdefault(key, message)
        self.usage.merge(result.usage)
        if _never_started(result):
            self.not_started += 1
        else:
            self.durations.append(result.duration_s)
        self._add_steps(result)
        self._add_calls(result)

    def _tally(self, step: str) -> _StepTally:
        tally = self.steps.get(step)
        if tally is None:
            tally = self.steps[step] = _StepTally()
        return tally

    def _add_steps(self, result: RunResult) -> None:
        for name, record in result.steps.items():
            tally = self._tally(name)
            if not tally.status:
                self.order.append(name)  # (a record's status is always counted below)
            tally.status[record.status] += 1
            tally.extra["rounds"] += record.rounds or 0
            tally.extra["elements"] += record.elements or 0
            tally.extra["element_failures"] += record.element_failures
        # A decision or call may come before any result has its step's record (a run read
        # back without its flow): counted all the same, shown once a record is seen.
        for decision in result.decisions:
            tally = self._tally(decision.step)
            tally.decisions.setdefault(decision.kind, Counter())[decision.outcome] += 1
        first_model: dict[tuple[str, int], str] = {}
        for call in result.calls:
            tally = self._tally(call.step)
            key = (call.step, call.call)
            if key not in first_model:
                first_model[key] = call.model
                tally.roles[call.role] += 1
            if call.outcome == "ok":
                tally.answers[call.model] += 1
                if call.model != first_model[key]:
                    tally.fallbacks += 1

    def _add_calls(self, result: RunResult) -> None:
        for warning in adjustment_warnings(result.calls):
            self.adjustments.setdefault(warning)
        conditional = {
            d.step for d in result.decisions if d.kind in ("when", "branch") and d.outcome == "run"
        }
        for call in result.calls:
            totals = self.models.get(call.model)
            if totals is None:
                totals = self.models[call.model] = Counter()
            totals["attempts"] += 1
            totals["input_tokens"] += call.input_tokens
            totals["output_tokens"] += call.output_tokens
            if call.cost_usd is None:
                totals["unpriced"] += 1
                continue
            self.model_costs[call.model] = self.model_costs.get(call.model, 0.0) + call.cost_usd
            self.actual_usd += call.cost_usd
            if call.step in conditional:
                self.left_out += 1
            else:
                sums = self.repriceable.setdefault(call.model, Counter())
                sums["calls"] += 1
                sums["input_tokens"] += call.input_tokens
                sums["output_tokens"] += call.output_tokens

    def summary(self, *, prices: PriceTable, wall_s: float | None = None) -> BatchSummary:
        """The summary of every result added; ``prices`` is the engine's price table
        (``engine.config.prices``), used to rank models and for the counterfactual."""
        waiting = sorted(self.waiting, key=lambda w: w[0])
        usage = self.usage
        return BatchSummary(
            total=self.total,
            done=self.done,
            failed=self.total - self.done - len(waiting),
            waiting=len(waiting),
            questions=tuple(q for _, questions in waiting for q in questions),
            not_started=self.not_started,
            failures=dict(self.failures.most_common()),
            failure_examples=dict(self.examples),
            steps=tuple(self.steps[name].routes(name) for name in self.order),
            calls=usage.calls,
            attempts=usage.attempts,
            retries=dict(Counter(usage.failures).most_common()),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            unpriced_attempts=usage.unpriced_attempts,
            models=self._model_usage(prices),
            counterfactual=self._counterfactual(prices),
            latency=_latency(self.durations),
            wall_s=wall_s,
            items_per_s=self.total / wall_s if wall_s else None,
            adjustments=tuple(self.adjustments),
        )

    def _model_usage(self, prices: PriceTable) -> tuple[ModelUsage, ...]:
        usages = [
            ModelUsage(
                model=model,
                attempts=t["attempts"],
                input_tokens=t["input_tokens"],
                output_tokens=t["output_tokens"],
                cost_usd=self.model_costs.get(model, 0.0),
                unpriced_attempts=t["unpriced"],
            )
            for model, t in self.models.items()
        ]

        def rank(u: ModelUsage) -> tuple[float, float, float, str]:
            price = prices.price(u.model)
            if price is None:
                return (1.0, 0.0, 0.0, u.model)
            return (0.0, -price.output, -price.input, u.model)

        return tuple(sorted(usages, key=rank))

    def _counterfactual(self, prices: PriceTable) -> Counterfactual | None:
        priced: dict[str, Price] = {}
        for model in self.model_costs:  # the models with a priced attempt
            price = prices.price(model)
            if price is not None:
                priced[model] = price
        if len(priced) < 2:
            return None
        top = max(priced, key=lambda m: (priced[m].output, priced[m].input, m))
        price = priced[top]
        would = 0.0
        for model, sums in self.repriceable.items():
            if model in priced and sums["calls"]:
                # Price.cost(usage) per call, summed: the tokens' cost plus each call's fee.
                tokens = Usage(sums["input_tokens"], sums["output_tokens"])
                would += price.cost(tokens) + (sums["calls"] - 1) * price.request
        actual = self.actual_usd
        saved = would - actual
        pct = 100.0 * saved / would if would > 0 else 0.0
        return Counterfactual(top, would, actual, saved, pct, self.left_out)


def summarize(
    results: Iterable[RunResult], *, prices: PriceTable, wall_s: float | None = None
) -> BatchSummary:
    """Summarise a batch's results (in any order); ``prices`` is the engine's price table
    (``engine.config.prices``), used to rank models and for the counterfactual. For
    results that come one at a time, :class:`SummaryBuilder` gives the same summary
    without keeping them."""
    builder = SummaryBuilder()
    for result in results:
        builder.add(result)
    return builder.summary(prices=prices, wall_s=wall_s)
