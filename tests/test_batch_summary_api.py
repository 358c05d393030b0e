"""``tl.summarize``: the batch summary ``trellis run`` prints, as public API over any results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

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


class Verdict(BaseModel):
    label: str
    confidence: float


def _routed_results() -> tuple[list[tl.RunResult], Any]:
    """A varied batch: a cheap-first cascade that escalates some items (a when= step on a
    second priced model), an item that fails in user code, one with bad inputs, and
    re-asked replies (the simulator's malformed JSON)."""
    flow = tl.Flow("cascade", inputs={"text": str})

    @flow.step
    async def first(text: str, llm: tl.LLM) -> Verdict:
        if text == "boom":
            raise ValueError("user code failed")
        return await llm.generate(f"Label: {text}", output=Verdict, model="small")

    @flow.step(when=lambda first: first.confidence < 0.5)
    async def second(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(f"Label carefully: {text}", output=Verdict, model="large")

    items: list[dict[str, Any]] = [{"text": f"item {i}"} for i in range(30)]
    items += [{"text": "boom"}, {"nope": 1}]
    models = {"small": "sim:small?malformed_json=0.2&seed=5", "large": "sim:large?seed=5"}

    async def run() -> tuple[list[tl.RunResult], Any]:
        async with tl.Engine(models=models) as engine:
            got = [r async for _, r in engine.run_many(flow, items, concurrency=4)]
            return got, engine.config.prices

    return asyncio.run(run())


_RESULTS, _PRICES = _routed_results()


def _rounded(value: Any) -> Any:
    """A summary's dict with floats to 9 significant digits (sums in another order)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


@settings(max_examples=25, deadline=None)
@given(st.permutations(range(len(_RESULTS))))
def test_a_summary_built_one_result_at_a_time_is_the_same_in_any_order(
    order: list[int],
) -> None:
    expected = tl.summarize(_RESULTS, prices=_PRICES).to_dict()
    builder = tl.SummaryBuilder()
    for i in order:
        builder.add(_RESULTS[i])
    got = builder.summary(prices=_PRICES).to_dict()
    # Steps are listed in the order they were first seen; everything else is equal.
    got_steps = {s["step"]: s for s in got.pop("steps")}
    expected_steps = {s["step"]: s for s in expected.pop("steps")}
    assert _rounded(got_steps) == _rounded(expected_steps)
    assert _rounded(got) == _rounded(expected)


def test_the_summary_counts_what_the_cascade_did() -> None:
    summary = tl.summarize(_RESULTS, prices=_PRICES)
    assert (summary.total, summary.done, summary.failed) == (32, 30, 2)
    assert summary.failures == {"StepError": 1, "InputError": 1}  # user code raised; bad inputs
    routes = {s.step: s for s in summary.steps}
    escalated = routes["second"].done
    assert 0 < escalated < 30 and routes["second"].skipped == 30 - escalated
    assert summary.retries.get("malformed", 0) > 0  # re-asks are counted
    cf = summary.counterfactual
    assert cf is not None and cf.model == "sim:large"
    # The escalations are left out of the all-large estimate, never counted twice.
    second_attempts = sum(1 for r in _RESULTS for c in r.calls if c.step == "second")
    assert cf.left_out_attempts == second_attempts
    assert cf.actual_usd == pytest.approx(summary.cost_usd)
    first_calls = [c for r in _RESULTS for c in r.calls if c.step == "first"]
    large = _PRICES.price("sim:large")
    assert cf.cost_usd == pytest.approx(
        sum(large.cost(tl.Usage(c.input_tokens, c.output_tokens)) for c in first_calls)
    )


def test_calls_of_a_step_are_counted_whichever_result_comes_first() -> None:
    """A run read back without its flow may have calls of a step it has no record of
    yet; another result has the record. The counts do not depend on the order."""

    def call(step: str) -> tl.CallRecord:
        return tl.CallRecord(
            step=step, call=1, attempt=1, model="m", role="small", outcome="ok",
            input_tokens=1, output_tokens=1, cost_usd=0.0, latency_s=0.0,
        )  # fmt: skip

    without = tl.RunResult(run_id="a", flow="f", inputs={}, steps={}, calls=[call("s")])
    with_record = tl.RunResult(
        run_id="b", flow="f", inputs={}, steps={"s": tl.StepRecord("s", status="done")},
        calls=[call("s")],
    )  # fmt: skip
    for order in ([without, with_record], [with_record, without]):
        (routes,) = tl.summarize(order, prices=_PRICES).steps
        assert routes.calls_by_role == {"small": 2}, order
        assert routes.done == 1
