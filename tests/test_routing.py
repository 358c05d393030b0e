"""Running a flow: parallelism, what each step receives, failures and how they propagate,
``when=`` conditions, ``tl.branch`` routers and skip propagation, all with their records."""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis as tl


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


class Route(enum.Enum):
    DIRECT = "direct"
    RESEARCH = "research"


# -- scheduling -------------------------------------------------------------------------------


async def test_independent_async_steps_run_concurrently() -> None:
    flow = tl.Flow("par", inputs={"x": int})

    @flow.step
    async def a(x: int) -> int:
        await asyncio.sleep(0.1)
        return x + 1

    @flow.step
    async def b(x: int) -> int:
        await asyncio.sleep(0.1)
        return x + 2

    @flow.step
    def total(a: int, b: int) -> int:
        return a + b

    started = time.perf_counter()
    result = await flow.run({"x": 1})
    elapsed = time.perf_counter() - started
    assert result["total"] == 5
    assert elapsed < 0.18, f"two 0.1 s steps took {elapsed:.3f}s: not concurrent"


async def test_a_step_starts_only_after_everything_it_reads() -> None:
    events: list[str] = []
    flow = tl.Flow("order")

    @flow.step
    async def slow() -> int:
        events.append("slow start")
        await asyncio.sleep(0.02)
        events.append("slow end")
        return 1

    @flow.step
    async def fast() -> int:
        events.append("fast")
        return 2

    @flow.step
    def join(slow: int, fast: int) -> int:
        events.append("join")
        return slow + fast

    result = await flow.run()
    assert result["join"] == 3
    assert events.index("join") > events.index("slow end")
    assert events.index("join") > events.index("fast")


async def test_each_step_receives_exactly_what_it_declares() -> None:
    seen: dict[str, dict[str, Any]] = {}
    flow = tl.Flow("kw", inputs={"text": str, "n": int})

    def upper(**given: Any) -> str:  # the signature below is what the engine sees
        seen["upper"] = given
        return str(given["text"]).upper()

    upper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("text", inspect.Parameter.KEYWORD_ONLY, annotation=str)],
        return_annotation=str,
    )
    upper.__annotations__ = {"text": str, "return": str}
    flow.step(upper)

    @flow.step
    async def repeat(upper: str, n: int, ctx: tl.RunContext) -> str:
        seen["repeat"] = {"upper": upper, "n": n, "ctx": ctx}
        return upper * n

    result = await flow.run({"text": "ab", "n": 2}, run_id="run-1")
    assert result["repeat"] == "ABAB"
    assert seen["upper"] == {"text": "ab"}
    assert set(seen["repeat"]) == {"upper", "n", "ctx"}
    ctx = seen["repeat"]["ctx"]
    assert isinstance(ctx, tl.RunContext)
    assert (ctx.run_id, ctx.flow, ctx.step, ctx.index, ctx.round) == (
        "run-1",
        "kw",
        "repeat",
        None,
        None,
    )


async def test_steps_may_use_any_parameter_order() -> None:
    flow = tl.Flow("order", inputs={"a": str, "b": str})

    @flow.step
    def joined(b: str, a: str) -> str:
        return a + b

    assert (await flow.run({"a": "x", "b": "y"}))["joined"] == "xy"


def test_run_sync_and_outputs() -> None:
    flow = tl.Flow("sync", inputs={"x": int})

    @flow.step
    def double(x: int) -> int:
        return 2 * x

    result = flow.run_sync({"x": 4})
    assert result.ok
    assert result.status == "done"
    assert result.outputs == {"double": 8}
    assert result.steps["double"].status == "done"
    assert result.steps["double"].attempts == 1
    assert result.raise_for_status() is result
    assert result.to_dict()["outputs"] == {"double": 8}


# -- failures ---------------------------------------------------------------------------------


def _failing_flow(ran: list[str]) -> tl.Flow:
    flow = tl.Flow("fails", inputs={"x": int})

    @flow.step
    async def broken(x: int) -> int:
        await asyncio.sleep(0)
        raise ValueError(f"cannot handle {x}")

    @flow.step
    def after(broken: int) -> int:
        ran.append("after")
        return broken

    @flow.step
    def after_after(after: int) -> int:
        ran.append("after_after")
        return after

    @flow.step
    async def independent(x: int) -> int:
        await asyncio.sleep(0.01)
        ran.append("independent")
        return x * 10

    return flow


async def test_step_exception_fails_the_step_and_cancels_dependents() -> None:
    ran: list[str] = []
    result = await _failing_flow(ran).run({"x": 3})

    assert result.status == "failed"
    assert not result.ok
    broken = result.steps["broken"]
    assert broken.status == "failed"
    assert broken.error is not None
    assert broken.error.type == "StepError"
    assert broken.error.step == "broken"
    assert "ValueError" in broken.error.message
    assert "cannot handle 3" in broken.error.message

    for name in ("after", "after_after"):
        assert result.steps[name].status == "cancelled"
        assert result.steps[name].reason
    assert "broken" in (result.steps["after"].reason or "")
    assert "after" in (result.steps["after_after"].reason or "")

    assert result["independent"] == 30
    assert ran == ["independent"]
    assert result.error is not None
    assert result.error.step == "broken"
    with pytest.raises(KeyError, match="broken"):
        result["broken"]


async def test_raise_for_status_raises_a_trellis_error() -> None:
    result = await _failing_flow([]).run({"x": 1})
    with pytest.raises(tl.TrellisError, match="cannot handle 1"):
        result.raise_for_status()


async def test_raise_for_status_raises_the_step_error_with_its_cause() -> None:
    result = await _failing_flow([]).run({"x": 1})
    with pytest.raises(tl.StepError) as info:
        result.raise_for_status()
    assert info.value.step == "broken"
    assert isinstance(info.value.__cause__, ValueError)


async def test_sync_step_exception() -> None:
    flow = tl.Flow("f")

    @flow.step
    def broken() -> int:
        raise KeyError("missing")

    @flow.step
    def fine() -> int:
        return 1

    result = await flow.run()
    assert result.steps["broken"].error is not None
    assert result.steps["broken"].error.type == "StepError"
    assert result["fine"] == 1
    assert result.status == "failed"


async def test_step_retry_on_reruns_the_step_code() -> None:
    attempts: list[int] = []
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    flow = tl.Flow("f")

    @flow.step(retry=tl.RetryPolicy(retry_on=(ConnectionError,), step_attempts=3))
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return len(attempts)

    async with tl.Engine(sleep=fake_sleep, seed=1) as engine:
        result = await engine.run(flow)
    assert result["flaky"] == 3
    assert result.steps["flaky"].attempts == 3
    assert len(waits) == 2


async def test_step_retry_on_gives_up_after_step_attempts() -> None:
    flow = tl.Flow("f")

    @flow.step(retry=tl.RetryPolicy(retry_on=(ConnectionError,), step_attempts=2))
    async def flaky() -> int:
        raise ConnectionError("down")

    async def no_sleep(seconds: float) -> None:
        pass

    async with tl.Engine(sleep=no_sleep) as engine:
        result = await engine.run(flow)
    assert result.steps["flaky"].status == "failed"
    assert result.steps["flaky"].attempts == 2


async def test_run_fatal_error_in_a_sync_step_does_not_hang_the_run() -> None:
    flow = tl.Flow("f")

    @flow.step
    async def waiting() -> int:
        await asyncio.sleep(0.01)
        return 1

    @flow.step
    def misconfigured() -> int:
        raise tl.ConfigurationError("a required setting is missing")

    result = await asyncio.wait_for(flow.run(), timeout=0.5)
    assert result.status == "failed"
    assert result.steps["waiting"].status == "cancelled"


# -- when= ------------------------------------------------------------------------------------


def _escalation_flow(calls: list[str]) -> tl.Flow:
    flow = tl.Flow("esc", inputs={"sentiment": Sentiment})

    @flow.step(when=lambda sentiment: sentiment.label == "negative")
    def escalate(sentiment: Sentiment) -> str:
        calls.append("escalate")
        return f"ticket for {sentiment.label}"

    @flow.step
    def notify(escalate: str) -> str:  # required: skipped with escalate
        calls.append("notify")
        return escalate.upper()

    @flow.step
    def report(sentiment: Sentiment, escalate: str | None) -> str:
        calls.append("report")
        return f"{sentiment.label}: {escalate}"

    @flow.step
    def summary(escalate: str = "no ticket") -> str:
        calls.append("summary")
        return escalate

    return flow


async def test_when_true_runs_and_records_the_decision() -> None:
    calls: list[str] = []
    negative = Sentiment(label="negative", confidence=0.9)
    result = await _escalation_flow(calls).run({"sentiment": negative})

    assert result.ok
    assert result["escalate"] == "ticket for negative"
    assert result["notify"] == "TICKET FOR NEGATIVE"
    assert result["report"] == "negative: ticket for negative"
    assert result["summary"] == "ticket for negative"
    [decision] = [d for d in result.decisions if d.step == "escalate"]
    assert (decision.kind, decision.outcome) == ("when", "run")
    assert decision.values == {"sentiment": negative}
    assert "true" in decision.reason


async def test_when_false_skips_and_propagates_to_required_readers_only() -> None:
    calls: list[str] = []
    positive = Sentiment(label="positive", confidence=0.9)
    result = await _escalation_flow(calls).run({"sentiment": positive})

    assert result.ok, "skipping is not a failure"
    assert result.steps["escalate"].status == "skipped"
    assert result.steps["notify"].status == "skipped"
    assert "escalate" in (result.steps["notify"].reason or "")
    assert result["report"] == "positive: None"
    assert result["summary"] == "no ticket"
    assert sorted(calls) == ["report", "summary"]
    assert set(result.skipped) == {"escalate", "notify"}

    by_step = {d.step: d for d in result.decisions}
    assert (by_step["escalate"].kind, by_step["escalate"].outcome) == ("when", "skip")
    assert by_step["escalate"].values == {"sentiment": positive}
    assert "false" in by_step["escalate"].reason
    assert (by_step["notify"].kind, by_step["notify"].outcome) == ("skip", "skip")
    assert "report" not in by_step
    with pytest.raises(KeyError, match="skipped"):
        result["escalate"]


async def test_when_reading_a_skipped_step_skips() -> None:
    flow = tl.Flow("f", inputs={"x": int})

    @flow.step(when=lambda x: x > 10)
    def big(x: int) -> int:
        return x

    @flow.step(when=lambda big: big is not None)
    def check(x: int) -> int:
        return x

    result = await flow.run({"x": 1})
    assert result.ok
    assert result.steps["big"].status == "skipped"
    assert result.steps["check"].status == "skipped"
    assert "big" in (result.steps["check"].reason or "")
    kinds = [(d.step, d.kind, d.outcome) for d in result.decisions]
    assert ("check", "skip", "skip") in kinds


async def test_when_reading_a_step_that_is_not_a_param() -> None:
    flow = tl.Flow("f", inputs={"x": int})

    @flow.step
    async def score(x: int) -> float:
        await asyncio.sleep(0)
        return x / 10

    @flow.step(when=lambda score: score > 0.5)
    def act(x: int) -> str:
        return "acted"

    high = await flow.run({"x": 9})
    low = await flow.run({"x": 1})
    assert high["act"] == "acted"
    assert low.steps["act"].status == "skipped"
    [decision] = [d for d in low.decisions if d.step == "act"]
    assert decision.values == {"score": pytest.approx(0.1)}


async def test_when_raising_fails_the_step() -> None:
    def explode(x: int) -> bool:
        raise ZeroDivisionError("oops")

    ran: list[str] = []
    flow = tl.Flow("f", inputs={"x": int})

    @flow.step(when=explode)
    def guarded(x: int) -> int:
        ran.append("guarded")
        return x

    @flow.step
    def downstream(guarded: int | None) -> str:
        ran.append("downstream")
        return "ran"

    @flow.step
    def other(x: int) -> int:
        return x

    result = await flow.run({"x": 1})
    assert result.status == "failed"
    record = result.steps["guarded"]
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.type == "StepError"
    assert "ZeroDivisionError" in record.error.message
    assert result.steps["downstream"].status == "cancelled"
    assert result["other"] == 1
    assert ran == []


# -- routers ----------------------------------------------------------------------------------


def _router_flow(ran: list[str]) -> tl.Flow:
    flow = tl.Flow("router", inputs={"question": str})

    @flow.step
    async def route(question: str) -> Literal["direct", "research", "reasoning"]:
        await asyncio.sleep(0)
        if "why" in question:
            return "reasoning"
        return "research" if "?" in question else "direct"

    @flow.step(when=tl.branch("route", "direct"))
    def direct(question: str) -> str:
        ran.append("direct")
        return "answer"

    @flow.step(when=tl.branch("route", "research", "reasoning"))
    async def research(question: str) -> str:
        ran.append("research")
        return "researched"

    @flow.step
    def answer(direct: str | None, research: str | None) -> str:
        return direct or research or "nothing"

    return flow


@pytest.mark.parametrize(
    ("question", "label", "runs"),
    [
        ("hello", "direct", "direct"),
        ("what?", "research", "research"),
        ("why", "reasoning", "research"),
    ],
)
async def test_branch_runs_only_the_chosen_route(question: str, label: str, runs: str) -> None:
    ran: list[str] = []
    result = await _router_flow(ran).run({"question": question})
    assert result.ok
    assert ran == [runs]
    other = "research" if runs == "direct" else "direct"
    assert result.steps[other].status == "skipped"
    assert result["answer"] == ("answer" if runs == "direct" else "researched")
    branch = {d.step: d for d in result.decisions if d.kind == "branch"}
    assert set(branch) == {"direct", "research"}
    assert branch[runs].outcome == "run"
    assert branch[other].outcome == "skip"
    assert branch[runs].values == {"route": label}


async def test_branch_with_an_enum_router() -> None:
    flow = tl.Flow("enum", inputs={"deep": bool})

    @flow.step
    def route(deep: bool) -> Route:
        return Route.RESEARCH if deep else Route.DIRECT

    @flow.step(when=tl.branch("route", Route.RESEARCH))
    def by_member(deep: bool) -> str:
        return "member"

    @flow.step(when=tl.branch("route", "research"))
    def by_value(deep: bool) -> str:
        return "value"

    @flow.step(when=tl.branch("route", "direct"))
    def shallow(deep: bool) -> str:
        return "shallow"

    deep = await flow.run({"deep": True})
    assert deep["by_member"] == "member"
    assert deep["by_value"] == "value"
    assert deep.steps["shallow"].status == "skipped"
    not_deep = await flow.run({"deep": False})
    assert not_deep["shallow"] == "shallow"
    assert not_deep.steps["by_member"].status == "skipped"
    assert not_deep.steps["by_value"].status == "skipped"


async def test_router_returning_an_undeclared_label_fails() -> None:
    flow = tl.Flow("bad")

    @flow.step
    def route() -> Literal["a", "b"]:
        return "c"  # type: ignore[return-value]

    @flow.step(when=tl.branch("route", "a"))
    def a() -> str:
        return "a"

    result = await flow.run()
    assert result.steps["route"].error is not None
    assert result.steps["route"].error.type == "OutputTypeError"
    assert result.steps["a"].status == "cancelled"


async def test_decisions_serialise() -> None:
    ran: list[str] = []
    result = await _router_flow(ran).run({"question": "hello"})
    data = result.to_dict()
    kinds = {(d["step"], d["kind"], d["outcome"]) for d in data["decisions"]}
    assert ("direct", "branch", "run") in kinds
    assert ("research", "branch", "skip") in kinds
