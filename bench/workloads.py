"""Trellis workloads and their plain-Python / plain-asyncio baselines.

Every ``*_runner`` returns a :data:`common.Runner`: an async callable that performs one
repetition, returns its elapsed seconds (``time.perf_counter``) and checks the result
*after* the clock stops, so a broken run can never produce a flattering figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from common import Runner
from pydantic import BaseModel

import trellis as tl

#: The simulated latency of one "call" in the fan-out workloads.
CALL_S = 0.05

SyncStep = Callable[[int], int]
AsyncStep = Callable[[int], Awaitable[int]]


# -- chain ------------------------------------------------------------------------------


def chain_functions(n: int, *, is_async: bool) -> list[Callable[..., Any]]:
    """``n`` distinct trivial functions ``s{i}(s{i-1}: int) -> int: return s{i-1} + 1``.

    Generated from source because a step's parameter *name* says what it reads, so each
    needs its own signature; ``s1`` reads the flow input ``x0``.
    """
    namespace: dict[str, Any] = {}
    prefix = "async " if is_async else ""
    for i in range(1, n + 1):
        reads = "x0" if i == 1 else f"s{i - 1}"
        source = f"{prefix}def s{i}({reads}: int) -> int:\n    return {reads} + 1\n"
        exec(source, namespace)
    return [namespace[f"s{i}"] for i in range(1, n + 1)]


def chain_flow(functions: list[Callable[..., Any]]) -> tl.Flow:
    flow = tl.Flow("chain", inputs={"x0": int})
    for fn in functions:
        flow.step(fn)
    flow.validate()
    return flow


def trellis_chain_runner(engine: tl.Engine, flow: tl.Flow, n: int) -> Runner:
    last = f"s{n}"

    async def run() -> float:
        t0 = time.perf_counter()
        result = await engine.run(flow, {"x0": 0})
        elapsed = time.perf_counter() - t0
        if not result.ok or result[last] != n:
            raise RuntimeError(f"chain run failed: {result.error}")
        return elapsed

    return run


def direct_chain_runner(functions: list[SyncStep]) -> Runner:
    """Baseline: the same functions called directly in a loop."""
    n = len(functions)

    async def run() -> float:
        t0 = time.perf_counter()
        x = 0
        for fn in functions:
            x = fn(x)
        elapsed = time.perf_counter() - t0
        if x != n:
            raise RuntimeError(f"direct chain gave {x}, expected {n}")
        return elapsed

    return run


def direct_async_chain_runner(functions: list[AsyncStep]) -> Runner:
    """Baseline: the same coroutine functions awaited directly in a loop."""
    n = len(functions)

    async def run() -> float:
        t0 = time.perf_counter()
        x = 0
        for fn in functions:
            x = await fn(x)
        elapsed = time.perf_counter() - t0
        if x != n:
            raise RuntimeError(f"direct async chain gave {x}, expected {n}")
        return elapsed

    return run


# -- fan-out --------------------------------------------------------------------------


def fanout_flow(*, concurrency: int | None = None) -> tl.Flow:
    """``items`` produces ``list(range(n))``; ``call`` maps over it, each element a
    simulated 50 ms call (``asyncio.sleep``) returning its int."""
    flow = tl.Flow("fanout", inputs={"n": int}, concurrency=concurrency)

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def call(items: int) -> int:
        await asyncio.sleep(CALL_S)
        return items

    flow.validate()
    return flow


def trellis_fanout_runner(engine: tl.Engine, flow: tl.Flow, n: int) -> Runner:
    async def run() -> float:
        t0 = time.perf_counter()
        result = await engine.run(flow, {"n": n})
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"fan-out run failed: {result.error}")
        out = result["call"]
        if len(out) != n or out[-1] != n - 1:
            raise RuntimeError("fan-out returned the wrong elements")
        return elapsed

    return run


def asyncio_gather_runner(n: int) -> Runner:
    """Baseline: ``asyncio.gather`` of ``n`` 50 ms sleeps."""

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.sleep(CALL_S) for _ in range(n)))
        return time.perf_counter() - t0

    return run


def asyncio_semaphore_runner(n: int, limit: int) -> Runner:
    """Reference: ``n`` 50 ms sleeps through an ``asyncio.Semaphore(limit)``."""

    async def run() -> float:
        slots = asyncio.Semaphore(limit)

        async def one() -> None:
            async with slots:
                await asyncio.sleep(CALL_S)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0

    return run


# -- fan-out through the LLM path (simulator) --------------------------------------------


class Label(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


SIM_BINDING = f"sim:small?latency_ms={CALL_S * 1000:g}"


def sim_fanout_flow() -> tl.Flow:
    flow = tl.Flow("sim_fanout", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def classify(items: int, llm: tl.LLM) -> Label:
        return await llm.generate(f"Classify item {items}.", output=Label, model="small")

    flow.validate()
    return flow


def trellis_sim_fanout_runner(engine: tl.Engine, flow: tl.Flow, n: int) -> Runner:
    async def run() -> float:
        t0 = time.perf_counter()
        result = await engine.run(flow, {"n": n})
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"sim fan-out run failed: {result.error}")
        if len(result["classify"]) != n or result.usage.calls != n:
            raise RuntimeError("sim fan-out made the wrong number of calls")
        return elapsed

    return run
