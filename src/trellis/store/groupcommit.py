"""Group commit: the writes of concurrent durable runs, committed together once per turn.

A store that commits every write as its own transaction pays a commit per completed step
and LLM call; with many runs in flight on one event loop that is most of a durable batch's
time. :class:`WriteGroup` collects the writes of the runs an engine *groups*
(:meth:`trellis.store.base.Store.grouped`) while an event loop runs, and hands them to the
store in one transaction, scheduled with ``loop.call_soon`` at the first write of a turn:
everything written during a turn is committed at the start of the next one, in order —
or, while other runs go on writing in the turns after (a wave of runs woken by the last
commit), a few turns later, with their writes too (:meth:`WriteGroup._turn_ends`).

What it keeps:

- Order and read-your-writes: a read or an immediate write of a run with queued writes
  commits them first (the store asks :meth:`WriteGroup.flush`), and queued writes are
  committed in the order they were made.
- Fencing: every queued write is fenced as an immediate one is, checked when the
  transaction runs (a step's or call's record once per run and commit, see
  :data:`FENCED`); no lock is held across event-loop turns, so a process that
  stalls holds nothing another process waits on. A refused write (a stale lease epoch) or
  a failed one is the run's :class:`~trellis.errors.StoreError`: the callback the engine
  grouped the run with is told (it stops the run, as when its lease is lost), later writes
  of the run raise it, and the other runs' writes are committed regardless.
- Durability when it matters: :meth:`WriteGroup.committed` waits until the run's writes
  so far are committed (the engine awaits it before a run is reported done); a killed
  process loses at most the writes of the turn it was killed in, work that was still
  running as far as anything outside the process could tell.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from trellis.errors import StoreError

__all__ = ["FENCED", "ONE_ROW", "UNCHECKED", "Commit", "Write", "WriteGroup"]

#: How a queued write is checked when it is committed (the last item of a :data:`Write`):
#: not at all; it must change exactly one row (else it was refused); or it is fenced: its
#: run must exist with a lease epoch no newer than the write's, which the store checks once
#: per run and commit (under the commit's write lock) instead of in every statement.
UNCHECKED, ONE_ROW, FENCED = 0, 1, 2

#: How many turns a commit is put off at most while writes keep coming, and how many queued
#: writes commit at once regardless (:meth:`WriteGroup._turn_ends`).
MAX_DEFERRED, MAX_QUEUED = 4, 4096

#: A queued write: (run id, SQL, values, epoch, check: :data:`UNCHECKED`, :data:`ONE_ROW`
#: or :data:`FENCED`).
Write = tuple[str, str, tuple[Any, ...], int | None, int]

#: Commits writes in one transaction: the runs whose write was refused or failed, each with
#: its error (a run's later writes in the same list are skipped).
Commit = Callable[[list[Write]], dict[str, StoreError]]


class WriteGroup:
    """The queued writes of one store connection (used from its event-loop thread)."""

    __slots__ = (
        "_after",
        "_commit",
        "_deferred",
        "_loop",
        "_seen",
        "_turn",
        "failed",
        "pending",
        "pending_runs",
        "thread",
        "watched",
    )

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        #: Grouped runs: what to tell when one of their writes is refused or fails.
        self.watched: dict[str, Callable[[StoreError], None]] = {}
        self.pending: list[Write] = []
        self.pending_runs: set[str] = set()
        #: Grouped runs whose write was refused or failed: their later writes raise it.
        self.failed: dict[str, StoreError] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # where a flush is scheduled
        self._seen = 0  # how many writes were queued when the flush was last put off
        self._deferred = 0  # how many turns it has been put off
        self._after: list[Callable[[], object]] = []  # called once the queue is committed
        #: What :meth:`committed` waits on: one future for every waiter of the next commit.
        self._turn: asyncio.Future[None] | None = None
        #: The thread whose event loop queued the writes (only its reads commit them).
        self.thread: int | None = None

    def grouped(self, run_id: str, on_failure: Callable[[StoreError], None]) -> _Grouping:
        """Queue ``run_id``'s writes while the block runs (see the module docs). Grouping
        a run that is grouped already (a second attempt at the same run, refused its
        lease) leaves the first grouping as it was once the block ends."""
        return _Grouping(self, run_id, on_failure)

    def defer(self, write: Write, *, eager: bool = False) -> bool:
        """Queue ``write`` if its run is grouped and an event loop runs in this thread;
        ``False``: the caller must write it now (after the queued writes). ``eager``: a
        write whose run goes on only once it is committed (a step's record, before the
        steps after it start), written now when its run is the only grouped one (there
        is no other run's write to share a commit with). A run whose earlier write failed
        raises that error."""
        run_id = write[0]
        if run_id not in self.watched or (eager and len(self.watched) == 1):
            return False
        loop = asyncio._get_running_loop()
        if loop is None:
            return False
        error = self.failed.get(run_id)
        if error is not None:
            raise error
        if self._loop is not loop:
            if self._loop is not None:  # another loop's writes, never flushed there
                self.flush()
            self._loop = loop
            self.thread = threading.get_ident()
            loop.call_soon(self._turn_ends)
            self._seen, self._deferred = len(self.pending) + 1, 0
        self.pending.append(write)
        self.pending_runs.add(run_id)
        return True

    def take(self) -> list[Write]:
        """The queued writes, for the caller to commit in its own transaction (then it
        must :meth:`settle` them)."""
        writes, self.pending = self.pending, []
        self.pending_runs.clear()
        return writes

    def _turn_ends(self) -> None:
        """The commit scheduled at a turn's first write (the queue may have been committed
        meanwhile: then there is nothing to do). While writes keep coming in the turns
        after it (other runs are still at work, none waits for this commit yet but those
        that wrote), it is put off a turn at a time, up to :data:`MAX_DEFERRED` turns or
        :data:`MAX_QUEUED` writes: the commit then takes a whole wave of runs' writes, one
        transaction where there would be several."""
        size = len(self.pending)
        loop = self._loop
        if (
            loop is not None
            and loop is asyncio._get_running_loop()  # (not another loop's, queued since)
            and size != self._seen
            and self._deferred < MAX_DEFERRED
            and size < MAX_QUEUED
        ):
            self._seen, self._deferred = size, self._deferred + 1
            loop.call_soon(self._turn_ends)
            return
        self._loop = None
        self.flush()

    def flush(self) -> None:
        """Commit every queued write now, in one transaction."""
        writes = self.take()
        failures: dict[str, StoreError] = {}
        try:
            if writes:
                failures = self._commit(writes)
        except BaseException as exc:  # nothing of it was committed: every run is told
            error = StoreError(f"committing {len(writes)} queued write(s) failed: {exc!r}")
            failures = {write[0]: error for write in writes}
            raise
        finally:  # waiters are woken whatever happened
            self.settle(failures)

    def settle(self, failures: dict[str, StoreError]) -> None:
        """Record what a commit of queued writes refused and tell those runs, then call
        what waited for the commit (:meth:`when_committed`)."""
        turn, self._turn = self._turn, None
        if turn is not None and not turn.done():
            turn.set_result(None)
        if not failures and not self._after:
            return  # the common case: nothing refused, nobody waiting
        raised: list[Exception] = []
        for run_id, error in failures.items():
            on_failure = self.watched.get(run_id)
            if on_failure is not None:
                self.failed[run_id] = error
                try:
                    on_failure(error)
                except Exception as exc:  # every run is still told, every waiter woken
                    raised.append(exc)
        after, self._after = self._after, []
        for callback in after:
            try:
                callback()
            except Exception as exc:
                raised.append(exc)
        if raised:
            raise raised[0]

    def when_committed(self, run_id: str, callback: Callable[[], object]) -> bool:
        """If ``run_id`` has queued writes: call ``callback`` once they are committed (or
        refused: see :attr:`failed`) and return True; else False. When ``run_id`` is the
        only grouped run (no other run's writes could share the commit: a lone run's chain
        of steps), they are committed now instead, and it returns False."""
        if run_id not in self.pending_runs:
            return False
        if len(self.watched) == 1:
            self.flush()
            return False
        self._after.append(callback)
        return True

    def ungroup(self, run_id: str, previous: Callable[[StoreError], None] | None) -> None:
        """The end of a grouping of ``run_id`` (``previous``: the grouping it was nested in)."""
        if previous is not None:
            self.watched[run_id] = previous
            return
        self.watched.pop(run_id, None)
        self.failed.pop(run_id, None)
        if run_id in self.pending_runs:  # a run that ended without finishing
            self.flush()

    async def committed(self, run_id: str) -> None:
        """Return once ``run_id``'s writes so far are committed; raise the error that
        refused one of them."""
        # Even a lone run waits for the turn's commit: its other writes of the turn (a
        # mapped step's many calls) join it. Every waiter of a commit shares one future.
        if run_id in self.pending_runs:
            turn = self._turn
            if turn is None or turn.done():
                turn = self._turn = asyncio.get_running_loop().create_future()
            await turn
        error = self.failed.get(run_id)
        if error is not None:
            raise error


class _Grouping:
    """:meth:`WriteGroup.grouped` (a class, not a generator: one per durable run)."""

    __slots__ = ("group", "on_failure", "previous", "run_id")

    def __init__(
        self, group: WriteGroup, run_id: str, on_failure: Callable[[StoreError], None]
    ) -> None:
        self.group, self.run_id, self.on_failure = group, run_id, on_failure
        self.previous: Callable[[StoreError], None] | None = None

    def __enter__(self) -> None:
        watched = self.group.watched
        self.previous = watched.get(self.run_id)
        watched[self.run_id] = self.on_failure

    def __exit__(self, *exc: object) -> None:
        self.group.ungroup(self.run_id, self.previous)
