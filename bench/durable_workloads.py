"""Durable-run workloads: the 1000-step chain checkpointed in a SQLite store, its resume,
and their plain-``sqlite3`` baselines (plus LangGraph's SQLite checkpointer, optional).

Every runner is a :data:`common.Runner` (one repetition, returns elapsed seconds, checks
its result after the clock stops). Each repetition starts from a **fresh database file**
(created, migrated and measured outside the clock, deleted afterwards) and uses a fresh
run id, so every repetition writes into the same state: an empty database. Runners that
also measure space keep one sample per call in ``bytes_per_step`` / ``row_bytes_per_step``
(the untimed warm-up included; :func:`last` drops it).

Same SQLite settings everywhere: ``journal_mode=WAL``, ``synchronous=NORMAL`` (the
Trellis store's default), one transaction (commit) per checkpointed step.

:func:`group` is the ``durable`` group of ``bench/run.py``.
"""

from __future__ import annotations

import gc
import inspect
import itertools
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import workloads as wl
from common import US, Goal, interleave, median, ratio_figure, unit_figure

import trellis as tl
from trellis.store import SQLiteStore

_ids = itertools.count()

DURABLE_GOAL = Goal("<=", 100.0)
DURABLE_RATIO_GOAL = Goal("<=", 1.5)
BYTES_GOAL = Goal("<", 1024.0)
RESUME_GOAL = Goal("<", 50.0)

#: The plain-sqlite3 checkpointer's table: a row per step (run id, step name, JSON of the
#: output), keyed like the Trellis ``steps`` table.
PLAIN_TABLE = (
    "CREATE TABLE steps (run_id TEXT NOT NULL, step TEXT NOT NULL, output TEXT NOT NULL, "
    "PRIMARY KEY (run_id, step)) WITHOUT ROWID"
)
PLAIN_INSERT = "INSERT INTO steps (run_id, step, output) VALUES (?, ?, ?)"


def last(samples: Sequence[float], reps: int) -> list[float]:
    """The samples of the timed repetitions (the first calls were warm-ups)."""
    return list(samples[-reps:])


# -- database files -----------------------------------------------------------------------


class WorkDir:
    """Fresh database paths under one directory; every file is deleted after its use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def fresh(self, label: str) -> Path:
        path = self.root / f"{label}-{next(_ids)}.db"
        remove_db(path)
        return path


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def db_bytes(path: Path) -> int:
    """Bytes the database occupies: the WAL is checkpointed into the main file first
    (``PRAGMA wal_checkpoint(TRUNCATE)``), so this is the main file's size (plus a WAL
    that could not be emptied, if any). Call it with no other connection in a transaction."""
    with closing(sqlite3.connect(path)) as db:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"could not checkpoint {path}: another connection is reading")
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def stored_bytes(path: Path, tables: Sequence[str]) -> tuple[int, int]:
    """``(bytes, rows)``: the summed byte length of every column of every row of
    ``tables`` (``SUM(LENGTH(CAST(col AS BLOB)))``), i.e. the payload without SQLite's
    record headers, keys' B-tree overhead and free space."""
    total = rows = 0
    with closing(sqlite3.connect(path)) as db:
        for table in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
            expr = " + ".join(f'COALESCE(LENGTH(CAST("{c}" AS BLOB)), 0)' for c in cols)
            size, count = db.execute(
                f'SELECT COALESCE(SUM({expr}), 0), COUNT(*) FROM "{table}"'
            ).fetchone()
            total += int(size)
            rows += int(count)
    return total, rows


def sqlite_settings(path: Path) -> dict[str, Any]:
    """The journal mode and page size a database file ended up with."""
    with closing(sqlite3.connect(path)) as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    return {"journal_mode": mode, "page_size": page}


def filesystem(path: str | Path) -> str | None:
    """The filesystem type holding ``path`` (from ``/proc/mounts``; ``None`` elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


# -- the durable chain ------------------------------------------------------------------


class TrellisDurableChain:
    """``engine.run`` of the chain on ``tl.Engine(store=SQLiteStore(fresh file))``: every
    step's record is committed as it completes. Times ``engine.run`` only (the store is
    opened before the clock starts); checks that all ``n`` steps were recorded done."""

    def __init__(self, workdir: WorkDir, flow: tl.Flow, n: int) -> None:
        self.workdir, self.flow, self.n = workdir, flow, n
        self.bytes_per_step: list[float] = []
        self.row_bytes_per_step: list[float] = []
        self.settings: dict[str, Any] = {}

    async def __call__(self) -> float:
        n, path = self.n, self.workdir.fresh("trellis")
        SQLiteStore(path).close()  # create + migrate, then measure the empty store
        before = db_bytes(path)
        run_id = f"durable-{next(_ids)}"
        store = SQLiteStore(path)
        try:
            async with tl.Engine(store=store) as engine:
                gc.collect()
                t0 = time.perf_counter()
                result = await engine.run(self.flow, {"x0": 0}, run_id=run_id)
                elapsed = time.perf_counter() - t0
        finally:
            store.close()
        if not result.ok or result[f"s{n}"] != n:
            raise RuntimeError(f"durable chain run failed: {result.error}")
        with closing(sqlite3.connect(path)) as db:
            done = db.execute(
                "SELECT COUNT(*) FROM steps WHERE run_id = ? AND status = 'done'", (run_id,)
            ).fetchone()[0]
        if done != n:
            raise RuntimeError(f"the store recorded {done} completed steps, not {n}")
        self.bytes_per_step.append((db_bytes(path) - before) / n)
        size, rows = stored_bytes(path, ["steps"])
        self.row_bytes_per_step.append(size / rows)
        self.settings = sqlite_settings(path)
        remove_db(path)
        return elapsed


class PlainSQLiteChain:
    """Baseline: the same step functions called in a loop, each output written by plain
    ``sqlite3`` as it is produced: one ``INSERT`` (run id, step name, ``json.dumps`` of
    the output) in its own transaction per step (``isolation_level=None``: autocommit),
    on a fresh file with ``journal_mode=WAL``, ``synchronous=NORMAL``."""

    def __init__(self, workdir: WorkDir, functions: Sequence[Callable[[int], int]]) -> None:
        self.workdir, self.functions = workdir, list(functions)
        self.names = [f"s{i}" for i in range(1, len(self.functions) + 1)]
        self.bytes_per_step: list[float] = []
        self.row_bytes_per_step: list[float] = []

    async def __call__(self) -> float:
        n, path = len(self.functions), self.workdir.fresh("plain")
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(PLAIN_TABLE)
        before = db_bytes(path)
        run_id = f"plain-{next(_ids)}"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            execute, dumps = db.execute, json.dumps
            gc.collect()
            t0 = time.perf_counter()
            x = 0
            for fn, name in zip(self.functions, self.names, strict=True):
                x = fn(x)
                execute(PLAIN_INSERT, (run_id, name, dumps(x)))
            elapsed = time.perf_counter() - t0
            rows = db.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (run_id,))
            count = rows.fetchone()[0]
        finally:
            db.close()
        if x != n or count != n:
            raise RuntimeError(f"plain sqlite chain gave {x} with {count} rows, expected {n}")
        self.bytes_per_step.append((db_bytes(path) - before) / n)
        size, stored = stored_bytes(path, ["steps"])
        self.row_bytes_per_step.append(size / stored)
        remove_db(path)
        return elapsed


# -- resume -----------------------------------------------------------------------------


class Switch:
    """Shared by the resume chain's steps: counts step executions; ``fail`` makes the
    last step raise (the "crash" that leaves a run with ``n - 1`` completed steps)."""

    def __init__(self) -> None:
        self.fail = False
        self.calls = 0


def resume_chain_flow(n: int, switch: Switch) -> tl.Flow:
    """The chain (``s{i}`` reads ``s{i-1}``, returns it + 1), each step counting itself in
    ``switch.calls``; ``s{n}`` raises while ``switch.fail`` is set. Flipping the switch
    does not change any step's code, so its definition hash is the same at resume."""
    namespace: dict[str, Any] = {"_switch": switch}
    for i in range(1, n + 1):
        reads = "x0" if i == 1 else f"s{i - 1}"
        check = (
            "    if _switch.fail:\n        raise RuntimeError('planned failure')\n"
            if i == n
            else ""
        )
        exec(
            f"def s{i}({reads}: int) -> int:\n    _switch.calls += 1\n{check}"
            f"    return {reads} + 1\n",
            namespace,
        )
    return wl.chain_flow([namespace[f"s{i}"] for i in range(1, n + 1)])


class IncompleteRun:
    """Makes a store holding an incomplete run of the resume chain: the first run fails at
    its last step, leaving ``n - 1`` completed steps (and one failed) recorded."""

    def __init__(self, workdir: WorkDir, n: int) -> None:
        self.workdir, self.n = workdir, n
        self.switch = Switch()
        self.flow = resume_chain_flow(n, self.switch)
        self.first_run_s: list[float] = []

    async def make(self) -> tuple[Path, str]:
        path, run_id = self.workdir.fresh("resume"), f"resume-{next(_ids)}"
        self.switch.fail = True
        with closing(SQLiteStore(path)) as store:
            async with tl.Engine(store=store) as engine:
                t0 = time.perf_counter()
                result = await engine.run(self.flow, {"x0": 0}, run_id=run_id)
                self.first_run_s.append(time.perf_counter() - t0)
        self.switch.fail = False
        done = sum(1 for r in result.steps.values() if r.status == "done")
        if result.ok or done != self.n - 1:
            raise RuntimeError(f"the first run should fail after {self.n - 1} steps ({done})")
        return path, run_id


class TrellisResume:
    """Times ``engine.run(flow, run_id=...)`` resuming the incomplete run on a freshly
    opened store (as a new process would): ``n - 1`` steps restored, one executed.
    Opening the store is outside the clock (kept in ``open_store_s``)."""

    def __init__(self, incomplete: IncompleteRun) -> None:
        self.incomplete = incomplete
        self.open_store_s: list[float] = []

    async def __call__(self) -> float:
        n, switch, flow = self.incomplete.n, self.incomplete.switch, self.incomplete.flow
        path, run_id = await self.incomplete.make()
        t0 = time.perf_counter()
        store = SQLiteStore(path)
        self.open_store_s.append(time.perf_counter() - t0)
        try:
            async with tl.Engine(store=store) as engine:
                switch.calls = 0
                gc.collect()
                t0 = time.perf_counter()
                result = await engine.run(flow, run_id=run_id)
                elapsed = time.perf_counter() - t0
        finally:
            store.close()
        if not result.ok or result[f"s{n}"] != n:
            raise RuntimeError(f"resumed run failed: {result.error}")
        if switch.calls != 1:
            raise RuntimeError(f"the resume executed {switch.calls} steps, not 1")
        remove_db(path)
        return elapsed


class PlainSQLiteLoad:
    """Baseline (informational): on the same kind of incomplete run, a fresh ``sqlite3``
    connection runs ``SELECT * FROM steps WHERE run_id = ?`` and fetches all ``n`` rows
    (no decoding): the I/O floor of restoring the run."""

    def __init__(self, incomplete: IncompleteRun) -> None:
        self.incomplete = incomplete

    async def __call__(self) -> float:
        path, run_id = await self.incomplete.make()
        db = sqlite3.connect(path, isolation_level=None)
        try:
            gc.collect()
            t0 = time.perf_counter()
            rows = db.execute("SELECT * FROM steps WHERE run_id = ?", (run_id,)).fetchall()
            elapsed = time.perf_counter() - t0
        finally:
            db.close()
        if len(rows) != self.incomplete.n:
            raise RuntimeError(f"loaded {len(rows)} step rows, not {self.incomplete.n}")
        remove_db(path)
        return elapsed


# -- LangGraph's SQLite checkpointer (optional) -------------------------------------------


def langgraph_checkpointer_version() -> str | None:
    """``langgraph-checkpoint-sqlite``'s version when its ``SqliteSaver`` imports."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: F401
    except Exception:
        return None
    from importlib import metadata

    try:
        return metadata.version("langgraph-checkpoint-sqlite")
    except metadata.PackageNotFoundError:
        return "unknown"


def langgraph_chain_graph(nodes: Sequence[Any], checkpointer: Any) -> Any:
    """``langgraph_workloads.chain_graph``, compiled with a checkpointer."""
    from langgraph.graph import END, START, StateGraph
    from langgraph_workloads import CounterState

    graph = StateGraph(CounterState)
    previous = START
    for i, node in enumerate(nodes):
        name = f"n{i}"
        graph.add_node(name, node)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile(checkpointer=checkpointer)


class LangGraphDurableChain:
    """The same ``n``-node LangGraph chain as ``langgraph_workloads.chain_graph``, compiled
    with a ``SqliteSaver`` on a fresh file (its ``setup()`` sets WAL; ``synchronous=NORMAL``
    is set on the connection, as in the Trellis store) and invoked on a fresh ``thread_id``
    with ``durability="sync"``: every super-step's checkpoint is written before the next
    starts, which is what the Trellis store does. Times ``graph.invoke`` only."""

    durability = "sync"

    def __init__(self, workdir: WorkDir, nodes: Sequence[Any]) -> None:
        self.workdir, self.nodes = workdir, list(nodes)
        self.bytes_per_step: list[float] = []
        self.row_bytes_per_step: list[float] = []
        self.note: str | None = None

    async def __call__(self) -> float:
        from langgraph.checkpoint.sqlite import SqliteSaver

        n, path = len(self.nodes), self.workdir.fresh("langgraph")
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            saver = SqliteSaver(conn)
            saver.setup()
            conn.commit()
            before = db_bytes(path)
            graph = langgraph_chain_graph(self.nodes, saver)
            config = {"recursion_limit": n + 100, "configurable": {"thread_id": f"t{next(_ids)}"}}
            kwargs: dict[str, Any] = {}
            if "durability" in inspect.signature(graph.invoke).parameters:
                kwargs["durability"] = self.durability
            else:
                self.note = "this LangGraph has no durability= option: its default was used"
            gc.collect()
            t0 = time.perf_counter()
            out = graph.invoke({"x": 0}, config, **kwargs)
            elapsed = time.perf_counter() - t0
        finally:
            conn.close()
        if out["x"] != n:
            raise RuntimeError(f"LangGraph durable chain gave {out['x']}, expected {n}")
        self.bytes_per_step.append((db_bytes(path) - before) / n)
        size, _ = stored_bytes(path, ["checkpoints", "writes"])
        self.row_bytes_per_step.append(size / n)
        remove_db(path)
        return elapsed


# -- the group ---------------------------------------------------------------------------------


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The chain checkpointed in a SQLite store vs plain sqlite3, its bytes, its resume.
    Every repetition uses a fresh database file."""
    figures: dict[str, Any] = {}
    n, reps = sizes.durable, sizes.chain_reps
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        work = WorkDir(tmp)
        where: dict[str, Any] = {
            "db_files": "a fresh database file per repetition (fresh run id too)",
            "db_dir": tmp,
            "filesystem": filesystem(tmp),
            "sqlite_version": sqlite3.sqlite_version,
            "synchronous": "NORMAL",
        }

        say(f"durable chain of {n} (SQLite store) vs plain sqlite3 inserts")
        functions = wl.chain_functions(n, is_async=False)
        flow = wl.chain_flow(functions)
        durable = TrellisDurableChain(work, flow, n)
        plain = PlainSQLiteChain(work, functions)
        async with tl.Engine() as engine:
            s = await interleave(
                reps,
                {
                    "sqlite": plain,
                    "durable": durable,
                    "memory": wl.trellis_chain_runner(engine, flow, n),
                },
            )
        d, m = (median(s[k]) / n * US for k in ("durable", "memory"))
        figures["durable_chain_overhead_us_per_step"] = unit_figure(
            s,
            "durable",
            "sqlite",
            unit="us/step",
            per=n,
            scale=US,
            baseline_what=(
                "plain sqlite3: the same functions in a loop, one INSERT + commit per output"
            ),
            goal=DURABLE_GOAL,
            reps=reps,
            n=n,
            run_ms=median(s["durable"]) * 1e3,
            in_memory_us_per_step=m,
            store_cost_us_per_step=d - m,
            **where,
            **durable.settings,
        )
        figures["durable_ratio_vs_sqlite"] = ratio_figure(
            s,
            "durable",
            "sqlite",
            baseline_unit="us/insert",
            baseline_scale=US / n,
            baseline_what="plain sqlite3 INSERT + commit per step (WAL, synchronous=NORMAL)",
            goal=DURABLE_RATIO_GOAL,
            reps=reps,
            n=n,
        )
        space = {
            "trellis": last(durable.bytes_per_step, reps),
            "sqlite": last(plain.bytes_per_step, reps),
        }
        figures["checkpoint_bytes_per_step"] = unit_figure(
            space,
            "trellis",
            "sqlite",
            unit="B/step",
            baseline_what="the plain sqlite3 table (run_id, step, output JSON) per row",
            goal=BYTES_GOAL,
            reps=reps,
            n=n,
            method=(
                "database bytes after the run minus before, WAL checkpointed "
                "(wal_checkpoint(TRUNCATE)) before both; divided by n"
            ),
            avg_row_bytes=median(last(durable.row_bytes_per_step, reps)),
            baseline_avg_row_bytes=median(last(plain.row_bytes_per_step, reps)),
            row_bytes_what="SUM(LENGTH(CAST(col AS BLOB))) over every column / rows",
            **durable.settings,
        )

        say(f"resume of a {n}-step run with {n - 1} steps complete")
        incomplete = IncompleteRun(work, n)
        resume = TrellisResume(incomplete)
        s = await interleave(reps, {"select": PlainSQLiteLoad(incomplete), "resume": resume})
        figures["resume_overhead_ms"] = unit_figure(
            s,
            "resume",
            "select",
            unit="ms",
            scale=1e3,
            baseline_what=f"plain sqlite3 SELECT of the run's {n} step rows (fetchall)",
            goal=RESUME_GOAL,
            reps=reps,
            n=n,
            restored_steps=n - 1,
            executed_steps=1,
            us_per_restored_step=median(s["resume"]) / (n - 1) * US,
            open_store_ms=median(last(resume.open_store_s, reps)) * 1e3,
            first_run_ms=median(incomplete.first_run_s) * 1e3,
            **where,
        )
    return figures
