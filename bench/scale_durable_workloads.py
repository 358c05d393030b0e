"""The durable store at scale: a big batch through the CLI, and 10 000 journaled LLM calls.

- ``batch_durable_ratio_20000``: wall time of ``trellis run`` of the 2-step flow of
  ``scale_batch_workloads.py`` over 20 000 items on ``sim:`` (zero latency,
  ``--concurrency 64``) on the default SQLite store, against the same command with
  ``--no-store``. Fresh processes, each into a fresh store directory.
- ``llm_journal_ratio``: a mapped step of 10 000 structured-output calls to a zero-latency
  :class:`tl.FunctionModel` (the ``scale_llm`` flow), run on a fresh SQLite store (every
  call journaled), against plain asyncio in the same process: ``asyncio.gather`` of 10 000
  coroutines that call the same function, validate the same Pydantic model and each
  INSERT the reply into a fresh ``sqlite3`` database (its own transaction, the store's
  settings: WAL, ``synchronous=NORMAL``).

Medians of ``reps`` (the batch: at most 3); ``--quick``: 500 items and 1 000 calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Goal, Runner, interleave, median, ratio_figure
from durable_workloads import WorkDir, remove_db
from scale_batch_workloads import FLOW, _trellis
from scale_llm_workloads import REPLY, _ratio, llm_flow, reply
from workloads import Label

import trellis as tl
from trellis.store import SQLiteStore

BATCH_DURABLE_GOAL = Goal("<=", 1.5)
LLM_JOURNAL_GOAL = Goal("<=", 2.0)

_ids = itertools.count()

#: The baseline's table: what a journaled call keeps (run, key, request, reply, attempts).
PLAIN_CALLS = (
    "CREATE TABLE calls (run_id TEXT NOT NULL, key TEXT NOT NULL, request TEXT NOT NULL, "
    "result TEXT NOT NULL, attempts TEXT NOT NULL, PRIMARY KEY (run_id, key)) WITHOUT ROWID"
)
PLAIN_INSERT = "INSERT INTO calls (run_id, key, request, result, attempts) VALUES (?, ?, ?, ?, ?)"


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``scale_durable`` group of ``bench/run.py``."""
    quick = sizes.rss < 10000
    figures = batch_durable_figure(500 if quick else 20000, max(1, min(sizes.reps, 3)), say)
    figures.update(asyncio.run(llm_journal_figure(1000 if quick else 10000, sizes.reps, say)))
    return figures


def batch_durable_figure(n: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"store": [], "no-store": []}
    with tempfile.TemporaryDirectory(prefix="trellis-scale-durable-") as tmp:
        root = Path(tmp)
        (root / "flow.py").write_text(FLOW)
        items = root / "items.jsonl"
        items.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(n)))
        for rep in range(reps):
            for kind in ("store", "no-store") if rep % 2 == 0 else ("no-store", "store"):
                say(f"scale_durable: trellis run of {n} items, {kind} (rep {rep + 1}/{reps})")
                work = root / f"{kind}-{rep}"
                work.mkdir()
                args = ["run", str(root / "flow.py") + ":flow", "-f", str(items)]
                args += ["-m", "small=sim:small", "--concurrency", "64", "--quiet"]
                args += ["-o", str(work / "out.jsonl")]
                if kind == "no-store":
                    args.append("--no-store")
                else:
                    args += ["--store", f"sqlite:///{work / 'trellis.db'}"]
                samples[kind].append(_trellis(args, work)[0])
                lines = (work / "out.jsonl").read_text().count("\n")
                if lines != n:
                    raise RuntimeError(f"the {kind} batch wrote {lines} results, not {n}")
                shutil.rmtree(work)
    return {
        "batch_durable_ratio_20000": ratio_figure(
            samples,
            "store",
            "no-store",
            baseline_what=f"the same trellis run of {n} items with --no-store",
            goal=BATCH_DURABLE_GOAL,
            reps=reps,
            n=n,
            store_s=median(samples["store"]),
            no_store_s=median(samples["no-store"]),
            samples_s=samples["store"],
            baseline_samples_s=samples["no-store"],
        )
    }


def trellis_journal_runner(work: WorkDir, flow: tl.Flow, n: int) -> Runner:
    """``engine.run`` of the mapped calls on a fresh SQLite store: every call journaled."""

    async def run() -> float:
        path = work.fresh("trellis")
        store = SQLiteStore(path)
        try:
            async with tl.Engine(models={"fn": tl.FunctionModel(reply)}, store=store) as engine:
                t0 = time.perf_counter()
                result = await engine.run(flow, {"n": n}, run_id=f"r{next(_ids)}")
                elapsed = time.perf_counter() - t0
            if not result.ok or len(result["classify"]) != n:
                raise RuntimeError(f"journaled fan-out failed: {result.error}")
            calls = len(store.load_calls(result.run_id))
            if calls != n:
                raise RuntimeError(f"{calls} calls journaled, not {n}")
        finally:
            store.close()
            remove_db(path)
        return elapsed

    return run


def plain_journal_runner(work: WorkDir, n: int) -> Runner:
    """Baseline: call, validate and INSERT (one transaction each) per coroutine."""

    async def run() -> float:
        path = work.fresh("plain")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(PLAIN_CALLS)

        async def one(i: int) -> Label:
            text = reply(None)
            label = Label.model_validate_json(text)
            db.execute(PLAIN_INSERT, ("r", f"classify[{i}]|0", "request", text, "[]"))
            return label

        try:
            t0 = time.perf_counter()
            out = await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - t0
            rows = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            if len(out) != n or rows != n or out[-1] != Label.model_validate_json(REPLY):
                raise RuntimeError("baseline gave the wrong results")
        finally:
            db.close()
            remove_db(path)
        return elapsed

    return run


async def llm_journal_figure(n: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    say(f"scale_durable: {n} journaled structured calls")
    with tempfile.TemporaryDirectory(prefix="trellis-llm-journal-") as tmp:
        work = WorkDir(tmp)
        s = await interleave(
            reps,
            {
                "asyncio": plain_journal_runner(work, n),
                "trellis": trellis_journal_runner(work, llm_flow(), n),
            },
        )
    return {
        "llm_journal_ratio": _ratio(
            s,
            baseline_what=(
                f"asyncio.gather of {n} coroutines calling the same function, validating the "
                "same Pydantic model and each INSERTing the reply with plain sqlite3 (one "
                "transaction each, WAL, synchronous=NORMAL)"
            ),
            goal=LLM_JOURNAL_GOAL,
            reps=reps,
            n=n,
        )
    }
