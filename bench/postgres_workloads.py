"""The durable chain on the Postgres store against plain psycopg inserts of the same rows.

``postgres_durable_ratio_vs_psycopg``: the 1000-step chain run by ``tl.Engine(store=
PostgresStore(...))`` (every completed step committed as it completes, fenced by the run's
lease epoch) over the same functions called in a loop with one plain psycopg
``INSERT (run_id, step, output jsonb)`` per output on one autocommit connection. Both run
against one throwaway cluster the benchmark starts itself (:mod:`trellis.store.pgcluster`:
loopback TCP, ``fsync=off`` for both sides alike), each in its own database whose tables
are emptied before every repetition (outside the clock), with a fresh run id.

:func:`group` is the ``postgres`` group of ``bench/run.py``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import workloads as wl
from common import US, Goal, interleave, median, ratio_figure

import trellis as tl

_ids = itertools.count()
POSTGRES_RATIO_GOAL = Goal("<=", 1.5)

PLAIN_TABLE = (
    "CREATE TABLE steps (run_id text NOT NULL, step text NOT NULL, output jsonb NOT NULL, "
    "PRIMARY KEY (run_id, step))"
)
PLAIN_INSERT = "INSERT INTO steps (run_id, step, output) VALUES (%s, %s, %s::jsonb)"


class TrellisPostgresChain:
    """``engine.run`` of the chain on a Postgres store; checks all ``n`` steps recorded."""

    def __init__(self, url: str, flow: tl.Flow, n: int) -> None:
        from trellis.store.postgres import PostgresStore

        self.url, self.flow, self.n = url, flow, n
        PostgresStore(url).close()  # the schema, outside the clock
        self._store_type = PostgresStore

    async def __call__(self) -> float:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE runs, steps, calls, cache")
        run_id = f"durable-{next(_ids)}"
        store = self._store_type(self.url)
        try:
            async with tl.Engine(store=store) as engine:
                t0 = time.perf_counter()
                result = await engine.run(self.flow, {"x0": 0}, run_id=run_id)
                elapsed = time.perf_counter() - t0
        finally:
            store.close()
        if not result.ok or result[f"s{self.n}"] != self.n:
            raise RuntimeError(f"durable chain run failed: {result.error}")
        done = len([s for s in store_steps(self.url, run_id) if s == "done"])
        if done != self.n:
            raise RuntimeError(f"the store recorded {done} completed steps, not {self.n}")
        return elapsed


def store_steps(url: str, run_id: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT status FROM steps WHERE run_id = %s", (run_id,))
        return [str(r[0]) for r in rows]


class PlainPsycopgChain:
    """Baseline: the same functions in a loop, each output inserted as it is produced."""

    def __init__(self, url: str, functions: Sequence[Callable[[int], int]]) -> None:
        import psycopg

        self.url, self.functions = url, list(functions)
        self.names = [f"s{i}" for i in range(1, len(self.functions) + 1)]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PLAIN_TABLE)

    async def __call__(self) -> float:
        import psycopg

        n, run_id = len(self.functions), f"plain-{next(_ids)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE steps")
            execute, dumps = conn.execute, json.dumps
            t0 = time.perf_counter()
            x = 0
            for fn, name in zip(self.functions, self.names, strict=True):
                x = fn(x)
                execute(PLAIN_INSERT, (run_id, name, dumps(x)))
            elapsed = time.perf_counter() - t0
            count = conn.execute("SELECT count(*) FROM steps").fetchone()[0]  # type: ignore[index]
        if x != n or count != n:
            raise RuntimeError(f"plain psycopg chain gave {x} with {count} rows, expected {n}")
        return elapsed


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``postgres`` group: the durable chain's length, the chains' repetitions."""
    return await postgres_figures(sizes.durable, sizes.chain_reps, say)


async def postgres_figures(n: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The figure, or an informational record saying why it could not be measured."""
    try:
        from trellis.store.pgcluster import ClusterUnavailable, start_cluster

        cluster = start_cluster()
    except (ImportError, ClusterUnavailable) as exc:
        say(f"postgres figures skipped: {exc}")
        return {
            "postgres_durable_ratio_vs_psycopg": {
                "value": None,
                "unit": "x",
                "baseline": None,
                "baseline_unit": "us/insert",
                "baseline_what": "plain psycopg inserts (not measured)",
                "ratio": None,
                "goal": str(POSTGRES_RATIO_GOAL),
                "meets_goal": None,
                "reps": 0,
                "n": n,
                "skipped": str(exc),
            }
        }
    with cluster:
        say(f"durable chain of {n} (Postgres store) vs plain psycopg inserts")
        functions = wl.chain_functions(n, is_async=False)
        flow = wl.chain_flow(functions)
        durable = TrellisPostgresChain(cluster.create_database("bench_trellis"), flow, n)
        plain = PlainPsycopgChain(cluster.create_database("bench_plain"), functions)
        s = await interleave(reps, {"psycopg": plain, "durable": durable})
        version = store_version(cluster.url())
    return {
        "postgres_durable_ratio_vs_psycopg": ratio_figure(
            s,
            "durable",
            "psycopg",
            baseline_unit="us/insert",
            baseline_scale=US / n,
            baseline_what=(
                "plain psycopg: the same functions in a loop, one autocommit INSERT "
                "(run_id, step, output jsonb) per output, one connection"
            ),
            goal=POSTGRES_RATIO_GOAL,
            reps=reps,
            n=n,
            durable_us_per_step=median(s["durable"]) / n * US,
            server=version,
            cluster="throwaway, loopback TCP, fsync=off (both sides)",
        )
    }


def store_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
