"""The ``stream`` group of ``bench/run.py``: the event stream's cost.

``stream_overhead_ratio``: a fan-out of simulated streaming calls (``sim:``) consumed
through ``engine.stream`` (every token delta and partial output, every step and attempt
event) over the same run by ``engine.run`` with nobody listening, interleaved on one
engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import workloads as wl
from common import Goal, Runner, interleave, median, ratio_figure

import trellis as tl

STREAM_GOAL = Goal("<=", 1.2)


def streamed_runner(engine: tl.Engine, flow: tl.Flow, n: int, counted: dict[str, int]) -> Runner:
    """``engine.stream`` of the sim fan-out, every event consumed; their number goes into
    ``counted["events"]``."""

    async def run() -> float:
        t0 = time.perf_counter()
        events = 0
        stream = engine.stream(flow, {"n": n})
        async for _ in stream:
            events += 1
        elapsed = time.perf_counter() - t0
        if not stream.result.ok or stream.result.usage.calls != n:
            raise RuntimeError(f"streamed sim fan-out failed: {stream.result.error}")
        counted["events"] = events
        return elapsed

    return run


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    n = sizes.sim
    say(f"fan-out of {n} simulated streaming calls through engine.stream vs engine.run")
    flow = wl.sim_fanout_flow()
    counted: dict[str, int] = {}
    async with tl.Engine(models={"small": wl.SIM_BINDING}) as engine:
        s = await interleave(
            sizes.reps,
            {
                "run": wl.trellis_sim_fanout_runner(engine, flow, n),
                "stream": streamed_runner(engine, flow, n, counted),
            },
        )
    return {
        "stream_overhead_ratio": ratio_figure(
            s,
            "stream",
            "run",
            baseline_what=f"the same fan-out of {n} sim calls by engine.run, nobody listening",
            goal=STREAM_GOAL,
            reps=sizes.reps,
            n=n,
            model=wl.SIM_BINDING,
            events_per_run=counted.get("events", 0),
            streamed_s=median(s["stream"]),
            samples_run_s=s["run"],
            samples_stream_s=s["stream"],
        )
    }
