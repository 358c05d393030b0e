"""The store interface: runs, completed steps, the LLM call journal, and the response cache.

Every record is plain JSON text tagged with its format version (``FORMAT``); nothing is ever
pickled. Methods are synchronous and short: the engine calls them on the event loop thread
right when a step completes or an LLM call returns, so that a killed process loses at most
the work that was in flight. (SQLite in WAL mode commits in tens of microseconds.)

Group commit: while the engine executes a run it *groups* it (:meth:`Store.grouped`). A
store may then queue that run's writes and commit those of every grouped run together,
once per event-loop turn (the SQLite store does: :mod:`trellis.store.groupcommit`), as
long as it keeps their order, lets every read see them, and fences each write as an
immediate one is fenced. A queued write that is refused is reported to the grouping's
callback instead of raised; :meth:`Store.committed` waits until a run's writes are
durable (the engine awaits it before a run counts as done). The default commits every
write at once.

A store implementation passes ``tests/store/conformance.py``, and raises
:class:`~trellis.errors.StoreError` for its own failures (the engine wraps anything else in
one and stops the run).

Fencing: every grant of a run's lease (:meth:`Store.claim_lease`) increments the run's
*lease epoch* and returns it. The owner passes that epoch with every write of the run's
records (``epoch=`` of ``update_run``, ``save_step``, ``save_done_step``, ``save_call``,
``renew_lease``, ``release_lease``); the store refuses a write whose epoch is older than the
run's current one with :class:`~trellis.errors.LeaseLostError`, checked atomically with
the write (in the same statement or transaction), so that a process that stalled past its
lease and woke up after another process took the run over can never overwrite it.
``epoch=None`` writes unfenced (tools and tests that hold no lease).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from trellis.errors import LeaseLostError, StoreError

__all__ = [
    "FORMAT",
    "CacheStats",
    "CallRow",
    "LeaseClaim",
    "RunRow",
    "StepRow",
    "Store",
    "stale_write",
]

#: Version of the JSON record format written in every row.
FORMAT = 1

RunState = Literal["pending", "running", "waiting", "done", "failed"]


@dataclass(slots=True, kw_only=True)
class RunRow:
    run_id: str
    flow: str
    status: RunState
    inputs: str  # JSON object
    started_at: float
    parent_id: str | None = None
    item_index: int | None = None
    finished_at: float | None = None
    error: str | None = None  # JSON ErrorInfo
    usage: str | None = None  # JSON Stats
    meta: str | None = None  # JSON object: how to resume (target, options), batch info
    lease_owner: str | None = None
    lease_expires: float | None = None
    lease_epoch: int = 0  # incremented by every grant of the lease: the fencing token
    #: A batch's parent run (its items are the runs whose ``parent_id`` is this run): set
    #: when the batch is recorded, stored as a column of its own.
    is_batch: bool = False
    #: Seconds it spent executing, over all its executions, as of its last recorded end
    #: (``None``: it never ended, or was recorded before Trellis kept it).
    run_s: float | None = None
    #: When its latest execution began (a resumed run's differs from ``started_at``).
    resumed_at: float | None = None
    #: Set only by ``list_runs(lenient=True)``: why this record cannot be read (an unknown
    #: record format); its other fields are then as found and must not be trusted.
    unreadable: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Its run time: :attr:`run_s` when recorded, else from its start to its end
        (``None``: it has not ended). Idle time between a failure and a resume is not run
        time, nor is a batch item's wait for its turn (``started_at`` is when it began)."""
        if self.finished_at is None:
            return None
        if self.run_s is not None:
            return self.run_s
        return self.finished_at - self.started_at


@dataclass(slots=True, kw_only=True)
class StepRow:
    run_id: str
    step: str
    status: str  # done | skipped | failed | cancelled | running
    definition: str  # the step's definition hash when it ran
    output: str | None = None  # JSON, for done steps
    reason: str | None = None
    error: str | None = None  # JSON ErrorInfo
    usage: str | None = None  # JSON Stats, when the step made LLM calls
    decisions: str | None = None  # JSON list of decisions about this step
    details: str | None = None  # JSON: attempts, rounds, elements, turns, question...
    started_at: float | None = None
    duration_s: float | None = None


@dataclass(slots=True, kw_only=True)
class CallRow:
    """A completed ``llm.generate`` call: what it returned and every attempt it took."""

    run_id: str
    key: str  # step / element / round / call number: stable across a resume
    request: str  # hash of the first request: a changed prompt is a journal miss
    result: str  # JSON of the returned value (validated output, or text)
    attempts: str  # JSON list of CallRecord dicts


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """The answer to :meth:`Store.claim_lease`: granted with the run's new ``epoch``, or
    refused because ``holder`` holds an unexpired lease (``epoch`` is then the current one)."""

    granted: bool
    epoch: int
    holder: str | None = None


def stale_write(run_id: str, epoch: int, current: int, owner: str | None) -> LeaseLostError:
    """The error a store raises for a write carrying an epoch older than the run's."""
    holder = owner or "another process"
    return LeaseLostError(
        f"run {run_id}: this process's lease (epoch {epoch}) was taken over by {holder} "
        f"(epoch {current}); the write was refused and this process stops its work on the run",
        run_id=run_id,
        epoch=epoch,
        current=current,
        owner=owner,
    )


def checked_limit(limit: int | None) -> int | None:
    """``list_runs``'s ``limit`` as every store reads it: None for no limit, else a count
    of 0 or more. A negative limit is a caller's mistake, not "no limit" (SQLite's reading
    of ``LIMIT -1``) nor "all but the last" (a Python slice's)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"list_runs: limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"list_runs: limit must be 0 or more (or None for no limit), not {limit}")
    return limit


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    entries: int
    expired: int
    hits: int
    bytes: int


class Store(abc.ABC):
    """Where durable runs live. Implementations: ``MemoryStore``, ``SQLiteStore``,
    ``PostgresStore``."""

    url: str

    # -- runs -----------------------------------------------------------------------------

    @abc.abstractmethod
    def create_run(self, row: RunRow) -> None:
        """Insert a run; a run with this id must not exist yet."""

    @abc.abstractmethod
    def create_runs(self, rows: Iterable[RunRow]) -> None:
        """Insert many runs at once (a batch's items), atomically. ``rows`` may be a
        generator: a store inserts them as they come (a big batch's rows are never all
        in memory at once)."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRow | None: ...

    def pending_runs(self, run_ids: Sequence[str]) -> list[RunRow]:
        """Of the runs ``run_ids``, those no process has started (``pending`` at lease
        epoch 0: a batch's items that can start without reading anything else back), in
        any order; the others are left out. The default reads each one."""
        rows = (self.get_run(run_id) for run_id in run_ids)
        return [r for r in rows if r is not None and r.status == "pending" and r.lease_epoch == 0]

    @abc.abstractmethod
    def update_run(
        self,
        run_id: str,
        *,
        status: RunState,
        finished_at: float | None = None,
        error: str | None = None,
        usage: str | None = None,
        epoch: int | None = None,
        started_at: float | None = None,
        run_s: float | None = None,
        resumed_at: float | None = None,
    ) -> None:
        """Set a run's status (and end, error, usage; ``usage=None`` keeps the recorded
        usage). ``started_at`` sets when the run started (a batch item is recorded before
        it starts), ``resumed_at`` when its latest execution began and ``run_s`` its run
        time so far; ``None`` keeps each. With ``epoch``: refused with
        :class:`LeaseLostError` when the run's lease epoch is newer."""

    def finish_run(
        self,
        run_id: str,
        owner: str,
        *,
        status: RunState,
        finished_at: float,
        error: str | None = None,
        usage: str | None = None,
        epoch: int | None = None,
        run_s: float | None = None,
    ) -> None:
        """Record how a run ended (:meth:`update_run`) and release ``owner``'s lease on it
        (:meth:`release_lease`: if ``owner``, with ``epoch`` that grant, still holds it),
        as one write where the store can. The default makes the two writes."""
        self.update_run(
            run_id,
            status=status,
            finished_at=finished_at,
            error=error,
            usage=usage,
            epoch=epoch,
            run_s=run_s,
        )
        with contextlib.suppress(StoreError):  # unreleased, the lease expires on its own
            self.release_lease(run_id, owner, epoch)

    @abc.abstractmethod
    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        batches: bool | None = None,
        limit: int | None = None,
        lenient: bool = False,
    ) -> list[RunRow]:
        """Newest first. ``parent_id`` lists a batch's items (in item order instead);
        ``top_level`` leaves batch items out; ``batches`` (True / False) keeps only batch
        parents / only runs that are not. A record this version cannot read raises
        :class:`StoreError`; with ``lenient`` it is listed with ``unreadable`` set instead
        (for listings that must show every other run)."""

    # -- leases: one process executes a run at a time ----------------------------------------

    @abc.abstractmethod
    def claim_lease(self, run_id: str, owner: str, now: float, ttl: float) -> LeaseClaim:
        """Take the run's lease if it is free, expired or already ours, atomically: its
        epoch is incremented and returned. Otherwise report the current owner (and leave
        the lease and the epoch alone). An unknown run is a :class:`StoreError`."""

    def acquire_lease(self, run_id: str, owner: str, now: float, ttl: float) -> str | None:
        """:meth:`claim_lease` without the epoch: ``None`` when granted, else the owner."""
        claim = self.claim_lease(run_id, owner, now, ttl)
        return None if claim.granted else (claim.holder or "another process")

    def start_pending(self, run_id: str, owner: str, now: float, ttl: float) -> int | None:
        """Start a batch item that no process has started yet (``pending`` at lease epoch
        0): take its lease and mark it running since ``now``, atomically; its epoch
        (``None``: the run is not such an item, and is started the general way, with
        :meth:`claim_lease`). A store may do this in one statement, and may queue it while
        the run is grouped (:meth:`grouped`): it then returns epoch 1 at once, nothing of
        the run executes before the write is committed (steps wait for the run's queued
        writes), and if another process started the item first the refusal reaches the
        grouping's callback. The default declines."""
        return None

    def grouped(
        self, run_id: str, on_failure: Callable[[StoreError], None]
    ) -> contextlib.AbstractContextManager[None]:
        """While the block runs, ``run_id``'s writes may be queued and committed with
        other grouped runs' (see the module docs); a queued write that is refused or fails
        is passed to ``on_failure`` (which must stop the run) instead of being raised, and
        the run's later writes raise it. The default writes everything at once."""
        return contextlib.nullcontext()

    def when_committed(self, run_id: str, callback: Callable[[], object]) -> bool:
        """If ``run_id`` has queued writes (see :meth:`grouped`): call ``callback`` once
        they are committed, or refused (then after the grouping's callback was told), and
        return True; False when nothing of it is queued. The default queues nothing."""
        return False

    async def committed(self, run_id: str) -> None:  # noqa: B027 - optional hook
        """Return once every write of ``run_id`` made so far is durable; raise the
        :class:`StoreError` that refused one of them (see :meth:`grouped`)."""

    @abc.abstractmethod
    def renew_lease(
        self, run_id: str, owner: str, now: float, ttl: float, epoch: int | None = None
    ) -> bool:
        """Extend the lease if ``owner`` still holds it (and, with ``epoch``, it is still
        that grant); ``False`` otherwise (another process took it over)."""

    @abc.abstractmethod
    def release_lease(self, run_id: str, owner: str, epoch: int | None = None) -> None:
        """Drop the lease if ``owner`` (with ``epoch``: that grant) still holds it."""

    # -- steps and calls ------------------------------------------------------------------

    @abc.abstractmethod
    def save_step(self, row: StepRow, *, epoch: int | None = None) -> None:
        """Insert or replace the record of one step of a run (fenced by ``epoch``)."""

    def save_done_step(
        self,
        run_id: str,
        step: str,
        definition: str,
        output: str,
        started_at: float | None,
        duration_s: float | None,
        *,
        epoch: int | None = None,
    ) -> None:
        """Record a plainly completed step (no usage, decisions or details): the hot path
        of a durable run. The default builds a :class:`StepRow`; a store may do better."""
        self.save_step(
            StepRow(
                run_id=run_id,
                step=step,
                status="done",
                definition=definition,
                output=output,
                started_at=started_at,
                duration_s=duration_s,
            ),
            epoch=epoch,
        )

    @abc.abstractmethod
    def load_steps(self, run_id: str) -> list[StepRow]: ...

    @abc.abstractmethod
    def save_call(self, row: CallRow, *, epoch: int | None = None) -> None:
        """Journal a completed LLM call (insert or replace by run and key; fenced by
        ``epoch``)."""

    @abc.abstractmethod
    def load_calls(self, run_id: str) -> list[CallRow]: ...

    # -- response cache --------------------------------------------------------------------

    @abc.abstractmethod
    def cache_get(self, key: str, now: float) -> str | None:
        """The cached value, if present and not expired; counts a hit."""

    @abc.abstractmethod
    def cache_put(self, key: str, value: str, now: float, expires_at: float | None) -> None: ...

    @abc.abstractmethod
    def cache_stats(self, now: float) -> CacheStats: ...

    @abc.abstractmethod
    def cache_clear(self, *, expired_only: bool = False, now: float = 0.0) -> int:
        """Delete entries (all, or only expired ones); return how many."""

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
