"""The web UI's figures: server time of the runs page over 20 000 recorded runs
(paginated) and of one run of 1 000 steps.

Requests go through the UI's ASGI app in-process (Starlette's test client): the time is
the server's (reading the store, building the page, rendering it), not the network's.

:func:`group` is the ``ui`` group of ``bench/run.py`` (sync: it runs its own event loops).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workloads as wl
from common import Goal, figure

import trellis as tl
from trellis.engine.results import Stats
from trellis.store.base import RunRow, StepRow
from trellis.store.sqlite import SQLiteStore

RUNS_PAGE_GOAL = Goal("<", 300.0)
BIG_RUN_GOAL = Goal("<", 1000.0)
STEPS = ("classify", "route", "answer")


def recorded_runs(path: Path, n: int) -> None:
    """``n`` finished runs of a three-step flow (each with its step rows and usage),
    written in bulk as the engine records them."""
    store = SQLiteStore(path)
    now = time.time() - n
    meta = json.dumps({"steps": list(STEPS), "edges": {"route": ["classify"]}})
    stats = Stats(calls=1, attempts=1, input_tokens=120, output_tokens=30, cost_usd=0.00004)
    usage = json.dumps(stats.to_dict())
    rows = [
        RunRow(
            run_id=f"run-{i:06d}",
            flow=("triage", "extract", "moderate")[i % 3],
            status="failed" if i % 17 == 0 else "done",
            inputs="{}",
            started_at=now + i,
            finished_at=now + i + 0.4,
            usage=usage,
            meta=meta,
        )
        for i in range(n)
    ]
    store.create_runs(rows)
    db = store._db  # one transaction for the step rows: the bench's setup, not a reader
    db.execute("BEGIN")
    for row in rows:
        for k, step in enumerate(STEPS):
            store.save_step(
                StepRow(
                    run_id=row.run_id,
                    step=step,
                    status="done",
                    definition="d",
                    output="1",
                    started_at=row.started_at + k,
                )
            )
    db.execute("COMMIT")
    store.close()


async def big_run(path: Path, n: int) -> str:
    """One recorded run of an ``n``-step chain."""
    flow = wl.chain_flow(wl.chain_functions(n, is_async=False))
    store = SQLiteStore(path)
    async with tl.Engine(store=store) as engine:
        result = await engine.run(flow, {"x0": 0})
    store.close()
    return result.run_id


def _server_ms(client: Any, url: str, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return statistics.median(times)


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    return ui_figures(sizes.ui_runs, sizes.ui_steps, sizes.reps, say)


def ui_figures(runs: int, steps: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from trellis.ui import UiSettings, create_app

    folder = Path(tempfile.mkdtemp(prefix="trellis-ui-bench-"))

    def client_for(path: Path) -> TestClient:
        settings = UiSettings(
            open_store=lambda: SQLiteStore(path), store_url=str(path), token="bench"
        )
        return TestClient(create_app(settings), base_url="http://127.0.0.1")

    say(f"ui: {runs} recorded runs")
    many, few = folder / "many.db", folder / "few.db"
    recorded_runs(many, runs)
    recorded_runs(few, 20)
    say(f"ui: a run of {steps} steps")
    chain, short = folder / "chain.db", folder / "short.db"
    chain_id = asyncio.run(big_run(chain, steps))
    short_id = asyncio.run(big_run(short, 10))
    figures: dict[str, Any] = {}
    with client_for(many) as big, client_for(few) as small:
        _server_ms(big, "/", 1)  # warm: templates compiled, imports done
        page = _server_ms(big, "/", reps)
        filtered = _server_ms(big, "/?status=failed&sort=duration", reps)
        baseline = _server_ms(small, "/", reps)
    figures["ui_runs_page_ms"] = figure(
        value=page,
        unit="ms",
        baseline=baseline,
        baseline_unit="ms",
        baseline_what="the same page over 20 recorded runs",
        goal=RUNS_PAGE_GOAL,
        reps=reps,
        n=runs,
        filtered_sorted_ms=filtered,
    )
    with client_for(chain) as big, client_for(short) as small:
        _server_ms(big, f"/runs/{chain_id}", 1)
        value = _server_ms(big, f"/runs/{chain_id}", reps)
        baseline = _server_ms(small, f"/runs/{short_id}", reps)
    figures["ui_big_run_page_ms"] = figure(
        value=value,
        unit="ms",
        baseline=baseline,
        baseline_unit="ms",
        baseline_what="the run page of a 10-step run",
        goal=BIG_RUN_GOAL,
        reps=reps,
        n=steps,
    )
    return figures
