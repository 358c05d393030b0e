"""Fencing: once another process has taken a run over, the process that stalled writes nothing.

A second SQLite connection stands for the process that took the run over (the successor): it
claims the lease (a new epoch) and records its own results. The stale engine then wakes (its
step returns) and must neither overwrite them nor mark the run failed: its writes carry the
older epoch and are refused, it raises :class:`LeaseLostError` and stops.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import trellis as tl
from trellis.engine.durable import open_batch
from trellis.engine.lease import Lease, owner_is_dead
from trellis.errors import ConfigurationError, LeaseLostError, RunLockedError
from trellis.store import SQLiteStore, StepRow

from . import Counts, durable_engine


def _successor_takes_over(path: Path, run_id: str, *, now: float | None = None) -> int:
    """Another process claims ``run_id`` (``now`` past the old lease's expiry) and records
    a finished step and the run as done; returns its epoch."""
    with SQLiteStore(path) as store:
        claim = store.claim_lease(run_id, "successor", now or time.time(), 60.0)
        assert claim.granted, claim
        store.save_step(
            StepRow(
                run_id=run_id, step="before", status="done", definition="x", output='"successor"'
            ),
            epoch=claim.epoch,
        )
        store.update_run(run_id, status="done", finished_at=time.time(), epoch=claim.epoch)
        return claim.epoch


def _records(path: Path, run_id: str) -> tuple[Any, ...]:
    with SQLiteStore(path) as store:
        row = store.get_run(run_id)
        assert row is not None
        steps = sorted((s.step, s.status, s.output) for s in store.load_steps(run_id))
        calls = [c.key for c in store.load_calls(run_id)]
        return row.status, row.error, row.lease_owner, row.lease_epoch, steps, calls


def gated_flow(counts: Counts, gate: asyncio.Event, started: asyncio.Event) -> tl.Flow:
    flow = tl.Flow("fenced", inputs={"text": str})

    @flow.step
    async def before(text: str) -> str:
        counts.hit("before")
        started.set()
        await gate.wait()
        return "stale"

    @flow.step
    def after(before: str) -> str:
        counts.hit("after")
        return before

    return flow


async def test_a_write_after_a_takeover_is_refused_and_the_run_stops(tmp_path: Path) -> None:
    """No heartbeat runs in between (TTL 60 s): the refused write alone stops the run."""
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    async with durable_engine(path, lease_ttl=60) as engine:
        running = asyncio.create_task(
            engine.run(gated_flow(counts, gate, started), {"text": "x"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 5)
        epoch = _successor_takes_over(path, "r", now=time.time() + 120)  # "after it expired"
        before = _records(path, "r")
        gate.set()  # the stalled step completes and tries to record it
        with pytest.raises(LeaseLostError) as info:
            await asyncio.wait_for(running, 5)
    assert (info.value.run_id, info.value.epoch, info.value.current) == ("r", 1, epoch)
    assert info.value.owner == "successor"
    assert counts == {"before": 1}, "nothing ran after the refused write"
    assert (
        _records(path, "r")
        == before
        == (
            "done",
            None,
            "successor",
            2,
            [("before", "done", '"successor"')],
            [],
        )
    )


async def test_a_heartbeat_that_finds_the_lease_taken_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    async with durable_engine(path, lease_ttl=0.3) as engine:
        running = asyncio.create_task(
            engine.run(gated_flow(counts, gate, started), {"text": "x"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 5)
        _successor_takes_over(path, "r", now=time.time() + 120)
        before = _records(path, "r")
        with pytest.raises(LeaseLostError, match="lost its lease to successor"):
            await asyncio.wait_for(running, 5)  # without the gate: the heartbeat stops it
    assert counts == {"before": 1}
    assert _records(path, "r") == before


async def test_a_plain_step_blocking_past_the_ttl_cannot_write_after_a_takeover(
    tmp_path: Path,
) -> None:
    """A sync step blocks the event loop (no heartbeat can run) past the TTL; meanwhile
    another process takes the run over for real (the lease has expired) and finishes it."""
    path = tmp_path / "t.db"
    counts = Counts()
    flow = tl.Flow("blocking", inputs={"text": str})

    @flow.step
    def before(text: str) -> str:
        counts.hit("before")
        time.sleep(0.5)  # blocks the loop: the 0.2 s lease expires unrenewed
        _successor_takes_over(path, "r")  # at real time: succeeds only once expired
        return "stale"

    @flow.step
    def after(before: str) -> str:
        counts.hit("after")
        return before

    async with durable_engine(path, lease_ttl=0.2) as engine:
        with pytest.raises(LeaseLostError):
            await engine.run(flow, {"text": "x"}, run_id="r")
    assert counts == {"before": 1}
    status, error, owner, _, steps, _ = _records(path, "r")
    assert (status, error, owner) == ("done", None, "successor")
    assert steps == [("before", "done", '"successor"')]


async def test_a_batch_whose_lease_is_taken_stops(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    flow = gated_flow(counts, gate, started)
    items = [{"text": str(i)} for i in range(4)]
    async with durable_engine(path, lease_ttl=0.3) as engine:

        async def consume() -> list[int]:
            seen = []
            async for index, _ in engine.run_many(flow, items, concurrency=2, batch_id="b"):
                seen.append(index)
            return seen

        running = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        with SQLiteStore(path) as store:
            assert store.claim_lease("b", "successor", time.time() + 120, 60).granted
        with pytest.raises(LeaseLostError, match=r"run b: .*lost its lease to successor"):
            await asyncio.wait_for(running, 5)
    with SQLiteStore(path) as store:
        batch = store.get_run("b")
        assert batch is not None
        assert (batch.status, batch.finished_at, batch.lease_owner) == (
            "running",
            None,
            "successor",
        ), "the stale process neither finished the batch nor released the new lease"
        children = store.list_runs(parent_id="b")
        assert [c.status for c in children[2:]] == ["pending", "pending"], "no item started"
        assert all(c.lease_owner is None for c in children), "its items' leases released"


# -- races on a new id ---------------------------------------------------------------------


class _LateReader(SQLiteStore):
    """A connection whose first look-up of a run misses it, as when another process
    creates the run right after this one looked."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.misses = 1

    def get_run(self, run_id: str) -> Any:
        if self.misses:
            self.misses -= 1
            return None
        return super().get_run(run_id)


async def test_two_processes_creating_the_same_new_run_one_gets_the_lease_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    flow = gated_flow(counts, gate, started)
    late = _LateReader(path)
    async with durable_engine(path) as one, tl.Engine(store=late) as two:
        running = asyncio.create_task(one.run(flow, {"text": "x"}, run_id="r"))
        await asyncio.wait_for(started.wait(), 5)
        with pytest.raises(RunLockedError, match="is being executed by") as info:
            await two.run(flow, {"text": "x"}, run_id="r")  # its insert fails: a duplicate
        assert late.misses == 0, "the loser really tried to create the run"
        assert "UNIQUE" not in str(info.value)
        gate.set()
        assert (await asyncio.wait_for(running, 5)).ok
    late.close()
    assert counts == {"before": 1, "after": 1}


def test_a_new_run_is_created_with_its_lease_held(tmp_path: Path) -> None:
    """No moment exists in which the run is recorded but free for another process."""
    from trellis.engine.durable import DurableRun

    flow = tl.Flow("f", inputs={"text": str})

    @flow.step
    def s(text: str) -> str:
        return text

    with SQLiteStore(tmp_path / "t.db") as store:
        durable = DurableRun.open(
            store, flow.compile(), {"text": "x"}, "r", owner="me", lease_ttl=30
        )
        assert durable.epoch == 1
        row = store.get_run("r")
        assert row is not None and (row.lease_owner, row.lease_epoch) == ("me", 1)
        assert row.lease_expires is not None and row.lease_expires > time.time() + 25
        assert store.acquire_lease("r", "other", time.time(), 30) == "me"


def test_two_processes_creating_the_same_new_batch_one_gets_the_lease_error(
    tmp_path: Path,
) -> None:
    flow = tl.Flow("f", inputs={"text": str})

    @flow.step
    def s(text: str) -> str:
        return text

    items = [{"text": "a"}, {"text": "b"}]
    with SQLiteStore(tmp_path / "t.db") as winner, _LateReader(tmp_path / "t.db") as loser:
        open_batch(winner, flow.compile(), items, "b", None)
        with pytest.raises(RunLockedError, match="run b is being executed by") as info:
            open_batch(loser, flow.compile(), items, "b", None)
        assert loser.misses == 0
        assert "UNIQUE" not in str(info.value)
        assert len(winner.list_runs(parent_id="b")) == 2


# -- options and owners ----------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [math.inf, -math.inf, math.nan, 0, 0.0, -1])
def test_a_lease_ttl_must_be_finite_and_positive(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        tl.Engine(lease_ttl=ttl)
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        Lease(tl.MemoryStore(), "r", "me", ttl)


def test_a_killed_owner_not_yet_reaped_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = f"{socket.gethostname()}:{child.pid}:tag"
    try:
        deadline = time.monotonic() + 10
        while not _zombie(child.pid):  # exited, not reaped: the pid still exists
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # ...and signals reach it: "alive" to a plain kill(0)
        assert owner_is_dead(owner) is True
    finally:
        child.wait()
    assert owner_is_dead(owner) is True  # reaped: gone


def test_a_running_owner_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert owner_is_dead(f"{socket.gethostname()}:{child.pid}:tag") is False
    finally:
        child.kill()
        child.wait()


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0] == b"Z"


def test_lease_lost_error_is_a_store_error_and_pickles() -> None:
    error = LeaseLostError("lost", run_id="r", epoch=1, current=2, owner="h:1:x")
    assert isinstance(error, tl.StoreError) and isinstance(error, tl.TrellisError)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is LeaseLostError
    assert (str(copy), copy.run_id, copy.epoch, copy.current, copy.owner) == (
        "lost",
        "r",
        1,
        2,
        "h:1:x",
    )
