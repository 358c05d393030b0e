"""Trellis benchmark suite: ``python bench/run.py --out bench/results.json [--quick]``.

Every figure is the median of several repetitions, measured in the same process run as
its baseline (repetitions interleaved, order rotated), and reported with that baseline.
See ``bench/README.md`` for what each figure measures and its goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # running as a script puts it there; importing may not
    sys.path.insert(0, str(BENCH_DIR))

import durable_workloads as dwl  # noqa: E402
import eval_workloads as ewl  # noqa: E402
import langgraph_workloads as lgw  # noqa: E402
import outage_workloads as owl  # noqa: E402
import postgres_workloads as pgw  # noqa: E402
import ratelimit_workloads as rlw  # noqa: E402
import ray_workloads as rwl  # noqa: E402
import ui_workloads as uiw  # noqa: E402
import workloads as wl  # noqa: E402
from common import Goal, figure, interleave, median  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import trellis as tl  # noqa: E402

US = 1e6
CHAIN_GOAL = Goal("<=", 25.0)
FANOUT_GOAL = Goal("<=", 1.5)
LIMITED_GOAL = Goal("<=", 1.05)
RSS_GOAL = Goal("<", 100.0)
DURABLE_GOAL = Goal("<=", 100.0)
DURABLE_RATIO_GOAL = Goal("<=", 1.5)
BYTES_GOAL = Goal("<", 1024.0)
RESUME_GOAL = Goal("<", 50.0)
RATELIMITED_GOAL = rlw.AtLeast(0.9)
RATELIMITED_429_GOAL = Goal("<=", 0.0)
ITEMS_LOST_GOAL = Goal("<=", 0.0)
OUTAGE_REQUESTS_GOAL = Goal("<=", 0.5)
EVAL_GOAL = rlw.AtLeast(0.8)
STREAM_GOAL = Goal("<=", 1.2)


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes and repetition counts. Figure names keep the full-size numbers
    (``fanout_10000_...``); each figure records the ``n`` it actually used."""

    chain: int = 1000
    fanout_small: int = 1000
    fanout_large: int = 10000
    limited: int = 1000
    limit: int = 50
    sim: int = 1000
    rss: int = 10000
    durable: int = 1000  # the durable chain and the resumed run (per-step units)
    ratelimited: int = 200  # calls against the rate-limited mock server
    ratelimited_reps: int = 3  # ~10 s a repetition (the server admits 20 requests/s)
    reps: int = 5  # fan-outs, limited run, LangGraph, peak RSS
    chain_reps: int = 15  # the chains take milliseconds: more repetitions, steadier median
    langgraph_limit_s: float = 60.0  # a LangGraph run slower than this is re-run smaller
    outage: int = 200  # feedback-triage items in the outage / flaky batches
    outage_reps: int = 3  # ~6 s a repetition
    outage_s: float = 3.0
    outage_start_s: float = 1.5  # after the batch's first request: mid-batch
    outage_concurrency: int = 16
    eval_items: int = 10000  # replayed items of the eval throughput figure
    eval_reps: int = 1  # ~45 s a repetition at 10 000 items (run + eval of 3 variants)
    ui_runs: int = 20000  # recorded runs behind the UI's runs page
    ui_steps: int = 1000  # steps of the run the UI's run page draws


FULL = Sizes()
QUICK = Sizes(
    chain=100,
    fanout_small=100,
    fanout_large=1000,
    limited=100,
    sim=100,
    rss=1000,
    durable=200,
    ratelimited=40,
    ratelimited_reps=1,
    reps=2,
    chain_reps=2,
    outage=30,
    outage_reps=1,
    outage_s=1.0,
    outage_start_s=0.5,
    eval_items=200,
    eval_reps=2,
    ui_runs=2000,
    ui_steps=100,
)


# -- Trellis figures ------------------------------------------------------------------------


async def trellis_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with tl.Engine() as engine:
        say("chain (sync steps)")
        n = sizes.chain
        functions = wl.chain_functions(n, is_async=False)
        flow = wl.chain_flow(functions)
        s = await interleave(
            sizes.chain_reps,
            {
                "direct": wl.direct_chain_runner(functions),
                "trellis": wl.trellis_chain_runner(engine, flow, n),
            },
        )
        figures["chain_overhead_us_per_step"] = figure(
            value=median(s["trellis"]) / n * US,
            unit="us/step",
            baseline=median(s["direct"]) / n * US,
            baseline_unit="us/step",
            baseline_what="the same functions called directly in a loop",
            goal=CHAIN_GOAL,
            reps=sizes.chain_reps,
            n=n,
            run_ms=median(s["trellis"]) * 1e3,
            samples_us_per_step=[x / n * US for x in s["trellis"]],
        )

        say("chain (async steps)")
        afunctions = wl.chain_functions(n, is_async=True)
        aflow = wl.chain_flow(afunctions)
        s = await interleave(
            sizes.chain_reps,
            {
                "direct": wl.direct_async_chain_runner(afunctions),
                "trellis": wl.trellis_chain_runner(engine, aflow, n),
            },
        )
        figures["chain_overhead_us_per_step_async"] = figure(
            value=median(s["trellis"]) / n * US,
            unit="us/step",
            baseline=median(s["direct"]) / n * US,
            baseline_unit="us/step",
            baseline_what="the same coroutine functions awaited directly in a loop",
            goal=None,
            reps=sizes.chain_reps,
            n=n,
            run_ms=median(s["trellis"]) * 1e3,
            samples_us_per_step=[x / n * US for x in s["trellis"]],
        )

        fanout = wl.fanout_flow()
        per_branch: dict[str, tuple[float, float]] = {}
        for key, n in (("1000", sizes.fanout_small), ("10000", sizes.fanout_large)):
            say(f"fan-out of {n}")
            s = await interleave(
                sizes.reps,
                {
                    "asyncio": wl.asyncio_gather_runner(n),
                    "trellis": wl.trellis_fanout_runner(engine, fanout, n),
                },
            )
            t, b = median(s["trellis"]), median(s["asyncio"])
            figures[f"fanout_{key}_ratio_vs_asyncio"] = figure(
                value=t / b,
                unit="x",
                baseline=b,
                baseline_unit="s",
                baseline_what=f"asyncio.gather of {n} sleep(0.05)",
                goal=FANOUT_GOAL,
                reps=sizes.reps,
                n=n,
                makespan_s=t,
                samples_ratio=[x / y for x, y in zip(s["trellis"], s["asyncio"], strict=True)],
            )
            t_branch = (t - wl.CALL_S) / n * US
            b_branch = (b - wl.CALL_S) / n * US
            per_branch[key] = (t_branch, b_branch)
            figures[f"fanout_{key}_us_per_branch"] = figure(
                value=t_branch,
                unit="us/branch",
                baseline=b_branch,
                baseline_unit="us/branch",
                baseline_what="asyncio.gather: (makespan - 50 ms) / n",
                goal=None,
                reps=sizes.reps,
                n=n,
                overhead_vs_asyncio_us_per_branch=(t - b) / n * US,
            )
        (t1, b1), (t2, b2) = per_branch["1000"], per_branch["10000"]
        figures["fanout_branch_cost_growth"] = figure(
            value=t2 / t1,
            unit="x",
            baseline=b2 / b1,
            baseline_unit="x",
            baseline_what="the same growth for asyncio.gather",
            goal=None,
            reps=sizes.reps,
            n=sizes.fanout_large,
            note=(
                f"us/branch at n={sizes.fanout_large} divided by us/branch at "
                f"n={sizes.fanout_small}; ~1 means per-branch cost does not grow with width"
            ),
        )

        say(f"limited: {sizes.limited} calls, concurrency={sizes.limit}")
        n, limit = sizes.limited, sizes.limit
        ideal = n / limit * wl.CALL_S
        s = await interleave(
            sizes.reps,
            {
                "asyncio": wl.asyncio_semaphore_runner(n, limit),
                "trellis": wl.trellis_fanout_runner(engine, wl.fanout_flow(concurrency=limit), n),
            },
        )
        t, b = median(s["trellis"]), median(s["asyncio"])
        figures["limited_ratio_vs_ideal"] = figure(
            value=t / ideal,
            unit="x",
            baseline=ideal,
            baseline_unit="s",
            baseline_what=f"ideal makespan {n}/{limit} x 50 ms",
            goal=LIMITED_GOAL,
            reps=sizes.reps,
            n=n,
            concurrency=limit,
            makespan_s=t,
            asyncio_semaphore_s=b,
            asyncio_semaphore_ratio_vs_ideal=b / ideal,
        )

    say(f"fan-out of {sizes.sim} simulator calls")
    n = sizes.sim
    async with tl.Engine(models={"small": wl.SIM_BINDING}) as sim_engine:
        s = await interleave(
            sizes.reps,
            {
                "asyncio": wl.asyncio_gather_runner(n),
                "trellis": wl.trellis_sim_fanout_runner(sim_engine, wl.sim_fanout_flow(), n),
            },
        )
    t, b = median(s["trellis"]), median(s["asyncio"])
    figures["sim_fanout_1000_ratio_vs_asyncio"] = figure(
        value=t / b,
        unit="x",
        baseline=b,
        baseline_unit="s",
        baseline_what=f"asyncio.gather of {n} sleep(0.05)",
        goal=None,
        reps=sizes.reps,
        n=n,
        model=wl.SIM_BINDING,
        makespan_s=t,
        overhead_vs_asyncio_us_per_call=(t - b) / n * US,
    )
    return figures


# -- durable runs (SQLite store) ------------------------------------------------------------


async def durable_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """The chain checkpointed in a SQLite store vs plain sqlite3, its bytes, its resume.
    Every repetition uses a fresh database file (see ``bench/durable_workloads.py``)."""
    figures: dict[str, Any] = {}
    n, reps = sizes.durable, sizes.chain_reps
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        work = dwl.WorkDir(tmp)
        where = {
            "db_files": "a fresh database file per repetition (fresh run id too)",
            "db_dir": tmp,
            "filesystem": dwl.filesystem(tmp),
            "sqlite_version": sqlite3.sqlite_version,
            "synchronous": "NORMAL",
        }

        say(f"durable chain of {n} (SQLite store) vs plain sqlite3 inserts")
        functions = wl.chain_functions(n, is_async=False)
        flow = wl.chain_flow(functions)
        durable = dwl.TrellisDurableChain(work, flow, n)
        plain = dwl.PlainSQLiteChain(work, functions)
        async with tl.Engine() as engine:
            s = await interleave(
                reps,
                {
                    "sqlite": plain,
                    "durable": durable,
                    "memory": wl.trellis_chain_runner(engine, flow, n),
                },
            )
        d, p, m = (median(s[k]) / n * US for k in ("durable", "sqlite", "memory"))
        figures["durable_chain_overhead_us_per_step"] = figure(
            value=d,
            unit="us/step",
            baseline=p,
            baseline_unit="us/step",
            baseline_what=(
                "plain sqlite3: the same functions in a loop, one INSERT + commit per output"
            ),
            goal=DURABLE_GOAL,
            reps=reps,
            n=n,
            run_ms=median(s["durable"]) * 1e3,
            in_memory_us_per_step=m,
            store_cost_us_per_step=d - m,
            samples_us_per_step=[x / n * US for x in s["durable"]],
            baseline_samples_us_per_step=[x / n * US for x in s["sqlite"]],
            **where,
            **durable.settings,
        )
        figures["durable_ratio_vs_sqlite"] = figure(
            value=d / p,
            unit="x",
            baseline=p,
            baseline_unit="us/insert",
            baseline_what="plain sqlite3 INSERT + commit per step (WAL, synchronous=NORMAL)",
            goal=DURABLE_RATIO_GOAL,
            reps=reps,
            n=n,
            samples_ratio=[x / y for x, y in zip(s["durable"], s["sqlite"], strict=True)],
        )
        tb, pb = dwl.last(durable.bytes_per_step, reps), dwl.last(plain.bytes_per_step, reps)
        figures["checkpoint_bytes_per_step"] = figure(
            value=median(tb),
            unit="B/step",
            baseline=median(pb),
            baseline_unit="B/step",
            baseline_what="the plain sqlite3 table (run_id, step, output JSON) per row",
            goal=BYTES_GOAL,
            reps=reps,
            n=n,
            method=(
                "database bytes after the run minus before, WAL checkpointed "
                "(wal_checkpoint(TRUNCATE)) before both; divided by n"
            ),
            avg_row_bytes=median(dwl.last(durable.row_bytes_per_step, reps)),
            baseline_avg_row_bytes=median(dwl.last(plain.row_bytes_per_step, reps)),
            row_bytes_what="SUM(LENGTH(CAST(col AS BLOB))) over every column / rows",
            samples_b_per_step=tb,
            **durable.settings,
        )

        say(f"resume of a {n}-step run with {n - 1} steps complete")
        incomplete = dwl.IncompleteRun(work, n)
        resume = dwl.TrellisResume(incomplete)
        s = await interleave(reps, {"select": dwl.PlainSQLiteLoad(incomplete), "resume": resume})
        r, b = median(s["resume"]), median(s["select"])
        figures["resume_overhead_ms"] = figure(
            value=r * 1e3,
            unit="ms",
            baseline=b * 1e3,
            baseline_unit="ms",
            baseline_what=f"plain sqlite3 SELECT of the run's {n} step rows (fetchall)",
            goal=RESUME_GOAL,
            reps=reps,
            n=n,
            restored_steps=n - 1,
            executed_steps=1,
            us_per_restored_step=r / (n - 1) * US,
            open_store_ms=median(dwl.last(resume.open_store_s, reps)) * 1e3,
            first_run_ms=median(incomplete.first_run_s) * 1e3,
            samples_ms=[x * 1e3 for x in s["resume"]],
            **where,
        )
    return figures


# -- trellis eval over replayed answers -------------------------------------------------------


async def eval_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """``trellis eval`` (3 variants) vs ``trellis run`` of the same flow and items."""
    n, reps = sizes.eval_items, sizes.eval_reps
    say(f"eval of 3 variants over {n} replayed items vs one batch run of them")
    work = ewl.Workload(n)
    try:
        s = await interleave(reps, {"run": work.run_batch, "eval": work.run_eval}, warmup=0)
    finally:
        work.close()
    run_rate = n / median(s["run"])
    eval_rate = n * ewl.VARIANTS / median(s["eval"])
    return {
        "eval_throughput_ratio": figure(
            value=eval_rate / run_rate,
            unit="x",
            baseline=run_rate,
            baseline_unit="items/s",
            baseline_what=(
                "trellis run's batch (run_many, SQLite store) of the same flow and items; "
                "value = eval item-runs per second (items x 3 variants) / that"
            ),
            goal=EVAL_GOAL,
            reps=reps,
            n=n,
            eval_items_per_s=eval_rate,
            run_items_per_s=run_rate,
            samples_run_s=s["run"],
            samples_eval_s=s["eval"],
            **work.settings(),
        )
    }


# -- the event stream ------------------------------------------------------------------------


async def stream_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """A fan-out of simulated streaming calls consumed through ``engine.stream`` (every
    token delta and partial output, every step and attempt event) vs the same run with
    nobody listening."""
    n = sizes.sim
    say(f"fan-out of {n} simulated streaming calls through engine.stream vs engine.run")
    flow = wl.sim_fanout_flow()
    counted: dict[str, int] = {}
    async with tl.Engine(models={"small": wl.SIM_BINDING}) as engine:

        async def plain() -> float:
            t0 = time.perf_counter()
            result = await engine.run(flow, {"n": n})
            elapsed = time.perf_counter() - t0
            if not result.ok or result.usage.calls != n:
                raise RuntimeError(f"sim fan-out run failed: {result.error}")
            return elapsed

        async def streamed() -> float:
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

        s = await interleave(sizes.reps, {"run": plain, "stream": streamed})
    t, b = median(s["stream"]), median(s["run"])
    return {
        "stream_overhead_ratio": figure(
            value=t / b,
            unit="x",
            baseline=b,
            baseline_unit="s",
            baseline_what=f"the same fan-out of {n} sim calls by engine.run, nobody listening",
            goal=STREAM_GOAL,
            reps=sizes.reps,
            n=n,
            model=wl.SIM_BINDING,
            events_per_run=counted.get("events", 0),
            streamed_s=t,
            samples_run_s=s["run"],
            samples_stream_s=s["stream"],
        )
    }


# -- rate limits over HTTP (in-process mock server) ------------------------------------------


async def ratelimit_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """A batch of ``llm.generate`` calls over HTTP against a mock server limited to
    1200 requests/min (1 s burst, 200 ms latency): with the client ``rpm`` option, and
    without it (relying on retry-after and headers alone). See
    ``bench/ratelimit_workloads.py``; every repetition is cold (fresh server and engine)."""
    n, reps, limit = sizes.ratelimited, sizes.ratelimited_reps, rlw.LIMIT_RPM
    variants = [
        rlw.Variant("client_rpm", client_rpm=limit),
        rlw.Variant("no_rpm_patient", client_rpm=None, retry=rlw.PATIENT_POLICY),
        rlw.Variant("no_rpm_default", client_rpm=None),
    ]
    samples: dict[str, list[rlw.Sample]] = {v.name: [] for v in variants}
    for rep in range(reps):
        shift = rep % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            say(f"rate-limited: {n} calls at {limit} rpm, {variant.name} (rep {rep + 1}/{reps})")
            samples[variant.name].append(await rlw.run_once(n, variant))
    rpm, patient, default = (samples[v.name] for v in variants)
    for s in rpm + patient:
        if s.failed:
            raise RuntimeError(f"rate-limited run lost {s.failed} of {n} calls")
    ideal = rlw.ideal_makespan_s(n, limit, rlw.BURST_S, rlw.LATENCY_MS)
    server = {
        "server": (
            f"MockServer(rpm={limit}, burst_s={rlw.BURST_S:g}, "
            f"latency_ms={rlw.LATENCY_MS:g}) on 127.0.0.1, same event loop"
        ),
        "flow": "mapped step, unlimited concurrency, one llm.generate(output=Label) per item",
        "ideal_makespan_s": ideal,
        "ideal_ratio": n / ideal * 60.0 / limit,
    }

    def ratios(ss: list[rlw.Sample]) -> list[float]:
        return [s.ratio(limit) for s in ss]

    def counts(ss: list[rlw.Sample]) -> list[float]:
        return [float(s.responses_429) for s in ss]

    makespan = median([s.makespan_s for s in rpm])
    return {
        "ratelimited_throughput_ratio": figure(
            value=median(ratios(rpm)),
            unit="x",
            baseline=float(limit),
            baseline_unit="req/min",
            baseline_what="the server's limit",
            goal=RATELIMITED_GOAL,
            reps=reps,
            n=n,
            binding=f"openai:mock-model?base_url=<mock>/v1&rpm={limit}",
            throughput_per_min=median([s.throughput_per_min for s in rpm]),
            makespan_s=makespan,
            makespan_vs_ideal=makespan / ideal,
            responses_429=median(counts(rpm)),
            samples_ratio=ratios(rpm),
            **server,
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
        "ratelimited_no_rpm_throughput_ratio": figure(
            value=median(ratios(patient)),
            unit="x",
            baseline=float(limit),
            baseline_unit="req/min",
            baseline_what="the server's limit",
            goal=None,
            reps=reps,
            n=n,
            binding="openai:mock-model?base_url=<mock>/v1 (no rpm)",
            retry_policy=f"RetryPolicy(max_attempts={rlw.PATIENT_POLICY.max_attempts})",
            responses_429=median(counts(patient)),
            responses_429_per_call=median(counts(patient)) / n,
            attempts=median([float(s.attempts) for s in patient]),
            makespan_s=median([s.makespan_s for s in patient]),
            retry_wait_s=median([s.wait_s for s in patient]),
            samples_ratio=ratios(patient),
            **server,
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
            binding="openai:mock-model?base_url=<mock>/v1 (no rpm)",
            retry_policy="RetryPolicy() (default: retry_deadline=120 s, no attempt cap)",
            done=median([float(s.done) for s in default]),
            failed=median([float(s.failed) for s in default]),
            responses_429=median(counts(default)),
            done_throughput_ratio=median(ratios(default)),
            makespan_s=median([s.makespan_s for s in default]),
            samples_done=[s.done for s in default],
        ),
    }


# -- outages over HTTP (mock server on its own thread) ------------------------------------------


async def outage_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """The feedback-triage batch with the default ``RetryPolicy`` and no fallback model,
    while the provider fails: a mid-batch outage (every request 503) and 10% random faults.
    The baseline is the same batch with the old attempt-count defaults and no circuit
    breaker. See ``bench/outage_workloads.py``; every repetition is cold."""
    n, reps, c = sizes.outage, sizes.outage_reps, sizes.outage_concurrency
    timing = {"outage_s": sizes.outage_s, "start_s": sizes.outage_start_s, "concurrency": c}
    samples: dict[tuple[str, bool], list[owl.Sample]] = {}
    for rep in range(reps):
        for scenario in ("outage", "flaky"):
            for baseline in (False, True) if rep == 0 else (False,):
                label = "old defaults" if baseline else "defaults"
                say(f"{scenario}: {n} feedback-triage items, {label} (rep {rep + 1}/{reps})")
                sample = await owl.run_once(n, scenario, baseline=baseline, seed=rep, **timing)
                samples.setdefault((scenario, baseline), []).append(sample)
    outage, old_outage = samples[("outage", False)], samples[("outage", True)][0]
    flaky, old_flaky = samples[("flaky", False)], samples[("flaky", True)][0]
    setup = {
        "server": (
            f"MockServerThread(latency_ms={owl.LATENCY_MS!r}) on 127.0.0.1, its own thread"
        ),
        "flow": "examples/feedback_triage.py, both roles on one openai: model",
        "batch": f"run_many(concurrency={c}), RetryPolicy() defaults, no fallback model",
        "baseline_policy": "RetryPolicy(max_attempts=2, retry_deadline=None), no breaker",
    }
    window = f"every request 503 for {sizes.outage_s:g} s from {sizes.outage_start_s:g} s"
    return {
        "outage_items_lost": figure(
            value=median([float(s.lost) for s in outage]),
            unit="items",
            baseline=float(old_outage.lost),
            baseline_unit="items",
            baseline_what="items lost with the old attempt-count defaults (one run)",
            goal=ITEMS_LOST_GOAL,
            reps=reps,
            n=n,
            outage=window,
            samples_lost=[s.lost for s in outage],
            makespan_s=median([s.makespan_s for s in outage]),
            baseline_makespan_s=old_outage.makespan_s,
            **setup,
        ),
        "outage_requests_per_waiting_call": figure(
            value=median([s.requests_per_waiting_call for s in outage]),
            unit="req/call",
            baseline=old_outage.outage_requests / c,
            baseline_unit="req/call",
            baseline_what=(
                "requests received during the outage per item in flight, old defaults"
            ),
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
        "flaky_items_lost": figure(
            value=median([float(s.lost) for s in flaky]),
            unit="items",
            baseline=float(old_flaky.lost),
            baseline_unit="items",
            baseline_what="items lost with the old attempt-count defaults (one run)",
            goal=ITEMS_LOST_GOAL,
            reps=reps,
            n=n,
            faults="10% of requests: 429 (retry-after 1 s), 500, malformed JSON",
            samples_lost=[s.lost for s in flaky],
            failed_attempts=median([float(s.failed_attempts) for s in flaky]),
            makespan_s=median([s.makespan_s for s in flaky]),
            baseline_makespan_s=old_flaky.makespan_s,
            **setup,
        ),
    }


# -- peak RSS (fresh subprocesses) ------------------------------------------------------------


def rss_probe(mode: str, n: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "rss_probe.py"), mode, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rss_probe.py {mode} {n} failed:\n{proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def rss_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    n = sizes.rss
    say(f"peak RSS: fan-out of {n} in fresh subprocesses")
    probes: dict[str, list[dict[str, Any]]] = {"asyncio": [], "trellis": []}
    for rep in range(sizes.reps):
        order = ["asyncio", "trellis"] if rep % 2 == 0 else ["trellis", "asyncio"]
        for mode in order:
            probes[mode].append(rss_probe(mode, n))
    peak = {mode: [float(p["peak_rss_mb"]) for p in ps] for mode, ps in probes.items()}
    t, b = median(peak["trellis"]), median(peak["asyncio"])
    exact = all(p["vm_hwm_mb"] is not None for ps in probes.values() for p in ps)
    return {
        "peak_rss_mb_fanout_10000": figure(
            value=t,
            unit="MB",
            baseline=b,
            baseline_unit="MB",
            baseline_what=f"a subprocess that imports trellis and gathers {n} sleeps",
            goal=RSS_GOAL,
            reps=sizes.reps,
            n=n,
            increment_mb=t - b,
            method=(
                "VmHWM of the probe process (/proc/self/status)"
                if exact
                else "ru_maxrss (may include the parent's RSS, inherited across exec)"
            ),
            samples_mb=peak["trellis"],
            ru_maxrss_mb_median=median([float(p["ru_maxrss_mb"]) for p in probes["trellis"]]),
        )
    }


# -- LangGraph side by side -----------------------------------------------------------------


async def _guarded(
    name: str, results: dict[str, Any], work: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    """A LangGraph failure is recorded, never raised: the Trellis figures stand alone."""
    try:
        results[name] = await work()
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc(file=sys.stderr)


async def langgraph_figures(sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    version = lgw.version()
    if version is None:
        return {"available": False, "reason": "langgraph is not importable"}
    out: dict[str, Any] = {
        "available": True,
        "version": version,
        "note": (
            "each workload runs Trellis, LangGraph and the baseline interleaved in one "
            "loop; 'trellis' is the Trellis figure from that same measurement"
        ),
    }
    figures: dict[str, Any] = {}
    out["figures"] = figures

    async def chain() -> dict[str, Any]:
        n = sizes.chain
        say(f"LangGraph chain of {n}")
        nodes = lgw.chain_nodes(n)
        graph = lgw.chain_graph(nodes)
        functions = wl.chain_functions(n, is_async=False)
        async with tl.Engine() as engine:
            s = await interleave(
                sizes.reps,
                {
                    "direct": lgw.direct_chain_runner(nodes),
                    "trellis": wl.trellis_chain_runner(engine, wl.chain_flow(functions), n),
                    "langgraph": lgw.chain_runner(graph, n),
                },
            )
        lg, tr = median(s["langgraph"]) / n * US, median(s["trellis"]) / n * US
        return figure(
            value=lg,
            unit="us/step",
            baseline=median(s["direct"]) / n * US,
            baseline_unit="us/step",
            baseline_what="the same node functions applied directly in a loop",
            goal=CHAIN_GOAL,
            reps=sizes.reps,
            n=n,
            trellis=tr,
            ratio_trellis_over_langgraph=tr / lg,
            samples_s=dict(s),
        )

    async def fanout(n: int) -> dict[str, Any]:
        note = None
        graph = lgw.fanout_graph()
        say(f"LangGraph fan-out of {n}")
        try:  # the LangGraph warm-up doubles as a practicality probe
            await lgw.fanout_runner(graph, n, limit_s=sizes.langgraph_limit_s)()
        except TimeoutError:
            smaller = max(1, n // 10)
            note = (
                f"LangGraph fan-out of {n} took over {sizes.langgraph_limit_s:g} s; "
                f"measured at n={smaller} instead"
            )
            say(note)
            n = smaller
            await lgw.fanout_runner(graph, n)()
        async with tl.Engine() as engine:
            trellis = wl.trellis_fanout_runner(engine, wl.fanout_flow(), n)
            baseline = wl.asyncio_gather_runner(n)
            await trellis()
            await baseline()
            s = await interleave(
                sizes.reps,
                {"asyncio": baseline, "trellis": trellis, "langgraph": lgw.fanout_runner(graph, n)},
                warmup=0,
            )
        b = median(s["asyncio"])
        lg, tr = median(s["langgraph"]) / b, median(s["trellis"]) / b
        return figure(
            value=lg,
            unit="x",
            baseline=b,
            baseline_unit="s",
            baseline_what=f"asyncio.gather of {n} sleep(0.05)",
            goal=FANOUT_GOAL,
            reps=sizes.reps,
            n=n,
            makespan_s=median(s["langgraph"]),
            trellis=tr,
            trellis_makespan_s=median(s["trellis"]),
            ratio_trellis_over_langgraph=tr / lg,
            samples_s=dict(s),
            **({"note": note} if note else {}),
        )

    async def limited() -> dict[str, Any]:
        n, limit = sizes.limited, sizes.limit
        say(f"LangGraph limited: {n} calls, max_concurrency={limit}")
        ideal = n / limit * wl.CALL_S
        graph = lgw.fanout_graph()
        async with tl.Engine() as engine:
            s = await interleave(
                sizes.reps,
                {
                    "trellis": wl.trellis_fanout_runner(
                        engine, wl.fanout_flow(concurrency=limit), n
                    ),
                    "langgraph": lgw.fanout_runner(
                        graph, n, max_concurrency=limit, limit_s=sizes.langgraph_limit_s
                    ),
                },
            )
        lg, tr = median(s["langgraph"]) / ideal, median(s["trellis"]) / ideal
        return figure(
            value=lg,
            unit="x",
            baseline=ideal,
            baseline_unit="s",
            baseline_what=f"ideal makespan {n}/{limit} x 50 ms",
            goal=LIMITED_GOAL,
            reps=sizes.reps,
            n=n,
            concurrency=limit,
            makespan_s=median(s["langgraph"]),
            trellis=tr,
            ratio_trellis_over_langgraph=tr / lg,
            samples_s=dict(s),
        )

    await _guarded("chain_overhead_us_per_step", figures, chain)
    await _guarded("fanout_1000_ratio_vs_asyncio", figures, lambda: fanout(sizes.fanout_small))
    await _guarded("fanout_10000_ratio_vs_asyncio", figures, lambda: fanout(sizes.fanout_large))
    await _guarded("limited_ratio_vs_ideal", figures, limited)

    async def durable() -> dict[str, dict[str, Any]]:
        n = sizes.durable
        say(f"LangGraph SqliteSaver chain of {n}")
        with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
            work = dwl.WorkDir(tmp)
            functions = wl.chain_functions(n, is_async=False)
            trellis = dwl.TrellisDurableChain(work, wl.chain_flow(functions), n)
            plain = dwl.PlainSQLiteChain(work, functions)
            langgraph = dwl.LangGraphDurableChain(work, lgw.chain_nodes(n))
            s = await interleave(
                sizes.reps, {"sqlite": plain, "trellis": trellis, "langgraph": langgraph}
            )
        lg, tr, p = (median(s[k]) / n * US for k in ("langgraph", "trellis", "sqlite"))
        mode = {
            "durability": langgraph.durability,
            "synchronous": "NORMAL",
            **({"note": langgraph.note} if langgraph.note else {}),
        }
        lgb = median(dwl.last(langgraph.bytes_per_step, sizes.reps))
        trb = median(dwl.last(trellis.bytes_per_step, sizes.reps))
        return {
            "durable_chain_overhead_us_per_step": figure(
                value=lg,
                unit="us/step",
                baseline=p,
                baseline_unit="us/step",
                baseline_what="plain sqlite3 INSERT + commit per step",
                goal=DURABLE_GOAL,
                reps=sizes.reps,
                n=n,
                trellis=tr,
                ratio_trellis_over_langgraph=tr / lg,
                samples_s=dict(s),
                **mode,
            ),
            "checkpoint_bytes_per_step": figure(
                value=lgb,
                unit="B/step",
                baseline=median(dwl.last(plain.bytes_per_step, sizes.reps)),
                baseline_unit="B/step",
                baseline_what="the plain sqlite3 table per row",
                goal=BYTES_GOAL,
                reps=sizes.reps,
                n=n,
                trellis=trb,
                ratio_trellis_over_langgraph=trb / lgb,
                stored_bytes_per_step=median(dwl.last(langgraph.row_bytes_per_step, sizes.reps)),
                trellis_avg_row_bytes=median(dwl.last(trellis.row_bytes_per_step, sizes.reps)),
                **mode,
            ),
        }

    checkpointer = dwl.langgraph_checkpointer_version()
    out["checkpointer"] = checkpointer
    if checkpointer is None:
        out["checkpointer_note"] = (
            "langgraph-checkpoint-sqlite is not installed: no durable-run comparison"
        )
    else:
        try:
            figures.update(await durable())
        except Exception as exc:  # recorded, never raised (like _guarded, for two figures)
            traceback.print_exc(file=sys.stderr)
            for name in ("durable_chain_overhead_us_per_step", "checkpoint_bytes_per_step"):
                figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# -- report -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    def version_of(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "trellis": tl.__version__,
        "pydantic": version_of("pydantic"),
        "langgraph": version_of("langgraph"),
        "langgraph_checkpoint_sqlite": version_of("langgraph-checkpoint-sqlite"),
        "sqlite": sqlite3.sqlite_version,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.3f}"
    return f"{x:.3g}"


def _met(fig: dict[str, Any]) -> str:
    met = fig.get("meets_goal")
    return "—" if met is None else "[green]yes[/]" if met else "[bold red]NO[/]"


def print_report(console: Console, report: dict[str, Any]) -> None:
    quick = " (--quick: reduced sizes, figures are not meaningful)" if report["quick"] else ""
    m = report["machine"]
    table = Table(
        title=f"Trellis benchmarks{quick}",
        caption=(
            f"Python {m['python']}, {m['usable_cpus']} usable CPU(s); medians; "
            "ratio = value / baseline when both share a unit"
        ),
    )
    # A figure's name is what a reader (and the bench smoke test) looks up, so it is never
    # wrapped or cut: the other columns give way on a narrow console.
    names = report["figures"]
    table.add_column("figure", no_wrap=True, min_width=max(map(len, names), default=6))
    for col in ("n", "value", "unit", "baseline", "ratio", "goal", "met", "reps"):
        table.add_column(col, justify="left" if col in ("unit", "goal") else "right")
    for name, fig in report["figures"].items():
        table.add_row(
            name,
            str(fig["n"]),
            _fmt(fig["value"]),
            fig["unit"],
            f"{_fmt(fig['baseline'])} {fig['baseline_unit']}",
            _fmt(fig["ratio"]),
            fig["goal"],
            _met(fig),
            str(fig["reps"]),
        )
    console.print(table)

    lg = report["langgraph"]
    if not lg.get("available"):
        console.print(f"LangGraph: not measured ({lg.get('reason', 'skipped')}).")
        return
    side = Table(title=f"Trellis vs LangGraph {lg['version']} (same workloads, same process)")
    for col in ("workload", "n", "unit", "Trellis", "LangGraph", "Trellis/LangGraph", "baseline"):
        side.add_column(col, justify="left" if col in ("workload", "unit") else "right")
    notes: list[str] = []
    for name, fig in lg["figures"].items():
        if "error" in fig:
            side.add_row(name, "", "", "", "[red]error[/]", "", "")
            notes.append(f"{name}: {fig['error']}")
            continue
        side.add_row(
            name,
            str(fig["n"]),
            fig["unit"],
            _fmt(fig["trellis"]),
            _fmt(fig["value"]),
            _fmt(fig["ratio_trellis_over_langgraph"]),
            f"{_fmt(fig['baseline'])} {fig['baseline_unit']}",
        )
        if "note" in fig:
            notes.append(f"{name}: {fig['note']}")
    console.print(side)
    for note in notes:
        console.print(f"  note: {note}")


# -- main -------------------------------------------------------------------------------------


Group = Callable[[Sizes, Callable[[str], None]], dict[str, Any]]

#: The groups of figures, in the order a full run measures them (``--only`` picks some).
GROUPS: dict[str, Group] = {
    "trellis": lambda sizes, say: asyncio.run(trellis_figures(sizes, say)),
    "durable": lambda sizes, say: asyncio.run(durable_figures(sizes, say)),
    "ratelimit": lambda sizes, say: asyncio.run(ratelimit_figures(sizes, say)),
    "outage": lambda sizes, say: asyncio.run(outage_figures(sizes, say)),
    "eval": lambda sizes, say: asyncio.run(eval_figures(sizes, say)),
    "stream": lambda sizes, say: asyncio.run(stream_figures(sizes, say)),
    "postgres": lambda sizes, say: asyncio.run(
        pgw.postgres_figures(sizes.durable, sizes.chain_reps, say)
    ),
    "ray": lambda sizes, say: asyncio.run(
        rwl.ray_figures(sizes.reps, sizes is QUICK or sizes.chain < FULL.chain, say)
    ),
    "rss": rss_figures,
    "ui": lambda sizes, say: uiw.ui_figures(sizes.ui_runs, sizes.ui_steps, sizes.reps, say),
    "scale_batch": lambda sizes, say: __import__("scale_batch_workloads").group(sizes, say),
    "scale_llm": lambda sizes, say: __import__("scale_llm_workloads").group(sizes, say),
    "startup": lambda sizes, say: __import__("startup_workloads").group(sizes, say),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, 2 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5, quick 2)")
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph side")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a goal is missed"
    )
    parser.add_argument(
        "--only",
        choices=sorted(GROUPS),
        action="append",
        help=(
            "measure only these groups of figures (repeatable); their figures are merged "
            "into --out when it exists, the others are kept as they were"
        ),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            raise SystemExit("--reps must be at least 1")
        sizes = replace(
            sizes,
            reps=args.reps,
            chain_reps=max(args.reps, sizes.chain_reps),
            ratelimited_reps=min(args.reps, sizes.ratelimited_reps),
            outage_reps=min(args.reps, sizes.outage_reps),
        )
    console = Console(width=None if sys.stdout.isatty() else 130)
    err = Console(stderr=True)

    def say(what: str) -> None:
        err.print(f"[dim]· {what}[/]")

    started = time.perf_counter()
    machine = machine_info()
    figures: dict[str, Any] = {}
    for group in args.only or list(GROUPS):
        figures.update(GROUPS[group](sizes, say))
    if args.only or args.no_langgraph:
        langgraph: dict[str, Any] = {"available": False, "reason": "skipped (--no-langgraph)"}
    else:
        try:
            langgraph = asyncio.run(langgraph_figures(sizes, say))
        except Exception as exc:  # never let LangGraph break the Trellis figures
            traceback.print_exc(file=sys.stderr)
            langgraph = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine,
        "sizes": asdict(sizes),
        "duration_s": round(time.perf_counter() - started, 1),
        "figures": figures,
        "langgraph": langgraph,
    }
    if args.only and args.out.exists():  # merge: the other figures stay as measured
        previous = json.loads(args.out.read_text())
        merged = {**previous.get("figures", {}), **figures}
        report = {
            **previous,
            "figures": merged,
            "merged": {
                "groups": args.only,
                "machine": machine,
                "quick": args.quick,
                "timestamp_utc": machine["timestamp_utc"],
            },
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(console, report)
    missed = [name for name, fig in report["figures"].items() if fig["meets_goal"] is False]
    console.print(
        f"wrote {args.out} in {round(time.perf_counter() - started, 1):g} s; "
        + (f"goals missed: {', '.join(missed)}" if missed else "all goals met")
        + (" (--quick sizes: not meaningful)" if args.quick else "")
    )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
