"""``tl.summarize``: the batch summary ``trellis run`` prints, as public API over any results."""

from __future__ import annotations

import json

import trellis as tl


def _flow() -> tl.Flow:
    flow = tl.Flow("summary-api", inputs={"text": str})

    @flow.step
    async def echo(text: str, llm: tl.LLM) -> str:
        return await llm.generate(f"Echo: {text}", model="small")

    return flow


async def test_summarize_the_results_run_many_yields() -> None:
    flow = _flow()
    model = tl.FunctionModel(lambda r: "ok", name="fn:small")
    items = [{"text": str(i)} for i in range(5)] + [{"missing": "input"}]
    async with tl.Engine(models={"small": model}) as engine:
        results = [r async for _, r in engine.run_many(flow, items, concurrency=3)]
        summary = tl.summarize(results, prices=engine.config.prices)
    assert isinstance(summary, tl.BatchSummary)
    assert (summary.total, summary.done, summary.failed) == (6, 5, 1)
    assert summary.calls == 5 and summary.attempts == 5 == len(model.calls)
    assert summary.failures == {"InputError": 1}
    assert not summary.cost_known  # fn:small has no price: unknown, never $0
    shape = json.loads(json.dumps(summary.to_dict()))
    assert shape["done"] == 5 and shape["calls"] == 5
