"""Measurement helpers shared by the benchmark workloads: interleaved repetitions, medians,
and the figure records written to ``bench/results.json`` (:func:`figure`, and the two
common shapes of it: :func:`ratio_figure` and :func:`unit_figure`)."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A runner performs one repetition of a workload and returns its elapsed time in seconds.
#: It times only the work itself and checks the result outside the timed region.
Runner = Callable[[], Awaitable[float]]

#: Microseconds per second.
US = 1e6


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


class AtLeast(Goal):
    """A goal of the form ``value >= threshold`` (``Goal`` knows ``<=`` and ``<``)."""

    __slots__ = ()

    def __init__(self, threshold: float) -> None:
        super().__init__(">=", threshold)

    def met(self, value: float) -> bool:
        return value >= self.threshold


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


def ratio_figure(
    samples: Mapping[Any, Sequence[float]],
    subject: Any,
    base: Any,
    *,
    baseline_what: str,
    goal: Goal | None,
    reps: int,
    n: int,
    baseline_unit: str = "s",
    baseline_scale: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    """A figure in ``x``: ``median(samples[subject]) / median(samples[base])``. Its baseline is
    ``median(samples[base]) * baseline_scale`` in ``baseline_unit`` (seconds by default);
    ``samples_ratio`` holds the ratio of every repetition (the two lists pair up)."""
    subject_s, base_s = samples[subject], samples[base]
    return figure(
        value=median(subject_s) / median(base_s),
        unit="x",
        baseline=median(base_s) * baseline_scale,
        baseline_unit=baseline_unit,
        baseline_what=baseline_what,
        goal=goal,
        reps=reps,
        n=n,
        **extra,
        samples_ratio=[x / y for x, y in zip(subject_s, base_s, strict=True)],
    )


def unit_figure(
    samples: Mapping[Any, Sequence[float]],
    subject: Any,
    base: Any,
    *,
    unit: str,
    baseline_what: str,
    goal: Goal | None,
    reps: int,
    n: int,
    per: int = 1,
    scale: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    """A figure whose value and baseline share ``unit``: ``median(samples[subject]) / per *
    scale`` and the same for ``base`` (``per=n, scale=US``: microseconds per step). The
    repetitions of both, in that unit, go with it as ``samples_<unit>`` and
    ``baseline_samples_<unit>`` (``us/step`` -> ``samples_us_per_step``)."""

    def scaled(key: Any) -> list[float]:
        return [x / per * scale for x in samples[key]]

    name = unit.lower().replace("/", "_per_")
    return figure(
        value=median(samples[subject]) / per * scale,
        unit=unit,
        baseline=median(samples[base]) / per * scale,
        baseline_unit=unit,
        baseline_what=baseline_what,
        goal=goal,
        reps=reps,
        n=n,
        **extra,
        **{f"samples_{name}": scaled(subject), f"baseline_samples_{name}": scaled(base)},
    )


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
