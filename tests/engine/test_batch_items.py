"""A batch as :func:`open_batch` records it (:class:`BatchItems`): its count, run ids and
inputs on demand, never a list of every item; ``run_many`` takes it without opening the
batch again, and reads items as they start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trellis as tl
import trellis.engine.engine as engine_module
from trellis.engine.durable import BatchItems, first_changed_item, open_batch
from trellis.errors import InputError
from trellis.store import SQLiteStore


def double_flow() -> tl.Flow:
    flow = tl.Flow("double", inputs={"n": int})

    @flow.step
    def twice(n: int) -> int:
        return 2 * n

    return flow


def items(n: int) -> list[dict[str, int]]:
    return [{"n": i} for i in range(n)]


def test_a_new_batch_is_streamed_into_the_store_and_read_back_on_demand(tmp_path: Path) -> None:
    plan = double_flow().compile()
    seen: list[int] = []

    def source() -> Iterator[dict[str, int]]:
        for item in items(5):
            seen.append(item["n"])
            yield item

    with SQLiteStore(tmp_path / "t.db") as store:
        batch = open_batch(store, plan, source(), "b", None, count=5)
        assert isinstance(batch, BatchItems) and batch.fresh
        assert len(batch) == 5 and seen == [0, 1, 2, 3, 4]
        assert batch.run_id(3) == "b.3"
        assert batch.inputs(3) == {"n": 3}
        assert list(batch) == [(f"b.{i}", {"n": i}) for i in range(5)]
        with pytest.raises(IndexError):
            batch.run_id(5)
        # Opened again: the count comes from the parent's record; not fresh.
        again = open_batch(store, plan, None, "b", None)
        assert len(again) == 5 and not again.fresh
        assert open_batch(store, plan, items(5), "b", None).count == 5


@pytest.mark.parametrize("given", [4, 6])
def test_a_wrong_count_records_nothing(tmp_path: Path, given: int) -> None:
    plan = double_flow().compile()
    with SQLiteStore(tmp_path / "t.db") as store:
        with pytest.raises(InputError, match="items"):
            open_batch(store, plan, iter(items(given)), "b", None, count=5)
        assert store.get_run("b") is None
        assert store.list_runs(parent_id="b") == []


def test_a_recorded_batch_refuses_other_items(tmp_path: Path) -> None:
    plan = double_flow().compile()
    with SQLiteStore(tmp_path / "t.db") as store:
        open_batch(store, plan, items(3), "b", None)
        for other in ([{"n": 0}, {"n": 1}, {"n": 7}], items(2), items(4)):
            with pytest.raises(InputError, match="recorded with 3 items"):
                open_batch(store, plan, iter(other), "b", None)


def test_first_changed_item_reads_iterables() -> None:
    assert first_changed_item(iter(items(3)), iter(items(3))) is None
    assert first_changed_item(iter(items(3)), iter([{"n": 0}, {"n": 9}, {"n": 2}])) == 1
    assert first_changed_item(iter(items(3)), iter(items(2))) == 2
    assert first_changed_item(iter(items(2)), iter(items(3))) == 2
    assert first_changed_item([{"a": 1, "b": 2}], [{"b": 2, "a": 1}]) is None


async def test_run_many_takes_the_opened_batch_without_opening_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = double_flow()
    with SQLiteStore(tmp_path / "t.db") as store:
        batch = open_batch(store, flow.compile(), items(20), "b", None)

        def no_second_open(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the batch was opened again")

        monkeypatch.setattr(engine_module, "open_batch", no_second_open)
        async with tl.Engine(store=store) as engine:
            results = {i: r async for i, r in engine.run_many(flow, batch, concurrency=4)}
            assert sorted(results) == list(range(20))
            assert all(r.outputs["twice"] == 2 * i for i, r in results.items())
            assert all(r.run_id == f"b.{i}" for i, r in results.items())
            assert store.get_run("b").status == "done"  # type: ignore[union-attr]
            # Resumed from a handle of the recorded batch: its recorded results.
            again = open_batch(store, flow.compile(), None, "b", None)
            replayed = {i: r async for i, r in engine.run_many(flow, again, batch_id="b")}
            assert {i: r.outputs for i, r in replayed.items()} == {
                i: r.outputs for i, r in results.items()
            }
            with pytest.raises(InputError, match="not the batch"):
                engine.run_many(flow, again, batch_id="other")


async def test_run_many_reads_items_as_they_start() -> None:
    flow = double_flow()
    taken: list[int] = []
    finished = 0
    most_ahead = 0

    def source() -> Iterator[dict[str, int]]:
        for item in items(50):
            taken.append(item["n"])
            yield item

    async with tl.Engine() as engine:
        async for _, result in engine.run_many(flow, source(), concurrency=3):
            assert result.ok
            finished += 1
            most_ahead = max(most_ahead, len(taken) - finished)
    assert finished == 50
    assert most_ahead <= 3  # never more than the items in flight


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_an_item_another_process_ran_since_its_chunk_was_read_is_read_back(
    tmp_path: Path, concurrency: int
) -> None:
    """Items start from their records as read a chunk at a time; one another process ran
    to its end meanwhile (``engine.run(run_id=item)``) is not started again from that
    stale record: its start is refused, and it is read back as that process recorded it.
    The batch goes on; every step body runs once."""
    import asyncio
    import collections
    import threading

    path = tmp_path / "t.db"
    ran: collections.Counter[int] = collections.Counter()
    flow = tl.Flow("items", inputs={"n": int})

    @flow.step
    async def work(n: int) -> int:
        ran[n] += 1
        if n == 0 and ran[0] == 1:

            def other_process() -> None:
                async def go() -> None:
                    with SQLiteStore(path) as store:
                        async with tl.Engine(store=store) as engine:
                            assert (await engine.run(flow, run_id="b.4")).ok

                asyncio.run(go())

            thread = threading.Thread(target=other_process)
            thread.start()
            thread.join()
        await asyncio.sleep(0)
        return 10 * n

    with SQLiteStore(path) as store:
        async with tl.Engine(store=store) as engine:
            results = {
                i: r
                async for i, r in engine.run_many(
                    flow, items(6), batch_id="b", concurrency=concurrency
                )
            }
    assert {i: (r.status, r.steps["work"].output) for i, r in results.items()} == {
        i: ("done", 10 * i) for i in range(6)
    }
    assert ran == {i: 1 for i in range(6)}
