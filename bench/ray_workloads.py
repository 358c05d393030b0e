"""The Ray executor against the local engine, both measured in the same run.

- ``ray_io_batch_ratio``: 2,000 items of one 50 ms simulated call each (an async step that
  awaits 50 ms, as a provider call would), ``RayExecutor(workers=2)`` over the local
  engine, both with the same total concurrency (64: 32 on each Ray worker). Goal <= 1.2.
- ``ray_cpu_batch_speedup``: 400 items of 20 ms of pure-Python work each: the local engine
  (one process: the work is serial) over Ray with 2 workers. Goal >= 1.6.

Ray is started once for the group (``num_cpus=2``, loopback) and its workers are warm
(started by the warm-up repetition, kept for the others): the figures are the batch's cost,
not Ray's start-up. Neither side has a store (results come back to the driver).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Goal, figure, interleave, median
from ratelimit_workloads import AtLeast

import trellis as tl

IO_GOAL = Goal("<=", 1.2)
CPU_GOAL = AtLeast(1.6)
BENCH_DIR = Path(__file__).resolve().parent

io_flow = tl.Flow("ray_io")


@io_flow.step
async def call(x: int) -> int:
    await asyncio.sleep(0.05)
    return x


cpu_flow = tl.Flow("ray_cpu")


@cpu_flow.step
def work(x: int) -> int:
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:
        pass
    return x


class Batch:
    """``run_many`` of ``flow`` over ``n`` items on ``engine``; checks every item is done."""

    def __init__(self, engine: tl.Engine, flow: tl.Flow, n: int, concurrency: int) -> None:
        self.engine, self.flow, self.n, self.concurrency = engine, flow, n, concurrency

    async def __call__(self) -> float:
        items = [{"x": i} for i in range(self.n)]
        t0 = time.perf_counter()
        done = 0
        async for _, result in self.engine.run_many(self.flow, items, concurrency=self.concurrency):
            done += result.status == "done"
        elapsed = time.perf_counter() - t0
        if done != self.n:
            raise RuntimeError(f"{self.n - done} of {self.n} items did not finish")
        return elapsed


def _skipped(reason: str) -> dict[str, Any]:
    return {
        name: {
            "value": None,
            "unit": "x",
            "baseline": None,
            "baseline_unit": "s/batch",
            "baseline_what": "the local engine (not measured)",
            "ratio": None,
            "goal": str(goal),
            "meets_goal": None,
            "reps": 0,
            "n": n,
            "skipped": reason,
        }
        for name, goal, n in (
            ("ray_io_batch_ratio", IO_GOAL, 2000),
            ("ray_cpu_batch_speedup", CPU_GOAL, 400),
        )
    }


async def ray_figures(reps: int, quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    try:
        import ray
    except ImportError as exc:
        return _skipped(f"Ray is not installed ({exc}): pip install '.[ray]'")
    paths = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": paths}},
    )
    reps = min(reps, 3)
    io_n, cpu_n = (200, 40) if quick else (2000, 400)
    try:
        async with (
            tl.Engine() as local,
            tl.Engine(executor=tl.RayExecutor(workers=2)) as distributed,
        ):
            say(f"ray: {io_n} items of one 50 ms call, local vs Ray (2 workers)")
            s = await interleave(
                reps,
                {
                    "local": Batch(local, io_flow, io_n, 64),
                    "ray": Batch(distributed, io_flow, io_n, 64),
                },
            )
            io_local, io_ray = median(s["local"]), median(s["ray"])
            say(f"ray: {cpu_n} items of 20 ms pure-Python work, local vs Ray (2 workers)")
            s = await interleave(
                reps,
                {
                    "local": Batch(local, cpu_flow, cpu_n, 8),
                    "ray": Batch(distributed, cpu_flow, cpu_n, 8),
                },
            )
            cpu_local, cpu_ray = median(s["local"]), median(s["ray"])
    finally:
        ray.shutdown()
    return {
        "ray_io_batch_ratio": figure(
            value=io_ray / io_local,
            unit="x",
            baseline=io_local,
            baseline_unit="s/batch",
            baseline_what=f"the local engine, {io_n} items of a 50 ms call, concurrency 64",
            goal=IO_GOAL,
            reps=reps,
            n=io_n,
            ray_s=io_ray,
        ),
        "ray_cpu_batch_speedup": figure(
            value=cpu_local / cpu_ray,
            unit="x",
            baseline=cpu_local,
            baseline_unit="s/batch",
            baseline_what=f"the local engine, {cpu_n} items of 20 ms pure-Python work",
            goal=CPU_GOAL,
            reps=reps,
            n=cpu_n,
            ray_s=cpu_ray,
        ),
    }
