"""The collector while runs are active (``trellis.engine.gcpause``): the heap that existed
before is frozen and the young threshold raised for the duration, and both are restored
exactly after success, error, cancellation, nested and overlapping runs and batches."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

import trellis as tl
from trellis.engine.gcpause import RUN_GEN0_THRESHOLD, gc_state, managed_gc

CUSTOM = (1234, 11, 12)  # the known_collector fixture's thresholds (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("known_collector")


def untouched() -> None:
    assert gc_state() == (0, CUSTOM, 0)


def probing_flow(seen: list[tuple[int, tuple[int, ...], int]], *, fail: bool = False) -> tl.Flow:
    flow = tl.Flow("probe", inputs={"x": int})

    @flow.step
    async def look(x: int) -> int:
        await asyncio.sleep(0)
        seen.append(gc_state())
        if fail:
            raise ValueError("step failed")
        return x

    return flow


async def test_a_run_freezes_and_raises_the_threshold_then_restores_them() -> None:
    seen: list[Any] = []
    async with tl.Engine() as engine:
        result = await engine.run(probing_flow(seen), {"x": 1})
    assert result.ok
    depth, thresholds, frozen = seen[0]
    assert depth == 1
    assert thresholds == (RUN_GEN0_THRESHOLD, *CUSTOM[1:])
    assert frozen > 0  # the heap that was there before the run
    untouched()


async def test_restored_after_a_failing_step_and_after_run_raising() -> None:
    seen: list[Any] = []
    async with tl.Engine() as engine:
        result = await engine.run(probing_flow(seen, fail=True), {"x": 1})
        assert result.status == "failed"
        assert seen[0][0] == 1
        untouched()
        with pytest.raises(tl.InputError):
            await engine.run(probing_flow(seen), {"x": "not an int"})
    untouched()


async def test_restored_after_cancellation() -> None:
    started = asyncio.Event()
    flow = tl.Flow("hang", inputs={"x": int})

    @flow.step
    async def wait(x: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return x

    async with tl.Engine() as engine:
        task = asyncio.create_task(engine.run(flow, {"x": 1}))
        await started.wait()
        assert gc_state()[0] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    untouched()


async def test_overlapping_runs_share_one_tuning_until_the_last_ends() -> None:
    release_slow = asyncio.Event()
    flow = tl.Flow("two", inputs={"slow": bool})

    @flow.step
    async def work(slow: bool) -> bool:
        if slow:
            await release_slow.wait()
        return slow

    async with tl.Engine() as engine:
        slow = asyncio.create_task(engine.run(flow, {"slow": True}))
        await asyncio.sleep(0.01)
        assert gc_state()[0] == 1
        fast = await engine.run(flow, {"slow": False})  # starts and ends inside the slow one
        assert fast.ok
        depth, thresholds, frozen = gc_state()
        assert (depth, thresholds[0]) == (1, RUN_GEN0_THRESHOLD) and frozen > 0
        release_slow.set()
        assert (await slow).ok
    untouched()


def test_nested_use_restores_only_at_the_outermost_exit() -> None:
    with managed_gc():
        outer = gc_state()
        with managed_gc():
            assert gc_state()[0] == 2
            assert gc_state()[1:] == outer[1:]
        assert gc_state() == outer
        with pytest.raises(RuntimeError), managed_gc():
            raise RuntimeError("inner failed")
        assert gc_state() == outer
    untouched()


def test_an_existing_freeze_is_left_alone() -> None:
    gc.freeze()
    before = gc.get_freeze_count()
    assert before > 0
    with managed_gc():
        assert gc.get_threshold()[0] == RUN_GEN0_THRESHOLD
        assert gc.get_freeze_count() == before  # nothing more frozen by us
    assert gc.get_threshold() == CUSTOM
    assert gc.get_freeze_count() == before  # and the program's freeze not undone


def test_a_disabled_collector_is_left_alone() -> None:
    gc.disable()
    with managed_gc():
        assert gc.get_threshold() == CUSTOM
        assert gc.get_freeze_count() == 0
    assert not gc.isenabled()
    assert gc.get_threshold() == CUSTOM


async def test_manage_gc_false_opts_out() -> None:
    seen: list[Any] = []
    async with tl.Engine(manage_gc=False) as engine:
        assert (await engine.run(probing_flow(seen), {"x": 1})).ok
    assert seen == [(0, CUSTOM, 0)]
    untouched()


async def test_a_batch_holds_one_tuning_and_restores_it_when_left_early() -> None:
    seen: list[Any] = []
    flow = probing_flow(seen)
    async with tl.Engine() as engine:
        async for _ in engine.run_many(flow, [{"x": i} for i in range(6)], concurrency=1):
            assert gc_state()[0] == 1  # between items too: the batch holds it
        untouched()
        assert len(seen) == 6 and all(s[0] == 1 for s in seen)  # the items share the batch's
        batch = engine.run_many(flow, [{"x": i} for i in range(6)], concurrency=2)
        async for _ in batch:
            break
        await batch.aclose()
    untouched()


async def test_cyclic_garbage_made_during_a_run_is_still_collected() -> None:
    """Only batched, never leaked: a run that makes many cycles ends with them freed."""
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self

    refs: list[weakref.ref[Node]] = []
    flow = tl.Flow("cycles", inputs={"n": int})

    @flow.step
    async def make(n: int) -> int:
        for _ in range(n):
            refs.append(weakref.ref(Node()))
        await asyncio.sleep(0)
        return n

    async with tl.Engine() as engine:
        assert (await engine.run(flow, {"n": 3 * RUN_GEN0_THRESHOLD})).ok
    alive = sum(r() is not None for r in refs)
    assert alive < RUN_GEN0_THRESHOLD + 1000  # collections ran during the run
    gc.collect()
    assert all(r() is None for r in refs)
