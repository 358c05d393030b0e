"""Per-attempt deadlines on shared timers (``trellis.engine.llm._Deadlines``): attempts
whose deadlines fall in the same millisecond share one timer; a deadline is never early,
times out exactly the attempts still waiting, and leaves other cancellations alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.engine import llm as llm_module
from trellis.errors import ConfigurationError
from trellis.models.function import FunctionModel


class Out(BaseModel):
    n: int


def fanout_flow(timeout: float | None) -> tl.Flow:
    flow = tl.Flow("fan", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items", retry=tl.RetryPolicy(timeout=timeout, max_attempts=1))
    async def ask(items: int, llm: tl.LLM) -> Out:
        return await llm.generate(f"n for {items}", output=Out, model="m")

    return flow


async def run(model: tl.Model, flow: tl.Flow, n: int) -> tl.RunResult:
    async def no_wait(seconds: float) -> None:
        pass

    async with tl.Engine(models={"m": model}, sleep=no_wait, seed=0) as engine:
        return await engine.run(flow, {"n": n})


@pytest.fixture
def buckets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []

    class Counted(llm_module._Bucket):
        __slots__ = ()

        def __init__(self, owner: Any, key: int) -> None:
            super().__init__(owner, key)
            made.append(self)

    monkeypatch.setattr(llm_module, "_Bucket", Counted)
    return made


async def test_concurrent_attempts_share_timers(buckets: list[Any]) -> None:
    async def slow(request: tl.ModelRequest) -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"n": 1}

    result = await run(FunctionModel(slow), fanout_flow(timeout=30.0), 300)
    assert result.ok and len(result["ask"]) == 300
    assert [c.outcome for c in result.calls] == ["ok"] * 300
    assert 1 <= len(buckets) < 300  # a timer per millisecond of deadlines, not per attempt
    assert all(not b.tasks for b in buckets)  # every attempt released its deadline
    assert all(b.handle.cancelled() for b in buckets[:-1])  # only the newest is kept


async def test_attempts_that_answer_at_once_cost_no_timer_each(buckets: list[Any]) -> None:
    result = await run(FunctionModel(lambda r: {"n": 2}), fanout_flow(timeout=30.0), 200)
    assert result.ok and result["ask"] == [Out(n=2)] * 200
    assert len(buckets) < 50


async def test_hanging_attempts_all_time_out_never_early() -> None:
    cleaned: list[int] = []

    async def hangs(request: tl.ModelRequest) -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(1)
        return {"n": 1}

    started = time.perf_counter()
    result = await run(FunctionModel(hangs), fanout_flow(timeout=0.05), 50)
    elapsed = time.perf_counter() - started
    assert 0.05 <= elapsed < 5
    # Each attempt times out, unless the step (failing at its first timeout) cancelled it
    # first: deadlines armed over more than a millisecond fall in more than one bucket.
    outcomes = [c.outcome for c in result.calls]
    assert len(outcomes) == 50 and set(outcomes) <= {"timeout", "cancelled"}
    assert "timeout" in outcomes
    assert all(c.latency_s >= 0.05 for c in result.calls)  # none ended early
    assert len(cleaned) == 50
    error = result.steps["ask"].error
    assert error is not None and error.type == "ModelTimeoutError"


async def test_only_the_attempts_past_their_deadline_time_out() -> None:
    async def mixed(request: tl.ModelRequest) -> dict[str, Any]:
        slow = request.messages[-1].content.endswith(("0", "5"))
        await asyncio.sleep(5 if slow else 0.001)
        return {"n": 1}

    result = await run(FunctionModel(mixed), fanout_flow(timeout=0.2), 20)
    outcomes = [c.outcome for c in result.calls]
    # The 4 slow ones time out (or are cancelled by the step failing at the first timeout).
    assert outcomes.count("ok") == 16 and "timeout" in outcomes
    assert set(outcomes) <= {"ok", "timeout", "cancelled"}


async def test_a_model_that_swallows_the_deadline_keeps_its_reply() -> None:
    """As with ``asyncio.timeout``: a reply returned after all is used, not a timeout."""

    async def stubborn(request: tl.ModelRequest) -> dict[str, Any]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return {"n": 9}
        return {"n": 1}

    result = await run(FunctionModel(stubborn), fanout_flow(timeout=0.05), 3)
    assert result.ok and result["ask"] == [Out(n=9)] * 3


async def test_cancelling_the_run_is_not_turned_into_a_timeout() -> None:
    entered = asyncio.Event()
    seen: list[str] = []

    async def waits(request: tl.ModelRequest) -> dict[str, Any]:
        entered.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return {"n": 1}

    task = asyncio.create_task(run(FunctionModel(waits), fanout_flow(timeout=30.0), 4))
    await entered.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"] * 4


def test_deadlines_of_another_event_loop_get_their_own_timers() -> None:
    """One run scope used from two loops in turn (each attempt on its own loop)."""

    async def attempt(deadlines_holder: list[Any]) -> bool:
        loop = asyncio.get_running_loop()
        if not deadlines_holder or deadlines_holder[0].loop is not loop:
            deadlines_holder[:] = [llm_module._Deadlines(loop)]
        deadlines = deadlines_holder[0]
        task, prior, bucket = deadlines.arm(0.01)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError as exc:
            return bucket.release(task, prior, exc)
        return bucket.release(task, prior, None)

    holder: list[Any] = []
    assert asyncio.run(attempt(holder)) is True
    first = holder[0]
    assert asyncio.run(attempt(holder)) is True
    assert holder[0] is not first


async def test_a_malformed_prompt_raises_where_generate_is_called() -> None:
    raised: list[str] = []
    flow = tl.Flow("bad", inputs={"x": int})

    @flow.step
    async def ask(x: int, llm: tl.LLM) -> str:
        try:
            pending = llm.generate([], model="m")
        except ConfigurationError as exc:
            raised.append(str(exc))
            raise
        return str(await pending)

    async with tl.Engine(models={"m": FunctionModel(lambda r: "x")}) as engine:
        result = await engine.run(flow, {"x": 1})
    assert raised == ["the prompt is empty"]
    assert result.status == "failed"


async def test_generate_returns_an_awaitable_coroutine_of_the_call() -> None:
    flow = tl.Flow("plain", inputs={"x": int})

    @flow.step
    async def ask(x: int, llm: tl.LLM) -> str:
        pending = llm.generate("hi", model="m")
        assert asyncio.iscoroutine(pending)
        return str(await pending)

    async with tl.Engine(models={"m": FunctionModel(lambda r: "hello")}) as engine:
        result = await engine.run(flow, {"x": 1})
    assert result.ok and result["ask"] == "hello"
    assert result.usage.calls == 1 and len(result.calls) == 1


async def test_finished_runs_leave_no_timer_behind() -> None:
    """Many runs, one after the other, each answered at once: the deadlines are the
    loop's, so at most one idle timer is left pending, not one per run (which kept every
    finished run in memory until its timeout ran out)."""
    loop = asyncio.get_running_loop()
    model = FunctionModel(lambda request: '{"n": 1}', name="fn:m")
    flow = fanout_flow(timeout=60.0)
    async with tl.Engine(models={"m": model}) as engine:
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        for _ in range(50):
            await engine.run(flow, {"n": 2})
        pending = [
            h
            for h in loop._scheduled  # type: ignore[attr-defined]
            if not h.cancelled() and h.when() > loop.time() + 30
        ]
    assert len(pending) <= before + 1, f"{len(pending)} timers pending after 50 runs"


@pytest.mark.parametrize("timeout", [float("inf"), float("nan")])
async def test_an_endless_timeout_is_no_deadline(timeout: float) -> None:
    async def slow(request: tl.ModelRequest) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"n": 1}

    result = await run(FunctionModel(slow), fanout_flow(timeout=timeout), 3)
    assert result.status == "done"
    assert [c.outcome for c in result.calls] == ["ok"] * 3


async def test_a_refused_call_still_takes_its_number() -> None:
    """A call refused before any attempt (an unknown role) counts, as it always did: the
    next call of the step is number 2."""
    flow = tl.Flow("numbers", inputs={"n": int})

    @flow.step
    async def ask(n: int, llm: tl.LLM) -> int:
        with pytest.raises(ConfigurationError):
            await llm.generate("hi", model="nobody")
        reply = await llm.generate("hi", output=Out, model="m")
        return reply.n

    model = FunctionModel(lambda request: '{"n": 1}')
    async with tl.Engine(models={"m": model}) as engine:
        result = await engine.run(flow, {"n": 1})
    assert result.status == "done"
    assert [c.call for c in result.calls] == [2]
