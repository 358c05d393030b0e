"""Durable runs: start or resume a run in a store, hold its lease, record how it ended.

- A new run id: the run row is created (inputs recorded) before anything executes.
- A completed run id: the recorded result is returned; nothing executes.
- An incomplete run id: resumed; completed steps and LLM calls are replayed from the
  journal, the rest runs. Inputs, when given again, must match the recorded ones.
- One process at a time: a lease (owner + expiry + epoch, :mod:`trellis.engine.lease`) is
  held on the run row and renewed while it runs; another process gets
  :class:`RunLockedError`. A new run is created with its lease already held, so two
  processes starting the same new id cannot both run it. A process that dies leaves a
  lease that expires after ``lease_ttl`` seconds, and the run becomes resumable.
- Fencing: every write of the run (steps, calls, status) carries the lease's epoch. A
  process that stalled past its lease and was taken over has its writes refused
  (:class:`LeaseLostError`) and stops; it never marks the run failed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any, Literal

from trellis.engine.journal import (
    Journal,
    call_record_from_dict,
    decision_from_dict,
    error_from_json,
    journaled_usage,
    record_end,
    record_from_row,
    run_time_before,
    stats_from_json,
)
from trellis.engine.lease import Lease, process_owner
from trellis.engine.results import CallRecord, Decision, RunResult, Stats, StepRecord
from trellis.engine.runner import recorded_subflow_calls
from trellis.errors import InputError, LeaseLostError, RunLockedError, StoreError
from trellis.flow.graph import CompiledFlow
from trellis.store.base import RunRow, StepRow, Store
from trellis.store.codec import decode, encode

__all__ = [
    "BatchItems",
    "DurableRun",
    "earlier_spend",
    "finish_batch",
    "first_changed_item",
    "load_result",
    "open_batch",
    "process_owner",
    "recorded_batch_inputs",
]


class DurableRun:
    def __init__(
        self,
        store: Store,
        plan: CompiledFlow,
        run_id: str,
        values: dict[str, Any],
        recorded: RunResult | None,
        owner: str,
        lease_ttl: float,
    ) -> None:
        self.store = store
        self.plan = plan
        self.run_id = run_id
        self.values = values
        self.recorded = recorded  # set when the run already completed
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.journal: Journal | None = None
        self.earlier = Stats()  # spent by earlier runs of this id, not replayed (see start)
        self.earlier_s = 0.0  # how long earlier executions of it ran (see start)
        #: Created (or, a pending batch item, started) by this process just now, its lease
        #: held from the start: nothing of it is recorded yet, so :meth:`start` reads
        #: nothing back.
        self.fresh = False
        #: A batch item no process has started (pending at lease epoch 0): :meth:`lease`
        #: starts it (:meth:`Store.start_pending`).
        self.unstarted = False
        self._lease = Lease(store, run_id, owner, lease_ttl)

    @property
    def epoch(self) -> int | None:
        """The lease epoch this process writes the run with (None: not held)."""
        return self._lease.epoch

    @property
    def lost(self) -> LeaseLostError | None:
        """Set once another process took the run over: nothing more may be written."""
        return self._lease.lost

    @classmethod
    def open(
        cls,
        store: Store,
        plan: CompiledFlow,
        inputs: Mapping[str, Any] | None,
        run_id: str,
        *,
        owner: str,
        lease_ttl: float,
        meta: Mapping[str, Any] | None = None,
    ) -> DurableRun:
        row = store.get_run(run_id)
        if row is None:
            values = plan.validate_inputs(inputs)
            now = time.time()
            try:
                # Created with its lease held (epoch 1): a process creating the same id at
                # the same moment fails to insert, and finds the run leased.
                store.create_run(
                    RunRow(
                        run_id=run_id,
                        flow=plan.name,
                        status="running",
                        inputs=encode(values, "the run's inputs"),
                        started_at=now,
                        resumed_at=now,
                        meta=json.dumps({**plan.shape(), **(meta or {})}),
                        lease_owner=owner,
                        lease_expires=now + lease_ttl,
                        lease_epoch=1,
                    )
                )
                created = cls(store, plan, run_id, values, None, owner, lease_ttl)
                created.fresh = True
                created._lease.adopt(1)
                return created
            except StoreError:  # another process created it first: resume semantics apply
                row = store.get_run(run_id)
                if row is None:
                    raise
        if row.is_batch:
            raise InputError(
                f"{run_id!r} is a batch; resume it with run_many(batch_id={run_id!r}) or "
                f"'trellis resume {run_id}'"
            )
        if row.flow != plan.name:
            raise InputError(
                f"run {run_id!r} belongs to flow {row.flow!r}, not {plan.name!r}; use another "
                "run id"
            )
        values = _recorded_values(plan, row)
        if inputs is not None:
            given = plan.validate_inputs(inputs)
            if encode(given) != encode(values):
                raise InputError(
                    f"run {run_id!r} was started with other inputs; resume it without inputs, "
                    "or use another run id"
                )
        if row.status == "pending" and row.lease_epoch == 0:
            # A batch item no process has started: like a new run, nothing of it to read
            # back; :meth:`lease` starts it with its lease in one write.
            return cls._unstarted(store, plan, run_id, values, owner, lease_ttl)
        recorded = load_result(store, run_id, plan) if row.status == "done" else None
        return cls(store, plan, run_id, values, recorded, owner, lease_ttl)

    @classmethod
    def unstarted_item(
        cls, store: Store, plan: CompiledFlow, row: RunRow, *, owner: str, lease_ttl: float
    ) -> DurableRun:
        """A batch item no process has started, from its record ``row`` as
        :meth:`Store.pending_runs` read it (in a chunk of the batch's items): what
        :meth:`open` makes of such an item, without reading it again. :meth:`lease` starts
        it, or finds it started meanwhile by another process."""
        values = _recorded_values(plan, row)
        return cls._unstarted(store, plan, row.run_id, values, owner, lease_ttl)

    @classmethod
    def _unstarted(
        cls,
        store: Store,
        plan: CompiledFlow,
        run_id: str,
        values: dict[str, Any],
        owner: str,
        lease_ttl: float,
    ) -> DurableRun:
        item = cls(store, plan, run_id, values, None, owner, lease_ttl)
        item.fresh = item.unstarted = True
        return item

    def start_refused(self, exc: LeaseLostError) -> bool:
        """Whether ``exc`` is the refusal of this unstarted item's start (its queued
        :meth:`Store.start_pending`, at epoch 0): another process started the item since
        its record was read. Nothing of it ran here then: its steps wait for the start."""
        return self.unstarted and exc.run_id == self.run_id and exc.epoch == 0

    def lease(
        self, on_lost: Callable[[LeaseLostError], None] | None = None
    ) -> contextlib.AbstractContextManager[object]:
        """Hold the run's lease while the body runs (:class:`RunLockedError` if another
        process holds it). If another process takes it over (this one stalled past the
        TTL), ``on_lost`` is told, and the run must stop. Used at once (``with
        durable.lease():``): an unstarted item is started when this is called."""
        if self.unstarted:
            epoch = self.store.start_pending(self.run_id, self.owner, time.time(), self.lease_ttl)
            if epoch is None:  # started meanwhile by another process (or the store declines)
                self.fresh = False  # the general way: claim its lease, read what it recorded
            else:
                self._lease.adopt(epoch)
        return self._lease.held(on_lost)

    def start(self, *, rerun_changed: bool) -> Journal:
        """Begin executing (under the lease): the journal to replay from, the run marked
        running — a batch item recorded as pending gets its real start time — what
        earlier runs of it spent that no replay will count again (:func:`earlier_spend`),
        and how long they ran (:func:`~trellis.engine.journal.run_time_before`).
        A run this process has just created (:attr:`fresh`) is already marked running and
        has nothing to replay: nothing is read or written for it here."""
        self.journal = Journal(
            self.store,
            self.run_id,
            self.plan,
            rerun_changed=rerun_changed,
            epoch=self.epoch,
            empty=self.fresh,
        )
        if self.fresh:
            return self.journal
        # Read again under the lease: another process may have run it since open().
        row = self.store.get_run(self.run_id)
        if row is not None:
            self.earlier = earlier_spend(self.store, row)
            self.earlier_s = run_time_before(self.store, row)
        now = time.time()
        started = now if row is not None and row.status == "pending" else None
        self.store.update_run(
            self.run_id, status="running", epoch=self.epoch, started_at=started, resumed_at=now
        )
        return self.journal

    async def finish(self, result: RunResult) -> None:
        """Record how the run ended, unless its lease was lost (then the new owner's
        record stands: :class:`LeaseLostError`), and return once everything the run
        wrote is durable (a write the store refused raises its error here)."""
        if self.lost is not None:
            raise self.lost
        result.usage.merge(self.earlier)  # a resumed run keeps what its earlier runs spent
        result.duration_s += self.earlier_s  # and how long they ran
        record_end(self.store, self.run_id, result, epoch=self.epoch, owner=self.owner)
        self._lease.released = True  # with the end, in the same write
        await self.store.committed(self.run_id)


def load_result(store: Store, run_id: str, plan: CompiledFlow | None = None) -> RunResult:
    """A run as recorded. With the flow's plan, outputs come back typed (models...)."""
    row = store.get_run(run_id)
    if row is None:
        raise InputError(f"no run {run_id!r} in the store {store.url}")
    steps_by_name = {s.step: s for s in store.load_steps(run_id)}
    if plan is not None:
        names = [s.name for s in plan.steps]
    else:  # no flow at hand: the order the steps started in
        names = sorted(steps_by_name, key=lambda n: _started_at(steps_by_name[n]))
    records: dict[str, StepRecord] = {}
    decisions: list[Decision] = []
    for i, name in enumerate(names):
        srow = steps_by_name.get(name)
        if srow is None:
            records[name] = StepRecord(name)
            continue
        output_type = plan.steps[i].produces if plan is not None else Any
        records[name] = record_from_row(srow, output_type)
        if srow.decisions:
            decisions.extend(
                decision_from_dict(d) for d in decode(srow.decisions, Any, "decisions")
            )
    calls: list[CallRecord] = []
    for crow in store.load_calls(run_id):
        calls.extend(
            call_record_from_dict(a, replayed=False)
            for a in decode(crow.attempts, Any, "call attempts")
        )
    position = {name: i for i, name in enumerate(names)}
    calls.sort(
        key=lambda c: (
            position.get(c.step, len(position)),
            -1 if c.index is None else c.index,
            -1 if c.round is None else c.round,
            c.call,
            c.attempt,
        )
    )
    # Its sub-flows' calls, under their paths (a batch has none; a flow without sub-flow
    # steps neither: no query for them then, as a big batch's items are loaded one by one).
    if not row.is_batch and (plan is None or any(s.subflow is not None for s in plan.steps)):
        calls.extend(recorded_subflow_calls(store, run_id, replayed=False))
    result = RunResult(
        run_id=row.run_id,
        flow=row.flow,
        inputs=decode(row.inputs, Any, "inputs"),
        steps=records,
        status=row.status if row.status in ("done", "failed", "waiting") else "running",
        decisions=decisions,
        calls=calls,
        usage=stats_from_json(row.usage),
        error=error_from_json(row.error) if row.error else None,
        started_at=row.started_at,
        duration_s=row.duration_s or 0.0,
    )
    if plan is not None:
        result.inputs = plan.validate_inputs(result.inputs)
    return result


class BatchItems:
    """A recorded batch's items, as :func:`open_batch` returns them: how many there are,
    each one's run id (``<batch_id>.<index>``) and, on demand, its recorded inputs (read
    back from the store), so that a batch of any size is never held in memory at once.
    Iterating gives ``(run id, inputs)`` in item order. ``fresh``: the batch was recorded
    by the :func:`open_batch` that returned it (nothing of it ran yet)."""

    __slots__ = ("batch_id", "count", "fresh", "store")

    def __init__(self, store: Store, batch_id: str, count: int, *, fresh: bool = False) -> None:
        self.store = store
        self.batch_id = batch_id
        self.count = count
        self.fresh = fresh

    def __len__(self) -> int:
        return self.count

    def run_id(self, index: int) -> str:
        """Item ``index``'s child run id."""
        if not 0 <= index < self.count:
            raise IndexError(f"batch {self.batch_id!r} has no item {index}")
        return f"{self.batch_id}.{index}"

    def inputs(self, index: int) -> Any:
        """Item ``index``'s recorded inputs."""
        run_id = self.run_id(index)
        row = self.store.get_run(run_id)
        if row is None or row.parent_id != self.batch_id:
            raise StoreError(
                f"batch {self.batch_id!r} has no record of its item {index} ({run_id}) in "
                f"{self.store.url}"
            )
        return decode(row.inputs, Any, f"the inputs of {run_id}")

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(recorded_batch_inputs(self.store, self.batch_id))

    def unstarted(self, start: int, stop: int) -> dict[int, RunRow]:
        """The records of items ``start`` to ``stop - 1`` that no process has started
        (:meth:`Store.pending_runs`), by item index: they start from these, unread again."""
        index_of = {self.run_id(i): i for i in range(start, min(stop, self.count))}
        rows = self.store.pending_runs(list(index_of))
        return {index_of[r.run_id]: r for r in rows if r.parent_id == self.batch_id}

    def starts(self, chunk: int) -> Iterator[tuple[int, RunRow | None]]:
        """Every item's index in order, with its record when no process has started it
        (read ``chunk`` items at a time, as the items are reached); else ``None``."""
        for start in range(0, self.count, chunk):
            rows = self.unstarted(start, start + chunk)
            for index in range(start, min(start + chunk, self.count)):
                yield index, rows.get(index)


def _recorded_values(plan: CompiledFlow, row: RunRow) -> dict[str, Any]:
    """A recorded run's inputs, validated against the flow as a new run's are."""
    return plan.validate_inputs(decode(row.inputs, Any, f"the inputs of run {row.run_id!r}"))


def _recorded_count(store: Store, row: RunRow) -> int:
    """How many items the recorded batch ``row`` has: as its parent record says (``{"items":
    N}``), else (a record without it) as many as are listed."""
    try:
        count = json.loads(row.inputs).get("items")
    except (ValueError, AttributeError):
        count = None
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    return len(store.list_runs(parent_id=row.run_id))


def open_batch(
    store: Store,
    plan: CompiledFlow,
    items: Iterable[Mapping[str, Any]] | None,
    batch_id: str,
    meta: Mapping[str, Any] | None,
    *,
    count: int | None = None,
) -> BatchItems:
    """The batch's items (:class:`BatchItems`), creating the batch if it is new.

    A new batch records the parent and every item (as pending child runs) in one
    transaction, before any item runs, so an interrupted batch knows all its items. The
    items are streamed into the store, never held all at once, when their number is known
    before they are read: ``items`` is sized (a list...), or ``count`` says it (then a
    different number of items recorded nothing and raises :class:`InputError`). A
    recorded batch takes its count from its parent's record; given ``items``, they must be
    its recorded ones (compared one by one as they are read).
    """
    row = store.get_run(batch_id)
    if row is not None:
        if row.flow != plan.name:
            raise InputError(f"batch {batch_id!r} belongs to flow {row.flow!r}, not {plan.name!r}")
        recorded = BatchItems(store, batch_id, _recorded_count(store, row))
        if items is not None:
            given = (dict(item) for item in items)
            if first_changed_item((inputs for _, inputs in recorded), given) is not None:
                raise InputError(
                    f"batch {batch_id!r} was recorded with {len(recorded)} items, not these; "
                    "resume it without items, or use another batch id"
                )
        return recorded
    if items is None:
        raise InputError(f"no batch {batch_id!r} in the store {store.url}")
    source: Iterable[Mapping[str, Any]]
    if isinstance(items, Sized):
        source, count = items, len(items)
    elif count is not None:
        source = items
    else:  # an iterator that does not know how many: its items are needed first
        source = [dict(item) for item in items]
        count = len(source)
    expected = count
    now = time.time()
    parent = RunRow(
        run_id=batch_id,
        flow=plan.name,
        status="running",
        inputs=json.dumps({"items": expected}),
        started_at=now,
        resumed_at=now,
        meta=json.dumps({"batch": True, **plan.shape(), **(meta or {})}),
        is_batch=True,
    )

    def children() -> Iterator[RunRow]:
        # The items' rows are made as the store inserts them: a big batch never holds them
        # all. A count that was wrong raises in the store's transaction: nothing recorded.
        index = -1
        for index, item in enumerate(source):
            if index >= expected:
                raise InputError(f"batch {batch_id!r}: more than the {expected} items said")
            yield RunRow(
                run_id=f"{batch_id}.{index}",
                flow=plan.name,
                status="pending",
                inputs=encode(dict(item), f"the inputs of item {index}"),
                started_at=now,
                parent_id=batch_id,
                item_index=index,
            )
        if index + 1 != expected:
            raise InputError(f"batch {batch_id!r}: {index + 1} items, not the {expected} said")

    try:
        store.create_runs(itertools.chain([parent], children()))
    except StoreError:
        row = store.get_run(batch_id)
        if row is None:
            raise
        # Another process recorded the same new batch id at the same moment: it runs it.
        holder = row.lease_owner or "another process"
        raise RunLockedError(
            f"run {batch_id} is being executed by {holder} (it recorded this batch at the "
            "same moment); try again later",
            run_id=batch_id,
            owner=holder,
        ) from None
    return BatchItems(store, batch_id, expected, fresh=True)


def earlier_spend(store: Store, row: RunRow) -> Stats:
    """What earlier runs of ``row`` spent that resuming it will not count again: its
    recorded usage (the total as of its last end) minus what a resume replays — the usage
    of its completed steps (restored) and every journaled call attempt of the other steps
    (replayed when the step asks again). What is left is the attempts of calls that failed
    (a failed step's retries and re-asks), which the journal does not hold: without this a
    resumed item's cost and attempts would forget them while the provider billed them."""
    if not row.usage or row.status == "done":
        return Stats()
    left = stats_from_json(row.usage)
    done_steps: set[str] = set()
    for srow in store.load_steps(row.run_id):
        if srow.status == "done":
            done_steps.add(srow.step)
            if srow.usage:
                left.subtract(stats_from_json(srow.usage))
    # A completed step's calls are counted in its usage already.
    calls = store.load_calls(row.run_id)
    left.subtract(journaled_usage(c for c in calls if c.key.split("|", 1)[0] not in done_steps))
    # A sub-flow step that did not complete re-enters its child runs, which count again
    # what they restore and replay: their recorded usage is not "earlier" spend.
    prefix = row.run_id + "/"
    for child in store.list_runs(parent_id=row.run_id):
        if child.usage and child.meta and '"subflow"' in child.meta:
            step = child.run_id.removeprefix(prefix).partition("[")[0]
            if child.run_id.startswith(prefix) and step not in done_steps:
                left.subtract(stats_from_json(child.usage))
    return left if left.attempts > 0 else Stats()


def recorded_batch_inputs(store: Store, batch_id: str) -> list[tuple[str, Any]]:
    """A recorded batch's items as ``(child run id, inputs)``, in item order."""
    return [
        (c.run_id, decode(c.inputs, Any, f"the inputs of {c.run_id}"))
        for c in store.list_runs(parent_id=batch_id)
    ]


def first_changed_item(
    recorded: Iterable[Mapping[str, Any]], given: Iterable[Mapping[str, Any]]
) -> int | None:
    """The "same batch, same items" check: ``None`` when ``given`` are the recorded items
    (same count, each equal as JSON values, key order aside); else the index of the first
    item that differs (``min`` of the two counts when only the counts differ). Both are
    read one item at a time."""
    for index, (old, new) in enumerate(itertools.zip_longest(recorded, given)):
        if old is None or new is None:
            return index
        if json.loads(encode(dict(old))) != json.loads(encode(dict(new))):
            return index
    return None


def finish_batch(
    store: Store,
    batch_id: str,
    *,
    status: Literal["done", "waiting", "failed"],
    epoch: int | None = None,
    run_s: float | None = None,
) -> None:
    """Record how a batch ended (``run_s``: how long it ran, over all its executions)."""
    store.update_run(batch_id, status=status, finished_at=time.time(), epoch=epoch, run_s=run_s)


def _started_at(row: StepRow) -> float:
    return row.started_at if row.started_at is not None else float("inf")
