"""The engine's clock (``Engine(clock=...)``): a run reads the time only through it.

A fake clock moves only when the test says so: the model "takes" time by advancing it, and
the fake ``sleep`` advances it by what it is asked to wait. Latencies, durations,
timestamps, the retry deadline and the run's ``max_seconds`` then follow it exactly, and
nothing really waits (the circuit breaker, which keeps the real clock for its cool-down
timers, is off)."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.engine.breaker import BreakerSettings
from trellis.engine.clock import SYSTEM_CLOCK, Clock

GOOD = '{"label": "ok"}'
EPOCH = 1_700_000_000.0  # the fake wall clock's zero
NO_BREAKER = BreakerSettings(enabled=False)


class Label(BaseModel):
    label: str


class FakeClock(Clock):
    """One fake time ``t`` (seconds), seen as wall time ``EPOCH + t``, monotonic time
    ``1000 + t`` and perf time ``t``. All values used below are exact in binary."""

    __slots__ = ("t",)

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def now(self) -> float:  # type: ignore[override]
        return EPOCH + self.t

    def monotonic(self) -> float:  # type: ignore[override]
        return 1000.0 + self.t

    def perf(self) -> float:  # type: ignore[override]
        return self.t


class FakeSleep:
    """Records each wait and moves the fake clock by it (no real waiting)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def engine(clock: FakeClock, model: tl.Model, sleep: FakeSleep) -> tl.Engine:
    return tl.Engine(models={"small": model}, clock=clock, sleep=sleep, seed=0, breaker=NO_BREAKER)


def classify_flow(calls: int = 1, retry: tl.RetryPolicy | None = None) -> tl.Flow:
    flow = tl.Flow("clocked", inputs={"text": str}, retry=retry)

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Label:
        label = Label(label="none")
        for _ in range(calls):
            label = await llm.generate(text, output=Label, model="small")
        return label

    return flow


@pytest.fixture
def fast() -> Any:
    """Each test runs in well under a second of real time: nothing really waits."""
    started = time.perf_counter()
    yield
    assert time.perf_counter() - started < 0.5


@pytest.mark.usefixtures("fast")
async def test_latency_duration_and_timestamps_follow_the_clock() -> None:
    clock = FakeClock(t=4.0)
    sleep = FakeSleep(clock)

    def slow(request: tl.ModelRequest) -> str:
        clock.advance(2.5)  # the model "takes" 2.5 s
        return GOOD

    async with engine(clock, tl.FunctionModel(slow), sleep) as eng:
        result = await eng.run(classify_flow(calls=2), {"text": "x"})

    assert result.ok, result.error
    assert [c.latency_s for c in result.calls] == [2.5, 2.5]
    step = result.steps["classify"]
    assert step.started_at == EPOCH + 4.0
    assert step.duration_s == 5.0
    assert result.started_at == EPOCH + 4.0
    assert result.duration_s == 5.0
    assert sleep.waits == []


@pytest.mark.usefixtures("fast")
async def test_the_retry_deadline_counts_the_clocks_attempt_latencies() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)

    def slow_429(request: tl.ModelRequest) -> str:
        clock.advance(10.0)  # each failed attempt "takes" 10 s of the retry deadline
        raise tl.RateLimitError("429", retry_after=5)

    policy = tl.RetryPolicy(retry_deadline=40)
    async with engine(clock, tl.FunctionModel(slow_429), sleep) as eng:
        result = await eng.run(classify_flow(retry=policy), {"text": "x"})

    error = result.steps["classify"].error
    assert error is not None and error.type == "RateLimitError"
    # 10 + 5 + 10 + 5 + 10 = 40 s: the deadline is used up after the third attempt (with
    # the real clock the attempts take ~0 s and eight of them fit in 40 s of waits).
    assert [c.latency_s for c in result.calls] == [10.0, 10.0, 10.0]
    assert [c.outcome for c in result.calls] == ["rate_limit"] * 3
    assert sleep.waits == [5.0, 5.0]
    assert [c.wait_s for c in result.calls] == [0.0, 5.0, 5.0]
    assert result.steps["classify"].duration_s == 40.0


@pytest.mark.usefixtures("fast")
async def test_the_runs_max_seconds_follows_the_clock() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)

    def slow(request: tl.ModelRequest) -> str:
        clock.advance(10.0)
        return GOOD

    async with engine(clock, tl.FunctionModel(slow), sleep) as eng:
        result = await eng.run(
            classify_flow(calls=3), {"text": "x"}, budget=tl.Budget(max_seconds=15)
        )

    # The second call starts at 10 s (< 15 s); the third, at 20 s, is not made.
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "BudgetExceededError"
    assert "max_seconds" in result.error.message
    assert len(result.calls) == 2


@pytest.mark.usefixtures("fast")
async def test_a_tools_latency_follows_the_clock() -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock)

    @tl.tool
    def lookup(city: str) -> str:
        """Look a city up.

        Args:
            city: the city's name
        """
        clock.advance(0.75)
        return city.upper()

    def reply(request: tl.ModelRequest) -> Any:
        if any(m.role == "tool" for m in request.messages):
            return GOOD
        return tl.ModelResponse(
            text="",
            usage=tl.Usage(10, 2),
            finish_reason="tool_calls",
            tool_calls=(tl.ToolCall("c1", "lookup", '{"city": "oslo"}'),),
        )

    flow = tl.Flow("agent", inputs={"text": str})

    @flow.step
    async def agent(text: str, llm: tl.LLM) -> Label:
        return await llm.agent(text, tools=[lookup], output=Label, model="small")

    async with engine(clock, tl.FunctionModel(reply), sleep) as eng:
        result = await eng.run(flow, {"text": "x"})

    assert result.ok, result.error
    [tc] = result.steps["agent"].turns[0]["tool_calls"]
    assert tc["result"] == "OSLO"
    assert tc["latency_s"] == 0.75
    assert result.steps["agent"].duration_s == 0.75


def test_the_default_clock_is_the_real_one() -> None:
    eng = tl.Engine()
    assert eng.services.clock is SYSTEM_CLOCK
    assert SYSTEM_CLOCK.now is time.time
    assert SYSTEM_CLOCK.monotonic is time.monotonic
    assert SYSTEM_CLOCK.perf is time.perf_counter
    # The recipe a worker builds its engine from carries no clock: it pickles as before.
    assert pickle.loads(pickle.dumps(SYSTEM_CLOCK)).now is time.time
    assert "clock" not in type(eng.recipe).__dataclass_fields__
