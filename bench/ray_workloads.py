"""The Ray executor against the local engine, both measured in the same run.

- ``ray_io_batch_ratio``: 2,000 items of one 50 ms simulated call each (an async step that
  awaits 50 ms, as a provider call would), ``RayExecutor(workers=2)`` over the local
  engine, both with the same total concurrency (64: 32 on each Ray worker). Goal <= 1.2.
- ``ray_cpu_batch_speedup``: 400 items of 20 ms of pure-Python work each: the local engine
  (one process: the work is serial) over Ray with 2 workers. Goal >= 1.6.
- ``ray_shared_limit_ratio``: 600 calls (one ``llm.generate`` per item) over real HTTP
  against a mock server that enforces 1,200 requests a minute (a one-second burst bucket,
  200 ms latency, 429 when exceeded), from Ray with 2 workers whose binding says
  ``rpm=1200``: the two workers share the limit through the batch's limits actor. The
  figure is the achieved throughput (calls a minute over the batch's makespan) over the
  limit; the baseline is the ideal makespan (a full client burst at once, the rest at the
  limit's rate, plus one latency). Goal >= 0.9 *and* zero 429s (``meets_goal`` needs
  both). Full size is the real one (600 calls: about 30 s; one repetition), ``--quick``
  120 calls. Also reported: the 429 count and the actor round trips per call.

Ray is started once for the group (``num_cpus=2``, loopback) and its workers are warm
(started by the warm-up repetition, kept for the others): the figures are the batch's cost,
not Ray's start-up. Neither side has a store (results come back to the driver).

:func:`group` is the ``ray`` group of ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import AtLeast, Goal, figure, interleave, median, ratio_figure

import trellis as tl
from trellis.cluster.limits import RATE_BURST_S
from trellis.mockserver import MockServer

IO_GOAL = Goal("<=", 1.2)
CPU_GOAL = AtLeast(1.6)
SHARED_GOAL = AtLeast(0.9)
SHARED_RPM = 1200
SHARED_LATENCY_MS = 200.0
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


shared_flow = tl.Flow("ray_shared_limit")


@shared_flow.step
async def ask(x: int, llm: tl.LLM) -> str:
    return await llm.generate(f"Say something about item {x}.", output=str)


async def shared_limit(n: int) -> dict[str, Any]:
    """One cold batch of ``n`` calls from 2 Ray workers sharing ``rpm=SHARED_RPM``."""
    async with MockServer(
        rpm=SHARED_RPM, burst_s=1.0, latency_ms=SHARED_LATENCY_MS, seed=0
    ) as server:
        binding = f"openai:mock-model?base_url={server.openai_base_url}&rpm={SHARED_RPM}"
        executor = tl.RayExecutor(workers=2)
        async with tl.Engine(models={"default": binding}, executor=executor) as engine:
            executor.start(engine.recipe)  # workers warm: the figure is the batch's
            items = [{"x": i} for i in range(n)]
            t0 = time.perf_counter()
            done = 0
            async for _, result in engine.run_many(shared_flow, items, concurrency=64):
                done += result.status == "done"
            elapsed = time.perf_counter() - t0
            stats = dict(executor.rate_stats)
        counts = server.stats.copy()
    if done != n:
        raise RuntimeError(f"{n - done} of {n} rate-limited items did not finish")
    granted = sum(s[0] for s in stats.values())
    asked = sum(s[2] for s in stats.values())
    return {
        "elapsed": elapsed,
        "responses_429": counts.responses_429,
        "requests": counts.requests,
        "round_trips_per_call": asked / granted if granted else None,
    }


def ideal_shared_s(n: int) -> float:
    rate = SHARED_RPM / 60.0
    return max(0.0, n - rate * RATE_BURST_S) / rate + SHARED_LATENCY_MS / 1000.0


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
            ("ray_shared_limit_ratio", SHARED_GOAL, 600),
        )
    }


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``ray`` group (``--quick``, or any reduced sizes: 200 / 40 / 120 items)."""
    return await ray_figures(sizes.reps, sizes.chain < 1000, say)


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
            io = await interleave(
                reps,
                {
                    "local": Batch(local, io_flow, io_n, 64),
                    "ray": Batch(distributed, io_flow, io_n, 64),
                },
            )
            say(f"ray: {cpu_n} items of 20 ms pure-Python work, local vs Ray (2 workers)")
            s = await interleave(
                reps,
                {
                    "local": Batch(local, cpu_flow, cpu_n, 8),
                    "ray": Batch(distributed, cpu_flow, cpu_n, 8),
                },
            )
            cpu_local, cpu_ray = median(s["local"]), median(s["ray"])
        shared_n = 120 if quick else 600
        say(f"ray: {shared_n} calls at {SHARED_RPM} rpm shared by 2 Ray workers (mock server)")
        shared = await shared_limit(shared_n)
    finally:
        ray.shutdown()
    return {
        "ray_io_batch_ratio": ratio_figure(
            io,
            "ray",
            "local",
            baseline_unit="s/batch",
            baseline_what=f"the local engine, {io_n} items of a 50 ms call, concurrency 64",
            goal=IO_GOAL,
            reps=reps,
            n=io_n,
            ray_s=median(io["ray"]),
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
        "ray_shared_limit_ratio": _shared_figure(shared, shared_n),
    }


def _shared_figure(sample: dict[str, Any], n: int) -> dict[str, Any]:
    ideal = ideal_shared_s(n)
    throughput = n / sample["elapsed"] * 60.0
    record = figure(
        value=throughput / SHARED_RPM,
        unit="x",
        baseline=ideal,
        baseline_unit="s/batch",
        baseline_what=(
            f"the ideal makespan of {n} calls at {SHARED_RPM} rpm (a {RATE_BURST_S:g} s "
            f"burst, then the rate, plus {SHARED_LATENCY_MS:g} ms)"
        ),
        goal=SHARED_GOAL,
        reps=1,
        n=n,
        makespan_s=sample["elapsed"],
        throughput_vs_ideal=ideal / sample["elapsed"],
        responses_429=sample["responses_429"],
        server_requests=sample["requests"],
        actor_round_trips_per_call=sample["round_trips_per_call"],
    )
    record["meets_goal"] = bool(record["meets_goal"]) and sample["responses_429"] == 0
    record["goal"] = f"{SHARED_GOAL} with zero 429s"
    return record
