"""Recorded runs, read back: the one read model of what a store holds.

Every reader of recorded runs uses this module — the CLI's ``runs`` / ``show`` / ``resume``
/ ``approve``, the web UI (``trellis.ui``), evals or ``trellis diff`` — instead of walking
the store's rows itself. Nothing here imports a flow: everything comes from the store (run
rows, step records, the LLM call journal) and the run's ``meta`` (the flow's step order
and edges, when the run was recorded with them).

- :func:`list_entries` / :func:`run_entry`: runs as summaries (the stable JSON shape of
  ``trellis runs --json``), a record that cannot be read listed as ``unreadable``;
- :func:`recorded_result`: one run rebuilt as a :class:`RunResult` with its calls (and
  their recorded source), counts, costs and waiting questions;
- :func:`batch_items`, :func:`batch_usage`, :func:`waiting_of`: a batch and its items;
- :func:`recorded_meta`: how a run was started (a batch item: its batch's meta);
- :func:`subflow_runs` / :func:`subflow_of`: a sub-flow step's child runs (recorded with
  the parent as ``parent_id`` and ``{"subflow": {"parent", "step"}}`` in their meta);
  :func:`recorded_result` nests them in the step's ``children``.

Whether a run is a batch is the run row's ``is_batch`` column, set when the batch is
recorded (:func:`trellis.engine.durable.open_batch`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trellis.engine.durable import load_result, recorded_batch_inputs
from trellis.engine.human import leaf_questions
from trellis.engine.journal import (
    error_from_json,
    journaled_usage,
    record_from_row,
    stats_from_json,
)
from trellis.engine.results import CallRecord, RunResult, Stats, StepRecord, jsonable
from trellis.errors import StoreError, TrellisError
from trellis.flow.graph import CompiledFlow
from trellis.store.base import RunRow, Store

__all__ = [
    "RUN_SORTS",
    "UNREADABLE_ERRORS",
    "RecordedGraph",
    "RunPage",
    "StepOrder",
    "Waiting",
    "batch_items",
    "batch_usage",
    "interrupted",
    "is_approval",
    "list_entries",
    "list_page",
    "read_meta",
    "recorded_batch",
    "recorded_graph",
    "recorded_meta",
    "recorded_result",
    "recorded_result_lines",
    "recorded_usage",
    "result_line",
    "run_entry",
    "step_statuses",
    "subflow_of",
    "subflow_runs",
    "unreadable_entry",
    "waiting_of",
]

#: What reading one corrupt or foreign record can raise (a listing shows it as unreadable).
UNREADABLE_ERRORS = (TrellisError, ValueError, TypeError, KeyError, AttributeError)


# -- metadata ------------------------------------------------------------------------------


def read_meta(row: RunRow) -> dict[str, Any]:
    """The run row's ``meta`` as a dict ({} when there is none or it is not an object)."""
    if not row.meta:
        return {}
    try:
        data = json.loads(row.meta)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def recorded_meta(store: Store, row: RunRow) -> tuple[dict[str, Any], bool]:
    """How ``row`` was started: its meta, or for a batch item without one its batch's.
    Returns the meta and whether it is the batch's (inherited)."""
    data = read_meta(row)
    if not data and row.parent_id is not None:
        parent = store.get_run(row.parent_id)
        return (read_meta(parent) if parent is not None else {}), True
    return data, False


class StepOrder:
    """The flow's step order each run was recorded with (a batch item: its batch's),
    looked up once per run or batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, list[str]] = {}

    def of(self, row: RunRow) -> list[str]:
        key = row.parent_id if row.parent_id is not None and not row.meta else row.run_id
        steps = self._cache.get(key)
        if steps is None:
            meta, _ = recorded_meta(self.store, row)
            listed = meta.get("steps")
            steps = [str(s) for s in listed] if isinstance(listed, list) else []
            self._cache[key] = steps
        return steps


# -- one run -------------------------------------------------------------------------------


def _order_calls(calls: list[CallRecord], order: list[str]) -> list[CallRecord]:
    rank = {name: i for i, name in enumerate(order)}

    def key(c: CallRecord) -> tuple[int, str, int, int, int, int]:
        return (
            rank.get(c.step, len(rank)),
            c.step,
            c.index if c.index is not None else -1,
            c.round if c.round is not None else -1,
            c.call,
            c.attempt,
        )

    return sorted(calls, key=key)


def recorded_usage(store: Store, row: RunRow) -> Stats:
    """The run's recorded usage; for a run that did not finish, summed from its journal."""
    if row.usage:
        return stats_from_json(row.usage)
    return journaled_usage(store.load_calls(row.run_id))


def recorded_result(store: Store, row: RunRow, order: list[str]) -> RunResult:
    """A recorded run as a :class:`RunResult`: steps in execution order (``order``; steps
    not reached yet are ``pending``), calls with their recorded source, usage from the
    journal when the run did not finish."""
    result = load_result(store, row.run_id)
    if not order:  # no recorded order: the order the steps started in
        order = sorted(
            result.steps,
            key=lambda n: (result.steps[n].started_at is None, result.steps[n].started_at or 0.0),
        )
    names = list(order) + [n for n in result.steps if n not in order]
    result.steps = {n: result.steps.get(n) or StepRecord(n) for n in names}
    rank = {name: i for i, name in enumerate(names)}
    result.decisions.sort(key=lambda d: rank.get(d.step, len(rank)))
    result.calls = _order_calls(result.calls, names)  # load_result kept their sources
    if not row.usage:
        result.usage = recorded_usage(store, row)
    for step, children in subflow_runs(store, row.run_id).items():
        record = result.steps.get(step)
        if record is not None:
            record.children = [
                recorded_result(store, child, _recorded_steps(child)) for child in children
            ]
    return result


def subflow_of(row: RunRow) -> tuple[str, str] | None:
    """``(parent run id, step)`` when ``row`` is the child run of a sub-flow step."""
    info = read_meta(row).get("subflow")
    if isinstance(info, dict) and row.parent_id is not None:
        return row.parent_id, str(info.get("step"))
    return None


def subflow_runs(store: Store, run_id: str) -> dict[str, list[RunRow]]:
    """The child runs of ``run_id``'s sub-flow steps, by step, in element order."""
    by_step: dict[str, list[RunRow]] = {}
    for child in store.list_runs(parent_id=run_id):
        of = subflow_of(child)
        if of is not None:
            by_step.setdefault(of[1], []).append(child)
    for children in by_step.values():
        children.sort(key=lambda r: -1 if r.item_index is None else r.item_index)
    return by_step


def _recorded_steps(row: RunRow) -> list[str]:
    listed = read_meta(row).get("steps")
    return [str(s) for s in listed] if isinstance(listed, list) else []


def interrupted(row: RunRow, now: float) -> bool:
    """A run recorded as running whose process no longer holds its lease."""
    return row.status == "running" and (row.lease_expires is None or row.lease_expires <= now)


def _error(row: RunRow) -> dict[str, Any] | None:
    if not row.error:
        return None
    try:
        return error_from_json(row.error).to_dict()
    except StoreError:
        return {
            "type": "Unknown",
            "message": row.error[:200],
            "step": None,
            "mode": None,
            "traceback": [],
        }


def _step_counts(store: Store, row: RunRow, order: StepOrder) -> tuple[int, int]:
    """(steps finished: done or skipped, steps of the flow)."""
    rows = store.load_steps(row.run_id)
    done = sum(1 for s in rows if s.status in ("done", "skipped"))
    total = len(order.of(row)) or len(rows)
    return done, max(total, done)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What a recorded run waits for: a run's waiting steps (each ``(step, question)``),
    a batch's number of waiting items."""

    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    items: int = 0


def is_approval(question: Mapping[str, Any]) -> bool:
    """Whether a question is ``human.approve(...)``'s (an ``Approval``: approve / reject)."""
    schema = question.get("schema")
    if question.get("type") != "Approval" or not isinstance(schema, Mapping):
        return False
    properties = schema.get("properties")
    return isinstance(properties, Mapping) and set(properties) == {"approved", "comment"}


def waiting_of(store: Store, row: RunRow) -> Waiting:
    """The questions a recorded run waits on (a batch: how many of its items wait); a
    sub-flow step's are the questions waiting inside it, each by its path from the run."""
    if row.is_batch:
        return Waiting(items=len(store.list_runs(parent_id=row.run_id, status="waiting")))
    if row.status != "waiting":
        return Waiting()
    steps: list[tuple[str, dict[str, Any]]] = []
    for srow in store.load_steps(row.run_id):
        if srow.status == "waiting":
            question = record_from_row(srow).question or {}
            # A sub-flow step: each question waiting inside it, by its path (review/approve).
            steps.extend(leaf_questions(srow.step, question) or [(srow.step, question)])
    return Waiting(steps=tuple(steps))


# -- batches -------------------------------------------------------------------------------


def batch_items(store: Store, batch_id: str) -> list[RunRow]:
    """A batch's item runs, in item order."""
    return store.list_runs(parent_id=batch_id)


def step_statuses(store: Store, run_id: str) -> dict[str, str]:
    """Each recorded step of a run with its status (the route an item took)."""
    return {row.step: row.status for row in store.load_steps(run_id)}


def batch_usage(store: Store, items: list[RunRow]) -> Stats:
    """A batch's usage: the sum of its items' (unfinished ones: from their journals)."""
    usage = Stats()
    for child in items:
        usage.merge(recorded_usage(store, child))
    return usage


def recorded_batch(
    store: Store,
    row: RunRow,
    order: StepOrder | None = None,
    now: float = 0.0,
    *,
    children: Sequence[RunRow] | None = None,
    summarised: Sequence[RunRow] | None = None,
) -> dict[str, Any]:
    """A recorded batch as ``RunResult.to_dict()`` of its parent run (usage: its items')
    plus ``"batch"``: the item count, items by status and each item's summary.

    ``children``: the batch's items when the caller has read them already;
    ``summarised``: the items whose summaries ``"items"`` lists (by default every one;
    a view of a big batch that shows some of them need not read the others' steps)."""
    order = order or StepOrder(store)
    result = load_result(store, row.run_id)
    children = list(children) if children is not None else batch_items(store, row.run_id)
    listed = children if summarised is None else summarised
    entries = [run_entry(store, child, order, now, parent=row) for child in listed]
    result.usage = batch_usage(store, children)
    data = result.to_dict()
    data["batch"] = {
        "total": len(children),
        "by_status": dict(Counter(c.status for c in children)),
        "items": entries,
    }
    return data


# -- results of items -----------------------------------------------------------------------


def result_line(index: int, inputs: Mapping[str, Any], result: RunResult) -> dict[str, Any]:
    """The one JSON shape of an item's result: each ``--output`` line, whether the result
    was just computed or read back from the store (:func:`recorded_result_lines`)."""
    return {
        "index": index,
        "run_id": result.run_id,
        "status": result.status,
        "inputs": jsonable(inputs),
        "outputs": jsonable(result.outputs),
        "skipped": result.skipped,
        "error": result.error.to_dict() if result.error else None,
        "usage": result.usage.to_dict(),
        "duration_s": round(result.duration_s, 6),
    }


def recorded_result_lines(
    store: Store, batch_id: str, plan: CompiledFlow | None = None
) -> list[dict[str, Any]]:
    """Every item of a recorded batch as :func:`result_line` (outputs typed with the flow's
    ``plan`` when given), in item order."""
    return [
        result_line(index, inputs, load_result(store, run_id, plan))
        for index, (run_id, inputs) in enumerate(recorded_batch_inputs(store, batch_id))
    ]


# -- summaries (``trellis runs --json``) -------------------------------------------------


def _queued(store: Store, row: RunRow, parent: RunRow | None) -> float | None:
    """How long a batch item waited for its turn: from its batch's start to its own
    (``None``: not an item, or not started yet). Its ``duration_s`` is its run time."""
    if row.parent_id is None or row.status == "pending":
        return None
    parent = parent if parent is not None else store.get_run(row.parent_id)
    if parent is None:
        return None
    return round(max(0.0, row.started_at - parent.started_at), 6)


def run_entry(
    store: Store,
    row: RunRow,
    order: StepOrder | None = None,
    now: float = 0.0,
    parent: RunRow | None = None,
) -> dict[str, Any]:
    """One run's summary (the documented, stable shape of a ``trellis runs --json``
    entry): status, kind, timing (a batch item: ``queued_s`` waiting for its turn, then
    ``duration_s`` running), steps (a batch: items) finished, calls, tokens, cost.
    ``parent``: a batch item's batch row, when the caller has it."""
    order = order or StepOrder(store)
    now = now or time.time()
    items: dict[str, int] | None = None
    if row.is_batch:
        kind = "batch"
        children = batch_items(store, row.run_id)
        counts = Counter(c.status for c in children)
        items = {
            "total": len(children),
            "done": counts["done"],
            "failed": counts["failed"],
            "running": counts["running"],
            "pending": counts["pending"],
        }
        usage = batch_usage(store, children)
        done_steps = total_steps = 0
        for child in children:
            d, t = _step_counts(store, child, order)
            done_steps += d
            total_steps += t
    else:
        kind = "item" if row.parent_id is not None else "run"
        usage = recorded_usage(store, row)
        done_steps, total_steps = _step_counts(store, row, order)
    finished = row.finished_at
    return {
        "run_id": row.run_id,
        "flow": row.flow,
        "status": row.status,
        "interrupted": interrupted(row, now),
        "kind": kind,
        "parent_id": row.parent_id,
        "item_index": row.item_index,
        "started_at": row.started_at,
        "finished_at": finished,
        "duration_s": None if row.duration_s is None else round(row.duration_s, 6),
        "queued_s": _queued(store, row, parent),
        "steps": {"done": done_steps, "total": total_steps},
        "items": items,
        "calls": usage.calls,
        "attempts": usage.attempts,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": round(usage.cost_usd, 10) if usage.cost_known else None,
        "cost_usd_known_part": round(usage.cost_usd, 10),
        "unpriced_attempts": usage.unpriced_attempts,
        "error": _error(row),
    }


def unreadable_entry(row: RunRow, reason: str) -> dict[str, Any]:
    """The summary of a record that cannot be read: status ``unreadable``, the reason as
    its error, every other field as found (when of the right type)."""
    return {
        "run_id": str(row.run_id),
        "flow": str(row.flow),
        "status": "unreadable",
        "interrupted": False,
        "kind": "item" if row.parent_id is not None else "run",
        "parent_id": row.parent_id if isinstance(row.parent_id, str) else None,
        "item_index": row.item_index if isinstance(row.item_index, int) else None,
        "started_at": row.started_at if isinstance(row.started_at, int | float) else None,
        "finished_at": None,
        "duration_s": None,
        "queued_s": None,
        "steps": {"done": 0, "total": 0},
        "items": None,
        "calls": 0,
        "attempts": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": None,
        "error": {
            "type": "StoreError",
            "message": reason,
            "step": None,
            "mode": None,
            "traceback": [],
        },
    }


def list_entries(
    store: Store,
    *,
    flow: str | None = None,
    status: str | None = None,
    include_items: bool = False,
    limit: int | None = None,
) -> list[tuple[RunRow, dict[str, Any]]]:
    """Recorded runs, newest first, each with its summary. Batch items are left out
    unless ``include_items`` (or ``status="waiting"``: the items are what waits). One
    record that cannot be read never hides the rest: it is listed as ``unreadable``."""
    top_level = not include_items and status != "waiting"
    rows = store.list_runs(flow=flow, status=status, top_level=top_level, limit=limit, lenient=True)
    if not top_level and not include_items:  # a sub-flow's waiting child: its parent is listed
        rows = [r for r in rows if r.unreadable is not None or subflow_of(r) is None]
    order = StepOrder(store)
    now = time.time()
    listed: list[tuple[RunRow, dict[str, Any]]] = []
    for row in rows:
        reason = row.unreadable
        if reason is None:
            try:
                listed.append((row, run_entry(store, row, order, now)))
                continue
            except UNREADABLE_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
        listed.append((row, unreadable_entry(row, reason)))
    return listed


# -- pages of runs (the web UI) -----------------------------------------------------------

#: The orders a page of runs can be sorted in: name -> the key of a run row.
RUN_SORTS: dict[str, Any] = {
    "started": lambda r: r.started_at or 0.0,
    "duration": lambda r: r.duration_s if r.duration_s is not None else -1.0,
    "flow": lambda r: (str(r.flow), r.started_at or 0.0),
    "status": lambda r: (str(r.status), r.started_at or 0.0),
}


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of recorded runs: the summaries shown, whether more runs follow, and how
    many match in all (``None``: not counted, on the newest-first path that reads only the
    page's rows)."""

    entries: list[dict[str, Any]]
    more: bool
    total: int | None
    offset: int
    limit: int


def list_page(
    store: Store,
    *,
    flow: str | None = None,
    status: str | None = None,
    batch: str | None = None,
    since: float | None = None,
    until: float | None = None,
    sort: str = "started",
    descending: bool = True,
    offset: int = 0,
    limit: int = 50,
) -> RunPage:
    """A page of recorded runs (top-level runs and batches; ``batch``: that batch's
    items), filtered by flow, status and start time, sorted by ``sort`` (a key of
    :data:`RUN_SORTS`). Newest first with no time range, the store reads only the rows up
    to the page's end (a page costs the same with 20 or 20 000 runs); otherwise every
    matching row is read to filter and sort, and counted. Either way summaries are built
    for the page's runs alone."""
    if sort not in RUN_SORTS:
        raise ValueError(f"unknown sort {sort!r}: one of {', '.join(RUN_SORTS)}")
    newest_first = sort == "started" and descending and since is None and until is None
    total: int | None
    if batch is not None:
        rows = store.list_runs(parent_id=batch, status=status, lenient=True)
    elif newest_first:
        rows = store.list_runs(
            flow=flow, status=status, top_level=True, limit=offset + limit + 1, lenient=True
        )
    else:
        rows = store.list_runs(flow=flow, status=status, top_level=True, lenient=True)
    if since is not None:
        rows = [r for r in rows if (r.started_at or 0.0) >= since]
    if until is not None:
        rows = [r for r in rows if (r.started_at or 0.0) <= until]
    if not newest_first:
        rows = sorted(rows, key=RUN_SORTS[sort], reverse=descending)
    total = None if newest_first and batch is None else len(rows)
    chosen = rows[offset : offset + limit]
    order = StepOrder(store)
    now = time.time()
    parent = store.get_run(batch) if batch is not None else None
    entries: list[dict[str, Any]] = []
    for row in chosen:
        reason = row.unreadable
        if reason is None:
            try:
                entries.append(run_entry(store, row, order, now, parent=parent))
                continue
            except UNREADABLE_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
        entries.append(unreadable_entry(row, reason))
    more = len(rows) > offset + limit
    return RunPage(entries=entries, more=more, total=total, offset=offset, limit=limit)


@dataclass(frozen=True, slots=True)
class RecordedGraph:
    """The flow's graph as recorded with a run (``CompiledFlow.shape``): each step's
    upstream steps (``edges``) and the flow inputs it reads (``inputs``); both empty for a
    run recorded before runs kept them."""

    edges: dict[str, list[str]]
    inputs: dict[str, list[str]]


def recorded_graph(store: Store, row: RunRow) -> RecordedGraph:
    """The graph ``row``'s flow had when the run was recorded (a batch item: its batch's)."""
    meta, _ = recorded_meta(store, row)
    return RecordedGraph(_names_by_step(meta.get("edges")), _names_by_step(meta.get("step_inputs")))


def _names_by_step(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): [str(d) for d in v] for k, v in value.items() if isinstance(v, list)}
