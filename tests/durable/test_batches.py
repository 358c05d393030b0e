"""Batches: one parent run whose items are child runs ``<batch_id>.<index>``.

Every item is recorded (pending) before the first one runs, so an interrupted batch knows
all its items; running the same ``batch_id`` again yields finished items' recorded results
without running them and resumes the rest.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import trellis as tl
from trellis.errors import ConfigurationError, InputError
from trellis.store import SQLiteStore

from . import PRICED, Counts, durable_engine, priced_model


def items_flow(
    counts: Counts,
    slow: set[int],
    fail: set[int] | None = None,
    parked: asyncio.Queue[int] | None = None,
) -> tl.Flow:
    flow = tl.Flow("items", inputs={"n": int})

    @flow.step
    async def ask(n: int, llm: tl.LLM) -> str:
        counts.hit(f"ask{n}")
        return await llm.generate(f"item {n}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def finish(ask: str, n: int) -> str:
        counts.hit(f"finish{n}")
        if n in slow:
            if parked is not None:
                parked.put_nowait(n)
            await asyncio.sleep(30)  # still running when the batch is interrupted
        if fail and n in fail:
            raise RuntimeError(f"item {n} failed")
        return f"{n}:{ask}"

    return flow


def echo() -> tl.FunctionModel:
    return priced_model(lambda request: request.prompt_text().upper())


ITEMS = [{"n": i} for i in range(6)]


async def collect(
    engine: tl.Engine, flow: tl.Flow, items: list[dict[str, int]] | None, **kw: object
) -> dict[int, tl.RunResult]:
    seen: list[int] = []
    results: dict[int, tl.RunResult] = {}
    async for index, result in engine.run_many(flow, items, **kw):  # type: ignore[arg-type]
        seen.append(index)
        results[index] = result
    assert sorted(seen) == list(range(len(seen))), f"each item exactly once: {seen}"
    return results


async def test_a_batch_records_parent_and_pending_children_before_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    seen_at_start: list[list[tuple[str, str]]] = []
    flow = tl.Flow("recorded", inputs={"n": int})

    async with durable_engine(path) as engine:

        @flow.step
        def look(n: int) -> int:
            if n == 0:
                assert engine.store is not None
                rows = engine.store.list_runs(parent_id="b")
                seen_at_start.append([(r.run_id, r.status) for r in rows])
            return n * 10

        results = await collect(engine, flow, [{"n": i} for i in range(3)], batch_id="b")
        assert engine.store is not None
        parent = engine.store.get_run("b")
        children = engine.store.list_runs(parent_id="b")
        top = engine.store.list_runs(top_level=True)

    # Every item is recorded before the first one runs (the others, started in the same
    # turn, may already be running: concurrency 8).
    [seen] = seen_at_start
    assert [r for r, _ in seen] == ["b.0", "b.1", "b.2"]
    assert seen[0][1] == "running" and {s for _, s in seen[1:]} <= {"pending", "running"}
    assert {i: r["look"] for i, r in results.items()} == {0: 0, 1: 10, 2: 20}
    assert {i: r.run_id for i, r in results.items()} == {0: "b.0", 1: "b.1", 2: "b.2"}
    assert parent is not None
    assert (parent.flow, parent.status, parent.parent_id) == ("recorded", "done", None)
    assert json.loads(parent.inputs) == {"items": 3}
    assert json.loads(parent.meta or "{}").get("batch") is True
    assert parent.finished_at is not None
    assert [(c.run_id, c.parent_id, c.item_index, c.status) for c in children] == [
        (f"b.{i}", "b", i, "done") for i in range(3)
    ]
    assert [json.loads(c.inputs) for c in children] == [{"n": i} for i in range(3)]
    assert [r.run_id for r in top] == ["b"]


async def test_an_interrupted_batch_resumes_only_unfinished_items(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), echo()
    slow = {2, 3, 4, 5}
    first_session: list[int] = []
    parked: asyncio.Queue[int] = asyncio.Queue()
    async with durable_engine(path, {"m": model}) as engine:
        flow = items_flow(counts, slow, parked=parked)
        batch = engine.run_many(flow, ITEMS, batch_id="b", concurrency=2)
        async for index, result in batch:
            assert result.ok
            first_session.append(index)
            if len(first_session) == 2:
                break
        # Items 2 and 3 made their LLM call and are parked in their second step.
        in_flight = {await asyncio.wait_for(parked.get(), 5) for _ in range(2)}
        await batch.aclose()  # interrupts them
    assert sorted(first_session) == [0, 1]
    assert in_flight == {2, 3}
    with SQLiteStore(path) as store:
        statuses = [r.status for r in store.list_runs(parent_id="b")]
        parent = store.get_run("b")
        assert parent is not None and parent.status == "running", "the batch is unfinished"
        assert all(r.lease_owner is None for r in store.list_runs(parent_id="b"))
    assert statuses == ["done", "done", "running", "running", "pending", "pending"]
    assert len(model.calls) == 4

    slow.clear()
    async with durable_engine(path, {"m": model}) as engine:
        results = await collect(engine, items_flow(counts, slow), None, batch_id="b")
    assert sorted(results) == list(range(6)), "every item present exactly once"
    assert all(r.ok for r in results.values())
    assert {i: r["finish"] for i, r in results.items()} == {i: f"{i}:ITEM {i}" for i in range(6)}
    # Finished items did not run again; every item's LLM call happened exactly once (calls
    # that completed while their item was interrupted were journaled and replayed).
    assert counts["finish0"] == counts["finish1"] == 1
    assert all(counts[f"ask{i}"] == 1 for i in range(6)), counts
    assert len(model.calls) == 6
    with SQLiteStore(path) as store:
        parent = store.get_run("b")
        assert parent is not None and parent.status == "done"
        assert [r.status for r in store.list_runs(parent_id="b")] == ["done"] * 6


async def test_a_completed_batch_yields_its_recorded_results(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), echo()
    async with durable_engine(path, {"m": model}) as engine:
        first = await collect(engine, items_flow(counts, set()), ITEMS[:3], batch_id="b")
        again = await collect(engine, items_flow(counts, set()), None, batch_id="b")
        same_items = await collect(engine, items_flow(counts, set()), ITEMS[:3], batch_id="b")
    assert {i: r.outputs for i, r in again.items()} == {i: r.outputs for i, r in first.items()}
    assert {i: r.outputs for i, r in same_items.items()} == {i: r.outputs for i, r in first.items()}
    assert counts == {f"{step}{i}": 1 for step in ("ask", "finish") for i in range(3)}
    assert len(model.calls) == 3


async def test_a_failed_item_fails_the_batch_and_reruns_alone(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), echo()
    fail = {1}
    async with durable_engine(path, {"m": model}) as engine:
        first = await collect(engine, items_flow(counts, set(), fail), ITEMS[:3], batch_id="b")
        assert [first[i].ok for i in range(3)] == [True, False, True]
        assert engine.store is not None
        assert engine.store.get_run("b").status == "failed"  # type: ignore[union-attr]
        fail.clear()
        again = await collect(engine, items_flow(counts, set(), fail), None, batch_id="b")
        assert engine.store.get_run("b").status == "done"  # type: ignore[union-attr]
    assert all(r.ok for r in again.values())
    assert counts == {"ask0": 1, "ask1": 1, "ask2": 1, "finish0": 1, "finish1": 2, "finish2": 1}
    assert len(model.calls) == 3, "item 1's call was replayed"


async def test_resuming_with_a_different_number_of_items_is_an_input_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), echo()
    async with durable_engine(path, {"m": model}) as engine:
        await collect(engine, items_flow(counts, set()), ITEMS[:3], batch_id="b")
        for other in (ITEMS[:2], ITEMS[:4]):
            with pytest.raises(InputError, match="3 items"):
                await collect(engine, items_flow(counts, set()), other, batch_id="b")
    assert counts["ask0"] == 1 and len(model.calls) == 3


async def test_resuming_with_other_items_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with durable_engine(path, {"m": echo()}) as engine:
        await collect(engine, items_flow(Counts(), set()), ITEMS[:2], batch_id="b")
        with pytest.raises(InputError):
            await collect(engine, items_flow(Counts(), set()), ITEMS[3:5], batch_id="b")


async def test_the_same_batch_id_with_one_item_changed_is_refused_and_the_same_items_replay(
    tmp_path: Path,
) -> None:
    """Same count, one item's inputs changed: the recorded batch is refused, not resumed
    with its own items in their place; the recorded items yield their results, nothing runs."""
    counts, model = Counts(), echo()
    changed = [ITEMS[0], {"n": 9}, ITEMS[2]]
    async with tl.Engine(
        store=f"sqlite:///{tmp_path / 's.db'}", models={"m": model}, config=PRICED
    ) as engine:
        first = await collect(engine, items_flow(counts, set()), ITEMS[:3], batch_id="b")
        with pytest.raises(InputError, match=r"^batch 'b' was recorded with 3 items, not these;"):
            await collect(engine, items_flow(counts, set()), changed, batch_id="b")
        again = await collect(engine, items_flow(counts, set()), ITEMS[:3], batch_id="b")
        assert engine.store is not None
        recorded = [json.loads(c.inputs) for c in engine.store.list_runs(parent_id="b")]
    assert recorded == ITEMS[:3], "the refused items were not recorded"
    assert {i: r.outputs for i, r in again.items()} == {i: r.outputs for i, r in first.items()}
    assert {i: r.run_id for i, r in again.items()} == {i: f"b.{i}" for i in range(3)}
    assert counts == {f"{step}{i}": 1 for step in ("ask", "finish") for i in range(3)}
    assert len(model.calls) == 3


async def test_a_batch_of_another_flow_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    other = tl.Flow("other", inputs={"n": int})

    @other.step
    def noop(n: int) -> int:
        return n

    async with durable_engine(path, {"m": echo()}) as engine:
        await collect(engine, items_flow(Counts(), set()), ITEMS[:2], batch_id="b")
        with pytest.raises(InputError, match="belongs to flow 'items'"):
            await collect(engine, other, None, batch_id="b")


async def test_an_unknown_batch_without_items_is_an_input_error(tmp_path: Path) -> None:
    async with durable_engine(tmp_path / "t.db") as engine:
        with pytest.raises(InputError, match="no batch 'nope'"):
            await collect(engine, items_flow(Counts(), set()), None, batch_id="nope")


async def test_batch_id_needs_a_store() -> None:
    async with tl.Engine() as engine:
        with pytest.raises(ConfigurationError):
            await collect(engine, items_flow(Counts(), set()), ITEMS, batch_id="b")


async def test_items_with_bad_inputs_fail_without_stopping_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts = Counts()
    async with durable_engine(path, {"m": echo()}) as engine:
        results = await collect(
            engine,
            items_flow(counts, set()),
            [{"n": 0}, {"n": "not a number"}, {"n": 2}],
            batch_id="b",
        )
    assert [results[i].ok for i in range(3)] == [True, False, True]
    assert results[1].error is not None and results[1].error.type == "InputError"
    assert counts["finish0"] == counts["finish2"] == 1


async def test_an_item_that_cannot_start_keeps_its_child_run_id(tmp_path: Path) -> None:
    async with durable_engine(tmp_path / "t.db", {"m": echo()}) as engine:
        results = await collect(
            engine, items_flow(Counts(), set()), [{"n": 0}, {"n": "x"}], batch_id="b"
        )
    assert results[1].run_id == "b.1"
