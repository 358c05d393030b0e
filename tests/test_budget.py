"""Budgets: a call that would cross a limit is never made; the run stops cleanly and keeps
what it completed. Run budgets, flow budgets and an engine's batch budget."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import pytest

import trellis as tl
from trellis.models.function import FunctionModel, TestModel
from trellis.models.tokens import estimate_request_tokens


async def no_wait(seconds: float) -> None:
    pass


def calls_flow(n_calls: int, *, max_tokens: int | None = None) -> tl.Flow:
    """``prepare`` (no LLM), then ``chat`` making ``n_calls`` sequential calls."""
    flow = tl.Flow("budget")

    @flow.step
    def prepare() -> str:
        return "ready"

    @flow.step
    async def chat(prepare: str, llm: tl.LLM) -> list[str]:
        return [
            await llm.generate(f"q{i}", model="small", max_tokens=max_tokens)
            for i in range(n_calls)
        ]

    return flow


async def run(
    flow: tl.Flow,
    models: Mapping[str, Any],
    budget: tl.Budget | None = None,
    **engine: Any,
) -> tl.RunResult:
    async with tl.Engine(models=models, sleep=no_wait, seed=0, **engine) as eng:
        return await eng.run(flow, budget=budget)


def assert_budget_error(result: tl.RunResult, which: str) -> None:
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "BudgetExceededError"
    assert result.error.budget == which


# -- limits -------------------------------------------------------------------------------------


async def test_max_calls_stops_before_the_call_that_would_exceed() -> None:
    model = FunctionModel(lambda r: "answer")
    result = await run(calls_flow(5), {"small": model}, tl.Budget(max_calls=3))
    assert len(model.calls) == 3
    assert result.usage.attempts == 3
    assert_budget_error(result, "max_calls")
    assert result.steps["chat"].status == "failed"
    assert result["prepare"] == "ready", "completed work stays in the result"
    assert "max_calls=3" in result.error.message  # type: ignore[union-attr]


async def test_max_calls_counts_every_attempt_including_retries() -> None:
    model = TestModel(tl.RateLimitError("a", retry_after=1), tl.RateLimitError("b"), "ok")
    result = await run(calls_flow(1), {"small": model}, tl.Budget(max_calls=2))
    assert len(model.calls) == 2
    assert_budget_error(result, "max_calls")


async def test_max_calls_exactly_enough() -> None:
    model = FunctionModel(lambda r: "answer")
    result = await run(calls_flow(3), {"small": model}, tl.Budget(max_calls=3))
    assert result.ok
    assert result["chat"] == ["answer"] * 3


async def test_max_tokens_reserves_prompt_plus_max_tokens() -> None:
    model = FunctionModel(lambda r: "abcd")  # 1 output token
    # Each call reserves 4 prompt tokens ("qN": 1 token + 3 framing) + max_tokens=10 = 14
    # and then spends 4 + 1 = 5. With a limit of 30: spent 0, 5, 10, 15 -> reserving 14
    # more fits four times (15 + 14 = 29); the fifth (20 + 14 = 34) would exceed.
    result = await run(calls_flow(6, max_tokens=10), {"small": model}, tl.Budget(max_tokens=30))
    assert len(model.calls) == 4
    assert result.usage.total_tokens == 20
    assert_budget_error(result, "max_tokens")


async def test_max_tokens_uses_reserve_output_tokens_without_max_tokens() -> None:
    model = FunctionModel(lambda r: "abcd")
    budget = tl.Budget(max_tokens=100, reserve_output_tokens=96)
    result = await run(calls_flow(3), {"small": model}, budget)
    # 4 + 96 = 100 fits exactly once; afterwards 5 spent + 100 > 100.
    assert len(model.calls) == 1
    assert_budget_error(result, "max_tokens")


def priced_parallel_flow(n: int) -> tl.Flow:
    flow = tl.Flow("usd")

    @flow.step
    def items() -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def ask(items: int, llm: tl.LLM) -> str:
        return await llm.generate(f"item {items:02d}", max_tokens=10)  # 2 + 3 prompt tokens

    return flow


def slow_priced_model() -> FunctionModel:
    async def reply(request: tl.ModelRequest) -> str:
        await asyncio.sleep(0.02)
        return "x" * 40  # 10 output tokens

    return FunctionModel(reply, name="fn:priced")


PRICED = tl.Config(prices={"fn:priced": {"input": 1000.0, "output": 1000.0}})
RESERVED_PER_CALL = (5 + 10) * 1000.0 / 1e6  # (prompt + max_tokens) tokens at $1000 / 1M


async def test_max_usd_counts_calls_in_flight() -> None:
    """40 parallel calls: only as many are sent as the reservations allow."""
    model = slow_priced_model()
    limit = RESERVED_PER_CALL * 3.5
    result = await run(
        priced_parallel_flow(40), {"default": model}, tl.Budget(max_usd=limit), config=PRICED
    )
    assert_budget_error(result, "max_usd")
    assert len(model.calls) == 3, "three reservations fit, the fourth would exceed"
    assert result.usage.cost_usd <= limit


async def test_every_request_sent_is_recorded_even_when_the_run_stops() -> None:
    model = slow_priced_model()
    result = await run(
        priced_parallel_flow(40),
        {"default": model},
        tl.Budget(max_usd=RESERVED_PER_CALL * 3.5),
        config=PRICED,
    )
    assert result.usage.attempts == len(model.calls)


async def test_max_usd_is_never_exceeded_with_the_simulator() -> None:
    result = await run(
        calls_flow(50, max_tokens=100), {"small": "sim:small"}, tl.Budget(max_usd=0.0003)
    )
    assert_budget_error(result, "max_usd")
    assert 0 < result.usage.attempts < 50
    assert result.usage.cost_usd <= 0.0003
    assert result.usage.cost_known


async def test_max_usd_with_a_priced_function_model() -> None:
    model = FunctionModel(lambda r: "x" * 40, name="fn:priced")  # 10 output tokens
    config = tl.Config(prices={"fn:priced": {"input": 1000.0, "output": 1000.0}})
    request_tokens = 4  # "qN" + framing
    per_call_reserved = (request_tokens + 10) * 1000.0 / 1e6
    result = await run(
        calls_flow(10, max_tokens=10),
        {"small": model},
        tl.Budget(max_usd=per_call_reserved * 3.5),
        config=config,
    )
    assert len(model.calls) == 3
    assert result.usage.cost_usd == pytest.approx(3 * per_call_reserved)
    assert_budget_error(result, "max_usd")


async def test_usd_budget_with_an_unpriced_model_is_a_configuration_error() -> None:
    model = FunctionModel(lambda r: "x", name="fn:unpriced")
    result = await run(calls_flow(1), {"small": model}, tl.Budget(max_usd=1.0))
    assert model.calls == []
    error = result.steps["chat"].error
    assert error is not None
    assert error.type == "ConfigurationError"
    assert "fn:unpriced" in error.message
    assert result["prepare"] == "ready"


async def test_non_usd_budgets_work_with_unpriced_models() -> None:
    model = FunctionModel(lambda r: "x", name="fn:unpriced")
    result = await run(calls_flow(2), {"small": model}, tl.Budget(max_calls=5, max_tokens=10_000))
    assert result.ok


async def test_max_seconds_stops_the_run_and_keeps_completed_steps() -> None:
    finished: list[str] = []
    flow = tl.Flow("slow")

    @flow.step
    async def quick() -> str:
        await asyncio.sleep(0.005)
        return "quick"

    @flow.step
    async def slow() -> str:
        await asyncio.sleep(5)
        finished.append("slow")
        return "slow"

    @flow.step
    def after(slow: str) -> str:
        return slow

    started = time.perf_counter()
    result = await run(flow, {}, tl.Budget(max_seconds=0.15))
    elapsed = time.perf_counter() - started
    assert 0.14 <= elapsed < 1.0
    assert_budget_error(result, "max_seconds")
    assert result["quick"] == "quick"
    assert result.steps["slow"].status == "cancelled"
    assert result.steps["after"].status == "cancelled"
    assert finished == []


async def test_max_seconds_blocks_calls_after_the_deadline() -> None:
    async def slowish(request: tl.ModelRequest) -> str:
        await asyncio.sleep(0.03)
        return "ok"

    model = FunctionModel(slowish)
    result = await run(calls_flow(100), {"small": model}, tl.Budget(max_seconds=0.1))
    assert_budget_error(result, "max_seconds")
    assert 1 <= len(model.calls) <= 4


async def test_flow_budget_and_run_budget() -> None:
    model = FunctionModel(lambda r: "a")
    flow = calls_flow(4)
    flow.budget = tl.Budget(max_calls=1)
    limited = await run(flow, {"small": model})
    assert_budget_error(limited, "max_calls")
    assert len(model.calls) == 1

    overridden = await run(flow, {"small": model}, tl.Budget(max_calls=10))
    assert overridden.ok


async def test_budget_error_details() -> None:
    captured: list[tl.BudgetExceededError] = []
    flow = tl.Flow("details")

    @flow.step
    async def chat(llm: tl.LLM) -> str:
        await llm.generate("a", model="small")
        try:
            return await llm.generate("b", model="small")
        except tl.BudgetExceededError as exc:
            captured.append(exc)
            raise

    await run(flow, {"small": FunctionModel(lambda r: "x")}, tl.Budget(max_calls=1))
    [exc] = captured
    assert (exc.budget, exc.limit, exc.spent) == ("max_calls", 1.0, 2.0)


def test_budget_values_are_checked() -> None:
    for field in ("max_usd", "max_tokens", "max_calls", "max_seconds"):
        with pytest.raises(tl.ConfigurationError):
            tl.Budget(**{field: -1})
    assert tl.Budget().unlimited
    assert not tl.Budget(max_calls=0).unlimited


async def test_zero_budget_makes_no_call() -> None:
    model = FunctionModel(lambda r: "x")
    result = await run(calls_flow(1), {"small": model}, tl.Budget(max_calls=0))
    assert model.calls == []
    assert_budget_error(result, "max_calls")


# -- batch budget -------------------------------------------------------------------------------


async def test_engine_batch_budget_across_run_many() -> None:
    invoked: list[int] = []
    model = FunctionModel(lambda r: "answer")
    flow = tl.Flow("batch", inputs={"i": int})

    @flow.step
    async def ask(i: int, llm: tl.LLM) -> str:
        invoked.append(i)
        return await llm.generate(f"item {i}", model="small")

    async with tl.Engine(models={"small": model}, budget=tl.Budget(max_calls=2)) as engine:
        results = dict(
            [
                pair
                async for pair in engine.run_many(flow, [{"i": i} for i in range(5)], concurrency=1)
            ]
        )

    assert sorted(results) == [0, 1, 2, 3, 4]
    assert len(model.calls) == 2
    assert [results[i].ok for i in range(5)] == [True, True, False, False, False]
    for i in (2, 3, 4):
        assert results[i].error is not None
        assert results[i].error.type == "BudgetExceededError"
        assert results[i].error.budget == "max_calls"
    assert invoked == [0, 1, 2], "items after the budget ran out do not run at all"
    for i in (3, 4):
        assert all(r.status == "cancelled" for r in results[i].steps.values())
        assert results[i].inputs == {"i": i}
    assert results[0]["ask"] == "answer"


async def test_batch_budget_and_run_budget_both_apply() -> None:
    model = FunctionModel(lambda r: "a")
    flow = calls_flow(3)
    async with tl.Engine(models={"small": model}, budget=tl.Budget(max_calls=4)) as engine:
        first = await engine.run(flow, budget=tl.Budget(max_calls=10))
        second = await engine.run(flow, budget=tl.Budget(max_calls=10))
    assert first.ok
    assert_budget_error(second, "max_calls")
    assert len(model.calls) == 4


async def test_run_many_yields_failed_results_for_bad_inputs() -> None:
    flow = tl.Flow("batch", inputs={"i": int})

    @flow.step
    def double(i: int) -> int:
        return 2 * i

    async with tl.Engine() as engine:
        results = dict(
            [pair async for pair in engine.run_many(flow, [{"i": 1}, {"i": "x"}, {"i": 3}])]
        )
    assert results[0]["double"] == 2
    assert results[2]["double"] == 6
    assert results[1].status == "failed"
    assert results[1].error is not None
    assert results[1].error.type == "InputError"


def test_reservation_matches_the_token_estimate() -> None:
    """The reservation arithmetic above relies on this estimate."""
    request = tl.ModelRequest(messages=(tl.Message("user", "q0"),), model="m")
    assert estimate_request_tokens(request) == 4


async def test_calls_in_flight_make_a_concurrent_call_wait_not_fail() -> None:
    """Reservations of calls in flight alone never exhaust a budget: a call that fits what
    was actually spent waits for them to settle, then runs."""
    flow = tl.Flow("parallel-budget", inputs={"n": int})

    @flow.step
    def items(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="items")
    async def ask(items: int, llm: tl.LLM) -> str:
        return await llm.generate(f"question {items}", model="small", max_tokens=100)

    in_flight = 0
    peak = 0

    async def reply(request: tl.ModelRequest) -> tl.ModelResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return tl.ModelResponse("ok", tl.Usage(10, 2))

    # Each call reserves ~100+ tokens but spends 12: 4 calls in flight would "use" the whole
    # budget by reservation, yet 20 calls fit what is really spent.
    budget = tl.Budget(max_tokens=450)
    async with tl.Engine(models={"small": FunctionModel(reply)}, sleep=no_wait) as eng:
        result = await eng.run(flow, {"n": 20}, budget=budget)
    assert result.ok, result.error
    assert result.usage.attempts == 20
    assert result.usage.total_tokens == 240
    assert 1 < peak < 20  # some calls ran together, others waited for reservations


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        ({"concurrency": 0}, tl.InputError, "concurrency must be a whole number >= 1, not 0"),
        ({"concurrency": 2.5}, tl.InputError, "not 2.5"),
        ({"concurrency": True}, tl.InputError, "not True"),
        ({"items": None}, tl.InputError, "run_many needs items"),
        ({"batch_id": "b1"}, tl.ConfigurationError, "batch_id= needs an engine with a store"),
    ],
)
async def test_run_many_refuses_bad_arguments_when_called(
    call: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    """Before anything is iterated: a mistake shows where run_many is called, even when
    the generator is handed on and iterated elsewhere (or never)."""
    flow = tl.Flow("batch", inputs={"i": int})

    @flow.step
    def double(i: int) -> int:
        return 2 * i

    async with tl.Engine() as engine:
        arguments: dict[str, Any] = {"items": [{"i": 1}], **call}
        with pytest.raises(error, match=re.escape(fragment)):
            engine.run_many(flow, **arguments)
