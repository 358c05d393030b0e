"""The garbage collector during a run: freeze the heap that was there before, collect less.

A fan-out of 10 000 LLM calls keeps hundreds of thousands of container objects alive at
once (tasks, coroutines, requests, records). CPython's cyclic collector runs a young
collection every 700 net allocations and a full one every 100 young ones, and each
collection walks every tracked object of its generations: in a big fan-out it is most of
the makespan, for almost no garbage (nearly everything a run allocates is freed by
reference counting). Servers written in CPython handle this the same way:
``gc.freeze()`` moves the objects that existed before the work to the permanent
generation, so no collection walks them, and a higher young-generation threshold makes
collections of what the work allocates rarer.

:func:`managed_gc` does that for the duration of a run (``Engine.run``, ``run_many``,
``Engine.reply``), reference counted across nested and concurrent runs (of any event loop
or thread in the process): the first one in saves the thresholds and freezes, the last
one out restores the thresholds exactly and unfreezes what it froze, whether the run
returned, raised or was cancelled. It stays out of the way of a program that manages the
collector itself: with the collector disabled (``gc.disable()``) it changes nothing, and
when something is already frozen (a pre-fork server's ``gc.freeze()``) it does not
freeze or unfreeze, it only raises the threshold. Cyclic garbage made during the run is
still collected, only in larger batches. ``Engine(manage_gc=False)`` turns it off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["RUN_GEN0_THRESHOLD", "gc_state", "managed_gc"]

#: The young-generation threshold while a run is active (CPython's default: 700).
RUN_GEN0_THRESHOLD = 50_000

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] | None = None  # the thresholds to restore; None: nothing changed
_froze = False  # whether the outermost run froze the heap (and so unfreezes it)


@contextlib.contextmanager
def managed_gc(enabled: bool = True) -> Iterator[None]:
    """Tune the collector while the block runs (see the module docstring); nested and
    concurrent uses share one tuning, undone when the last of them leaves."""
    if not enabled:
        yield
        return
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    global _depth, _saved, _froze
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        if not gc.isenabled():
            _saved, _froze = None, False
            return
        thresholds = gc.get_threshold()
        _saved = thresholds
        if thresholds[0] and thresholds[0] < RUN_GEN0_THRESHOLD:
            gc.set_threshold(RUN_GEN0_THRESHOLD, *thresholds[1:])
        _froze = gc.get_freeze_count() == 0
        if _froze:
            gc.freeze()


def _leave() -> None:
    global _depth, _saved, _froze
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        if _saved is not None:
            gc.set_threshold(*_saved)
        if _froze:
            gc.unfreeze()
        _saved, _froze = None, False


def gc_state() -> tuple[int, tuple[int, ...], int]:
    """(active runs, the collector's thresholds, frozen objects): for tests."""
    with _lock:
        return _depth, gc.get_threshold(), gc.get_freeze_count()
