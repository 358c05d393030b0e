"""The LLM-call path at scale: 10 000 structured-output calls through ``tl.LLM.generate``.

- ``llm_path_ratio_10000``: a mapped step of 10 000 elements, each one structured-output
  call (``output=Label``) to a zero-latency :class:`tl.FunctionModel`, against plain
  asyncio: ``asyncio.gather`` of 10 000 coroutines that call the same function and
  validate the same Pydantic model (``Label.model_validate_json``). The engine's cost per
  call (``us_per_call``) is reported with it.
- ``llm_inflight_ratio_10000``: the same 10 000 calls with the function sleeping 50 ms
  (all in flight at once), against ``asyncio.gather`` of the same 10 000 sleeps.

Each repetition runs in this process, interleaved with its baseline (order rotated), a
full collection before each (:func:`common.interleave`); medians of ``reps``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from common import US, Goal, Runner, interleave, median, ratio_figure
from workloads import CALL_S, Label

import trellis as tl
from trellis.models.base import ModelRequest

LLM_PATH_GOAL = Goal("<=", 2.5)
LLM_INFLIGHT_GOAL = Goal("<=", 2.0)

REPLY = '{"label": "positive", "confidence": 0.9}'


def reply(request: ModelRequest | None) -> str:
    """The zero-latency model function (and the baseline's)."""
    return REPLY


async def slow_reply(request: ModelRequest | None) -> str:
    """The 50 ms model function (and the baseline's)."""
    await asyncio.sleep(CALL_S)
    return REPLY


def llm_flow() -> tl.Flow:
    flow = tl.Flow("llm_fanout", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def classify(items: int, llm: tl.LLM) -> Label:
        return await llm.generate(f"Classify item {items}.", output=Label, model="fn")

    flow.validate()
    return flow


def trellis_runner(engine: tl.Engine, model: tl.FunctionModel, flow: tl.Flow, n: int) -> Runner:
    async def run() -> float:
        model.calls.clear()
        t0 = time.perf_counter()
        result = await engine.run(flow, {"n": n})
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"LLM fan-out failed: {result.error}")
        out = result["classify"]
        if len(out) != n or result.usage.calls != n or not isinstance(out[-1], Label):
            raise RuntimeError("LLM fan-out made the wrong calls")
        return elapsed

    return run


def asyncio_validate_runner(n: int) -> Runner:
    """Baseline: ``asyncio.gather`` of ``n`` coroutines calling ``reply`` and validating."""

    async def one() -> Label:
        return Label.model_validate_json(reply(None))

    async def run() -> float:
        t0 = time.perf_counter()
        out = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - t0
        if len(out) != n or not isinstance(out[-1], Label):
            raise RuntimeError("baseline gave the wrong results")
        return elapsed

    return run


def asyncio_sleep_runner(n: int) -> Runner:
    """Baseline: ``asyncio.gather`` of ``n`` 50 ms sleeps."""

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.sleep(CALL_S) for _ in range(n)))
        return time.perf_counter() - t0

    return run


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``scale_llm`` group of ``bench/run.py`` (``--quick``: 1 000 calls)."""
    n = 1000 if sizes.rss < 10000 else 10000
    return asyncio.run(scale_llm_figures(n, sizes.reps, say))


def _ratio(
    s: dict[str, list[float]], *, baseline_what: str, goal: Goal, reps: int, n: int, **extra: Any
) -> dict[str, Any]:
    """Trellis over the asyncio baseline; the baseline and every repetition in ms."""
    return ratio_figure(
        s,
        "trellis",
        "asyncio",
        baseline_unit="ms",
        baseline_scale=1e3,
        baseline_what=baseline_what,
        goal=goal,
        reps=reps,
        n=n,
        run_ms=median(s["trellis"]) * 1e3,
        **extra,
        samples_ms=[x * 1e3 for x in s["trellis"]],
        baseline_samples_ms=[x * 1e3 for x in s["asyncio"]],
    )


async def scale_llm_figures(n: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    fast, slow = tl.FunctionModel(reply), tl.FunctionModel(slow_reply)
    flow = llm_flow()
    figures: dict[str, Any] = {}
    async with (
        tl.Engine(models={"fn": fast}) as fast_engine,
        tl.Engine(models={"fn": slow}) as slow_engine,
    ):
        say(f"scale_llm: {n} zero-latency structured calls")
        s = await interleave(
            reps,
            {
                "asyncio": asyncio_validate_runner(n),
                "trellis": trellis_runner(fast_engine, fast, flow, n),
            },
        )
        t, b = median(s["trellis"]), median(s["asyncio"])
        figures["llm_path_ratio_10000"] = _ratio(
            s,
            baseline_what=(
                f"asyncio.gather of {n} coroutines calling the same function and validating "
                "the same Pydantic model"
            ),
            goal=LLM_PATH_GOAL,
            reps=reps,
            n=n,
            us_per_call=t / n * US,
            baseline_us_per_call=b / n * US,
        )

        say(f"scale_llm: {n} structured calls in flight (50 ms each)")
        s = await interleave(
            reps,
            {
                "asyncio": asyncio_sleep_runner(n),
                "trellis": trellis_runner(slow_engine, slow, flow, n),
            },
        )
        figures["llm_inflight_ratio_10000"] = _ratio(
            s,
            baseline_what=f"asyncio.gather of the same {n} 50 ms sleeps",
            goal=LLM_INFLIGHT_GOAL,
            reps=reps,
            n=n,
        )
    return figures
