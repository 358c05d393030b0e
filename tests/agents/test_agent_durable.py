"""Durable agents: every model turn and tool call is journaled; a resumed agent replays
finished turns and never re-runs a finished tool call.

Each test runs a flow on a SQLite file, interrupts it (a crash in step code, or a fatal
quota error from the model mid-loop), then resumes it with a *new* engine and store
connection, counting model calls and tool executions to assert once-and-only-once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import trellis as tl
from trellis.errors import QuotaExceededError, StepError

from . import Counts, call, durable_engine, final, scripted, tool_turn


class Report(BaseModel):
    city: str
    summary: str


REPORT = {"city": "Oslo", "summary": "cold"}


def report_flow(counts: Counts, crash: dict[str, bool], *, retries: int = 2) -> tl.Flow:
    """An agent step (tools ``get_weather`` and ``get_news``) whose code may crash after
    the agent has answered, and a step after it."""
    flow = tl.Flow("report", inputs={"city": str})

    @tl.tool(retries=retries)
    def get_weather(city: str) -> str:
        counts.hit("get_weather")
        if crash.get("tool"):
            raise ConnectionError("weather service down")
        return f"{city}: -3 C"

    @tl.tool
    async def get_news(city: str) -> list[str]:
        counts.hit("get_news")
        return [f"{city} news"]

    @flow.step
    async def research(city: str, llm: tl.LLM) -> Report:
        report = await llm.agent(
            f"Report on {city}", tools=[get_weather, get_news], output=Report, model="m"
        )
        counts.hit("research")
        if crash.get("after_agent"):
            raise RuntimeError("crashed after the agent answered")
        return report  # type: ignore[no-any-return]

    @flow.step
    def publish(research: Report) -> str:
        counts.hit("publish")
        return f"{research.city}: {research.summary}"

    return flow


TWO_ROUNDS = [
    tool_turn(
        call("w1", "get_weather", {"city": "Oslo"}), call("n1", "get_news", {"city": "Oslo"})
    ),
    tool_turn(call("w2", "get_weather", {"city": "Oslo"})),
    final(REPORT),
]


def model(script: list[Any], counts: Counts) -> tl.FunctionModel:
    return tl.FunctionModel(scripted(script, counts), name="function:test")


async def test_crash_after_the_agent_resumes_without_any_model_or_tool_call(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    crash = {"after_agent": True}
    flow = report_flow(counts, crash)

    async with durable_engine(db, {"m": model(TWO_ROUNDS, counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="r1")
    assert first.status == "failed"
    assert first.steps["publish"].status == "cancelled"
    assert counts == {"model": 3, "get_weather": 2, "get_news": 1, "research": 1}
    live_turns = first.steps["research"].turns
    assert len(live_turns) == 3

    # The failed step's transcript is in the store.
    async with durable_engine(db) as engine:
        recorded = engine.load("r1", flow)
    assert recorded.status == "failed"
    assert recorded.steps["research"].turns == live_turns

    crash["after_agent"] = False
    async with durable_engine(db, {"m": model(TWO_ROUNDS, counts)}) as engine:
        second = await engine.run(flow, run_id="r1")

    assert second.status == "done", second.error
    assert second["publish"] == "Oslo: cold"
    # The step's code ran again, but no model call and no tool call did.
    assert counts == {"model": 3, "get_weather": 2, "get_news": 1, "research": 2, "publish": 1}
    assert [c.source for c in second.calls] == ["journal"] * 3
    turns = second.steps["research"].turns
    assert len(turns) == 3
    replayed = [tc for t in turns for tc in t["tool_calls"]]
    assert [tc["source"] for tc in replayed] == ["journal"] * 3

    # Replayed results are those of the first run, tokens included.
    def same_keys(tc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in tc.items() if k not in ("source", "latency_s")}

    originals = [tc for t in live_turns for tc in t["tool_calls"]]
    assert [same_keys(tc) for tc in replayed] == [same_keys(tc) for tc in originals]
    assert [(t["input_tokens"], t["output_tokens"]) for t in turns] == [
        (t["input_tokens"], t["output_tokens"]) for t in live_turns
    ]
    assert second.steps["research"].usage.calls == 3


async def test_a_run_stopped_mid_loop_replays_finished_turns_and_runs_the_rest(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = report_flow(counts, {})
    quota = QuotaExceededError("monthly quota used up", model="function:test")
    dying = [TWO_ROUNDS[0], quota]

    async with durable_engine(db, {"m": model(dying, counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="r2")
    assert first.status == "failed"
    assert isinstance(first.exception, QuotaExceededError)
    assert counts == {"model": 2, "get_weather": 1, "get_news": 1}
    assert len(first.steps["research"].turns) == 1

    fresh = Counts()
    working = model(TWO_ROUNDS, fresh)
    async with durable_engine(db, {"m": working}) as engine:
        second = await engine.run(flow, run_id="r2")

    assert second.status == "done", second.error
    assert second["research"] == Report(**REPORT)
    # Turn 1 (model call and both tool calls) came from the journal; turns 2-3 ran.
    assert fresh["model"] == 2
    assert [len([m for m in r.messages if m.role == "tool"]) for r in working.calls] == [2, 3]
    assert counts["get_weather"] + fresh["get_weather"] == 2
    assert counts["get_news"] + fresh["get_news"] == 1
    assert [c.source for c in second.calls] == ["journal", "live", "live"]
    turns = second.steps["research"].turns
    assert [[tc["source"] for tc in t["tool_calls"]] for t in turns] == [
        ["journal", "journal"],
        ["live"],
        [],
    ]
    assert turns[0]["tool_calls"][0]["result"] == "Oslo: -3 C"


async def test_a_completed_agent_run_returns_its_recorded_transcript(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = report_flow(counts, {})
    async with durable_engine(db, {"m": model(TWO_ROUNDS, counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="r3")
    assert first.status == "done"

    async with durable_engine(db, {"m": model([], counts)}) as engine:
        again = await engine.run(flow, {"city": "Oslo"}, run_id="r3")
    assert again.status == "done"
    assert again["research"] == first["research"]
    assert again.steps["research"].turns == first.steps["research"].turns
    assert counts == {"model": 3, "get_weather": 2, "get_news": 1, "research": 1, "publish": 1}


async def test_mapped_agents_resume_per_element(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    crash = {"on": True}
    flow = tl.Flow("cities", inputs={"cities": list[str]})

    @tl.tool
    def get_weather(city: str) -> str:
        counts.hit(f"tool:{city}")
        return f"{city}: fine"

    @flow.step(map_over="cities")
    async def report(cities: str, llm: tl.LLM, ctx: tl.RunContext) -> Report:
        answer = await llm.agent(f"Report on {cities}", tools=[get_weather], output=Report)
        if crash["on"] and ctx.index == 1:
            raise RuntimeError("element 1 crashed")
        return answer  # type: ignore[no-any-return]

    @flow.step
    def check(report: list[Report]) -> int:
        counts.hit("check")
        return len(report)

    def reply(request: tl.ModelRequest) -> Any:
        city = request.messages[0].content.removeprefix("Report on ")
        counts.hit(f"model:{city}")
        if any(m.role == "tool" for m in request.messages):
            return final({"city": city, "summary": "fine"})
        return tool_turn(call(f"c-{city}", "get_weather", {"city": city}))

    async with durable_engine(db, {"default": tl.FunctionModel(reply)}) as engine:
        first = await engine.run(flow, {"cities": ["Oslo", "Lima"]}, run_id="r4")
    assert first.status == "failed"
    assert first.steps["report"].status == "failed"
    assert counts == {"model:Oslo": 2, "model:Lima": 2, "tool:Oslo": 1, "tool:Lima": 1}

    crash["on"] = False
    async with durable_engine(db, {"default": tl.FunctionModel(reply)}) as engine:
        second = await engine.run(flow, run_id="r4")
    assert second.status == "done", second.error
    assert second["check"] == 2
    assert second["report"] == [Report(city=c, summary="fine") for c in ("Oslo", "Lima")]
    expected = {"model:Oslo": 2, "model:Lima": 2, "tool:Oslo": 1, "tool:Lima": 1, "check": 1}
    assert counts == expected
    turns = second.steps["report"].turns
    assert sorted((t["index"], t["turn"]) for t in turns) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert {tc["source"] for t in turns for tc in t["tool_calls"]} == {"journal"}


async def test_tool_errors_are_replayed_not_re_executed(tmp_path: Path) -> None:
    """A tool call that raised is journaled as its error: on resume it is not run again."""
    db = tmp_path / "runs.db"
    counts = Counts()
    crash = {"tool": True, "after_agent": True}
    flow = report_flow(counts, crash, retries=5)
    script = [tool_turn(call("w1", "get_weather", {"city": "Oslo"})), final(REPORT)]

    async with durable_engine(db, {"m": model(script, counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="r5")
    assert first.status == "failed"
    assert counts["get_weather"] == 1

    crash.update(tool=False, after_agent=False)
    async with durable_engine(db, {"m": model(script, counts)}) as engine:
        second = await engine.run(flow, run_id="r5")
    assert second.status == "done", second.error
    assert counts["get_weather"] == 1
    [tc] = second.steps["research"].turns[0]["tool_calls"]
    assert tc["source"] == "journal"
    assert tc["error"] == "error: tool 'get_weather' raised ConnectionError: weather service down"


async def test_tool_retry_budget_survives_a_resume(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = report_flow(counts, {"tool": True}, retries=1)
    weather = tool_turn(call("w1", "get_weather", {"city": "Oslo"}))
    weather2 = tool_turn(call("w2", "get_weather", {"city": "Oslo"}))
    quota = QuotaExceededError("quota", model="function:test")

    async with durable_engine(db, {"m": model([weather, quota], counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="r6")
    assert isinstance(first.exception, QuotaExceededError)
    assert counts["get_weather"] == 1  # failure 1 of retries=1

    script = [weather, weather2, weather2, final(REPORT)]
    async with durable_engine(db, {"m": model(script, counts)}) as engine:
        second = await engine.run(flow, run_id="r6")
    # Uninterrupted, the second failure exceeds retries=1 and fails the step.
    assert counts["get_weather"] == 2
    assert second.status == "failed"
    assert isinstance(second.exception, StepError)


async def test_no_store_agent_runs_are_not_journaled() -> None:
    """Without a store every call is live, and a second run repeats the work."""
    counts = Counts()
    flow = report_flow(counts, {})
    for _ in range(2):
        async with tl.Engine(models={"m": model(TWO_ROUNDS, counts)}) as engine:
            result = await engine.run(flow, {"city": "Oslo"}, run_id="same")
        assert result.status == "done"
        assert {c.source for c in result.calls} == {"live"}
    assert counts["model"] == 6
    assert counts["get_weather"] == 4


async def test_sibling_tool_calls_stop_when_a_tool_fails_the_step() -> None:
    flow = tl.Flow("siblings", inputs={"q": str})
    events: list[str] = []

    @tl.tool(retries=0)
    async def broken(x: int) -> str:
        raise ValueError("broken")

    @tl.tool
    async def slow(x: int) -> str:
        await asyncio.sleep(0.15)
        events.append("slow finished")
        return "ok"

    @flow.step
    async def agent(q: str, llm: tl.LLM) -> str:
        return await llm.agent(q, tools=[slow, broken])

    m = tl.TestModel(tool_turn(call("1", "slow", {"x": 1}), call("2", "broken", {"x": 1})))
    async with tl.Engine(models={"default": m}) as engine:
        result = await engine.run(flow, {"q": "go"})
    assert result.status == "failed"
    at_return = list(events)
    await asyncio.sleep(0.25)
    assert events == at_return, "a tool kept running after the run returned"


async def test_an_agent_then_an_approval_resumes_without_redoing_the_agent(
    tmp_path: Path,
) -> None:
    """The run waits after the agent's turns; the reply (from another engine) replays
    every turn and tool call from the journal."""
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = tl.Flow("agent_then_human", inputs={"city": str})

    @tl.tool
    def get_weather(city: str) -> str:
        counts.hit("get_weather")
        return f"{city}: -3 C"

    @flow.step
    async def proposal(city: str, llm: tl.LLM, human: tl.Human) -> Report:
        report = await llm.agent(f"Report on {city}", tools=[get_weather], output=Report)
        approval = await human.approve("Publish this report?", details=report)
        if not approval.approved:
            raise ValueError("rejected")
        return report  # type: ignore[no-any-return]

    script = [tool_turn(call("w", "get_weather", {"city": "Oslo"})), final(REPORT)]
    async with durable_engine(db, {"default": model(script, counts)}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="h1")
    assert first.status == "waiting"
    assert first.steps["proposal"].question is not None
    assert first.steps["proposal"].question["details"] == REPORT
    assert len(first.steps["proposal"].turns) == 2

    async with durable_engine(db, {"default": model(script, counts)}) as engine:
        done = await engine.reply(flow, "h1", "proposal", {"approved": True})
    assert done.status == "done", done.error
    assert done["proposal"] == Report(**REPORT)
    assert counts == {"model": 2, "get_weather": 1}
    assert [tc["source"] for t in done.steps["proposal"].turns for tc in t["tool_calls"]] == [
        "journal"
    ]


async def test_simulator_agent_resumes_from_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    crash = {"after_agent": True}
    flow = report_flow(counts, crash)

    async with durable_engine(db, {"m": "sim:small"}) as engine:
        first = await engine.run(flow, {"city": "Oslo"}, run_id="s1")
    assert first.status == "failed"
    tools_run = counts["get_weather"] + counts["get_news"]
    live = [c for c in first.calls if c.source == "live"]
    assert len(live) >= 2 and tools_run >= 1

    crash["after_agent"] = False
    async with durable_engine(db, {"m": "sim:small"}) as engine:
        second = await engine.run(flow, run_id="s1")
    assert second.status == "done", second.error
    assert second["research"] == Report.model_validate_json(
        first.steps["research"].turns[-1]["reply"]
    )
    assert [c.source for c in second.calls] == ["journal"] * len(live)
    assert counts["get_weather"] + counts["get_news"] == tools_run
    assert counts["research"] == 2
