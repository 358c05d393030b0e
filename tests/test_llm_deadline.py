"""The per-attempt deadline (``RetryPolicy.timeout``) around ``Model.complete``.

The engine arms the attempt's deadline on a timer its event loop's attempts share
(``trellis.engine.llm._Deadlines``) and awaits the model's coroutine: values, exceptions
and cancellation must pass through exactly as with a plain ``await``, and the deadline
counts from the attempt's start."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.models.function import FunctionModel


class Out(BaseModel):
    n: int


def one_call_flow(timeout: float = 5.0, max_attempts: int = 1) -> tl.Flow:
    flow = tl.Flow("one", inputs={"x": int})

    @flow.step(retry=tl.RetryPolicy(timeout=timeout, max_attempts=max_attempts))
    async def ask(x: int, llm: tl.LLM) -> Out:
        return await llm.generate(f"n for {x}", output=Out, model="m")

    return flow


async def run(model: tl.Model, flow: tl.Flow) -> tl.RunResult:
    async def no_wait(seconds: float) -> None:
        pass

    async with tl.Engine(models={"m": model}, sleep=no_wait, seed=0) as engine:
        return await engine.run(flow, {"x": 1})


async def test_a_reply_that_never_suspends() -> None:
    result = await run(FunctionModel(lambda request: {"n": 7}), one_call_flow())
    assert result.ok and result["ask"] == Out(n=7)
    assert [c.outcome for c in result.calls] == ["ok"]


async def test_values_sent_into_a_suspended_model_pass_through() -> None:
    loop = asyncio.get_running_loop()

    async def many_steps(request: tl.ModelRequest) -> dict[str, Any]:
        total = 0
        for i in range(5):
            fut: asyncio.Future[int] = loop.create_future()
            loop.call_soon(fut.set_result, i)
            total += await fut  # each value comes back through the engine's resumption
            await asyncio.sleep(0)
        return {"n": total}

    result = await run(FunctionModel(many_steps), one_call_flow())
    assert result.ok and result["ask"] == Out(n=10)


async def test_an_error_after_suspending_is_classified_as_before() -> None:
    calls = 0

    async def fails_once(request: tl.ModelRequest) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise tl.OverloadedError("busy", model="m")
        return {"n": 1}

    result = await run(FunctionModel(fails_once), one_call_flow(max_attempts=3))
    assert result.ok
    assert [c.outcome for c in result.calls] == ["overloaded", "ok"]


async def test_the_deadline_counts_from_the_attempts_start() -> None:
    """60 ms of blocking work before the first suspension uses up a 50 ms deadline: the
    attempt times out as soon as it suspends instead of getting 50 ms more."""

    async def blocks_then_waits(request: tl.ModelRequest) -> dict[str, Any]:
        time.sleep(0.06)  # noqa: ASYNC251 - blocking on purpose, before the first await
        await asyncio.sleep(2)
        return {"n": 1}

    started = time.perf_counter()
    result = await run(FunctionModel(blocks_then_waits), one_call_flow(timeout=0.05))
    assert time.perf_counter() - started < 1.5
    assert [c.outcome for c in result.calls] == ["timeout"]
    assert result.steps["ask"].error is not None
    assert result.steps["ask"].error.type == "ModelTimeoutError"


async def test_a_hanging_model_times_out_and_sees_the_cancellation() -> None:
    cleaned: list[str] = []

    async def hangs(request: tl.ModelRequest) -> dict[str, Any]:
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(5)
        finally:
            cleaned.append("finally")
        return {"n": 1}

    result = await run(FunctionModel(hangs), one_call_flow(timeout=0.05))
    assert [c.outcome for c in result.calls] == ["timeout"]
    assert cleaned == ["finally"]


async def test_cancelling_the_run_reaches_a_suspended_model() -> None:
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

    task = asyncio.create_task(run(FunctionModel(waits), one_call_flow()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


class FutureModel(tl.Model):
    """A model whose ``complete`` returns a future, not a coroutine."""

    name = "future:model"

    def complete(self, request: tl.ModelRequest) -> Any:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(tl.ModelResponse(text='{"n": 3}', usage=tl.Usage(1, 1)))
        return fut


async def test_an_awaitable_that_is_not_a_coroutine() -> None:
    result = await run(FutureModel(), one_call_flow())
    assert result.ok and result["ask"] == Out(n=3)
