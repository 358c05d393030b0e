"""Rate-limited workloads: a Trellis batch over real HTTP against the in-process mock server.

One repetition starts a fresh :class:`~trellis.mockserver.MockServer` on 127.0.0.1 (port 0,
``rpm`` requests a minute enforced over a 1 s burst bucket, fixed latency) and a fresh
:class:`trellis.Engine` bound to ``openai:mock-model?base_url=<server>/v1`` (plus
``&rpm=<limit>`` for the client-side limiter), then times one ``engine.run`` of a flow
whose mapped step makes one ``llm.generate(..., output=Label)`` per item, with unlimited
flow concurrency. Everything is cold in every repetition (new HTTP client, new
connections, full buckets on both sides), as at the start of a real batch.

The clock covers ``engine.run`` only; the server's counters (``server.stats``) and the
run's records are read after it stops.

:func:`group` is the ``ratelimit`` group of ``bench/run.py``: the batch with the client
``rpm`` option, and without it (relying on retry-after and headers alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from common import AtLeast, Goal, figure, median
from pydantic import BaseModel

import trellis as tl
from trellis.mockserver import MockServer

__all__ = [
    "BURST_S",
    "LATENCY_MS",
    "LIMIT_RPM",
    "PATIENT_POLICY",
    "RATELIMITED_429_GOAL",
    "RATELIMITED_GOAL",
    "Label",
    "Sample",
    "Variant",
    "group",
    "ideal_makespan_s",
    "ratelimited_flow",
    "run_once",
]

#: The server's limit (requests per minute), its burst window and its latency.
LIMIT_RPM = 1200
BURST_S = 1.0
LATENCY_MS = 200.0

RATELIMITED_GOAL = AtLeast(0.9)
RATELIMITED_429_GOAL = Goal("<=", 0.0)

#: Retries enough for every item to get through on retry-after alone (informational run).
PATIENT_POLICY = tl.RetryPolicy(max_attempts=1000)


class Label(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


def ratelimited_flow(retry: tl.RetryPolicy | None = None) -> tl.Flow:
    """``items`` produces ``list(range(n))``; ``classify`` maps over it (no concurrency
    limit), one structured ``llm.generate`` per element. Failed elements are collected, so
    a run that loses some calls still reports the others."""
    flow = tl.Flow("ratelimited", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items", on_error="collect", retry=retry)
    async def classify(items: int, llm: tl.LLM) -> Label:
        return await llm.generate(f"Classify item {items}.", output=Label, model="small")

    flow.validate()
    return flow


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of running the batch: with or without the client ``rpm`` option."""

    name: str
    client_rpm: float | None
    retry: tl.RetryPolicy | None = None

    def binding(self, base_url: str) -> str:
        binding = f"openai:mock-model?base_url={base_url}"
        return binding if self.client_rpm is None else f"{binding}&rpm={self.client_rpm:g}"


@dataclass(slots=True)
class Sample:
    """One repetition: the run as the client and the server saw it."""

    n: int
    makespan_s: float
    done: int  # elements that returned a Label
    failed: int  # elements collected as ElementFailure
    attempts: int  # requests the engine sent (CallRecords)
    responses_429: int  # 429s the server sent (server.stats)
    server_requests: int
    peak_in_flight: int
    wait_s: float  # retry-after / backoff the engine slept, summed over attempts
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def throughput_per_min(self) -> float:
        """Calls that succeeded, per minute of makespan."""
        return self.done / self.makespan_s * 60.0

    def ratio(self, limit_rpm: float) -> float:
        return self.throughput_per_min / limit_rpm


def ideal_makespan_s(n: int, limit_rpm: float, burst_s: float, latency_ms: float) -> float:
    """The shortest makespan the server allows: a full burst bucket at once, the rest at
    the limit's rate, plus the last reply's latency."""
    rate = limit_rpm / 60.0
    burst = max(1.0, rate * burst_s)
    return max(0.0, n - burst) / rate + latency_ms / 1000.0


async def run_once(
    n: int,
    variant: Variant,
    *,
    limit_rpm: int = LIMIT_RPM,
    burst_s: float = BURST_S,
    latency_ms: float = LATENCY_MS,
) -> Sample:
    """One cold repetition of ``variant`` (see the module docs)."""
    flow = ratelimited_flow(variant.retry)
    async with MockServer(
        port=0, latency_ms=latency_ms, rpm=limit_rpm, burst_s=burst_s, seed=0
    ) as server:
        binding = variant.binding(server.openai_base_url)
        async with tl.Engine(models={"small": binding}, seed=0) as engine:
            t0 = time.perf_counter()
            result = await engine.run(flow, {"n": n})
            elapsed = time.perf_counter() - t0
        stats = server.stats.copy()
    if not result.ok:
        raise RuntimeError(f"rate-limited run ({variant.name}) failed: {result.error}")
    out = result["classify"]
    if len(out) != n:
        raise RuntimeError(f"rate-limited run ({variant.name}) returned {len(out)} of {n}")
    done = sum(isinstance(x, Label) for x in out)
    failed = sum(isinstance(x, tl.ElementFailure) for x in out)
    if done + failed != n or result.usage.calls != done:
        raise RuntimeError(f"rate-limited run ({variant.name}) miscounted its calls")
    return Sample(
        n=n,
        makespan_s=elapsed,
        done=done,
        failed=failed,
        attempts=len(result.calls),
        responses_429=stats.responses_429,
        server_requests=stats.requests,
        peak_in_flight=stats.peak_in_flight,
        wait_s=sum(c.wait_s for c in result.calls),
        failures=dict(result.usage.failures),
    )


# -- the group ---------------------------------------------------------------------------------


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """A batch of ``llm.generate`` calls over HTTP against a mock server limited to
    1200 requests/min (1 s burst, 200 ms latency), in three variants (with the client
    ``rpm`` option, without it and patient, without it and the default policy), their
    repetitions rotated; every repetition is cold (fresh server and engine)."""
    n, reps, limit = sizes.ratelimited, sizes.ratelimited_reps, LIMIT_RPM
    variants = [
        Variant("client_rpm", client_rpm=limit),
        Variant("no_rpm_patient", client_rpm=None, retry=PATIENT_POLICY),
        Variant("no_rpm_default", client_rpm=None),
    ]
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    for rep in range(reps):
        shift = rep % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            say(f"rate-limited: {n} calls at {limit} rpm, {variant.name} (rep {rep + 1}/{reps})")
            samples[variant.name].append(await run_once(n, variant))
    rpm, patient, default = (samples[v.name] for v in variants)
    for s in rpm + patient:
        if s.failed:
            raise RuntimeError(f"rate-limited run lost {s.failed} of {n} calls")
    ideal = ideal_makespan_s(n, limit, BURST_S, LATENCY_MS)
    binding = "openai:mock-model?base_url=<mock>/v1"

    def ratios(ss: list[Sample]) -> list[float]:
        return [s.ratio(limit) for s in ss]

    def counts(ss: list[Sample]) -> list[float]:
        return [float(s.responses_429) for s in ss]

    def makespan(ss: list[Sample]) -> float:
        return median([s.makespan_s for s in ss])

    def throughput(ss: list[Sample], goal: Goal | None, **extra: Any) -> dict[str, Any]:
        """Successful calls per minute of makespan over the server's limit."""
        return figure(
            value=median(ratios(ss)),
            unit="x",
            baseline=float(limit),
            baseline_unit="req/min",
            baseline_what="the server's limit",
            goal=goal,
            reps=reps,
            n=n,
            **extra,
            makespan_s=makespan(ss),
            responses_429=median(counts(ss)),
            samples_ratio=ratios(ss),
            server=(
                f"MockServer(rpm={limit}, burst_s={BURST_S:g}, "
                f"latency_ms={LATENCY_MS:g}) on 127.0.0.1, same event loop"
            ),
            flow="mapped step, unlimited concurrency, one llm.generate(output=Label) per item",
            ideal_makespan_s=ideal,
            ideal_ratio=n / ideal * 60.0 / limit,
        )

    return {
        "ratelimited_throughput_ratio": throughput(
            rpm,
            RATELIMITED_GOAL,
            binding=f"{binding}&rpm={limit}",
            throughput_per_min=median([s.throughput_per_min for s in rpm]),
            makespan_vs_ideal=makespan(rpm) / ideal,
        ),
        "ratelimited_429_count": figure(
            value=median(counts(rpm)),
            unit="429s",
            baseline=median(counts(patient)),
            baseline_unit="429s",
            baseline_what="the same batch without the client rpm option (retry-after only)",
            goal=RATELIMITED_429_GOAL,
            reps=reps,
            n=n,
            samples=counts(rpm),
            max_429=max(counts(rpm)),
            rate_limit_failures=[s.failures.get("rate_limit", 0) for s in rpm],
            retry_wait_s=median([s.wait_s for s in rpm]),
        ),
        "ratelimited_no_rpm_throughput_ratio": throughput(
            patient,
            None,
            binding=f"{binding} (no rpm)",
            retry_policy=f"RetryPolicy(max_attempts={PATIENT_POLICY.max_attempts})",
            responses_429_per_call=median(counts(patient)) / n,
            attempts=median([float(s.attempts) for s in patient]),
            retry_wait_s=median([s.wait_s for s in patient]),
        ),
        "ratelimited_no_rpm_default_done_ratio": figure(
            value=median([s.done / n for s in default]),
            unit="x",
            baseline=float(n),
            baseline_unit="calls",
            baseline_what="calls in the batch",
            goal=None,
            reps=reps,
            n=n,
            binding=f"{binding} (no rpm)",
            retry_policy="RetryPolicy() (default: retry_deadline=120 s, no attempt cap)",
            done=median([float(s.done) for s in default]),
            failed=median([float(s.failed) for s in default]),
            responses_429=median(counts(default)),
            done_throughput_ratio=median(ratios(default)),
            makespan_s=makespan(default),
            samples_done=[s.done for s in default],
        ),
    }
