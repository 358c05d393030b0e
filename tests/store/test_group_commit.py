"""Group commit in the SQLite store: the writes of grouped runs are queued during an event-loop
turn and committed together, in order, visible to this store's reads at once and to other
connections (other processes) once committed; a refused queued write stops only its run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import trellis as tl
from trellis.errors import LeaseLostError, StoreError
from trellis.store import CallRow, SQLiteStore, StepRow
from trellis.testing.store_conformance import run_row


def _step(run_id: str, step: str = "s", output: str = '"x"') -> StepRow:
    return StepRow(run_id=run_id, step=step, status="done", definition="d", output=output)


def _call(run_id: str, key: str) -> CallRow:
    return CallRow(run_id=run_id, key=key, request="h", result='"r"', attempts="[]")


def _commits(store: SQLiteStore) -> list[str]:
    """The transactions the store's connection commits from now on."""
    seen: list[str] = []
    store._db.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


async def test_grouped_writes_are_one_commit_visible_to_this_store_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as other:
        for run_id in ("a", "b"):
            store.create_run(run_row(run_id, status="running"))
        epochs = {r: store.claim_lease(r, "me", 100.0, 60.0).epoch for r in ("a", "b")}
        commits = _commits(store)
        failures: list[StoreError] = []
        with store.grouped("a", failures.append), store.grouped("b", failures.append):
            for run_id in ("a", "b"):
                for n in range(3):
                    store.save_call(_call(run_id, f"k{n}"), epoch=epochs[run_id])
                store.save_step(_step(run_id), epoch=epochs[run_id])
            # Not committed yet: another connection does not see them ...
            assert other.load_calls("a") == [] and other.load_steps("b") == []
            assert commits == []
            # ... this store's reads do (they commit what they read first).
            assert [c.key for c in store.load_calls("a")] == ["k0", "k1", "k2"]
            assert len(commits) == 1
            store.save_step(_step("b", "t"), epoch=epochs["b"])
            await store.committed("b")
            assert {s.step for s in other.load_steps("b")} == {"s", "t"}
        assert failures == []


async def test_a_refused_queued_write_stops_only_its_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as stalled, SQLiteStore(path) as successor:
        for run_id in ("lost", "kept"):
            stalled.create_run(run_row(run_id, status="running"))
        old = stalled.claim_lease("lost", "stalled", 100.0, 1.0).epoch
        kept = stalled.claim_lease("kept", "stalled", 100.0, 60.0).epoch
        told: list[tuple[str, StoreError]] = []
        with (
            stalled.grouped("lost", lambda e: told.append(("lost", e))),
            stalled.grouped("kept", lambda e: told.append(("kept", e))),
        ):
            stalled.save_step(_step("kept", "before"), epoch=kept)
            stalled.save_step(_step("lost", "stale"), epoch=old)  # queued, not refused yet
            # Meanwhile the lease expired and another process took the run over.
            new = successor.claim_lease("lost", "successor", 102.0, 60.0).epoch
            stalled.save_step(_step("kept", "after"), epoch=kept)
            with pytest.raises(LeaseLostError) as refused:
                await stalled.committed("lost")
            assert (refused.value.epoch, refused.value.current) == (old, new)
            assert [(who, type(e)) for who, e in told] == [("lost", LeaseLostError)]
            with pytest.raises(LeaseLostError):  # its later writes are refused at once
                stalled.update_run("lost", status="failed", epoch=old)
            await stalled.committed("kept")
        assert successor.load_steps("lost") == []
        assert {s.step for s in successor.load_steps("kept")} == {"before", "after"}
        row = successor.get_run("lost")
        assert row is not None and row.status == "running" and row.lease_owner == "successor"


async def test_queued_records_are_fenced_once_per_commit_even_alone(tmp_path: Path) -> None:
    """Queued step and call records carry no guard of their own: the commit reads each
    run's lease epoch once. A stale epoch, or a run that does not exist, is refused there,
    also when the write is the only one of its commit."""
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as successor:
        store.create_run(run_row("r", status="running"))
        old = store.claim_lease("r", "me", 100.0, 1.0).epoch
        successor.claim_lease("r", "successor", 102.0, 60.0)
        told: list[StoreError] = []
        with store.grouped("r", told.append), store.grouped("other", told.append):
            store.save_call(_call("r", "k"), epoch=old)  # alone in its commit
            with pytest.raises(LeaseLostError):
                await store.committed("r")
        assert successor.load_calls("r") == [] and len(told) == 1
        told.clear()
        store.create_run(run_row("kept", status="running"))
        kept = store.claim_lease("kept", "me", 100.0, 60.0).epoch
        with store.grouped("ghost", told.append), store.grouped("kept", told.append):
            store.save_step(_step("ghost"), epoch=1)
            store.save_done_step("kept", "s", "d", '"x"', None, None, epoch=kept)
            store.save_call(_call("kept", "k"), epoch=kept)
            with pytest.raises(StoreError, match="no run 'ghost'") as refused:
                await store.committed("ghost")
            assert not isinstance(refused.value, LeaseLostError)
            await store.committed("kept")
        assert [s.step for s in successor.load_steps("kept")] == ["s"]
        assert [c.key for c in successor.load_calls("kept")] == ["k"]
        assert successor.load_steps("ghost") == [] and len(told) == 1


async def test_a_commit_waits_for_the_writes_of_the_turns_after_it_but_not_forever(
    tmp_path: Path,
) -> None:
    """Runs still at work in the turns after a commit was scheduled join it (one
    transaction for the wave); runs that write in every turn are committed at least
    every fifth turn (MAX_DEFERRED is 4)."""
    from trellis.store.groupcommit import MAX_DEFERRED

    assert MAX_DEFERRED == 4
    with SQLiteStore(tmp_path / "t.db") as store:
        for run_id in ("a", "b"):
            store.create_run(run_row(run_id, status="running"))
        sizes: list[int] = []  # the writes of each transaction of queued writes
        commit = store._group._commit
        store._group._commit = lambda writes: sizes.append(len(writes)) or commit(writes)
        with store.grouped("a", pytest.fail), store.grouped("b", pytest.fail):
            store.save_call(_call("a", "k0"))  # a turn with two writers: more may follow
            store.save_call(_call("b", "k0"))
            await asyncio.sleep(0)
            store.save_call(_call("a", "k1"))  # the next turn's
            await asyncio.sleep(0)
            store.save_call(_call("b", "k1"))
            assert sizes == []
            for _ in range(MAX_DEFERRED + 1):
                await asyncio.sleep(0)
            assert sizes == [4]
            sizes.clear()
            turns = 40
            for n in range(turns):  # two runs that never stop writing
                store.save_call(_call("a", f"w{n}"))
                store.save_call(_call("b", f"w{n}"))
                await asyncio.sleep(0)
            assert len(sizes) >= turns // 5
            await store.committed("a")
        assert len(store.load_calls("a")) == 2 + turns


async def test_a_start_queued_in_a_commit_moves_the_epoch_its_later_records_are_checked_against(
    tmp_path: Path,
) -> None:
    """The commit reads its runs' epochs once, but a queued start (epoch 0 to 1) of a run
    is seen by that run's records after it: one written at epoch 0 is refused, as its own
    fenced statement would be."""
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create_run(run_row("a", status="running"))
        store.create_run(run_row("b", status="pending"))
        epoch = store.claim_lease("a", "me", 100.0, 60.0).epoch
        told: dict[str, StoreError] = {}
        with (
            store.grouped("a", lambda e: told.setdefault("a", e)),
            store.grouped("b", lambda e: told.setdefault("b", e)),
        ):
            store.save_step(_step("a", "x"), epoch=epoch)  # the epochs are read for it
            assert store.start_pending("b", "me", 100.0, 60.0) == 1  # b: 0 to 1, queued
            store.save_step(_step("b", "y"), epoch=0)
            store.save_step(_step("b", "z"), epoch=1)
            with pytest.raises(LeaseLostError):
                await store.committed("b")
        assert list(told) == ["b"] and isinstance(told["b"], LeaseLostError)
        assert [s.step for s in store.load_steps("a")] == ["x"]
        assert store.load_steps("b") == []  # refused, and its later writes skipped


async def test_a_queued_item_start_loses_to_a_process_that_started_it_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as other:
        store.create_run(run_row("b.0", status="pending"))
        told: list[StoreError] = []
        with store.grouped("b.0", told.append):
            assert store.start_pending("b.0", "me", 100.0, 60.0) == 1  # queued
            assert other.start_pending("b.0", "them", 100.5, 60.0) == 1  # committed first
            with pytest.raises(LeaseLostError):
                await store.committed("b.0")
        assert len(told) == 1
        row = other.get_run("b.0")
        assert row is not None and (row.status, row.lease_owner) == ("running", "them")
        # Not pending any more: neither store starts it again the quick way.
        assert store.start_pending("b.0", "me", 101.0, 60.0) is None


def test_without_a_running_loop_writes_are_immediate(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as other:
        store.create_run(run_row("r", status="running"))
        with store.grouped("r", lambda e: None):
            store.save_step(_step("r"))
            assert [s.step for s in other.load_steps("r")] == ["s"]


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    store.create_run(run_row("r", status="running"))
    with store.grouped("r", lambda e: None):
        store.save_step(_step("r"))
        store.close()
    with SQLiteStore(path) as reopened:
        assert [s.step for s in reopened.load_steps("r")] == ["s"]


async def test_a_durable_batch_commits_in_groups_and_each_step_waits_for_its_inputs_record(
    tmp_path: Path,
) -> None:
    """200 items of a 2-step flow: far fewer commits than writes, and when a step starts,
    the record of the step it depends on is already committed (another connection sees
    it)."""
    path = tmp_path / "t.db"
    flow = tl.Flow("two", inputs={"n": int})
    watcher = SQLiteStore(path)
    unrecorded: list[int] = []

    @flow.step
    async def first(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @flow.step
    def second(n: int, first: int) -> int:
        if not any(s.step == "first" for s in watcher.load_steps(f"b.{n}")):
            unrecorded.append(n)
        return first * 2

    store = SQLiteStore(path)
    commits = _commits(store)
    try:
        async with tl.Engine(store=store) as engine:
            results = {
                i: r
                async for i, r in engine.run_many(
                    flow, [{"n": n} for n in range(200)], batch_id="b", concurrency=32
                )
            }
    finally:
        store.close()
        watcher.close()
    assert {i: r["second"] for i, r in results.items()} == {n: (n + 1) * 2 for n in range(200)}
    assert unrecorded == []
    # Per item: its start, 2 step records, its end and its lease's release (5 writes).
    assert len(commits) < 200, f"{len(commits)} commits for 1000 writes"


def test_a_killed_process_keeps_every_item_it_reported(tmp_path: Path) -> None:
    """A batch process killed (SIGKILL) mid-batch: every item whose result it handed out is
    done in the store, and resuming the batch runs none of them again (each other item's
    step runs once more at most: the ones in flight at the kill)."""
    path, log = tmp_path / "t.db", tmp_path / "ran.log"
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        import trellis as tl
        from trellis.store import SQLiteStore

        flow = tl.Flow("slow", inputs={{"n": int}})

        @flow.step
        async def work(n: int) -> int:
            await asyncio.sleep(0.001)
            with open({str(log)!r}, "a") as f:
                f.write(f"{{n}}\\n")
            return n * 3

        async def main(kill: bool) -> None:
            store = SQLiteStore({str(path)!r})
            async with tl.Engine(store=store, lease_ttl=1.0) as engine:
                done = 0
                items = [{{"n": n}} for n in range(400)]
                async for index, result in engine.run_many(
                    flow, items, batch_id="b", concurrency=16
                ):
                    print(index, result.status, flush=True)
                    done += 1
                    if kill and done == 150:
                        os.kill(os.getpid(), 9)

        asyncio.run(main(sys.argv[1] == "kill"))
        """
    )
    killed = subprocess.run([sys.executable, "-c", script, "kill"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    reported = [int(line.split()[0]) for line in killed.stdout.splitlines()]
    assert len(reported) == 150
    with SQLiteStore(path) as store:
        status = {r.run_id: r.status for r in store.list_runs(parent_id="b")}
        outputs = {
            r.run_id: json.loads(s.output or "null")
            for r in store.list_runs(parent_id="b")
            for s in store.load_steps(r.run_id)
        }
    for index in reported:
        assert status[f"b.{index}"] == "done"
        assert outputs[f"b.{index}"] == index * 3
    time.sleep(1.2)  # the killed process's leases expire
    resume = [sys.executable, "-c", script, "resume"]
    resumed = subprocess.run(resume, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.splitlines()) == 400
    runs = [int(n) for n in log.read_text().split()]
    assert sorted(set(runs)) == list(range(400))
    assert all(runs.count(index) == 1 for index in reported)
    assert max(runs.count(n) for n in range(400)) <= 2


async def test_a_callback_that_raises_does_not_keep_others_waiting(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as successor:
        for run_id in ("a", "b"):
            store.create_run(run_row(run_id, status="running"))
        old = store.claim_lease("a", "me", 100.0, 1.0).epoch
        epoch_b = store.claim_lease("b", "me", 100.0, 60.0).epoch

        def explode(error: StoreError) -> None:
            raise RuntimeError("a broken callback")

        with store.grouped("a", explode), store.grouped("b", lambda e: None):
            store.save_step(_step("a"), epoch=old)
            store.save_step(_step("b"), epoch=epoch_b)
            successor.claim_lease("a", "successor", 102.0, 60.0)
            woken: list[str] = []
            assert store.when_committed("b", lambda: woken.append("b"))
            with pytest.raises(RuntimeError, match="broken callback"):
                store._group.flush()
            assert woken == ["b"]  # woken all the same
            with pytest.raises(LeaseLostError):
                await store.committed("a")
        assert [s.step for s in successor.load_steps("b")] == ["s"]


async def test_a_lone_runs_chain_commits_each_step_before_the_next_starts(tmp_path: Path) -> None:
    """One run alone (no other run to share a commit with): a step's record is committed
    as soon as the next step is ready, without waiting for the next turn."""
    path = tmp_path / "t.db"
    flow = tl.Flow("chain", inputs={"n": int})
    watcher = SQLiteStore(path)
    seen: list[set[str]] = []

    def recorded() -> set[str]:
        return {s.step for s in watcher.load_steps("r")}

    @flow.step
    def a(n: int) -> int:
        seen.append(recorded())
        return n + 1

    @flow.step
    def b(a: int) -> int:
        seen.append(recorded())
        return a + 1

    @flow.step
    def c(b: int) -> int:
        seen.append(recorded())
        return b + 1

    store = SQLiteStore(path)
    try:
        async with tl.Engine(store=store) as engine:
            result = await engine.run(flow, {"n": 0}, run_id="r")
    finally:
        store.close()
        watcher.close()
    assert result["c"] == 3
    assert seen == [set(), {"a"}, {"a", "b"}]


async def test_a_second_grouping_of_a_run_leaves_the_first_in_place(tmp_path: Path) -> None:
    """Two attempts at one run in one process: the one refused its lease ends its grouping
    without taking the running one's away (its refusals still reach it)."""
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store, SQLiteStore(path) as successor:
        store.create_run(run_row("r", status="running"))
        old = store.claim_lease("r", "me", 100.0, 1.0).epoch
        told: list[str] = []
        with store.grouped("r", lambda e: told.append("first")):
            with store.grouped("r", lambda e: told.append("second")):
                pass  # refused its lease: nothing written
            store.save_call(_call("r", "k"), epoch=old)  # queued
            successor.claim_lease("r", "successor", 102.0, 60.0)
            with pytest.raises(LeaseLostError):
                await store.committed("r")
        assert told == ["first"]


@pytest.mark.parametrize("items", [1, 3])
def test_a_paid_call_is_recorded_before_the_step_goes_on(tmp_path: Path, items: int) -> None:
    """A step pays a call, then blocks the event loop (CPU work, sync I/O) and the process
    is killed: the call is recorded (a resume does not pay it again), alone or in a batch."""
    path = tmp_path / "t.db"
    child = textwrap.dedent(
        f"""
        import asyncio, time
        import trellis as tl
        from trellis.store import SQLiteStore

        flow = tl.Flow("k", inputs={{"n": int}})

        @flow.step
        async def ask(n: int, llm: tl.LLM) -> str:
            reply = await llm.generate(f"hi {{n}}", model="m")
            print("PAID", flush=True)
            time.sleep(30)  # blocking work after the call
            return str(reply)

        model = tl.FunctionModel(lambda request: "answer", name="function:test")

        async def main() -> None:
            store = SQLiteStore({str(path)!r})
            async with tl.Engine(store=store, models={{"m": model}}) as engine:
                items = [{{"n": n}} for n in range({items})]
                async for _ in engine.run_many(flow, items, batch_id="b", concurrency=8):
                    pass

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "PAID"
        time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    with SQLiteStore(path) as store:
        recorded = [c for i in range(items) for c in store.load_calls(f"b.{i}")]
    assert len(recorded) >= 1, "the paid call was lost with the process"


async def test_a_commit_that_raises_tells_every_run_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store:
        for run_id in ("a", "b"):
            store.create_run(run_row(run_id, status="running"))
        told: list[str] = []
        with (
            store.grouped("a", lambda e: told.append("a")),
            store.grouped("b", lambda e: told.append("b")),
        ):
            store.save_call(_call("a", "k"))
            store.save_call(_call("b", "k"))

            def broken(*args: object, **kwargs: object) -> None:
                raise OverflowError("not a sqlite3 error")

            monkeypatch.setattr(store, "_apply", broken)
            with pytest.raises(OverflowError):
                store._group.flush()
            monkeypatch.undo()
            with pytest.raises(StoreError, match="not a sqlite3 error"):
                await store.committed("a")
        assert sorted(told) == ["a", "b"]
        assert store.load_calls("a") == []
