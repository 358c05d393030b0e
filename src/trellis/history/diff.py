"""Diffing two recorded runs (or batches, item by item): per step, what differs in status
(the route), output, cost and latency. Reads the store only; no flow is needed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trellis.engine.journal import stats_from_json
from trellis.engine.records import batch_items
from trellis.errors import InputError
from trellis.store.base import RunRow, StepRow, Store

__all__ = ["RunDiff", "StepDiff", "diff_runs"]


@dataclass(frozen=True, slots=True)
class StepDiff:
    step: str
    status_a: str | None  # None: the run has no record of the step
    status_b: str | None
    output_a: Any
    output_b: Any
    cost_a: float | None
    cost_b: float | None
    latency_a: float | None
    latency_b: float | None

    @property
    def route_changed(self) -> bool:
        return self.status_a != self.status_b

    @property
    def output_changed(self) -> bool:
        return bool(self.output_a != self.output_b)

    @property
    def changed(self) -> bool:
        return self.route_changed or self.output_changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status_a": self.status_a,
            "status_b": self.status_b,
            "route_changed": self.route_changed,
            "output_changed": self.output_changed,
            "output_a": self.output_a,
            "output_b": self.output_b,
            "cost_a": self.cost_a,
            "cost_b": self.cost_b,
            "latency_a": self.latency_a,
            "latency_b": self.latency_b,
        }


@dataclass(frozen=True, slots=True)
class RunDiff:
    """Two runs (``items`` empty) or two batches (``items``: one RunDiff per item index)."""

    a: str
    b: str
    steps: tuple[StepDiff, ...] = ()
    items: tuple[tuple[int, RunDiff], ...] = ()
    cost_a: float = 0.0
    cost_b: float = 0.0
    status_a: str = ""
    status_b: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        if self.items:
            return any(d.changed for _, d in self.items)
        return any(s.changed for s in self.steps) or self.status_a != self.status_b

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a": self.a,
            "b": self.b,
            "kind": "batch" if self.items else "run",
            "changed": self.changed,
            "status_a": self.status_a,
            "status_b": self.status_b,
            "cost_a": self.cost_a,
            "cost_b": self.cost_b,
            "notes": list(self.notes),
        }
        if self.items:
            changed = [(i, d) for i, d in self.items if d.changed]
            out["items"] = len(self.items)
            out["changed_items"] = len(changed)
            per_step: dict[str, dict[str, int]] = {}
            for _, d in self.items:
                for s in d.steps:
                    counts = per_step.setdefault(s.step, {"route_changed": 0, "output_changed": 0})
                    counts["route_changed"] += s.route_changed
                    counts["output_changed"] += s.output_changed
            out["per_step"] = per_step
            out["item_diffs"] = [
                {"index": i, **{k: v for k, v in d.to_dict().items() if k != "kind"}}
                for i, d in changed
            ]
        else:
            out["steps"] = [s.to_dict() for s in self.steps]
        return out


def _load(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _cost(row: StepRow | RunRow) -> float:
    """The recorded cost (its priced part), read by the one usage codec."""
    return stats_from_json(row.usage).cost_usd


def _run_diff(store: Store, a: RunRow, b: RunRow) -> RunDiff:
    steps_a = {s.step: s for s in store.load_steps(a.run_id)}
    steps_b = {s.step: s for s in store.load_steps(b.run_id)}
    names = list(steps_a) + [n for n in steps_b if n not in steps_a]
    diffs = []
    for name in names:
        sa, sb = steps_a.get(name), steps_b.get(name)
        diffs.append(
            StepDiff(
                step=name,
                status_a=sa.status if sa else None,
                status_b=sb.status if sb else None,
                output_a=_load(sa.output) if sa else None,
                output_b=_load(sb.output) if sb else None,
                cost_a=_cost(sa) if sa else None,
                cost_b=_cost(sb) if sb else None,
                latency_a=sa.duration_s if sa else None,
                latency_b=sb.duration_s if sb else None,
            )
        )
    return RunDiff(
        a.run_id,
        b.run_id,
        tuple(diffs),
        cost_a=_cost(a) if a.usage else sum(d.cost_a or 0.0 for d in diffs),
        cost_b=_cost(b) if b.usage else sum(d.cost_b or 0.0 for d in diffs),
        status_a=a.status,
        status_b=b.status,
    )


def diff_runs(store: Store, run_a: str, run_b: str) -> RunDiff:
    """Compare two recorded runs, or two batches item by item (by item index)."""
    a, b = store.get_run(run_a), store.get_run(run_b)
    for rid, row in ((run_a, a), (run_b, b)):
        if row is None:
            raise InputError(f"no run {rid!r} in {store.url}")
    assert a is not None and b is not None
    notes = []
    if a.flow != b.flow:
        notes.append(f"different flows: {a.flow!r} and {b.flow!r}")
    if not a.is_batch and not b.is_batch:  # (a run with sub-flows has child runs too)
        d = _run_diff(store, a, b)
        return RunDiff(
            d.a,
            d.b,
            d.steps,
            cost_a=d.cost_a,
            cost_b=d.cost_b,
            status_a=d.status_a,
            status_b=d.status_b,
            notes=tuple(notes),
        )
    if not a.is_batch or not b.is_batch:
        raise InputError(f"{run_a!r} and {run_b!r}: one is a batch, the other a single run")
    by_a = {r.item_index: r for r in batch_items(store, run_a)}
    by_b = {r.item_index: r for r in batch_items(store, run_b)}
    if set(by_a) != set(by_b):
        notes.append(f"item counts differ: {len(by_a)} and {len(by_b)}; common items compared")
    pairs = []
    for index in sorted(i for i in by_a if i in by_b and i is not None):
        ra, rb = by_a[index], by_b[index]
        if _load(ra.inputs) != _load(rb.inputs):
            notes.append(f"item {index}: the inputs differ")
        pairs.append((index, _run_diff(store, ra, rb)))
    return RunDiff(
        run_a,
        run_b,
        items=tuple(pairs),
        cost_a=sum(d.cost_a for _, d in pairs),
        cost_b=sum(d.cost_b for _, d in pairs),
        status_a=a.status,
        status_b=b.status,
        notes=tuple(notes),
    )
