"""Measurement helpers shared by the benchmark workloads: interleaved repetitions, medians,
and the figure records written to ``bench/results.json``."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A runner performs one repetition of a workload and returns its elapsed time in seconds.
#: It times only the work itself and checks the result outside the timed region.
Runner = Callable[[], Awaitable[float]]


@dataclass(frozen=True, slots=True)
class Goal:
    """A goal from the issue: ``value <op> threshold``."""

    op: str  # "<=" or "<"
    threshold: float

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.threshold
        if self.op == "<":
            return value < self.threshold
        raise ValueError(f"unknown goal operator {self.op!r}")

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


async def interleave(
    reps: int, runners: Mapping[str, Runner], *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every runner ``warmup`` times (discarded), then ``reps`` times each, rotating the
    order every repetition so that slow drift on a noisy machine hits all of them alike.
    A full collection runs before each timed repetition so one workload's garbage is not
    collected on another's clock."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            await runners[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(await runners[name]())
    return samples


def figure(
    *,
    value: float,
    unit: str,
    baseline: float | None,
    baseline_unit: str,
    baseline_what: str,
    goal: Goal | None,
    reps: int,
    n: int,
    **extra: Any,
) -> dict[str, Any]:
    """One figure record. ``meets_goal`` is ``None`` for informational figures (no goal);
    ``ratio`` is ``value / baseline`` when both are in the same unit."""
    record: dict[str, Any] = {
        "value": _round(value),
        "unit": unit,
        "baseline": None if baseline is None else _round(baseline),
        "baseline_unit": baseline_unit,
        "baseline_what": baseline_what,
        "ratio": (
            _round(value / baseline)
            if baseline is not None and baseline > 0 and unit == baseline_unit
            else None
        ),
        "goal": str(goal) if goal is not None else "informational",
        "meets_goal": goal.met(value) if goal is not None else None,
        "reps": reps,
        "n": n,
    }
    for key, item in extra.items():
        record[key] = _round_any(item)
    return record


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _round_any(x: Any) -> Any:
    if isinstance(x, float):
        return _round(x)
    if isinstance(x, list):
        return [_round_any(v) for v in x]
    if isinstance(x, dict):
        return {k: _round_any(v) for k, v in x.items()}
    return x
