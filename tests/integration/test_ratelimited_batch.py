"""Rate limits end to end: a Trellis batch over real HTTP against a rate-limited mock server.

The mock server (127.0.0.1, port 0, on the test's event loop) enforces ``rpm`` over a
1 s burst bucket and sends OpenAI's ``x-ratelimit-*`` headers on every response and
``retry-after-ms`` / ``retry-after`` on its 429s. The engine talks to it through the
``openai:`` provider, so every request goes through the real client: rate limiter,
httpx, header parsing, error mapping, the engine's retry layer and its accounting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.mockserver import MockServer

pytestmark = pytest.mark.serial  # rate pacing is measured in wall time

LIMIT_RPM = 1200  # 20 requests/s, bursts of 20 (burst_s=1)
RATE = LIMIT_RPM / 60.0
BURST = int(RATE)
LATENCY_MS = 20.0


class Label(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


def classify_flow(retry: tl.RetryPolicy | None = None) -> tl.Flow:
    flow = tl.Flow("ratelimited-batch", inputs={"text": str}, retry=retry)

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(f"Classify: {text}", output=Label, model="small")

    return flow


@dataclass
class Batch:
    results: list[tl.RunResult]
    makespan_s: float
    server: MockServer
    #: (seconds since the batch started, 429s the server had sent by then), every 20 ms.
    timeline: list[tuple[float, int]] = field(default_factory=list)

    @property
    def calls(self) -> list[tl.CallRecord]:
        return [c for r in self.results for c in r.calls]

    def failures(self, mode: str) -> int:
        return sum(r.usage.failures[mode] for r in self.results)

    def last_429_at(self) -> float:
        """When the server's 429 count last went up (0 if it never did)."""
        last, seen = 0.0, 0
        for at, count in self.timeline:
            if count > seen:
                last, seen = at, count
        return last


@asynccontextmanager
async def mock_server() -> AsyncIterator[MockServer]:
    async with MockServer(port=0, latency_ms=LATENCY_MS, rpm=LIMIT_RPM, burst_s=1.0) as server:
        assert server.host == "127.0.0.1"
        yield server


async def run_batch(
    server: MockServer,
    n: int,
    *,
    client_rpm: int | None,
    concurrency: int,
    retry: tl.RetryPolicy | None = None,
) -> Batch:
    binding = f"openai:mock-model?base_url={server.openai_base_url}"
    if client_rpm is not None:
        binding += f"&rpm={client_rpm}"
    items = [{"text": f"feedback item {i}"} for i in range(n)]
    timeline: list[tuple[float, int]] = []
    results: dict[int, tl.RunResult] = {}
    async with tl.Engine(models={"small": binding}, seed=0) as engine:
        t0 = time.perf_counter()

        async def watch() -> None:
            while True:
                timeline.append((time.perf_counter() - t0, server.stats.responses_429))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            async for index, result in engine.run_many(
                classify_flow(retry), items, concurrency=concurrency
            ):
                results[index] = result
        finally:
            watcher.cancel()
        makespan = time.perf_counter() - t0
    timeline.append((makespan, server.stats.responses_429))
    assert sorted(results) == list(range(n))
    return Batch([results[i] for i in range(n)], makespan, server, timeline)


def assert_all_done(batch: Batch) -> None:
    for result in batch.results:
        assert result.ok, result.error
        assert isinstance(result["classify"], Label)


async def test_client_rpm_paces_a_batch_at_the_server_limit() -> None:
    """120 runs at once, client ``rpm`` = the server's limit: the shared limiter spreads
    them at the limit. Throughput after the initial one-second burst stays within 15 % of
    the limit, and there are no 429s: the client's bucket holds half a second of requests,
    less than the server's one second, so start-up jitter (cold connections) has margin."""
    n = 120
    async with mock_server() as server:
        batch = await run_batch(server, n, client_rpm=LIMIT_RPM, concurrency=n)
        stats = server.stats
    assert_all_done(batch)
    assert stats.requests == n + stats.responses_429
    # Every 429 the server sent is a rate_limit failure in the runs' usage, and retried.
    assert batch.failures("rate_limit") == stats.responses_429
    assert sum(r.usage.calls for r in batch.results) == n
    assert stats.responses_429 <= 1, stats.to_dict()
    # Throughput: the server lets BURST requests through at once, then RATE a second.
    steady_rate = (n - BURST) / (batch.makespan_s - LATENCY_MS / 1000)
    assert abs(steady_rate / RATE - 1) <= 0.15, (steady_rate * 60, batch.makespan_s)
    assert n / batch.makespan_s * 60 <= LIMIT_RPM * (n / (n - BURST)) * 1.05


async def test_without_client_rpm_the_limiter_learns_the_server_limit() -> None:
    """No client ``rpm``: the first response's ``x-ratelimit-limit-requests`` header
    gives the limiter the server's limit, so a concurrent batch paces itself instead of
    storming the server with retries. Every item is done with the default retry policy,
    and 429s are at most a handful, at the very start."""
    n = 80
    async with mock_server() as server:
        batch = await run_batch(server, n, client_rpm=None, concurrency=8)
        stats = server.stats
    assert_all_done(batch)
    assert stats.responses_429 <= 3, stats.to_dict()
    assert batch.failures("rate_limit") == stats.responses_429
    assert sum(r.usage.attempts for r in batch.results) == n + stats.responses_429
    retried = [c for c in batch.calls if c.attempt > 1]
    assert len(retried) == stats.responses_429
    assert all(c.wait_s > 0 for c in retried)  # each 429's retry-after was waited


async def test_a_429_is_waited_out_exactly() -> None:
    """A scripted 429 with a retry-after: the call waits exactly that long, then succeeds;
    the failure is counted as ``rate_limit`` and the wait is recorded."""
    async with mock_server() as server:
        server.load_script([{"fault": "rate_limit", "retry_after": 0.05}, {"ok": True}])
        batch = await run_batch(server, 1, client_rpm=None, concurrency=1)
        stats = server.stats
    assert_all_done(batch)
    assert stats.responses_429 == 1
    assert batch.failures("rate_limit") == 1
    retried = [c for c in batch.calls if c.attempt == 2]
    assert len(retried) == 1 and retried[0].wait_s == pytest.approx(0.05, abs=1e-6)
