"""The young threshold adapts while runs are active (``trellis.engine.gcpause._adapt``):
up after a collection that found no garbage, down after one that found some, never past
what the program set itself; restored exactly after, nested, concurrent and threaded."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

import trellis as tl
from trellis.engine import gcpause
from trellis.engine.gcpause import (
    GROWING_GEN0_THRESHOLD,
    RUN_GEN0_THRESHOLD,
    gc_state,
    managed_gc,
)

CUSTOM = (1234, 11, 12)  # the known_collector fixture's thresholds (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("known_collector")


def untouched() -> None:
    assert gc_state() == (0, CUSTOM, 0)
    assert gcpause._adapt not in gc.callbacks


def young() -> int:
    return gc.get_threshold()[0]


def test_clean_collections_raise_the_threshold_dirty_ones_lower_it() -> None:
    with managed_gc():
        assert gcpause._adapt in gc.callbacks
        assert young() == RUN_GEN0_THRESHOLD
        gcpause._adapt("start", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert young() == RUN_GEN0_THRESHOLD  # only a finished collection counts
        gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert gc.get_threshold() == (GROWING_GEN0_THRESHOLD, *CUSTOM[1:])
        gcpause._adapt("stop", {"generation": 0, "collected": 10_000, "uncollectable": 0})
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD, *CUSTOM[1:])
        gcpause._adapt("stop", {"generation": 0, "collected": 499, "uncollectable": 0})
        assert young() == GROWING_GEN0_THRESHOLD
        gc.collect()  # a real collection goes through the callback too
        assert young() in (RUN_GEN0_THRESHOLD, GROWING_GEN0_THRESHOLD)
    untouched()


def test_a_threshold_the_program_set_during_the_run_is_left_alone() -> None:
    with managed_gc():
        gc.set_threshold(3000, 5, 5)
        gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert gc.get_threshold() == (3000, 5, 5)
    untouched()


def test_nothing_adapts_when_the_threshold_was_not_raised() -> None:
    gc.set_threshold(RUN_GEN0_THRESHOLD * 4, 10, 10)
    with managed_gc():
        assert gcpause._adapt not in gc.callbacks
        gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert gc.get_threshold() == (RUN_GEN0_THRESHOLD * 4, 10, 10)
    assert gc.get_threshold() == (RUN_GEN0_THRESHOLD * 4, 10, 10)


def test_adapting_skips_while_the_lock_is_held() -> None:
    with managed_gc():
        with gcpause._lock:  # another thread entering or leaving: no waiting, no change
            gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert young() == RUN_GEN0_THRESHOLD
    untouched()


def test_nested_uses_keep_adapting_until_the_outermost_leaves() -> None:
    with managed_gc():
        with managed_gc():
            gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert young() == GROWING_GEN0_THRESHOLD
        assert gcpause._adapt in gc.callbacks
    untouched()
    gcpause._adapt("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    untouched()  # a stray call after the last run left changes nothing


def test_threads_entering_and_leaving_while_collecting_restore_exactly() -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def churn() -> None:
        try:
            start.wait()
            for _ in range(200):
                with managed_gc():
                    junk: list[Any] = []
                    for _ in range(300):
                        node: list[Any] = []
                        node.append(node)  # cyclic garbage: collections find some
                        junk.append([node])
                    gc.collect(0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    untouched()


async def test_a_wide_run_raises_the_threshold_and_restores_it() -> None:
    """A fan-out that holds its objects alive: the first collection finds nothing, and the
    rest of the run collects far less often."""
    seen: list[int] = []
    hold = asyncio.Event()
    flow = tl.Flow("wide", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def keep(items: int) -> int:
        alive = [[i] for i in range(100)]  # live until the step returns
        if items == 1999:
            hold.set()
        await hold.wait()
        seen.append(young())
        return len(alive)

    async with tl.Engine() as engine:
        result = await engine.run(flow, {"n": 2000})
    assert result.ok
    assert GROWING_GEN0_THRESHOLD in seen
    untouched()
