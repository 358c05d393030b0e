"""Running an eval: every variant over every item through the engine, each item scored.

Each variant is a batch (``Engine.run_many(..., batch_id=f"{eval_id}/{variant}")``) with
the eval's metadata in the batch's ``meta``; its items are ordinary child runs. When every
variant has finished, one more run row, ``eval_id`` itself (``meta.kind = "eval"``), records
the eval: dataset, label field, scorer, and per variant its batch id, bindings, parameter
values and every item's score by run id, so ``trellis show``, ``trellis diff`` and a web UI
read scores next to the runs they belong to. Labels are never passed to the flow.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trellis.config import Config
from trellis.engine.engine import Engine
from trellis.engine.results import RunResult
from trellis.errors import InputError
from trellis.eval.dataset import Dataset
from trellis.eval.scorers import Scorer
from trellis.eval.variants import Variant, resolve_bindings
from trellis.flow.flow import Flow
from trellis.models.registry import ProviderFactory
from trellis.store.base import RunRow, Store

__all__ = ["EvalRun", "ItemOutcome", "VariantRun", "new_eval_id", "run_eval"]


def new_eval_id() -> str:
    return time.strftime("eval-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """One item under one variant: its run, score, route and accounting."""

    index: int
    run_id: str
    status: str
    score: float  # a failed item scores 0
    cost_usd: float | None  # None: a call had no price
    calls_by_model: Mapping[str, int]
    route: str  # the conditional (when=) steps that ran, "+"-joined; "-" for none
    escalated: bool  # at least one conditional step ran
    input_tokens: int
    output_tokens: int
    latency_s: float
    error: str | None = None
    cost_usd_known_part: float = 0.0  # what the priced calls cost
    unpriced_attempts: int = 0  # calls without a price (then cost_usd is None)


@dataclass(slots=True)
class VariantRun:
    variant: Variant
    batch_id: str | None
    items: list[ItemOutcome] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class EvalRun:
    eval_id: str
    flow: str
    dataset: Dataset
    scorer: str
    variants: list[VariantRun]
    seconds: float = 0.0


def _outcome(
    index: int, result: RunResult, conditional: Sequence[str], score: float, error: str | None
) -> ItemOutcome:
    calls: Counter[str] = Counter()
    known = 0.0
    unpriced = 0
    for call in result.calls:
        calls[call.model] += 1
        if call.cost_usd is None:
            unpriced += 1
        else:
            known += call.cost_usd
    ran = [s for s in conditional if result.steps.get(s) and result.steps[s].status == "done"]
    return ItemOutcome(
        index=index,
        run_id=result.run_id,
        status=result.status,
        score=score,
        cost_usd=None if unpriced else known,
        cost_usd_known_part=known,
        unpriced_attempts=unpriced,
        calls_by_model=dict(calls),
        route="+".join(ran) or "-",
        escalated=bool(ran),
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        latency_s=result.duration_s,
        error=error,
    )


async def _run_variant(
    flow: Flow,
    dataset: Dataset,
    variant: Variant,
    scorer: Scorer,
    *,
    config: Config,
    store: Store | None,
    providers: Mapping[str, ProviderFactory] | None,
    models: Mapping[str, Any] | None,
    concurrency: int,
    eval_id: str,
    on_item: Callable[[str], None] | None,
) -> VariantRun:
    conditional = [s.name for s in flow.compile().steps if s.when is not None]
    batch_id = f"{eval_id}/{variant.name}" if store is not None else None
    run = VariantRun(variant, batch_id)
    meta = {
        "eval": {
            "id": eval_id,
            "variant": variant.name,
            "base": variant.base,
            "bindings": variant.safe_bindings(),
            "params": variant.params,
            "dataset": dataset.source,
            "label": dataset.label_field,
            "scorer": scorer.name,
        }
    }
    items = [{**item.inputs, **variant.params} for item in dataset.items]
    labels = [item.label for item in dataset.items]
    outcomes: dict[int, ItemOutcome] = {}
    started = time.perf_counter()
    bound: dict[str, Any] = {**(models or {}), **resolve_bindings(variant, config)}
    engine = Engine(config=config, models=bound, store=store, providers=providers)
    async with engine:
        async for index, result in engine.run_many(
            flow, items, concurrency=concurrency, batch_id=batch_id, meta=meta
        ):
            score, error = 0.0, None
            if result.status == "done":
                score = scorer(result.outputs, labels[index])
            elif result.error is not None:
                error = result.error.message
            outcomes[index] = _outcome(index, result, conditional, score, error)
            if on_item is not None:
                on_item(variant.name)
    run.seconds = time.perf_counter() - started
    run.items = [outcomes[i] for i in range(len(items))]
    return run


async def run_eval(
    flow: Flow,
    dataset: Dataset,
    variants: Sequence[Variant],
    scorer: Scorer,
    *,
    config: Config | None = None,
    store: Store | None = None,
    providers: Mapping[str, ProviderFactory] | None = None,
    models: Mapping[str, Any] | None = None,
    concurrency: int = 8,
    eval_id: str | None = None,
    on_item: Callable[[str], None] | None = None,
) -> EvalRun:
    """Run every variant over ``dataset`` (variants concurrently, each ``concurrency``
    items at a time), score every item, and record the eval in ``store``.

    Roles resolve through ``config``, then ``models`` (bindings or :class:`tl.Model`
    instances, as ``Engine(models=...)``), then each variant's own bindings. ``on_item``
    is called with the variant's name as each item finishes (a progress bar)."""
    eval_id = eval_id or new_eval_id()
    config = config or Config()
    if store is not None and store.get_run(eval_id) is not None:
        raise InputError(f"{eval_id!r} already exists in {store.url}; give another eval id")
    started_wall, started = time.time(), time.perf_counter()
    runs = await asyncio.gather(
        *(
            _run_variant(
                flow,
                dataset,
                v,
                scorer,
                config=config,
                store=store,
                providers=providers,
                models=models,
                concurrency=concurrency,
                eval_id=eval_id,
                on_item=on_item,
            )
            for v in variants
        )
    )
    result = EvalRun(eval_id, flow.name, dataset, scorer.name, list(runs))
    result.seconds = time.perf_counter() - started
    if store is not None:
        store.create_run(_eval_row(result, started_wall))
    return result


def _eval_row(result: EvalRun, started_at: float) -> RunRow:
    record = {
        "kind": "eval",
        "eval": {
            "dataset": result.dataset.source,
            "label": result.dataset.label_field,
            "scorer": result.scorer,
            "items": len(result.dataset),
            "variants": {
                run.variant.name: {
                    "batch": run.batch_id,
                    "base": run.variant.base,
                    "bindings": run.variant.safe_bindings(),
                    "params": run.variant.params,
                    "scores": {item.run_id: item.score for item in run.items},
                }
                for run in result.variants
            },
        },
    }
    return RunRow(
        run_id=result.eval_id,
        flow=result.flow,
        status="done",
        inputs=json.dumps({"dataset": result.dataset.source, "label": result.dataset.label_field}),
        started_at=started_at,
        finished_at=time.time(),
        meta=json.dumps(record, default=str),
    )
