"""Per-variant figures of an eval, over all items or a subset (a train or test part)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trellis.eval.runner import ItemOutcome, VariantRun
from trellis.eval.stats import bootstrap_ci, mean, percentile

__all__ = ["Relative", "VariantSummary", "relative", "summarize"]


@dataclass(frozen=True, slots=True)
class VariantSummary:
    """What the eval table shows for one variant (or sweep setting)."""

    name: str
    base: str
    params: dict[str, Any]
    bindings: dict[str, str]
    batch_id: str | None
    items: int
    failed: int
    score: float
    score_ci: tuple[float, float]
    cost_usd: float | None  # None: some call had no price (see cost_usd_known_part)
    cost_usd_known_part: float
    cost_per_item: float | None
    calls_by_model: dict[str, int]
    items_by_route: dict[str, int]
    escalated_items: int
    input_tokens: int
    output_tokens: int
    latency_p50_s: float
    latency_p95_s: float
    unpriced_attempts: int = 0  # calls without a price (then cost_usd is None)

    @property
    def calls(self) -> int:
        return sum(self.calls_by_model.values())

    def call_shares(self) -> dict[str, float]:
        total = self.calls
        return {m: n / total for m, n in self.calls_by_model.items()} if total else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "failed": self.failed,
            "score": self.score,
            "score_ci": list(self.score_ci),
            "cost_usd": self.cost_usd,
            "cost_usd_known_part": self.cost_usd_known_part,
            "unpriced_attempts": self.unpriced_attempts,
            "cost_per_item": self.cost_per_item,
            "calls_by_model": self.calls_by_model,
            "call_share_by_model": self.call_shares(),
            "items_by_route": self.items_by_route,
            "escalated_items": self.escalated_items,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "variant": self.base,
            "params": self.params,
            "bindings": self.bindings,
            "batch_id": self.batch_id,
        }


def summarize(
    run: VariantRun, indices: Sequence[int] | None = None, *, seed: int = 0, ci: bool = True
) -> VariantSummary:
    """The figures of ``run`` over all its items, or over the items at ``indices``;
    ``ci=False`` skips the bootstrap (the interval is then the mean, twice)."""
    items: list[ItemOutcome] = run.items if indices is None else [run.items[i] for i in indices]
    scores = [i.score for i in items]
    calls: Counter[str] = Counter()
    routes: Counter[str] = Counter()
    known = 0.0
    unpriced = 0
    for item in items:
        calls.update(item.calls_by_model)
        routes[item.route] += 1
        known += item.cost_usd_known_part
        unpriced += item.unpriced_attempts
    cost = None if unpriced else known
    latencies = [i.latency_s for i in items]
    return VariantSummary(
        name=run.variant.name,
        base=run.variant.base,
        params=dict(run.variant.params),
        bindings=run.variant.safe_bindings(),
        batch_id=run.batch_id,
        items=len(items),
        failed=sum(1 for i in items if i.status != "done"),
        score=mean(scores),
        score_ci=bootstrap_ci(scores, seed=seed) if ci else (mean(scores), mean(scores)),
        cost_usd=cost,
        cost_usd_known_part=known,
        unpriced_attempts=unpriced,
        cost_per_item=None if cost is None or not items else cost / len(items),
        calls_by_model=dict(sorted(calls.items())),
        items_by_route=dict(routes.most_common()),
        escalated_items=sum(1 for i in items if i.escalated),
        input_tokens=sum(i.input_tokens for i in items),
        output_tokens=sum(i.output_tokens for i in items),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
    )


@dataclass(frozen=True, slots=True)
class Relative:
    """A variant against the reference: share of its score, share of its cost."""

    score_share: float | None
    cost_share: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"score_share": self.score_share, "cost_share": self.cost_share}

    def sentence(self, reference: str) -> str:
        score = "?" if self.score_share is None else f"{self.score_share:.1%}"
        cost = "?" if self.cost_share is None else f"{self.cost_share:.1%}"
        return f"{score} of {reference}'s score at {cost} of its cost"


def relative(summary: VariantSummary, reference: VariantSummary) -> Relative:
    score = summary.score / reference.score if reference.score else None
    cost = (
        summary.cost_usd / reference.cost_usd
        if summary.cost_usd is not None and reference.cost_usd
        else None
    )
    return Relative(score, cost)
