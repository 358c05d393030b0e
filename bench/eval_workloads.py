"""The ``trellis eval`` throughput workload: a replayed cascade over N items.

``eval_throughput_ratio`` = items per second of an eval of 3 variants (each item run once
per variant: N x 3 item runs) over items per second of a plain batch (``run_many``, what
``trellis run --input-file`` does) of the same flow over the same N items, both recording
into a fresh SQLite store, both at concurrency 8 per batch. Answers are replayed from a
recorded JSONL (``replay:``), so the figure is Trellis's own cost of evaluating: the
scoring, the per-item outcomes, the extra records, the variants' engines.

:func:`group` is the ``eval`` group of ``bench/run.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import AtLeast, figure, interleave, median

import trellis as tl
from trellis.eval import Variant, load_dataset, load_scorer, run_eval
from trellis.store import open_store

VARIANTS = 3
CONCURRENCY = 8
EVAL_GOAL = AtLeast(0.8)


def cascade_flow() -> tl.Flow:
    flow = tl.Flow(
        "bench_cascade",
        inputs={"question": str},
        params=[tl.Param("min_confidence", default=0.5)],
    )

    @flow.step
    async def small(question: str, llm: tl.LLM) -> str:
        return await llm.generate(question, model="small")

    @flow.step
    def confidence(small: str) -> float:
        return float(small.rsplit(" ", 1)[-1])

    @flow.step(when=lambda confidence, min_confidence: confidence < min_confidence)
    async def large(question: str, llm: tl.LLM) -> str:
        return await llm.generate(question, model="large")

    @flow.step
    def answer(small: str, large: str | None = None) -> str:
        return (large or small).split(" ", 1)[0]

    return flow


class Workload:
    """Recorded answers and a labelled dataset of ``n`` items in a temporary folder."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._tmp = tempfile.TemporaryDirectory(prefix="trellis-bench-eval-")
        self.dir = Path(self._tmp.name)
        items, recorded = [], []
        for i in range(n):
            q = f"What is {i}+{i}?"
            items.append({"question": q, "gold": 2 * i})
            conf = 0.9 if i % 2 == 0 else 0.3
            small = 2 * i if i % 2 == 0 else 2 * i + 1
            usage = {"input_tokens": 12, "output_tokens": 4}
            recorded.append(
                {
                    "model": "small",
                    "prompt": q,
                    "response": f"{small} {conf}",
                    "usage": usage,
                    "cost_usd": 0.0001,
                }
            )
            recorded.append(
                {
                    "model": "large",
                    "prompt": q,
                    "response": f"{2 * i} 0.99",
                    "usage": usage,
                    "cost_usd": 0.001,
                }
            )
        self.dataset = self.dir / "items.jsonl"
        self.dataset.write_text("".join(json.dumps(x) + "\n" for x in items))
        rec = self.dir / "recorded.jsonl"
        rec.write_text("".join(json.dumps(x) + "\n" for x in recorded))
        self.small = f"replay:small?file={rec}"
        self.large = f"replay:large?file={rec}"
        self.runs = 0
        self.flow = cascade_flow()

    def _store_url(self) -> str:
        self.runs += 1
        return f"sqlite:///{self.dir / f'runs-{self.runs}.db'}"

    async def run_batch(self) -> float:
        """Seconds for ``run_many`` over the items (``trellis run --input-file``)."""
        data = load_dataset(self.dataset, "gold", flow_inputs=["question"])
        items = [item.inputs for item in data.items]
        store = open_store(self._store_url())
        models = {"small": self.small, "large": self.large}
        started = time.perf_counter()
        async with tl.Engine(models=models, store=store) as engine:
            async for _ in engine.run_many(
                self.flow, items, concurrency=CONCURRENCY, batch_id="bench-run"
            ):
                pass
        elapsed = time.perf_counter() - started
        store.close()
        return elapsed

    async def run_eval(self) -> float:
        """Seconds for an eval of 3 variants over the same items (scored, recorded)."""
        data = load_dataset(self.dataset, "gold", flow_inputs=["question"])
        store = open_store(self._store_url())
        variants = [
            Variant("cascade", {"small": self.small, "large": self.large}),
            Variant("small-only", {"small": self.small, "large": self.small}),
            Variant("large-only", {"small": self.large, "large": self.large}),
        ]
        started = time.perf_counter()
        await run_eval(
            self.flow,
            data,
            variants,
            load_scorer("number"),
            store=store,
            concurrency=CONCURRENCY,
            eval_id="bench-eval",
        )
        elapsed = time.perf_counter() - started
        store.close()
        return elapsed

    def settings(self) -> dict[str, Any]:
        return {"variants": VARIANTS, "concurrency": CONCURRENCY, "store": "sqlite (fresh file)"}

    def close(self) -> None:
        self._tmp.cleanup()


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """``trellis eval`` (3 variants) vs ``trellis run`` of the same flow and items."""
    n, reps = sizes.eval_items, sizes.eval_reps
    say(f"eval of 3 variants over {n} replayed items vs one batch run of them")
    work = Workload(n)
    try:
        s = await interleave(reps, {"run": work.run_batch, "eval": work.run_eval}, warmup=0)
    finally:
        work.close()
    run_rate = n / median(s["run"])
    eval_rate = n * VARIANTS / median(s["eval"])
    return {
        "eval_throughput_ratio": figure(
            value=eval_rate / run_rate,
            unit="x",
            baseline=run_rate,
            baseline_unit="items/s",
            baseline_what=(
                "trellis run's batch (run_many, SQLite store) of the same flow and items; "
                "value = eval item-runs per second (items x 3 variants) / that"
            ),
            goal=EVAL_GOAL,
            reps=reps,
            n=n,
            eval_items_per_s=eval_rate,
            run_items_per_s=run_rate,
            samples_run_s=s["run"],
            samples_eval_s=s["eval"],
            **work.settings(),
        )
    }
