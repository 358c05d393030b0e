"""Forking a recorded run or batch: a new run that takes from the record every step
upstream of ``from_step`` and runs ``from_step`` and everything downstream of it again,
with the engine's (new) bindings and the flow's (possibly changed) code.

The fork is prepared in the store: the new run (a batch: the batch and every item) is
created with the reused steps' records copied, then the engine *resumes* it like any
interrupted run, so reused steps are restored (typed) and cost nothing, and a reused step
whose code changed since it was recorded re-runs, with its downstream
(``rerun_changed``)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from trellis.engine.durable import open_batch, recorded_batch_inputs
from trellis.engine.engine import Engine, new_run_id
from trellis.engine.results import RunResult
from trellis.errors import InputError
from trellis.flow.flow import Flow
from trellis.flow.graph import CompiledFlow
from trellis.store.base import RunRow, Store

__all__ = ["ForkPlan", "fork", "prepare_fork"]

_REUSABLE = ("done", "skipped")


@dataclass(frozen=True, slots=True)
class ForkPlan:
    source: str  # the recorded run or batch
    run_id: str  # the fork
    is_batch: bool
    from_step: str | None
    rerun: tuple[str, ...]  # from_step and its downstream (every step without from_step)
    reused: tuple[str, ...]  # the other steps: taken from the record when it has them


_FORK_OWNER = "trellis-fork"  # the lease owner that marks a forked run as written


def downstream(plan: CompiledFlow, step: str) -> list[str]:
    """``step`` and every step that reads it, directly or not, in run order."""
    if step not in plan.index:
        known = ", ".join(s.name for s in plan.steps)
        raise InputError(f"--from {step!r} is not a step of flow {plan.name!r} ({known})")
    marked = {plan.index[step]}
    for i in range(len(plan.steps)):  # topological order: readers come after
        if any(d in marked for d in plan.deps[i]):
            marked.add(i)
    return [plan.steps[i].name for i in sorted(marked)]


def prepare_fork(
    store: Store,
    flow: Flow,
    run_id: str,
    *,
    new_id: str | None = None,
    from_step: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> ForkPlan:
    """Create the fork of ``run_id`` in ``store`` (see the module docstring)."""
    plan = flow.compile()
    row = store.get_run(run_id)
    if row is None:
        raise InputError(f"no run {run_id!r} in {store.url}")
    if row.flow != plan.name:
        raise InputError(f"run {run_id!r} is of flow {row.flow!r}, not {plan.name!r}")
    new_id = new_id or new_run_id()
    if store.get_run(new_id) is not None:
        raise InputError(f"run {new_id!r} already exists in {store.url}; pick another --run-id")
    rerun = downstream(plan, from_step) if from_step else [s.name for s in plan.steps]
    reused = [s.name for s in plan.steps if s.name not in rerun]
    record = {"fork": {"of": run_id, "from_step": from_step}, **(meta or {})}
    is_batch = row.is_batch
    if is_batch:  # a new batch of the same items, recorded as any batch is
        recorded = recorded_batch_inputs(store, run_id)
        work = open_batch(store, plan, [inputs for _, inputs in recorded], new_id, record)
        pairs = [(item, child) for (item, _), (child, _) in zip(recorded, work, strict=True)]
    else:
        meta_json = json.dumps({**plan.shape(), **record})  # the graph, as every run keeps
        store.create_run(
            RunRow(
                run_id=new_id,
                flow=plan.name,
                status="pending",
                inputs=row.inputs,
                started_at=time.time(),
                meta=meta_json,
            )
        )
        pairs = [(run_id, new_id)]
    keep = set(reused)
    for source, target in pairs:
        copied = False
        for step in store.load_steps(source):
            if step.step in keep and step.status in _REUSABLE:
                store.save_step(replace(step, run_id=target))
                copied = True
        if copied:
            # A pending run at lease epoch 0 counts as holding nothing (a batch item as
            # recorded: started without reading its journal); this one holds copied steps,
            # so its epoch moves past 0 (a lease granted and given up at once).
            claim = store.claim_lease(target, _FORK_OWNER, time.time(), 1.0)
            store.release_lease(target, _FORK_OWNER, claim.epoch)
    return ForkPlan(run_id, new_id, is_batch, from_step, tuple(rerun), tuple(reused))


async def fork(
    engine: Engine,
    flow: Flow,
    run_id: str,
    *,
    new_id: str | None = None,
    from_step: str | None = None,
    meta: Mapping[str, Any] | None = None,
    concurrency: int = 8,
) -> tuple[ForkPlan, list[RunResult]]:
    """Fork ``run_id`` and run the fork with ``engine`` (its bindings); returns the plan
    and the results (one per item for a batch, in item order)."""
    if engine.store is None:
        raise InputError("forking a recorded run needs an engine with its store")
    forked = prepare_fork(engine.store, flow, run_id, new_id=new_id, from_step=from_step, meta=meta)
    if not forked.is_batch:
        return forked, [await engine.run(flow, run_id=forked.run_id, rerun_changed=True)]
    results: dict[int, RunResult] = {}
    async for index, result in engine.run_many(
        flow, batch_id=forked.run_id, concurrency=concurrency, rerun_changed=True
    ):
        results[index] = result
    return forked, [results[i] for i in sorted(results)]
