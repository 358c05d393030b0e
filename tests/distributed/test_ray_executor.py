"""The Ray executor with real Ray worker processes (a local Ray, see conftest)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import trellis as tl
from distributed.flows import faulty, where
from trellis.cluster import RayExecutor, executor_from_spec
from trellis.store.postgres import PostgresStore


async def collect(engine: tl.Engine, flow: tl.Flow, items: Any, **kw: Any) -> dict[int, Any]:
    return {i: r async for i, r in engine.run_many(flow, items, **kw)}


async def test_items_run_on_ray_workers_not_in_the_driver(ray_session: Any) -> None:
    executor = RayExecutor(workers=2)
    async with tl.Engine(executor=executor) as engine:
        results = await collect(engine, where, [{"x": i} for i in range(12)], concurrency=4)
        pids = set(executor.worker_pids())
    assert sorted(results) == list(range(12))
    assert all(r.status == "done" for r in results.values())
    assert [results[i]["doubled"]["double"] for i in range(12)] == [2 * i for i in range(12)]
    ran_on = {r["doubled"]["pid"] for r in results.values()}
    assert os.getpid() not in ran_on
    assert ran_on <= pids and len(ran_on) == 2  # both workers took items


async def test_bad_inputs_yield_a_failed_item_not_a_stopped_batch(ray_session: Any) -> None:
    async with tl.Engine(executor=RayExecutor(workers=2)) as engine:
        results = await collect(engine, where, [{"x": 1}, {"y": 2}, {"x": 3}])
    assert [results[i].status for i in range(3)] == ["done", "failed", "done"]
    assert results[1].error is not None and "x" in results[1].error.message


@pytest.mark.parametrize("url", ["sqlite", "memory:"])
def test_a_store_workers_cannot_share_is_a_configuration_error(url: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}" if url == "sqlite" else tl.MemoryStore()
    with pytest.raises(tl.ConfigurationError, match="PostgreSQL"):
        tl.Engine(store=store, executor=RayExecutor())


def test_executor_specs() -> None:
    assert executor_from_spec("local") is None
    assert executor_from_spec("ray").address is None  # type: ignore[union-attr]
    assert executor_from_spec("ray:auto").address == "auto"  # type: ignore[union-attr]
    assert executor_from_spec("ray://h:10001").address == "ray://h:10001"  # type: ignore[union-attr]
    with pytest.raises(tl.ConfigurationError, match="expected local, ray"):
        executor_from_spec("dask")


async def test_a_durable_batch_on_postgres_is_recorded_and_read_back(
    ray_session: Any, pg_url: str
) -> None:
    items = [{"x": i} for i in range(6)]
    async with tl.Engine(store=pg_url, executor=RayExecutor(workers=2)) as engine:
        first = await collect(engine, where, items, batch_id="b1")
        again = await collect(engine, where, None, batch_id="b1")
    assert [first[i]["doubled"] for i in range(6)] == [again[i]["doubled"] for i in range(6)]
    store = PostgresStore(pg_url)
    try:
        batch = store.get_run("b1")
        assert batch is not None and batch.status == "done"
        assert all(store.get_run(f"b1.{i}").status == "done" for i in range(6))  # type: ignore[union-attr]
    finally:
        store.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_a_killed_worker_s_items_are_resumed_without_rerunning_or_repaying(
    ray_session: Any, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    n = 4
    items = [{"x": i, "log_path": str(log), "hold": 1.5} for i in range(n)]
    executor = RayExecutor(workers=2)
    engine = tl.Engine(
        store=pg_url,
        executor=executor,
        lease_ttl=1.0,
        models={"default": tl.FunctionModel(_reply)},
    )
    async with engine:
        batch = asyncio.create_task(collect(engine, faulty, items, batch_id="kb", concurrency=4))
        deadline = time.monotonic() + 60
        while not (in_flight := _in_flight(_lines(log))):
            assert time.monotonic() < deadline, _lines(log)
            if batch.done():
                pytest.fail(f"the batch ended before the kill: {batch.result()}")
            await asyncio.sleep(0.02)
        victim = next(iter(in_flight.values()))
        os.kill(victim, signal.SIGKILL)  # mid-item: its items are in `second`
        killed = {item for item, pid in _in_flight(_lines(log)).items() if pid == victim}
        try:
            results = await asyncio.wait_for(batch, 40)
        except TimeoutError:
            pytest.fail("\n".join(_lines(log)))
    assert [results[i].status for i in range(n)] == ["done"] * n
    assert [results[i]["second"] for i in range(n)] == [10 * i for i in range(n)]
    lines = _lines(log)
    counted = Counter(
        line.rsplit(" ", 1)[0] if line.startswith("second-start") else line for line in lines
    )
    assert all(counted[f"first {i}"] == 1 for i in range(n)), lines  # no completed step re-ran
    assert all(counted[f"call {i}"] == 1 for i in range(n)), lines  # no journaled call re-paid
    assert all(counted[f"second-end {i}"] == 1 for i in range(n)), lines
    assert killed, lines
    starts = Counter(x.split()[1] for x in lines if x.startswith("second-start"))
    assert all(starts[i] == 2 for i in killed), "\n".join(lines)  # resumed elsewhere
    assert sum(starts.values()) == n + len(killed), "\n".join(lines)


def _in_flight(lines: list[str]) -> dict[str, int]:
    """The items whose ``second`` started and has not ended, and the pid running each."""
    running: dict[str, int] = {}
    for line in lines:
        word, item, *pid = line.split()
        if word == "second-start":
            running[item] = int(pid[0])
        elif word == "second-end":
            running.pop(item, None)
    return running


def _reply(request: tl.ModelRequest) -> str:
    from distributed.flows import paid_reply

    return paid_reply(request)
