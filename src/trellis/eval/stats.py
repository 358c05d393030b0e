"""The statistics of an eval: bootstrap confidence intervals, percentiles, mean ± sd."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from trellis.engine.summary import percentile as summary_percentile

__all__ = ["bootstrap_ci", "mean", "mean_sd", "percentile"]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (deterministic for a
    seed). One value, or identical values, give a zero-width interval."""
    n = len(values)
    if n == 0:
        return (0.0, 0.0)
    if n == 1 or min(values) == max(values):
        return (values[0], values[0])
    alpha = (1.0 - confidence) / 2.0
    try:  # vectorised when numpy is there (it comes with the 'eval' extra)
        import numpy as np
    except ImportError:
        rng = random.Random(seed)
        means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    else:
        data = np.asarray(values, dtype=float)
        picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        means = sorted(float(m) for m in data[picks].mean(axis=1))
    return (percentile(means, alpha * 100), percentile(means, (1 - alpha) * 100))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in 0..100) of ``values``; 0 for none (an
    eval's report shows 0 where a variant produced no latencies)."""
    return summary_percentile(values, q) if values else 0.0


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    m = mean(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
