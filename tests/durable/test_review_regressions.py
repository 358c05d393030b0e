"""Regressions found in review: each of these hung a run, lost accounting, or ran
something twice."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

import trellis as tl
from trellis.models.base import ModelRequest
from trellis.models.function import FunctionModel
from trellis.store import MemoryStore, StepRow


class Out(pydantic.BaseModel):
    x: int

    @pydantic.field_validator("x")
    @classmethod
    def not_one(cls, x: int) -> int:
        if x == 1:
            raise TypeError("boom")  # not a ValueError: Pydantic lets it through
        return x


async def test_a_validator_raising_any_error_is_a_reask_and_never_leaks_the_budget() -> None:
    flow = tl.Flow("validator")

    @flow.step
    async def bad(llm: tl.LLM) -> int:
        return (await llm.generate("bad", model="m", output=Out)).x  # type: ignore[no-any-return]

    @flow.step
    async def good(llm: tl.LLM) -> str:
        await asyncio.sleep(0.01)  # starts while bad's calls are in flight
        return await llm.generate("good", model="m")

    def reply(request: ModelRequest) -> str:
        return '{"x": 1}' if "bad" in request.prompt_text() else "ok"

    engine = tl.Engine(models={"m": FunctionModel(reply)}, budget=tl.Budget(max_tokens=4000))
    async with engine:
        result = await asyncio.wait_for(engine.run(flow, budget=tl.Budget(max_tokens=4000)), 5)
    record = result.steps["bad"]
    assert record.status == "failed"
    assert record.error is not None and record.error.type == "OutputValidationError"
    assert record.usage.attempts == 3  # the first try and two re-asks, all recorded
    assert record.usage.failures["invalid"] == 3
    assert result.steps["good"].status == "done"  # an independent branch runs on
    # Every reservation was settled: nothing is still held against the batch budget, and
    # what was spent is exactly what the calls' records say.
    assert engine.guard is not None
    assert engine.guard.reserved_tokens == 0
    assert engine.guard.spent_tokens == sum(c.total_tokens for c in result.calls)


class FlakyStore(MemoryStore):
    def save_step(self, row: StepRow, *, epoch: int | None = None) -> None:
        if row.step == "b" and row.status == "done":
            raise OSError("disk full")
        super().save_step(row)


async def test_a_store_raising_a_foreign_error_stops_the_run_instead_of_hanging() -> None:
    flow = tl.Flow("flaky")

    @flow.step
    async def a() -> int:
        await asyncio.sleep(0)
        return 1

    @flow.step
    def b(a: int) -> int:  # a sync step, run inline when a settles
        return a + 1

    async with tl.Engine(store=FlakyStore()) as engine:
        with pytest.raises(tl.StoreError, match="disk full"):
            await asyncio.wait_for(engine.run(flow, run_id="x"), 5)


async def test_a_changed_skipped_step_is_detected_at_resume() -> None:
    """A downstream step computed on a skip must not be restored once the skipped step's
    definition changed."""
    store = MemoryStore()
    crash = [True]

    def build(threshold: int) -> tl.Flow:
        flow = tl.Flow("skips", inputs={"n": int})

        @flow.step(when=lambda n: n > threshold)
        def extra(n: int) -> str:
            return "extra!"

        @flow.step
        def summary(n: int, extra: str | None) -> str:
            return f"n={n} extra={extra}"

        @flow.step
        def last(summary: str) -> str:
            if crash[0]:
                raise RuntimeError("crash")
            return summary

        return flow

    async with tl.Engine(store=store) as engine:
        first = await engine.run(build(10), {"n": 5}, run_id="r")
        assert first.steps["extra"].status == "skipped" and not first.ok
        crash[0] = False
        with pytest.raises(tl.StepChangedError) as info:
            await engine.run(build(1), run_id="r")
        assert info.value.step == "extra"
        rerun = await engine.run(build(1), run_id="r", rerun_changed=True)
    assert rerun.ok and rerun["summary"] == "n=5 extra=extra!"


async def test_the_response_cache_tells_bindings_apart() -> None:
    flow = tl.Flow("cached", inputs={"q": str})

    @flow.step
    async def answer(q: str, llm: tl.LLM) -> str:
        return await llm.generate(q, model="m")

    store = MemoryStore()
    replies = {}
    for seed in (1, 2):
        async with tl.Engine(
            models={"m": f"sim:small?seed={seed}"}, store=store, cache=True
        ) as engine:
            result = await engine.run(flow, {"q": "same question"})
        replies[seed] = (result["answer"], result.calls[0].source)
    assert replies[1][1] == "live" and replies[2][1] == "live"  # seed 2 is not served seed 1's
