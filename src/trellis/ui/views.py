"""What each page shows, as plain data (the JSON API returns it; the templates render
it). Everything is read through :mod:`trellis.engine.records`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from trellis.engine.human import leaf_questions
from trellis.engine.records import (
    RUN_SORTS,
    RecordedGraph,
    StepOrder,
    is_approval,
    list_page,
    recorded_batch,
    recorded_graph,
    recorded_result,
    run_entry,
    step_statuses,
    subflow_of,
    subflow_runs,
)
from trellis.engine.results import CallRecord, RunResult, jsonable
from trellis.errors import InputError
from trellis.history.diff import diff_runs
from trellis.store.base import Store
from trellis.ui.graph import GraphNode, render_svg

__all__ = ["RunFilters", "RunNotFound", "compare_view", "run_view", "runs_view"]

PAGE_SIZE = 50
STATUSES = ("done", "failed", "waiting", "running", "pending", "cancelled")


class RunNotFound(InputError):
    """The store holds no run of that id (a 404)."""


@dataclass(frozen=True, slots=True)
class RunFilters:
    """The runs page's query: filters, order and page."""

    flow: str | None = None
    status: str | None = None
    batch: str | None = None  # a batch's id: its items
    since: float | None = None
    until: float | None = None
    sort: str = "started"
    descending: bool = True
    page: int = 1

    def query(self, **changes: Any) -> str:
        """The query string of these filters with ``changes`` (for links)."""
        values = {
            "flow": self.flow,
            "status": self.status,
            "batch": self.batch,
            "since": self.since,
            "until": self.until,
            "sort": self.sort,
            "order": "desc" if self.descending else "asc",
            "page": self.page,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def runs_view(store: Store, filters: RunFilters) -> dict[str, Any]:
    """The runs page: one page of runs, newest first unless sorted otherwise."""
    if filters.sort not in RUN_SORTS:
        raise InputError(f"unknown sort {filters.sort!r}: one of {', '.join(RUN_SORTS)}")
    if filters.status is not None and filters.status not in STATUSES:
        raise InputError(f"unknown status {filters.status!r}: one of {', '.join(STATUSES)}")
    page = list_page(
        store,
        flow=filters.flow,
        status=filters.status,
        batch=filters.batch,
        since=filters.since,
        until=filters.until,
        sort=filters.sort,
        descending=filters.descending,
        offset=(max(1, filters.page) - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    number = max(1, filters.page)
    return {
        "runs": page.entries,
        "total": page.total,  # None: not counted (newest first reads only this page)
        "page": number,
        "more": page.more,
        "pages": None if page.total is None else max(1, -(-page.total // PAGE_SIZE)),
        "page_size": PAGE_SIZE,
    }


def _waiting(result: RunResult) -> list[dict[str, Any]]:
    """The questions the run waits on; a sub-flow step's are those waiting inside it,
    each by its step path from the run (``reviews[2]/approve``), which the form posts."""
    out = []
    for name, record in result.steps.items():
        if not (record.status == "waiting" and record.question):
            continue
        for path, question in leaf_questions(name, record.question):
            out.append(
                {
                    "step": path,
                    "prompt": question.get("prompt", ""),
                    "type": question.get("type"),
                    "schema": question.get("schema"),
                    "details": question.get("details"),
                    "error": question.get("error"),
                    "approval": is_approval(question),
                }
            )
    return out


def _timeline(result: RunResult) -> dict[str, Any]:
    """Bars of a Gantt chart: each step that started, and inside it each LLM attempt (its
    wait before, then its request), in percent of the run's span."""
    start = result.started_at
    ends = [
        (r.started_at or start) + (r.duration_s or 0.0)
        for r in result.steps.values()
        if r.started_at is not None
    ]
    span = max([start + result.duration_s, *ends]) - start if ends else result.duration_s
    span = span if span > 0 else 1e-9
    calls: dict[str, list[CallRecord]] = defaultdict(list)
    for call in result.calls:
        calls[call.step].append(call)
    rows = []
    for name, record in result.steps.items():
        if record.started_at is None:
            continue
        offset = record.started_at - start
        duration = record.duration_s or 0.0
        segments: list[dict[str, Any]] = []
        cursor = offset
        for call in calls.get(name, []):
            if call.wait_s > 0:
                segments.append(
                    {
                        "kind": "wait",
                        "left": cursor,
                        "width": call.wait_s,
                        "label": f"waited {call.wait_s:.3f}s before attempt {call.attempt}",
                    }
                )
                cursor += call.wait_s
            segments.append(
                {
                    "kind": "ok" if call.outcome == "ok" else "retry",
                    "left": cursor,
                    "width": call.latency_s,
                    "label": f"attempt {call.attempt} ({call.model}): {call.outcome}, "
                    f"{call.latency_s:.3f}s",
                }
            )
            cursor += call.latency_s
        rows.append(
            {
                "step": name,
                "status": record.status,
                "left": 100 * offset / span,
                "width": max(0.4, 100 * duration / span),
                "offset_s": offset,
                "duration_s": duration,
                "segments": [
                    {
                        **s,
                        "left": 100 * s["left"] / span,
                        "width": max(0.3, 100 * s["width"] / span),
                    }
                    for s in segments
                ],
            }
        )
    return {"span_s": span, "rows": rows}


def _step_details(result: RunResult, graph: RecordedGraph) -> list[dict[str, Any]]:
    decisions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for decision in result.decisions:
        decisions[decision.step].append(decision.to_dict())
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in result.calls:
        calls[call.step].append(call.to_dict())
    out = []
    for name, record in result.steps.items():
        data = record.to_dict()
        data["reads"] = graph.edges.get(name, [])
        data["inputs"] = _step_inputs(result, graph, name)
        data["decisions"] = decisions.get(name, [])
        data["calls"] = step_calls = calls.get(name, [])
        # A reply from the response cache has no prompt of its own to show.
        data["prompts_recorded"] = any("prompt" in c for c in step_calls) or all(
            c["source"] == "cache" for c in step_calls
        )
        out.append(data)
    return out


def _step_inputs(result: RunResult, graph: RecordedGraph, name: str) -> dict[str, Any] | None:
    """What step ``name`` was given: the flow inputs it reads and its upstream steps'
    outputs (None: the run was recorded without its graph). An upstream step that did not
    run reads as null (the step got its parameter's default instead)."""
    if name not in graph.edges and name not in graph.inputs:
        return None
    given: dict[str, Any] = {}
    for key in graph.inputs.get(name, []):
        if key in result.inputs:
            given[key] = jsonable(result.inputs[key])
    for upstream in graph.edges.get(name, []):
        record = result.steps.get(upstream)
        given[upstream] = jsonable(record.output) if record and record.status == "done" else None
    return given


def _note(result: RunResult, name: str) -> str:
    record = result.steps[name]
    if record.status == "skipped":
        for decision in result.decisions:
            if decision.step == name:
                return decision.reason
        return record.reason or "skipped"
    if record.status == "failed" and record.error is not None:
        return record.error.type
    if record.status == "waiting":
        return "waiting for an answer"
    return ""


def run_view(store: Store, run_id: str) -> dict[str, Any]:
    """One run (a batch: its items instead of steps), with the graph's SVG under
    ``"svg"`` (left out of the JSON API)."""
    row = store.get_run(run_id)
    if row is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    order = StepOrder(store)
    entry = run_entry(store, row, order)
    if row.is_batch:
        batch = recorded_batch(store, row, order)
        for item in batch["batch"]["items"]:
            statuses = step_statuses(store, item["run_id"])
            item["route"] = {
                status: [s for s, st in statuses.items() if st == status]
                for status in ("skipped", "failed", "waiting")
            }
        return {"kind": "batch", "run": entry, "batch": batch["batch"], "inputs": batch["inputs"]}
    result = recorded_result(store, row, order.of(row))
    graph = recorded_graph(store, row)
    edges = graph.edges
    nodes = [GraphNode(name, r.status, _note(result, name)) for name, r in result.steps.items()]
    error = result.error.to_dict() if result.error is not None else None
    steps = _step_details(result, graph)
    # A sub-flow step's child runs (one per element when mapped), shown collapsed under it.
    children = subflow_runs(store, run_id)
    for step in steps:
        step["children"] = [run_entry(store, c, order) for c in children.get(step["name"], [])]
    of = subflow_of(row)
    return {
        "kind": "run",
        "run": entry,
        "subflow": None if of is None else {"parent": of[0], "step": of[1]},
        "inputs": jsonable(result.inputs),
        "outputs": jsonable(result.outputs),
        "error": error,
        "usage": result.usage.to_dict(),
        "edges": edges,
        "steps": steps,
        "timeline": _timeline(result),
        "waiting": _waiting(result),
        "svg": render_svg(nodes, edges),
    }


def compare_view(store: Store, run_a: str, run_b: str) -> dict[str, Any]:
    """Two runs (or batches) side by side: the ``trellis diff`` view."""
    diff = diff_runs(store, run_a, run_b)
    data = diff.to_dict()
    data["entries"] = {}
    for run_id in (run_a, run_b):
        row = store.get_run(run_id)
        if row is not None:
            data["entries"][run_id] = run_entry(store, row)
    return jsonable(data)  # type: ignore[no-any-return]
