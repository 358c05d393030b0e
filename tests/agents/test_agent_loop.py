"""The agent loop inside a step: model -> tool calls -> results -> model, bounded.

Models are scripted ``FunctionModel``/``TestModel`` replies (see ``tests/agents/__init__``)
so every turn is exact; a few end-to-end cases use the simulator's tool support.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import (
    AgentTurnLimitError,
    BudgetExceededError,
    ConfigurationError,
    OutputValidationError,
    StepError,
)

from . import PRICED, Counts, call, final, scripted, tool_turn


class Forecast(BaseModel):
    city: str
    temp_c: float


def weather_flow(
    counts: Counts, step_options: dict[str, Any] | None = None, **agent_kw: Any
) -> tl.Flow:
    """One agent step with a ``get_weather`` tool that counts its executions."""
    flow = tl.Flow("weather", inputs={"question": str})

    @tl.tool
    def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
        """Current weather for a city.

        Args:
            city: the city's name
        """
        counts.hit("get_weather")
        return {"city": city, "temp": 3.5, "unit": unit}

    agent_kw.setdefault("output", Forecast)

    @flow.step(**(step_options or {}))
    async def agent(question: str, llm: tl.LLM) -> Any:
        return await llm.agent(question, tools=[get_weather], **agent_kw)

    return flow


async def run(
    flow: tl.Flow, model: tl.Model, inputs: dict[str, Any] | None = None, **kw: Any
) -> tl.RunResult:
    async with tl.Engine(models={"default": model}, config=PRICED, seed=0) as engine:
        return await engine.run(flow, inputs or {"question": "Weather in Oslo?"}, **kw)


OSLO = {"city": "Oslo", "temp_c": 3.5}


# --------------------------------------------------------------------------- happy path


async def test_final_typed_answer_after_a_tool_round() -> None:
    counts = Counts()
    model = tl.FunctionModel(
        scripted([tool_turn(call("c1", "get_weather", {"city": "Oslo"})), final(OSLO)], counts)
    )
    result = await run(weather_flow(counts), model)

    assert result.status == "done", result.error
    assert result["agent"] == Forecast(city="Oslo", temp_c=3.5)
    assert counts == {"model": 2, "get_weather": 1}
    record = result.steps["agent"]
    assert record.usage.calls == 2
    assert record.usage.attempts == 2
    assert [c.outcome for c in result.calls] == ["ok", "ok"]


async def test_tool_results_are_fed_back_to_the_model() -> None:
    counts = Counts()
    model = tl.FunctionModel(
        scripted([tool_turn(call("c1", "get_weather", {"city": "Oslo"})), final(OSLO)], counts)
    )
    await run(weather_flow(counts, system="Be brief."), model)

    first, second = model.calls
    # Every turn offers the tools (auto) and asks for the output schema.
    for request in (first, second):
        assert [t.name for t in request.tools] == ["get_weather"]
        assert request.tools[0].description == "Current weather for a city."
        assert request.tools[0].parameters["properties"]["city"]["description"] == "the city's name"
        assert request.tool_choice == "auto"
        assert request.schema_name == "Forecast"
    assert [m.role for m in first.messages] == ["system", "user"]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "tool"]
    assistant, tool_msg = second.messages[2:]
    assert assistant.tool_calls == (tl.ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)
    assert tool_msg.tool_call_id == "c1"
    assert tool_msg.content == '{"city":"Oslo","temp":3.5,"unit":"celsius"}'


async def test_transcript_records_each_turn() -> None:
    counts = Counts()
    model = tl.FunctionModel(
        scripted([tool_turn(call("c1", "get_weather", {"city": "Oslo"})), final(OSLO)], counts)
    )
    result = await run(weather_flow(counts), model)
    turns = result.steps["agent"].turns
    assert [(t["agent"], t["turn"], t["index"], t["round"]) for t in turns] == [
        (1, 1, None, None),
        (1, 2, None, None),
    ]
    first, second = turns
    assert first["reply"] == ""
    [tc] = first["tool_calls"]
    assert tc["id"] == "c1"
    assert tc["name"] == "get_weather"
    assert tc["arguments"] == '{"city": "Oslo"}'
    assert tc["result"] == '{"city":"Oslo","temp":3.5,"unit":"celsius"}'
    assert "error" not in tc
    assert tc["source"] == "live"
    assert tc["latency_s"] >= 0
    assert second["tool_calls"] == []
    assert second["reply"] == final(OSLO).text
    # The transcript is part of the step record's dict form (what `trellis show` renders).
    assert result.steps["agent"].to_dict()["turns"] == turns


async def test_text_answer_without_output_type() -> None:
    counts = Counts()
    model = tl.FunctionModel(
        scripted([tool_turn(call("c1", "get_weather", {"city": "Oslo"})), "It is 3.5 C."], counts)
    )
    result = await run(weather_flow(counts, output=None), model)
    assert result["agent"] == "It is 3.5 C."
    assert model.calls[-1].output_schema is None


async def test_plain_functions_are_accepted_as_tools() -> None:
    flow = tl.Flow("plain", inputs={"question": str})
    seen: list[int] = []

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        seen.append(a + b)
        return a + b

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[add])

    model = tl.TestModel(tool_turn(call("1", "add", {"a": 2, "b": 3})), "5")
    result = await run(flow, model)
    assert result["agent"] == "5"
    assert seen == [5]
    assert model.calls[1].messages[-1].content == "5"


async def test_parallel_tool_calls_of_one_turn_run_concurrently() -> None:
    flow = tl.Flow("parallel", inputs={"question": str})
    active = 0
    peak = 0

    async def slow(name: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.1)
        active -= 1
        return name

    @tl.tool
    async def fetch_a(key: str) -> str:
        return await slow(f"a:{key}")

    @tl.tool
    async def fetch_b(key: str) -> str:
        return await slow(f"b:{key}")

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[fetch_a, fetch_b])

    model = tl.TestModel(
        tool_turn(call("x", "fetch_a", {"key": "1"}), call("y", "fetch_b", {"key": "2"})),
        "done",
    )
    started = time.perf_counter()
    result = await run(flow, model)
    elapsed = time.perf_counter() - started

    assert result.status == "done", result.error
    assert peak == 2
    assert elapsed < 0.19, f"two 0.1 s tools took {elapsed:.3f} s: not concurrent"
    # Results go back in the order of the calls, each answering its own id.
    tool_msgs = [m for m in model.calls[1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.content) for m in tool_msgs] == [("x", "a:1"), ("y", "b:2")]
    [turn, _] = result.steps["agent"].turns
    assert [tc["result"] for tc in turn["tool_calls"]] == ["a:1", "b:2"]


# --------------------------------------------------------------------------- errors to the model


async def test_unknown_tool_and_invalid_arguments_go_back_as_errors_never_executed() -> None:
    counts = Counts()
    model = tl.FunctionModel(
        scripted(
            [
                tool_turn(
                    call("u", "get_forecast", {"city": "Oslo"}),
                    call("v", "get_weather", {"city": 5}),
                    call("w", "get_weather", {"town": "Oslo"}),
                    call("z", "get_weather", '{"city": "Os'),
                ),
                final(OSLO),
            ],
            counts,
        )
    )
    result = await run(weather_flow(counts), model)

    assert result.status == "done", result.error
    assert counts["get_weather"] == 0  # none of these calls ran
    tool_msgs = {m.tool_call_id: m.content for m in model.calls[1].messages if m.role == "tool"}
    assert tool_msgs["u"] == "error: there is no tool 'get_forecast'; tools: get_weather"
    assert tool_msgs["v"].startswith("error: invalid arguments for tool 'get_weather': city: ")
    assert "valid string" in tool_msgs["v"]
    assert "town: Extra inputs are not permitted" in tool_msgs["w"]
    assert "city: Field required" in tool_msgs["w"]
    assert "(arguments): Invalid JSON" in tool_msgs["z"]
    for content in tool_msgs.values():
        assert content.startswith("error: ")
    for cid in "vwz":
        assert tool_msgs[cid].endswith("; the tool was not run")
    entries = result.steps["agent"].turns[0]["tool_calls"]
    assert [e["error"] for e in entries] == [tool_msgs[c] for c in "uvwz"]
    assert all("result" not in e for e in entries)


async def test_a_raising_tool_goes_back_as_an_error_and_the_agent_recovers() -> None:
    flow = tl.Flow("flaky", inputs={"question": str})
    attempts = Counts()

    @tl.tool(retries=1)
    def lookup(key: str) -> str:
        attempts.hit("lookup")
        if attempts["lookup"] == 1:
            raise ConnectionError("backend down")
        return f"value of {key}"

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[lookup])

    model = tl.TestModel(
        tool_turn(call("1", "lookup", {"key": "k"})),
        tool_turn(call("2", "lookup", {"key": "k"})),
        "got it",
    )
    result = await run(flow, model)
    assert result["agent"] == "got it"
    assert attempts["lookup"] == 2
    assert model.calls[1].messages[-1].content == (
        "error: tool 'lookup' raised ConnectionError: backend down"
    )
    assert model.calls[2].messages[-1].content == "value of k"
    # The transcript keeps where the tool raised, in the user's code (not sent to the model).
    (raised,) = result.steps["agent"].turns[0]["tool_calls"]
    (frame,) = raised["traceback"]
    assert frame["function"] == "lookup" and frame["file"] == __file__
    assert frame["source"] == 'raise ConnectionError("backend down")'
    assert "traceback" not in result.steps["agent"].turns[1]["tool_calls"][0]  # it succeeded


async def test_a_tool_failing_more_than_its_retries_fails_the_step_with_transcript() -> None:
    flow = tl.Flow("broken", inputs={"question": str})
    attempts = Counts()

    @tl.tool(retries=1)
    def lookup(key: str) -> str:
        attempts.hit("lookup")
        raise ValueError(f"no {key}")

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[lookup])

    @flow.step
    def after(agent: str) -> str:
        return agent

    model = tl.TestModel(
        tool_turn(call("1", "lookup", {"key": "a"})),
        tool_turn(call("2", "lookup", {"key": "b"})),
        "never asked",
    )
    result = await run(flow, model)

    assert result.status == "failed"
    assert model.remaining == 1  # no third turn
    assert attempts["lookup"] == 2
    assert isinstance(result.exception, StepError)
    assert result.error is not None
    assert result.error.step == "agent"
    assert "tool 'lookup' failed 2 times (retries=1); last: ValueError: no b" in (
        result.error.message
    )
    assert result.steps["after"].status == "cancelled"
    turns = result.steps["agent"].turns
    assert len(turns) == 2
    assert turns[0]["tool_calls"][0]["error"] == "error: tool 'lookup' raised ValueError: no a"
    assert turns[1]["tool_calls"][0]["name"] == "lookup"


async def test_retries_zero_fails_on_the_first_raise() -> None:
    flow = tl.Flow("strict", inputs={"question": str})

    @tl.tool(retries=0)
    def lookup(key: str) -> str:
        raise RuntimeError("nope")

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[lookup])

    result = await run(flow, tl.TestModel(tool_turn(call("1", "lookup", {"key": "a"}))))
    assert result.status == "failed"
    assert result.error is not None
    assert "failed 1 times (retries=0)" in result.error.message


# --------------------------------------------------------------------------- limits


def always_calls_a_tool(request: tl.ModelRequest) -> Any:
    n = sum(1 for m in request.messages if m.role == "tool")
    return tool_turn(call(f"c{n}", "get_weather", {"city": "Oslo"}))


async def test_turn_limit_stops_with_transcript() -> None:
    counts = Counts()
    model = tl.FunctionModel(always_calls_a_tool)
    result = await run(weather_flow(counts, max_turns=3), model)

    assert result.status == "failed"
    assert isinstance(result.exception, AgentTurnLimitError)
    assert isinstance(result.exception, StepError)
    assert result.error is not None
    assert result.error.type == "AgentTurnLimitError"
    assert "within 3 turns" in result.error.message
    assert len(model.calls) == 3
    assert counts["get_weather"] == 3
    turns = result.steps["agent"].turns
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert all(t["tool_calls"][0]["result"] for t in turns)


async def test_max_turns_below_one_is_a_configuration_error() -> None:
    result = await run(weather_flow(Counts(), max_turns=0), tl.TestModel())
    assert result.status == "failed"
    assert isinstance(result.exception, ConfigurationError)
    assert "max_turns must be at least 1" in str(result.exception)


async def test_two_tools_with_one_name_is_a_configuration_error() -> None:
    flow = tl.Flow("dupes", inputs={"question": str})

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> str:
        a = tl.tool(name="same")(lambda: "a")
        b = tl.tool(name="same")(lambda: "b")
        return await llm.agent(question, tools=[a, b])

    result = await run(flow, tl.TestModel())
    assert isinstance(result.exception, ConfigurationError)
    assert "two tools are named 'same'" in str(result.exception)


async def test_budget_max_turns_counts_across_agent_steps() -> None:
    flow = tl.Flow("two_agents", inputs={"question": str})
    counts = Counts()

    @tl.tool
    def note(text: str) -> str:
        counts.hit("note")
        return "noted"

    @flow.step
    async def first(question: str, llm: tl.LLM) -> str:
        return await llm.agent(question, tools=[note])

    @flow.step
    async def second(first: str, llm: tl.LLM) -> str:
        return await llm.agent(first, tools=[note])

    @flow.step
    def independent(question: str) -> str:
        return question.upper()

    two_turns = scripted([tool_turn(call("n", "note", {"text": "x"})), "answer"], counts)
    result = await run(flow, tl.FunctionModel(two_turns), budget=tl.Budget(max_turns=3))

    assert result.status == "failed"
    assert result.steps["first"].status == "done"
    assert result.steps["second"].status == "failed"
    assert isinstance(result.exception, BudgetExceededError)
    assert result.error is not None
    assert result.error.budget == "max_turns"
    assert "max_turns=3" in result.error.message
    assert counts["model"] == 3  # the 4th turn was refused before its model call
    assert counts["note"] == 2
    assert len(result.steps["second"].turns) == 1  # the transcript so far is kept
    assert result.steps["independent"].status == "done"


async def test_budget_max_calls_stops_a_looping_agent_cleanly() -> None:
    counts = Counts()

    def looping(request: tl.ModelRequest) -> Any:
        counts.hit("model")
        return always_calls_a_tool(request)

    result = await run(
        weather_flow(counts, max_turns=50),
        tl.FunctionModel(looping),
        budget=tl.Budget(max_calls=4),
    )
    assert result.status == "failed"
    assert isinstance(result.exception, BudgetExceededError)
    assert result.error is not None
    assert result.error.budget == "max_calls"
    assert counts["model"] == 4
    assert counts["get_weather"] == 4
    record = result.steps["agent"]
    assert record.status == "failed"
    assert len(record.turns) == 4
    assert result.usage.calls == 4


# --------------------------------------------------------------------------- accounting


async def test_per_turn_tokens_and_cost_sum_to_the_step_usage() -> None:
    counts = Counts()
    model = tl.TestModel(
        tool_turn(call("1", "get_weather", {"city": "Oslo"}), tokens=(100, 10)),
        tool_turn(call("2", "get_weather", {"city": "Bergen"}), tokens=(150, 12)),
        final(OSLO, tokens=(200, 20)),
        name="function:test",
    )
    result = await run(weather_flow(counts), model)
    assert result.status == "done", result.error

    record = result.steps["agent"]
    turns = record.turns
    assert [(t["input_tokens"], t["output_tokens"]) for t in turns] == [
        (100, 10),
        (150, 12),
        (200, 20),
    ]
    assert sum(t["input_tokens"] for t in turns) == record.usage.input_tokens == 450
    assert sum(t["output_tokens"] for t in turns) == record.usage.output_tokens == 42
    # PRICED: $1 / $2 per million tokens.
    assert turns[0]["cost_usd"] == pytest.approx((100 * 1 + 10 * 2) / 1e6)
    assert sum(t["cost_usd"] for t in turns) == pytest.approx(record.usage.cost_usd)
    assert record.usage.cost_usd == pytest.approx((450 + 42 * 2) / 1e6)
    assert result.usage.cost_usd == pytest.approx(record.usage.cost_usd)


async def test_unpriced_model_turns_have_no_cost() -> None:
    counts = Counts()
    model = tl.TestModel(
        tool_turn(call("1", "get_weather", {"city": "Oslo"})), final(OSLO), name="unpriced:m"
    )
    result = await run(weather_flow(counts), model)
    assert [t["cost_usd"] for t in result.steps["agent"].turns] == [None, None]


async def test_invalid_structured_final_answer_is_reasked_within_the_turn() -> None:
    counts = Counts()
    model = tl.TestModel(
        tool_turn(call("1", "get_weather", {"city": "Oslo"}), tokens=(10, 1)),
        final({"city": "Oslo"}, tokens=(20, 2)),  # temp_c missing
        final(OSLO, tokens=(40, 4)),
        name="function:test",
    )
    result = await run(weather_flow(counts), model)

    assert result["agent"] == Forecast(**OSLO)
    assert [c.outcome for c in result.calls] == ["ok", "invalid", "ok"]
    assert result.usage.failures["invalid"] == 1
    assert result.steps["agent"].usage.calls == 2
    assert result.steps["agent"].usage.attempts == 3
    reask = model.calls[2]
    assert [m.role for m in reask.messages][-2:] == ["assistant", "user"]
    assert "temp_c" in reask.messages[-1].content
    assert reask.tools  # still an agent turn
    turns = result.steps["agent"].turns
    assert len(turns) == 2  # the re-ask is part of turn 2, not a turn of its own
    assert (turns[1]["input_tokens"], turns[1]["output_tokens"]) == (60, 6)
    assert turns[1]["reply"] == final(OSLO).text


async def test_structured_final_answer_invalid_after_all_reasks_fails_the_step() -> None:
    counts = Counts()
    model = tl.TestModel(final({"city": "Oslo"}), final({"city": "Oslo"}))
    result = await run(weather_flow(counts, {"retry": tl.RetryPolicy(reasks=1)}), model)
    assert result.status == "failed"
    assert isinstance(result.exception, OutputValidationError)
    assert result.usage.failures["invalid"] == 2


# --------------------------------------------------------------------------- placement


async def test_agent_inside_a_mapped_step_records_the_element_index() -> None:
    flow = tl.Flow("mapped", inputs={"cities": list[str]})
    counts = Counts()

    @tl.tool
    def get_weather(city: str) -> str:
        counts.hit(city)
        return f"{city}: mild"

    @flow.step(map_over="cities")
    async def forecast(cities: str, llm: tl.LLM) -> Forecast:
        return await llm.agent(f"Weather in {cities}?", tools=[get_weather], output=Forecast)

    def reply(request: tl.ModelRequest) -> Any:
        city = request.messages[0].content.removeprefix("Weather in ").rstrip("?")
        if any(m.role == "tool" for m in request.messages):
            return final({"city": city, "temp_c": float(len(city))})
        return tool_turn(call(f"c-{city}", "get_weather", {"city": city}))

    result = await run(flow, tl.FunctionModel(reply), {"cities": ["Oslo", "Lima"]})

    assert result.status == "done", result.error
    assert result["forecast"] == [Forecast(city="Oslo", temp_c=4), Forecast(city="Lima", temp_c=4)]
    assert counts == {"Oslo": 1, "Lima": 1}
    turns = result.steps["forecast"].turns
    assert sorted((t["index"], t["turn"]) for t in turns) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for t in turns:
        if t["tool_calls"]:
            city = ["Oslo", "Lima"][t["index"]]
            assert t["tool_calls"][0]["result"] == f"{city}: mild"


async def test_two_agents_in_one_step_are_numbered() -> None:
    flow = tl.Flow("pair", inputs={"question": str})

    @flow.step
    async def both(question: str, llm: tl.LLM) -> list[str]:
        a = await llm.agent(question, tools=[lambda_tool])
        b = await llm.agent(question, tools=[lambda_tool])
        return [a, b]

    model = tl.TestModel(tool_turn(call("1", "echo", {"text": "x"})), "A", "B")
    result = await run(flow, model)
    assert result["both"] == ["A", "B"]
    assert [(t["agent"], t["turn"]) for t in result.steps["both"].turns] == [
        (1, 1),
        (1, 2),
        (2, 1),
    ]


@tl.tool(name="echo")
def lambda_tool(text: str) -> str:
    return text


async def test_agent_without_tools_is_a_plain_generate_with_output() -> None:
    flow = tl.Flow("no_tools", inputs={"question": str})

    @flow.step
    async def agent(question: str, llm: tl.LLM) -> Forecast:
        return await llm.agent(question, tools=[], output=Forecast)

    model = tl.TestModel(final(OSLO))
    result = await run(flow, model)
    assert result.status == "done", result.error
    assert result["agent"] == Forecast(**OSLO)
    assert model.calls[0].tools == ()
    assert len(result.steps["agent"].turns) == 1


# --------------------------------------------------------------------------- simulator


class Trip(BaseModel):
    destination: str
    days: int
    notes: list[str]


def trip_flow(counts: Counts) -> tl.Flow:
    flow = tl.Flow("trip", inputs={"request": str})

    @tl.tool
    def get_weather(city: str, days: int = 1) -> str:
        """Weather forecast for a city.

        Args:
            city: the city
            days: how many days ahead
        """
        counts.hit("get_weather")
        return f"sunny in {city} for {days} day(s)"

    @tl.tool
    async def find_hotels(city: str, max_price: float | None = None) -> list[str]:
        """Find hotels in a city."""
        counts.hit("find_hotels")
        return [f"Hotel {city}"]

    @flow.step
    async def plan(request: str, llm: tl.LLM) -> Trip:
        return await llm.agent(request, tools=[get_weather, find_hotels], output=Trip)

    return flow


async def run_sim(flow: tl.Flow, options: str = "") -> tl.RunResult:
    async with tl.Engine(models={"default": f"sim:small{options}"}) as engine:
        return await engine.run(flow, {"request": "Plan 3 days in Lisbon with weather and hotels"})


async def test_simulator_agent_end_to_end() -> None:
    counts = Counts()
    result = await run_sim(trip_flow(counts))

    assert result.status == "done", result.error
    assert isinstance(result["plan"], Trip)
    turns = result.steps["plan"].turns
    assert 2 <= len(turns) <= 4  # 1-3 tool rounds, then the answer
    assert turns[-1]["tool_calls"] == []
    made = [tc for t in turns for tc in t["tool_calls"]]
    assert made and all("result" in tc for tc in made)
    assert sum(counts.values()) == len(made)
    assert result.steps["plan"].usage.calls == len(turns)
    assert result.usage.cost_usd > 0  # sim:small is priced
    assert sum(t["cost_usd"] for t in turns) == pytest.approx(result.usage.cost_usd)

    again = await run_sim(trip_flow(Counts()))  # deterministic: the same path
    strip = [
        [(tc["name"], tc["arguments"]) for tc in t["tool_calls"]] for t in again.steps["plan"].turns
    ]
    assert strip == [[(tc["name"], tc["arguments"]) for tc in t["tool_calls"]] for t in turns]
    assert again["plan"] == result["plan"]


async def test_simulator_faulty_tool_calls_are_never_executed() -> None:
    counts = Counts()
    result = await run_sim(trip_flow(counts), "?invalid_tool_args=0.5&unknown_tool=0.5")

    assert result.status == "done", result.error
    made = [tc for t in result.steps["plan"].turns for tc in t["tool_calls"]]
    errors = [tc for tc in made if "error" in tc]
    assert errors, "every tool-call reply should carry one faulty call"
    assert all(tc["error"].startswith("error: ") for tc in errors)
    assert sum(counts.values()) == len(made) - len(errors)
