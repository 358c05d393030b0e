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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from common import Goal
from pydantic import BaseModel

import trellis as tl
from trellis.mockserver import MockServer

__all__ = [
    "BURST_S",
    "LATENCY_MS",
    "LIMIT_RPM",
    "PATIENT_POLICY",
    "AtLeast",
    "Label",
    "Sample",
    "Variant",
    "ideal_makespan_s",
    "ratelimited_flow",
    "run_once",
]

#: The server's limit (requests per minute), its burst window and its latency.
LIMIT_RPM = 1200
BURST_S = 1.0
LATENCY_MS = 200.0

#: Retries enough for every item to get through on retry-after alone (informational run).
PATIENT_POLICY = tl.RetryPolicy(max_attempts=1000)


class AtLeast(Goal):
    """A goal of the form ``value >= threshold`` (``common.Goal`` knows ``<=`` and ``<``)."""

    __slots__ = ()

    def __init__(self, threshold: float) -> None:
        super().__init__(">=", threshold)

    def met(self, value: float) -> bool:
        return value >= self.threshold


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
