"""One process executes a run at a time: a lease on the run row, renewed while it runs.

Two engines with their own SQLite connections to the same file stand for two processes
(each engine has its own lease owner). A step awaiting an ``asyncio.Event`` keeps the
first run executing while the second engine tries the same run id.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import trellis as tl
from trellis.errors import LeaseLostError, RunLockedError
from trellis.store import RunRow, SQLiteStore

from . import Counts, durable_engine


def run_row(
    run_id: str, *, flow: str, lease_owner: str | None = None, expires: float | None = None
) -> RunRow:
    """A run row as a process that died mid-run leaves it: running, maybe leased."""
    return RunRow(
        run_id=run_id,
        flow=flow,
        status="running",
        inputs='{"text": "hi"}',
        started_at=time.time() - 100,
        lease_owner=lease_owner,
        lease_expires=expires,
    )


def gated(counts: Counts, gate: asyncio.Event, started: asyncio.Event) -> tl.Flow:
    flow = tl.Flow("gated", inputs={"text": str})

    @flow.step
    def first(text: str) -> str:
        counts.hit("first")
        return text.upper()

    @flow.step
    async def wait(first: str) -> str:
        counts.hit("wait")
        started.set()
        await gate.wait()
        return first + "!"

    return flow


async def test_a_run_being_executed_is_locked_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    async with durable_engine(path) as one, durable_engine(path) as two:
        assert one.owner != two.owner
        running = asyncio.create_task(
            one.run(gated(counts, gate, started), {"text": "hi"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 5)
        with pytest.raises(RunLockedError) as info:
            await two.run(gated(counts, gate, started), {"text": "hi"}, run_id="r")
        # the holder is a run of engine one's process (each run has its own lease token)
        assert _process(info.value.owner) == _process(one.owner)
        assert info.value.run_id == "r"
        assert info.value.owner in str(info.value)
        # Without inputs too (a resume attempt).
        with pytest.raises(RunLockedError):
            await two.run(gated(counts, gate, started), None, run_id="r")
        assert counts == {"first": 1, "wait": 1}, "the refused engine ran nothing"

        gate.set()
        result = await asyncio.wait_for(running, 5)
        assert result.ok
        # Now the second process gets the recorded result, without running anything.
        recorded = await two.run(gated(counts, gate, started), None, run_id="r")
    assert recorded.ok and recorded["wait"] == "HI!"
    assert counts == {"first": 1, "wait": 1}
    with SQLiteStore(path) as store:
        row = store.get_run("r")
        assert row is not None
        assert (row.status, row.lease_owner, row.lease_expires) == ("done", None, None)


async def test_the_lease_is_held_while_running_and_released_after(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    async with durable_engine(path, lease_ttl=30) as engine:
        running = asyncio.create_task(
            engine.run(gated(counts, gate, started), {"text": "hi"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 5)
        with SQLiteStore(path) as store:
            row = store.get_run("r")
            assert row is not None
            assert row.lease_owner is not None
            assert _process(row.lease_owner) == _process(engine.owner)
            assert row.lease_expires is not None
            assert 25 < row.lease_expires - time.time() <= 30
            gate.set()
            assert (await asyncio.wait_for(running, 5)).ok
            row = store.get_run("r")
            assert row is not None and row.lease_owner is None


async def test_a_failed_run_releases_its_lease(tmp_path: Path) -> None:
    counts = Counts()
    flow = tl.Flow("failing", inputs={"n": int})

    @flow.step
    def boom(n: int) -> int:
        counts.hit("boom")
        raise ValueError("no")

    path = tmp_path / "t.db"
    async with durable_engine(path, lease_ttl=60) as one, durable_engine(path) as two:
        first = await one.run(flow, {"n": 1}, run_id="f")
        assert first.status == "failed" and first.error is not None
        assert first.error.step == "boom"
        with SQLiteStore(path) as store:
            row = store.get_run("f")
            assert row is not None
            assert (row.status, row.lease_owner, row.lease_expires) == ("failed", None, None)
        # Another process may resume it at once (not after the 60 s TTL): it runs again.
        second = await two.run(flow, None, run_id="f")
        assert second.status == "failed" and second.error is not None
        assert second.error.step == "boom"
    assert counts == {"boom": 2}, "the second process executed the run, it was not refused"


async def test_a_lease_left_by_a_dead_process_is_taken_over_once_expired(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    gate.set()
    flow = gated(counts, gate, started)
    # A run a dead process created and held: recorded, not finished, its lease unexpired.
    with SQLiteStore(path) as store:
        store.create_run(
            run_row("r", flow="gated", lease_owner="dead-host:4242:abc", expires=time.time() + 60)
        )
    async with durable_engine(path) as engine:
        with pytest.raises(RunLockedError, match="dead-host:4242:abc"):
            await engine.run(flow, None, run_id="r")
        assert not counts
        # Its lease expires: the run is resumable.
        with SQLiteStore(path) as store:
            store._db.execute(
                "UPDATE runs SET lease_expires = ? WHERE run_id = 'r'", (time.time() - 1,)
            )
        result = await engine.run(flow, None, run_id="r")
    assert result.ok and result["wait"] == "HI!"
    assert counts == {"first": 1, "wait": 1}


async def test_a_short_lease_expires_after_the_process_dies(tmp_path: Path) -> None:
    """``lease_ttl`` is how long a dead process blocks its run."""
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    with SQLiteStore(path) as store:
        store.create_run(run_row("r", flow="gated"))
        assert store.acquire_lease("r", "dead", now=time.time(), ttl=0.2) is None
    gate.set()
    async with durable_engine(path) as engine:
        with pytest.raises(RunLockedError):
            await engine.run(gated(counts, gate, started), None, run_id="r")
        await asyncio.sleep(0.25)
        result = await engine.run(gated(counts, gate, started), None, run_id="r")
    assert result.ok
    assert counts == {"first": 1, "wait": 1}


@pytest.mark.slow  # real processes or waits: `make quick` skips it
async def test_the_heartbeat_renews_the_lease_of_a_long_run(tmp_path: Path) -> None:
    """With lease_ttl=0.3 a run lasting about a second keeps its lease throughout."""
    path = tmp_path / "t.db"
    counts = Counts()
    flow = tl.Flow("long", inputs={"text": str})

    @flow.step
    async def slow(text: str) -> str:
        counts.hit("slow")
        await asyncio.sleep(1.0)
        return text

    async with durable_engine(path, lease_ttl=0.3) as one, durable_engine(path) as two:
        running = asyncio.create_task(one.run(flow, {"text": "x"}, run_id="r"))
        refusals = 0
        for _ in range(3):  # at ~0.35 s, ~0.7 s and ~0.9 s: well past one ttl
            await asyncio.sleep(0.3 if refusals < 2 else 0.2)
            with pytest.raises(RunLockedError):
                await two.run(flow, {"text": "x"}, run_id="r")
            refusals += 1
        result = await asyncio.wait_for(running, 5)
    assert result.ok
    assert counts == {"slow": 1}
    assert refusals == 3


async def test_a_run_that_lost_its_lease_stops(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts = Counts()
    gate = asyncio.Event()
    flow = tl.Flow("lost", inputs={"text": str})

    @flow.step
    async def before(text: str) -> str:
        counts.hit("before")
        await gate.wait()
        return text

    @flow.step
    def after(before: str) -> str:
        counts.hit("after")
        return before

    async with durable_engine(path, lease_ttl=0.3) as engine:
        running = asyncio.create_task(engine.run(flow, {"text": "x"}, run_id="r"))
        await asyncio.sleep(0.05)
        with SQLiteStore(path) as store:  # another process took the run over
            store._db.execute(
                "UPDATE runs SET lease_owner = 'thief', lease_expires = ? WHERE run_id = 'r'",
                (time.time() + 60,),
            )
        await asyncio.sleep(0.3)  # a heartbeat finds the lease gone
        gate.set()
        with pytest.raises(LeaseLostError, match="lost its lease to thief") as info:
            await asyncio.wait_for(running, 5)
    assert (info.value.run_id, info.value.owner) == ("r", "thief")
    assert counts["after"] == 0, "the run stopped once it knew it had lost its lease"
    with SQLiteStore(path) as store:
        row = store.get_run("r")
        assert row is not None
        # The stale process did not mark the run failed, nor give the thief's lease up.
        assert (row.status, row.finished_at, row.lease_owner) == ("running", None, "thief")


def _process(owner: str) -> str:
    """``host:pid`` of a lease owner ``host:pid:tag``."""
    return owner.rsplit(":", 1)[0]


async def test_one_engine_cannot_execute_the_same_run_twice_at_once(tmp_path: Path) -> None:
    """Leases are per run, not per engine: a second concurrent run of the same id on the
    same engine is refused, so nothing executes (or is paid for) twice."""
    path = tmp_path / "t.db"
    counts, gate, started = Counts(), asyncio.Event(), asyncio.Event()
    async with durable_engine(path) as engine:
        first = asyncio.create_task(
            engine.run(gated(counts, gate, started), {"text": "hi"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 5)
        with pytest.raises(RunLockedError):
            await engine.run(gated(counts, gate, started), {"text": "hi"}, run_id="r")
        gate.set()
        assert (await asyncio.wait_for(first, 5)).ok
