"""Outage workloads: the feedback-triage example over real HTTP while the provider fails.

One repetition starts a fresh :class:`~trellis.mockserver.MockServerThread` on 127.0.0.1
(its own thread and event loop, as a provider is its own machine; answers take 50-250 ms,
150 ms on average) and a fresh :class:`trellis.Engine` with both roles of
``examples/feedback_triage.py`` bound to one ``openai:`` model on it, then runs the batch
with ``run_many`` and the default ``RetryPolicy`` (no fallback model). Two scenarios:

- ``outage``: every request gets 503 for ``outage_s`` seconds, starting ``start_s``
  after the batch's first request (the mock counts the requests received in the window);
- ``flaky``: 10% of requests fail at random (429 with retry-after, 500, malformed JSON).

The baseline variant runs the same batch with the attempt-count defaults Trellis had
before the retry deadline and the circuit breaker (at most 2 attempts for an overloaded
call and 4 for a rate limit, modelled as ``max_attempts=2``, no breaker).

:func:`group` is the ``outage`` group of ``bench/run.py``: every repetition is cold.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from common import Goal, figure, median

import trellis as tl
from trellis.engine.breaker import BreakerSettings
from trellis.mockserver import MockServerThread, flaky_rates

__all__ = ["OLD_DEFAULTS", "Sample", "group", "run_once"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "feedback_triage.py"
DATA = ROOT / "examples" / "data" / "feedback.jsonl"
LATENCY_MS = "50-250"

#: The old defaults, for the baseline: attempt counts, no time budget, no breaker.
OLD_DEFAULTS = tl.RetryPolicy(max_attempts=2, retry_deadline=None, reasks=3)
NO_BREAKER = BreakerSettings(enabled=False)

ITEMS_LOST_GOAL = Goal("<=", 0.0)
OUTAGE_REQUESTS_GOAL = Goal("<=", 0.5)


def load_triage() -> ModuleType:
    name = "_trellis_example_feedback_triage"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def feedback_items(n: int) -> list[dict[str, Any]]:
    with DATA.open(encoding="utf-8") as fh:
        texts = [json.loads(line)["feedback"] for line in fh if line.strip()]
    return [{"feedback": f"{texts[i % len(texts)]} (#{i})"} for i in range(n)]


@dataclass(slots=True)
class Sample:
    """One repetition, as the client and the server saw it."""

    n: int
    lost: int  # items whose run failed
    makespan_s: float
    server_requests: int
    outage_requests: int  # requests the server received during the outage
    waiting_calls: int  # calls that waited on the model's open breaker (its stats)
    breaker_opened: int
    probes: int
    failed_attempts: int

    @property
    def requests_per_waiting_call(self) -> float:
        return self.outage_requests / self.waiting_calls if self.waiting_calls else 0.0


async def run_once(
    n: int,
    scenario: str,
    *,
    concurrency: int,
    outage_s: float = 3.0,
    start_s: float = 1.5,
    baseline: bool = False,
    seed: int = 0,
) -> Sample:
    """One cold repetition of ``scenario`` ("outage" or "flaky"), see the module docs."""
    triage = load_triage()
    flow = triage.flow
    if baseline:
        flow = tl.Flow("feedback-triage-old-defaults", inputs={"feedback": str}, retry=OLD_DEFAULTS)
        for spec in triage.flow.steps.values():
            flow.add(spec)
    faults = flaky_rates(0.1) if scenario == "flaky" else None
    with MockServerThread(latency_ms=LATENCY_MS, seed=seed, faults=faults) as server:
        outage = None
        if scenario == "outage":
            outage = server.schedule_outage(outage_s, start_s, from_first_request=True)
        bound = f"openai:sim-small?base_url={server.openai_base_url}"
        results: list[tl.RunResult] = []
        async with tl.Engine(
            models={"small": bound, "large": bound},
            seed=seed,
            breaker=NO_BREAKER if baseline else None,
        ) as engine:
            t0 = time.perf_counter()
            async for _, result in engine.run_many(
                flow, feedback_items(n), concurrency=concurrency
            ):
                results.append(result)
            makespan = time.perf_counter() - t0
            stats = engine.breaker(engine.model_chain("small")[0]).stats
        served = server.stats
    if len(results) != n:
        raise RuntimeError(f"{scenario} run returned {len(results)} of {n} items")
    return Sample(
        n=n,
        lost=sum(not r.ok for r in results),
        makespan_s=makespan,
        server_requests=served.requests,
        outage_requests=0 if outage is None else outage.requests,
        waiting_calls=stats.waits,
        breaker_opened=stats.opened,
        probes=stats.probes,
        failed_attempts=sum(sum(r.usage.failures.values()) for r in results),
    )


# -- the group ---------------------------------------------------------------------------------


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The feedback-triage batch with the default ``RetryPolicy`` and no fallback model,
    while the provider fails: a mid-batch outage (every request 503) and 10% random faults.
    The baseline is the same batch with the old attempt-count defaults and no circuit
    breaker, run once (in the first repetition)."""
    n, reps, c = sizes.outage, sizes.outage_reps, sizes.outage_concurrency
    timing = {"outage_s": sizes.outage_s, "start_s": sizes.outage_start_s, "concurrency": c}
    samples: dict[tuple[str, bool], list[Sample]] = {}
    for rep in range(reps):
        for scenario in ("outage", "flaky"):
            for baseline in (False, True) if rep == 0 else (False,):
                label = "old defaults" if baseline else "defaults"
                say(f"{scenario}: {n} feedback-triage items, {label} (rep {rep + 1}/{reps})")
                sample = await run_once(n, scenario, baseline=baseline, seed=rep, **timing)
                samples.setdefault((scenario, baseline), []).append(sample)
    outage, old_outage = samples[("outage", False)], samples[("outage", True)][0]
    flaky, old_flaky = samples[("flaky", False)], samples[("flaky", True)][0]
    setup = {
        "server": f"MockServerThread(latency_ms={LATENCY_MS!r}) on 127.0.0.1, its own thread",
        "flow": "examples/feedback_triage.py, both roles on one openai: model",
        "batch": f"run_many(concurrency={c}), RetryPolicy() defaults, no fallback model",
        "baseline_policy": "RetryPolicy(max_attempts=2, retry_deadline=None), no breaker",
    }
    window = f"every request 503 for {sizes.outage_s:g} s from {sizes.outage_start_s:g} s"

    def items_lost(ss: list[Sample], old: Sample, **extra: Any) -> dict[str, Any]:
        return figure(
            value=median([float(s.lost) for s in ss]),
            unit="items",
            baseline=float(old.lost),
            baseline_unit="items",
            baseline_what="items lost with the old attempt-count defaults (one run)",
            goal=ITEMS_LOST_GOAL,
            reps=reps,
            n=n,
            **extra,
            samples_lost=[s.lost for s in ss],
            makespan_s=median([s.makespan_s for s in ss]),
            baseline_makespan_s=old.makespan_s,
            **setup,
        )

    return {
        "outage_items_lost": items_lost(outage, old_outage, outage=window),
        "outage_requests_per_waiting_call": figure(
            value=median([s.requests_per_waiting_call for s in outage]),
            unit="req/call",
            baseline=old_outage.outage_requests / c,
            baseline_unit="req/call",
            baseline_what="requests received during the outage per item in flight, old defaults",
            goal=OUTAGE_REQUESTS_GOAL,
            reps=reps,
            n=n,
            outage=window,
            outage_requests=median([float(s.outage_requests) for s in outage]),
            waiting_calls=median([float(s.waiting_calls) for s in outage]),
            probes=median([float(s.probes) for s in outage]),
            breaker_opened=median([float(s.breaker_opened) for s in outage]),
            samples=[s.requests_per_waiting_call for s in outage],
            baseline_outage_requests=old_outage.outage_requests,
            **setup,
        ),
        "flaky_items_lost": items_lost(
            flaky,
            old_flaky,
            faults="10% of requests: 429 (retry-after 1 s), 500, malformed JSON",
            failed_attempts=median([float(s.failed_attempts) for s in flaky]),
        ),
    }
