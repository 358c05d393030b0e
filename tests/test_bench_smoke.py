"""Smoke test of the benchmark suite: ``bench/run.py --quick`` runs end to end (tiny sizes,
two repetitions), prints its table and writes well-formed JSON. No figure is judged here:
quick sizes on a shared machine say nothing about performance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

DURABLE = {
    "durable_chain_overhead_us_per_step",
    "durable_ratio_vs_sqlite",
    "checkpoint_bytes_per_step",
    "resume_overhead_ms",
}
#: Calls against the rate-limited mock server: 40 calls, one repetition in --quick.
RATELIMITED = {
    "ratelimited_throughput_ratio",
    "ratelimited_429_count",
    "ratelimited_no_rpm_throughput_ratio",
    "ratelimited_no_rpm_default_done_ratio",
}
QUICK_RATELIMITED_CALLS = 40
#: The feedback-triage batch while the mock server fails: 30 items, one repetition.
OUTAGE = {"outage_items_lost", "outage_requests_per_waiting_call", "flaky_items_lost"}
QUICK_OUTAGE_ITEMS = 30
#: Against a throwaway PostgreSQL cluster the bench starts (skipped, saying why, without one).
POSTGRES = {"postgres_durable_ratio_vs_psycopg"}
#: The Ray executor against the local engine (skipped, value None, without Ray installed).
#: ``ray_shared_limit_ratio``: 120 calls at 1,200 rpm in --quick (about 6 s), one repetition.
RAY = {"ray_io_batch_ratio", "ray_cpu_batch_speedup", "ray_shared_limit_ratio"}
QUICK_SHARED_LIMIT_CALLS = 120
UI = {"ui_runs_page_ms", "ui_big_run_page_ms"}
SCALE_BATCH = {"batch_rss_ratio_20000", "show_batch_ratio_20000"}
SCALE_LLM = {"llm_path_ratio_10000", "llm_inflight_ratio_10000"}
SCALE_DURABLE = {"batch_durable_ratio_20000", "llm_journal_ratio"}
STARTUP = {"startup_ratio_run", "startup_ratio_help"}
HTTP = {"http_rps_ratio_vs_aiohttp", "http_cpu_ms_per_request"}
FIGURES = {
    "chain_overhead_us_per_step",
    "chain_overhead_us_per_step_async",
    "fanout_1000_ratio_vs_asyncio",
    "fanout_1000_us_per_branch",
    "fanout_10000_ratio_vs_asyncio",
    "fanout_10000_us_per_branch",
    "fanout_branch_cost_growth",
    "limited_ratio_vs_ideal",
    "sim_fanout_1000_ratio_vs_asyncio",
    "peak_rss_mb_fanout_10000",
    *DURABLE,
    *RATELIMITED,
    *OUTAGE,
    "eval_throughput_ratio",
    "stream_overhead_ratio",
    *POSTGRES,
    *RAY,
    *UI,
    *SCALE_BATCH,
    *SCALE_LLM,
    *SCALE_DURABLE,
    *STARTUP,
    *HTTP,
}
GOALS = {
    "chain_overhead_us_per_step",
    "fanout_1000_ratio_vs_asyncio",
    "fanout_10000_ratio_vs_asyncio",
    "limited_ratio_vs_ideal",
    "peak_rss_mb_fanout_10000",
    *DURABLE,
    "ratelimited_throughput_ratio",
    "ratelimited_429_count",
    *OUTAGE,
    "eval_throughput_ratio",
    "stream_overhead_ratio",
    *POSTGRES,
    *RAY,
    *UI,
    *SCALE_BATCH,
    *SCALE_LLM,
    *SCALE_DURABLE,
    *STARTUP,
    *HTTP,
}
LANGGRAPH_FIGURES = {
    "chain_overhead_us_per_step",
    "fanout_1000_ratio_vs_asyncio",
    "fanout_10000_ratio_vs_asyncio",
    "limited_ratio_vs_ideal",
}
#: Present when langgraph-checkpoint-sqlite is installed too (the bench extra has it).
LANGGRAPH_DURABLE_FIGURES = {"durable_chain_overhead_us_per_step", "checkpoint_bytes_per_step"}
QUICK_DURABLE_STEPS = 200


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _count(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x >= 0


#: Every group of the quick bench in one process: about a minute on an idle 2-core machine,
#: several times that on a loaded CI runner; the limit is generous so only a hang fails.
QUICK_BENCH_LIMIT_S = 480


@pytest.mark.slow
@pytest.mark.timeout(QUICK_BENCH_LIMIT_S + 30)
def test_quick_bench_prints_figures_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_BENCH_LIMIT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("Trellis benchmarks", *sorted(FIGURES)):
        assert name in proc.stdout, f"{name!r} missing from the printed table"

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert {"python", "cpu_count"} <= set(report["machine"])
    assert set(report["figures"]) == FIGURES
    for name, fig in report["figures"].items():
        assert {"value", "unit", "baseline", "goal", "meets_goal", "reps", "n"} <= set(fig), name
        if name in POSTGRES and "skipped" in fig:  # no PostgreSQL binaries here
            assert fig["value"] is None and "apt-get install postgresql" in fig["skipped"]
            continue
        if name in ("ratelimited_429_count", *OUTAGE):  # 0 is a good value
            assert _count(fig["value"]) and _count(fig["baseline"]), (name, fig)
        else:
            assert _positive(fig["value"]), (name, fig["value"])
            assert _positive(fig["baseline"]), (name, fig["baseline"])
        if name in RATELIMITED:
            assert fig["reps"] == 1 and fig["n"] == QUICK_RATELIMITED_CALLS, name
        elif name in OUTAGE:
            assert fig["reps"] == 1 and fig["n"] == QUICK_OUTAGE_ITEMS, name
        elif name == "ray_shared_limit_ratio":
            assert fig["reps"] == 1 and fig["n"] == QUICK_SHARED_LIMIT_CALLS, name
        else:
            assert fig["reps"] == 2, name
        if name in GOALS:
            assert isinstance(fig["meets_goal"], bool), name
        else:
            assert fig["meets_goal"] is None and fig["goal"] == "informational", name

    figures = report["figures"]
    for name in DURABLE | POSTGRES:  # per-step units at the quick chain length
        assert figures[name]["n"] == QUICK_DURABLE_STEPS, name
    assert figures["durable_chain_overhead_us_per_step"]["unit"] == "us/step"
    assert _positive(figures["durable_chain_overhead_us_per_step"]["in_memory_us_per_step"])
    bytes_fig = figures["checkpoint_bytes_per_step"]
    assert bytes_fig["unit"] == "B/step"
    assert _positive(bytes_fig["avg_row_bytes"]) and _positive(bytes_fig["baseline_avg_row_bytes"])
    resume = figures["resume_overhead_ms"]
    assert resume["restored_steps"] == QUICK_DURABLE_STEPS - 1 and resume["executed_steps"] == 1
    limited = figures["ratelimited_throughput_ratio"]
    assert limited["goal"] == ">= 0.9" and limited["baseline"] == 1200
    assert figures["ratelimited_429_count"]["goal"] == "<= 0"
    shared = figures["ray_shared_limit_ratio"]
    assert shared["goal"] == ">= 0.9 with zero 429s"
    assert _count(shared["responses_429"]) and shared["server_requests"] >= shared["n"]
    assert _positive(shared["actor_round_trips_per_call"])
    # Without the client rpm, the limiter learns the server's limit from the headers of the
    # first reply: the first request to a remote model goes alone (its circuit breaker
    # starts unproven), so the quick batch may see no 429 at all.
    assert _count(figures["ratelimited_no_rpm_throughput_ratio"]["responses_429"])
    assert figures["outage_items_lost"]["goal"] == "<= 0"
    assert figures["outage_requests_per_waiting_call"]["goal"] == "<= 0.5"
    assert 0 < figures["ratelimited_no_rpm_default_done_ratio"]["value"] <= 1

    langgraph = report["langgraph"]
    assert isinstance(langgraph["available"], bool)
    if langgraph["available"]:  # the bench extra is installed: the same workloads, side by side
        durable = LANGGRAPH_DURABLE_FIGURES if langgraph["checkpointer"] else set()
        expected = LANGGRAPH_FIGURES | durable
        assert set(langgraph["figures"]) == expected
        for name, fig in langgraph["figures"].items():
            assert "error" not in fig, (name, fig.get("error"))
            assert _positive(fig["value"]) and _positive(fig["trellis"]), name
            assert _positive(fig["ratio_trellis_over_langgraph"]), name
        assert "Trellis vs LangGraph" in proc.stdout
