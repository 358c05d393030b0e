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

While the run's heap only grows (a wide fan-out: every call in flight holds its task,
coroutines, request and records), young collections find no garbage, and each walks
every object allocated since the one before: 10 000 LLM calls in flight hold some
300 000 of them, six collections at 50 000 (and the eleventh young collection is a
middle-generation one, walking all of them again). So the threshold adapts to what
collections find: after one that found (almost) no garbage (under
:data:`CLEAN_SHARE` of the threshold), the young threshold goes up to
:data:`GROWING_GEN0_THRESHOLD`; after one that found garbage, it is back to
:data:`RUN_GEN0_THRESHOLD`. A run that makes cyclic garbage steadily keeps the lower
threshold; a fan-out pays one young collection instead of six. At most
:data:`GROWING_GEN0_THRESHOLD` objects of garbage wait for a collection, once, before the
threshold comes down again. Only the thresholds :func:`managed_gc` set are adapted: one
changed while runs are active (``gc.set_threshold`` by the program) is left as it is.

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

__all__ = [
    "CLEAN_SHARE",
    "GROWING_GEN0_THRESHOLD",
    "RUN_GEN0_THRESHOLD",
    "gc_state",
    "managed_gc",
]

#: The young-generation threshold while a run is active (CPython's default: 700).
RUN_GEN0_THRESHOLD = 50_000
#: The young-generation threshold while runs are active and the last collection found
#: (almost) no garbage: the heap is growing with live objects (a wide fan-out).
GROWING_GEN0_THRESHOLD = 500_000
#: A collection that frees less than this share of the young threshold found no garbage
#: to speak of.
CLEAN_SHARE = 0.01

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, ...] | None = None  # the thresholds to restore; None: nothing changed
_froze = False  # whether the outermost run froze the heap (and so unfreezes it)
_adapting = False  # whether the young threshold is ours to adapt (see _adapt)


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
    global _depth, _saved, _froze, _adapting
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
            _adapting = True
            gc.callbacks.append(_adapt)
        _froze = gc.get_freeze_count() == 0
        if _froze:
            gc.freeze()


def _leave() -> None:
    global _depth, _saved, _froze, _adapting
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        if _adapting:
            _adapting = False
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_adapt)
        if _saved is not None:
            gc.set_threshold(*_saved)
        if _froze:
            gc.unfreeze()
        _saved, _froze = None, False


def _adapt(phase: str, info: dict[str, int]) -> None:
    """After each collection while runs are active: the growing heap's young threshold
    when it found (almost) no garbage, the run's threshold when it found some.

    Called by the collector, in whichever thread collected, possibly while this or another
    thread is in :func:`_enter` / :func:`_leave`: it only tries the lock, and skips this
    collection when it is taken (waiting could deadlock; adapting then could undo a
    restore)."""
    if phase != "stop" or not _adapting:
        return
    if not _lock.acquire(blocking=False):
        return
    try:
        if not _adapting:  # the last run left meanwhile: the thresholds are restored
            return
        thresholds = gc.get_threshold()
        young = thresholds[0]
        if young not in (RUN_GEN0_THRESHOLD, GROWING_GEN0_THRESHOLD):
            return  # the program set its own threshold during the run: not ours to adapt
        wanted = (
            GROWING_GEN0_THRESHOLD
            if info.get("collected", 0) < young * CLEAN_SHARE
            else RUN_GEN0_THRESHOLD
        )
        if young != wanted:
            gc.set_threshold(wanted, *thresholds[1:])
    finally:
        _lock.release()


def gc_state() -> tuple[int, tuple[int, ...], int]:
    """(active runs, the collector's thresholds, frozen objects): for tests."""
    with _lock:
        return _depth, gc.get_threshold(), gc.get_freeze_count()
