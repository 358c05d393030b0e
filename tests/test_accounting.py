"""Accounting: every attempt is a CallRecord; step and run usage are the sums of their calls;
costs come from the price table, and an unknown price is reported as unknown, never zero."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.models.function import FunctionModel, TestModel


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


GOOD = '{"label": "positive", "confidence": 0.9}'


async def no_wait(seconds: float) -> None:
    pass


def reply(text: str, inp: int, out: int, finish: Any = "stop") -> tl.ModelResponse:
    return tl.ModelResponse(text=text, usage=tl.Usage(inp, out), finish_reason=finish)


def accounting_flow() -> tl.Flow:
    flow = tl.Flow("acct", inputs={"text": str})

    @flow.step
    async def first(text: str, llm: tl.LLM) -> Sentiment:
        return await llm.generate(text, output=Sentiment, model="small")

    @flow.step
    async def second(text: str, llm: tl.LLM) -> str:
        a = await llm.generate("one", model="small")
        b = await llm.generate("two", model="large")
        return a + b

    @flow.step
    def plain(first: Sentiment) -> str:
        return first.label

    return flow


PRICES = {
    "test:small": {"input": 1.0, "output": 2.0},
    "test:large": {"input": 10.0, "output": 20.0},
}


async def test_each_attempt_is_a_call_record() -> None:
    flow = tl.Flow("one")

    @flow.step
    async def first(llm: tl.LLM) -> Sentiment:
        return await llm.generate("x", output=Sentiment, model="small")

    model = TestModel(
        reply("garbage", 100, 10),
        tl.RateLimitError("429", retry_after=1),
        reply(GOOD, 120, 12),
        name="test:small",
    )
    config = tl.Config(prices=PRICES)
    async with tl.Engine(config=config, models={"small": model}, sleep=no_wait) as engine:
        result = await engine.run(flow)

    assert result.ok
    assert [(c.step, c.call, c.attempt, c.outcome) for c in result.calls] == [
        ("first", 1, 1, "malformed"),
        ("first", 1, 2, "rate_limit"),
        ("first", 1, 3, "ok"),
    ]
    garbage, limited, ok = result.calls
    assert (garbage.input_tokens, garbage.output_tokens) == (100, 10)
    assert garbage.cost_usd == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert (limited.input_tokens, limited.output_tokens) == (0, 0)
    assert limited.cost_usd == 0.0
    assert ok.cost_usd == pytest.approx((120 * 1.0 + 12 * 2.0) / 1e6)
    assert all(c.model == "test:small" and c.role == "small" for c in result.calls)
    assert all(c.latency_s >= 0 for c in result.calls)
    assert limited.error and "429" in limited.error
    assert ok.error is None

    usage = result.steps["first"].usage
    assert usage.calls == 1
    assert usage.attempts == 3
    assert (usage.input_tokens, usage.output_tokens) == (220, 22)
    assert usage.cost_usd == pytest.approx(sum(c.cost_usd or 0 for c in result.calls))
    assert usage.failures == Counter({"malformed": 1, "rate_limit": 1})
    assert usage.cost_known
    assert result.usage.calls == 1


async def test_failed_attempt_usage_is_billed() -> None:
    flow = tl.Flow("one")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    model = TestModel(
        tl.OverloadedError("503", usage=tl.Usage(7, 0)), reply("fine", 5, 2), name="test:small"
    )
    config = tl.Config(prices=PRICES)
    async with tl.Engine(config=config, models={"small": model}, sleep=no_wait) as engine:
        result = await engine.run(flow)
    assert result.calls[0].input_tokens == 7
    assert result.usage.input_tokens == 12
    assert result.usage.failures == Counter({"overloaded": 1})


async def test_step_and_run_usage_are_sums() -> None:
    small = FunctionModel(lambda r: GOOD if r.output_schema else "one", name="test:small")
    large = FunctionModel(lambda r: "two", name="test:large")
    config = tl.Config(prices=PRICES)
    async with tl.Engine(config=config, models={"small": small, "large": large}) as engine:
        result = await engine.run(accounting_flow(), {"text": "great"})

    assert result.ok, result.error
    assert result["second"] == "onetwo"
    assert len(result.calls) == 3
    for name, record in result.steps.items():
        mine = [c for c in result.calls if c.step == name]
        assert record.usage.attempts == len(mine)
        assert record.usage.input_tokens == sum(c.input_tokens for c in mine)
        assert record.usage.output_tokens == sum(c.output_tokens for c in mine)
        assert record.usage.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in mine))
    assert result.steps["plain"].usage.attempts == 0
    assert result.steps["second"].usage.calls == 2

    total = tl.Stats()
    for record in result.steps.values():
        total.merge(record.usage)
    assert result.usage.attempts == total.attempts == 3
    assert result.usage.calls == total.calls == 3
    assert result.usage.input_tokens == total.input_tokens
    assert result.usage.output_tokens == total.output_tokens
    assert result.usage.cost_usd == pytest.approx(total.cost_usd)
    assert result.usage.total_tokens == total.total_tokens

    large_call = next(c for c in result.calls if c.model == "test:large")
    assert large_call.cost_usd == pytest.approx(
        (large_call.input_tokens * 10.0 + large_call.output_tokens * 20.0) / 1e6
    )
    assert large_call.call == 2, "second call of step 'second'"

    data = result.to_dict()
    assert data["usage"]["attempts"] == 3
    assert data["usage"]["cost_usd"] == pytest.approx(result.usage.cost_usd)
    assert data["steps"]["second"]["usage"]["calls"] == 2


async def test_retries_are_counted_by_failure_mode() -> None:
    flow = tl.Flow("modes")

    @flow.step
    async def ask(llm: tl.LLM) -> Sentiment:
        return await llm.generate("x", output=Sentiment, model="small", fallbacks=["backup"])

    small = TestModel(
        tl.RateLimitError("a", retry_after=1),
        tl.ModelTimeoutError("t"),
        "not json",
        '{"label": 1}',
        reply(GOOD, 10, 10, "length"),
        name="test:small",
    )
    backup = TestModel(tl.OverloadedError, GOOD, name="test:backup")
    async with tl.Engine(models={"small": small, "backup": backup}, sleep=no_wait) as engine:
        result = await engine.run(flow)

    assert result.ok, result.error
    assert result.usage.failures == Counter(
        {
            "rate_limit": 1,
            "timeout": 1,
            "malformed": 1,
            "invalid": 1,
            "truncated": 1,
            "overloaded": 1,
        }
    )
    assert result.usage.attempts == 7
    assert result.usage.calls == 1
    assert result.usage.retries == 6
    assert result.to_dict()["usage"]["failures"]["timeout"] == 1


async def test_unknown_price_is_none_not_zero() -> None:
    flow = tl.Flow("unpriced")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        a = await llm.generate("x", model="small")
        b = await llm.generate("y", model="sim")
        return a + b

    model = FunctionModel(lambda r: "hello", name="fn:unpriced")
    async with tl.Engine(models={"small": model, "sim": "sim:small"}) as engine:
        result = await engine.run(flow)

    unpriced, priced = result.calls
    assert unpriced.cost_usd is None
    assert priced.cost_usd is not None and priced.cost_usd > 0
    assert result.usage.unpriced_attempts == 1
    assert not result.usage.cost_known
    assert result.usage.cost_usd == pytest.approx(priced.cost_usd)
    assert not result.steps["ask"].usage.cost_known
    data = result.to_dict()["usage"]
    assert data["cost_usd"] is None
    assert data["cost_usd_known_part"] == pytest.approx(priced.cost_usd)
    assert data["unpriced_attempts"] == 1


async def test_simulator_costs_come_from_the_builtin_price_table() -> None:
    flow = tl.Flow("sim")

    @flow.step
    async def ask(llm: tl.LLM) -> Sentiment:
        return await llm.generate("How are you?", output=Sentiment, model="small")

    async with tl.Engine(models={"small": "sim:small"}) as engine:
        result = await engine.run(flow)
    [call] = result.calls
    assert call.model == "sim:small"
    assert call.cost_usd == pytest.approx(
        (call.input_tokens * 0.15 + call.output_tokens * 0.60) / 1e6
    )
    assert call.input_tokens > 0 and call.output_tokens > 0


async def test_custom_price_override() -> None:
    flow = tl.Flow("sim")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("How are you?", model="small")

    config = tl.Config(prices={"sim:small": tl.Price(input=100.0, output=1000.0)})
    async with tl.Engine(config=config, models={"small": "sim:small"}) as engine:
        result = await engine.run(flow)
    [call] = result.calls
    assert call.cost_usd == pytest.approx(
        (call.input_tokens * 100.0 + call.output_tokens * 1000.0) / 1e6
    )

    with_prices = tl.Config(models={"small": "sim:small"}).with_prices(
        {"sim:small": {"input": 0.0, "output": 0.0}}
    )
    async with tl.Engine(config=with_prices) as engine:
        free = await engine.run(flow)
    assert free.calls[0].cost_usd == 0.0
    assert free.usage.cost_known


async def test_map_and_loop_calls_carry_index_and_round() -> None:
    flow = tl.Flow("where")

    @flow.step
    def items() -> list[str]:
        return ["a", "b", "c"]

    @flow.step(map_over="items")
    async def each(items: str, llm: tl.LLM) -> str:
        await asyncio.sleep(0)
        return await llm.generate(items, model="small")

    @flow.step(max_rounds=2)
    async def loop(round: tl.Round[str], llm: tl.LLM) -> str:
        return await llm.generate(f"round {round.number}", model="small")

    model = FunctionModel(lambda r: r.messages[-1].content.upper())
    async with tl.Engine(models={"small": model}) as engine:
        result = await engine.run(flow)
    assert result["each"] == ["A", "B", "C"]
    by_step: dict[str, list[tl.CallRecord]] = {}
    for c in result.calls:
        by_step.setdefault(c.step, []).append(c)
    assert sorted(c.index for c in by_step["each"]) == [0, 1, 2]  # type: ignore[type-var]
    assert all(c.round is None for c in by_step["each"])
    assert [c.round for c in by_step["loop"]] == [1, 2]
    assert all(c.index is None for c in by_step["loop"])
    assert sorted(c.call for c in by_step["each"]) == [1, 2, 3]
    assert result.steps["each"].usage.attempts == 3
    assert result.steps["loop"].usage.calls == 2


async def test_call_records_serialise() -> None:
    flow = tl.Flow("ser")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    async with tl.Engine(models={"small": "sim:small"}) as engine:
        result = await engine.run(flow)
    data = result.to_dict()["calls"][0]
    assert set(data) >= {
        "step",
        "call",
        "attempt",
        "model",
        "role",
        "outcome",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_s",
        "wait_s",
    }
    assert data["outcome"] == "ok"


async def test_retries_count_attempts_beyond_the_first() -> None:
    flow = tl.Flow("retries")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    model = TestModel(tl.RateLimitError("a", retry_after=1), tl.ModelTimeoutError("t"), "ok")
    async with tl.Engine(models={"small": model}, sleep=no_wait) as engine:
        result = await engine.run(flow)
    assert result.usage.attempts == 3
    assert result.usage.retries == 2


async def test_a_call_failing_on_its_only_attempt_has_no_retries() -> None:
    flow = tl.Flow("retries")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x", model="small")

    model = TestModel(tl.BadRequestError("malformed request", status_code=400))
    async with tl.Engine(models={"small": model}, sleep=no_wait) as engine:
        result = await engine.run(flow)
    assert result.usage.attempts == 1
    assert result.usage.retries == 0
