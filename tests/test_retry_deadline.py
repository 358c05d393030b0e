"""Retries bounded by time: ``RetryPolicy.retry_deadline`` (attempt counts are an optional
cap), waits cut to the retry deadline and to the run's ``max_seconds``. The engine's sleep
is faked (waits are recorded, not slept) and the circuit breaker is off unless a test is
about it, so the tests take milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.engine.breaker import BreakerSettings
from trellis.models.function import TestModel

GOOD = '{"label": "ok"}'
NO_BREAKER = BreakerSettings(enabled=False)


class Label(BaseModel):
    label: str


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def one_call_flow(retry: tl.RetryPolicy | None = None, **generate: Any) -> tl.Flow:
    flow = tl.Flow("one-call", inputs={"text": str}, retry=retry)

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(text, output=Label, model="small", **generate)

    return flow


async def run(
    flow: tl.Flow, models: dict[str, Any], sleeps: Sleeps, budget: tl.Budget | None = None
) -> tl.RunResult:
    async with tl.Engine(models=models, seed=0, sleep=sleeps, breaker=NO_BREAKER) as engine:
        return await engine.run(flow, {"text": "x"}, budget=budget)


def test_defaults_retry_by_time_not_by_count() -> None:
    policy = tl.RetryPolicy()
    assert policy.max_attempts is None
    assert policy.retry_deadline == 120.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_deadline": 0}, "retry_deadline must be positive"),
        ({"retry_deadline": -1.0}, "retry_deadline must be positive"),
        ({"retry_deadline": None}, "needs a retry_deadline or a max_attempts"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_retry_deadline_is_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(tl.ConfigurationError, match=message):
        tl.RetryPolicy(**kwargs)


async def test_overloads_without_a_fallback_are_retried_past_the_old_attempt_counts() -> None:
    sleeps = Sleeps()
    model = TestModel(*([tl.OverloadedError("503")] * 6), GOOD)
    result = await run(one_call_flow(), {"small": model}, sleeps)
    assert result.ok, result.error
    assert result["classify"] == Label(label="ok")
    assert [c.outcome for c in result.calls] == ["overloaded"] * 6 + ["ok"]
    assert len(sleeps.waits) == 6


async def test_a_call_gives_up_when_its_retry_deadline_is_used_up() -> None:
    sleeps = Sleeps()
    model = TestModel(*([tl.RateLimitError("429", retry_after=10)] * 10))
    policy = tl.RetryPolicy(retry_deadline=35)
    result = await run(one_call_flow(policy), {"small": model}, sleeps)
    error = result.steps["classify"].error
    assert error is not None and error.type == "RateLimitError"
    assert len(model.calls) == 5
    assert sleeps.waits[:3] == [10, 10, 10]
    assert sleeps.waits[3] == pytest.approx(5, abs=0.05), "the last wait is cut to what is left"
    assert sum(sleeps.waits) <= 35


async def test_max_attempts_still_caps_when_set() -> None:
    sleeps = Sleeps()
    model = TestModel(*([tl.ConnectionFailedError("refused")] * 5), GOOD)
    result = await run(one_call_flow(tl.RetryPolicy(max_attempts=3)), {"small": model}, sleeps)
    assert not result.ok
    assert len(model.calls) == 3


async def test_a_wait_never_outlives_the_runs_max_seconds() -> None:
    sleeps = Sleeps()
    model = TestModel(tl.RateLimitError("429", retry_after=90), GOOD)
    result = await run(
        one_call_flow(), {"small": model}, sleeps, budget=tl.Budget(max_seconds=5)
    )
    assert result.ok, result.error
    assert len(sleeps.waits) == 1
    assert 4.0 < sleeps.waits[0] <= 5.0, "cut from 90 s to the run's deadline"


async def test_with_a_fallback_an_overloaded_model_is_left_after_overloaded_attempts() -> None:
    sleeps = Sleeps()
    primary = TestModel(*([tl.OverloadedError("503")] * 5), name="test:primary")
    backup = TestModel(GOOD, name="test:backup")
    result = await run(
        one_call_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}, sleeps
    )
    assert result.ok
    assert [c.model for c in result.calls] == ["test:primary", "test:primary", "test:backup"]
