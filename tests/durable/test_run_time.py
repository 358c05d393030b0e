"""A run's recorded run time counts the time it executed, not the idle time between a
failure and its resume, nor a batch item's wait for its turn."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import trellis as tl
from trellis.engine.journal import run_time_before
from trellis.engine.records import run_entry
from trellis.store import MemoryStore
from trellis.store.base import RunRow, StepRow
from trellis.store.sqlite import SQLiteStore

from . import durable_engine

HOUR = 3600.0


def _flaky_flow(fails: list[int]) -> tl.Flow:
    """A flow whose only step fails while ``fails`` holds a count above zero."""
    flow = tl.Flow("flaky", inputs={"n": int})

    @flow.step
    def work(n: int) -> int:
        if fails[0] > 0:
            fails[0] -= 1
            raise RuntimeError("not yet")
        return n * 2

    return flow


def _age(path: Path, run_ids: list[str], seconds: float) -> None:
    """Move the recorded times of ``run_ids`` (and their steps) ``seconds`` into the past:
    as if they had run that long ago and sat idle since."""
    db = sqlite3.connect(path)
    with db:
        for run_id in run_ids:
            db.execute(
                "UPDATE runs SET started_at = started_at - ?, finished_at = finished_at - ?, "
                "resumed_at = resumed_at - ? WHERE run_id = ?",
                (seconds, seconds, seconds, run_id),
            )
            db.execute(
                "UPDATE steps SET started_at = started_at - ? WHERE run_id = ?",
                (seconds, run_id),
            )
    db.close()


async def test_a_run_resumed_an_hour_after_it_failed_records_only_its_run_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    fails = [1]
    flow = _flaky_flow(fails)
    async with durable_engine(path) as engine:
        first = await engine.run(flow, {"n": 2}, run_id="r")
    assert first.status == "failed"
    _age(path, ["r"], HOUR)
    async with durable_engine(path) as engine:
        resumed = await engine.run(flow, None, run_id="r")
        recorded = engine.load("r", flow)
    assert resumed.ok and resumed["work"] == 4
    # Both executions took milliseconds; the hour between them is not run time.
    assert first.duration_s < resumed.duration_s < 60
    assert recorded.duration_s == pytest.approx(resumed.duration_s)
    with SQLiteStore(path) as store:
        row = store.get_run("r")
        assert row is not None and row.finished_at is not None
        assert row.finished_at - row.started_at > HOUR  # it started an hour ago
        assert run_entry(store, row)["duration_s"] == pytest.approx(resumed.duration_s, abs=1e-5)


async def test_a_batch_resumed_later_records_its_items_and_its_own_run_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    fails = [1]
    flow = _flaky_flow(fails)
    items = [{"n": i} for i in range(3)]
    async with durable_engine(path) as engine:
        first = {i: r async for i, r in engine.run_many(flow, items, batch_id="b")}
    assert sorted(r.status for r in first.values()) == ["done", "done", "failed"]
    _age(path, ["b", "b.0", "b.1", "b.2"], HOUR)
    async with durable_engine(path) as engine:
        again = {i: r async for i, r in engine.run_many(flow, None, batch_id="b")}
    assert all(r.ok for r in again.values())
    with SQLiteStore(path) as store:
        for row in [store.get_run("b"), *store.list_runs(parent_id="b")]:
            assert row is not None and row.duration_s is not None
            assert row.duration_s < 60, f"{row.run_id} counts the idle hour as run time"
            entry = run_entry(store, row)
            assert entry["duration_s"] == pytest.approx(row.duration_s, abs=1e-5)
            assert entry["queued_s"] is None or entry["queued_s"] < 60


def _run(status: str, **kw: float | None) -> RunRow:
    return RunRow(run_id="r", flow="f", status=status, inputs="{}", **kw)  # type: ignore[arg-type]


def test_run_time_before_a_resume() -> None:
    store = MemoryStore()
    # Never started: nothing ran yet.
    assert run_time_before(store, _run("pending", started_at=10.0)) == 0.0
    # Ended (failed or waiting): its recorded run time, whenever it started.
    ended = _run("failed", started_at=10.0, finished_at=10_000.0, run_s=2.5)
    assert run_time_before(store, ended) == 2.5
    # Recorded before run times were kept: from its start to its end.
    assert run_time_before(store, _run("failed", started_at=10.0, finished_at=14.0)) == 4.0
    # Killed in its second execution (begun at 100, after 2 s in the first): that
    # execution counts up to the end of its last finished step (101 + 1.5).
    store.create_run(_run("running", started_at=10.0, run_s=2.0, resumed_at=100.0))
    for name, started, took in (("old", 11.0, 1.0), ("a", 100.5, 0.25), ("b", 101.0, 1.5)):
        store.save_step(
            StepRow(
                run_id="r",
                step=name,
                status="done",
                definition="d",
                started_at=started,
                duration_s=took,
            )
        )
    row = store.get_run("r")
    assert row is not None
    assert run_time_before(store, row) == pytest.approx(2.0 + 2.5)
    # Killed before any step of that execution finished: only the earlier run time.
    fresh = MemoryStore()
    fresh.create_run(_run("running", started_at=10.0, run_s=2.0, resumed_at=500.0))
    again = fresh.get_run("r")
    assert again is not None and run_time_before(fresh, again) == 2.0


def test_run_time_before_a_killed_batch_counts_to_its_last_finished_item() -> None:
    store = MemoryStore()
    batch = RunRow(
        run_id="b",
        flow="f",
        status="running",
        inputs="{}",
        started_at=10.0,
        resumed_at=100.0,
        run_s=1.0,
        is_batch=True,
    )
    store.create_runs(
        [
            batch,
            _item(0, started=12.0, finished=13.0),
            _item(1, started=100.0, finished=103.0),
        ]
    )
    row = store.get_run("b")
    assert row is not None and run_time_before(store, row) == pytest.approx(1.0 + 3.0)


def _item(index: int, *, started: float, finished: float) -> RunRow:
    return RunRow(
        run_id=f"b.{index}",
        flow="f",
        status="done",
        inputs="{}",
        started_at=started,
        finished_at=finished,
        parent_id="b",
        item_index=index,
    )
