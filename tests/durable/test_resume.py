"""Resuming a run: completed steps and journaled LLM calls replay, only unfinished work runs.

Every step function counts its executions and every model counts its calls, so each test
asserts once-and-only-once directly. Faults are injected by a flag the step reads: the
first run crashes where the flag says, the resumed run (same ``run_id``) does not.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import ConfigurationError, InputError
from trellis.store import MemoryStore, SQLiteStore

from . import PRICED, Counts, durable_engine, priced_model, reply_by_schema


class Facts(BaseModel):
    topic: str
    points: list[str]


class Label(BaseModel):
    label: Literal["good", "bad"]
    confidence: float


@dataclass
class Summary:
    text: str
    label: str


REPLIES = reply_by_schema(
    {
        "Facts": {"topic": "pricing", "points": ["too high", "unclear"]},
        "Label": {"label": "bad", "confidence": 0.9},
    }
)


def pipeline(counts: Counts, fail: set[str]) -> tl.Flow:
    """extract (LLM) -> classify (LLM, may crash after its call) -> summarize; and an
    independent ``length`` step."""
    flow = tl.Flow("pipeline", inputs={"text": str})

    @flow.step
    async def extract(text: str, llm: tl.LLM) -> Facts:
        counts.hit("extract")
        return await llm.generate(f"Extract: {text}", output=Facts, model="m")  # type: ignore[no-any-return]

    @flow.step
    async def classify(extract: Facts, llm: tl.LLM) -> Label:
        counts.hit("classify")
        label = await llm.generate(f"Classify: {extract.topic}", output=Label, model="m")
        if "classify" in fail:
            raise RuntimeError("crashed after the LLM call returned")
        return label  # type: ignore[no-any-return]

    @flow.step
    def summarize(extract: Facts, classify: Label) -> Summary:
        counts.hit("summarize")
        assert isinstance(extract, Facts), "restored outputs are typed"
        assert isinstance(classify, Label)
        return Summary(f"{extract.topic}: {classify.label}", classify.label)

    @flow.step
    def length(text: str) -> int:
        counts.hit("length")
        return len(text)

    return flow


INPUTS = {"text": "the price is too high"}


async def crashed_run(path: Path, counts: Counts, model: tl.FunctionModel) -> tl.RunResult:
    async with durable_engine(path, {"m": model}) as engine:
        result = await engine.run(pipeline(counts, {"classify"}), INPUTS, run_id="r1")
    assert result.status == "failed"
    assert result.steps["classify"].status == "failed"
    assert result.steps["summarize"].status == "cancelled"
    assert counts == {"extract": 1, "classify": 1, "length": 1}
    assert len(model.calls) == 2
    return result


# -- resume -------------------------------------------------------------------------------------


async def test_resume_runs_only_the_failed_step_and_what_depends_on_it(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    await crashed_run(path, counts, model)

    async with durable_engine(path, {"m": model}) as engine:  # a new "process"
        result = await engine.run(pipeline(counts, set()), run_id="r1")

    assert result.ok, result.error
    assert result.run_id == "r1"
    assert counts == {"extract": 1, "classify": 2, "summarize": 1, "length": 1}
    assert len(model.calls) == 2, "the journaled classify call was replayed, not re-sent"
    by_step = {c.step: c for c in result.calls}
    assert set(by_step) == {"extract", "classify"}
    assert by_step["extract"].source == "journal"
    assert by_step["classify"].source == "journal"
    assert result["summarize"] == Summary("pricing: bad", "bad")
    assert isinstance(result["extract"], Facts)
    assert result["length"] == len(INPUTS["text"])
    with SQLiteStore(path) as store:
        row = store.get_run("r1")
        assert row is not None
        assert (row.status, row.lease_owner) == ("done", None)
        assert {s.step: s.status for s in store.load_steps("r1")} == dict.fromkeys(
            ["extract", "classify", "summarize", "length"], "done"
        )


async def test_resume_in_the_same_engine_with_a_memory_store() -> None:
    counts, model = Counts(), priced_model(REPLIES)
    store = MemoryStore()
    async with tl.Engine(store=store, models={"m": model}) as engine:
        first = await engine.run(pipeline(counts, {"classify"}), INPUTS, run_id="m1")
        assert not first.ok
        result = await engine.run(pipeline(counts, set()), INPUTS, run_id="m1")
    assert result.ok
    assert counts == {"extract": 1, "classify": 2, "summarize": 1, "length": 1}
    assert len(model.calls) == 2


async def test_resumed_usage_equals_an_uninterrupted_runs_usage(tmp_path: Path) -> None:
    counts, model = Counts(), priced_model(REPLIES)
    await crashed_run(tmp_path / "t.db", counts, model)
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        resumed = await engine.run(pipeline(counts, set()), run_id="r1")
    async with durable_engine(tmp_path / "other.db", {"m": priced_model(REPLIES)}) as engine:
        straight = await engine.run(pipeline(Counts(), set()), INPUTS, run_id="r1")

    def accounting(stats: tl.Stats) -> tuple[Any, ...]:
        return (
            stats.calls,
            stats.attempts,
            stats.input_tokens,
            stats.output_tokens,
            round(stats.cost_usd, 12),
            stats.unpriced_attempts,
        )

    assert straight.usage.cost_usd > 0
    assert accounting(resumed.usage) == accounting(straight.usage)
    for name in ("extract", "classify"):
        assert accounting(resumed.steps[name].usage) == accounting(straight.steps[name].usage)
    assert len(resumed.calls) == len(straight.calls) == 2
    # ... and what the store recorded for the run is the same accounting.
    async with durable_engine(tmp_path / "t.db") as engine:
        assert accounting(engine.load("r1").usage) == accounting(straight.usage)


async def test_a_completed_run_id_returns_the_recorded_result_and_runs_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    async with durable_engine(path, {"m": model}) as engine:
        first = await engine.run(pipeline(counts, set()), INPUTS, run_id="done1")
    assert first.ok and len(model.calls) == 2

    for inputs in (None, INPUTS):
        async with durable_engine(path, {"m": model}) as engine:
            again = await engine.run(pipeline(counts, {"classify"}), inputs, run_id="done1")
        assert counts == {"extract": 1, "classify": 1, "summarize": 1, "length": 1}
        assert len(model.calls) == 2
        assert again.ok
        assert again.outputs == first.outputs
        assert isinstance(again["extract"], Facts), "typed, not a dict"
        assert isinstance(again["classify"], Label)
        assert isinstance(again["summarize"], Summary)
        assert again.inputs == INPUTS
        assert sorted((c.step, c.input_tokens, c.output_tokens) for c in again.calls) == sorted(
            (c.step, c.input_tokens, c.output_tokens) for c in first.calls
        )
        assert again.usage.to_dict() | {"latency_s": 0} == first.usage.to_dict() | {"latency_s": 0}
        assert {n: r.status for n, r in again.steps.items()} == {
            n: r.status for n, r in first.steps.items()
        }


async def test_a_recorded_result_lists_calls_in_the_order_they_were_made(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    async with durable_engine(path, {"m": priced_model(REPLIES)}) as engine:
        first = await engine.run(pipeline(Counts(), set()), INPUTS, run_id="done1")
        again = await engine.run(pipeline(Counts(), set()), None, run_id="done1")
    assert [c.step for c in first.calls] == ["extract", "classify"]
    assert [c.step for c in again.calls] == ["extract", "classify"]


async def test_load_returns_the_recorded_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    await crashed_run(path, counts, model)
    async with durable_engine(path) as engine:
        failed = engine.load("r1", pipeline(Counts(), set()))
        assert failed.status == "failed"
        assert failed.error is not None and failed.error.step == "classify"
        assert failed.steps["classify"].error is not None
        assert "crashed after the LLM call" in failed.steps["classify"].error.message
        assert isinstance(failed["extract"], Facts)
        untyped = engine.load("r1")  # without the flow: plain JSON values
        assert untyped["extract"] == {"topic": "pricing", "points": ["too high", "unclear"]}
        with pytest.raises(InputError, match="no run 'nope'"):
            engine.load("nope")
    assert counts["extract"] == 1


async def test_load_needs_a_store() -> None:
    with pytest.raises(ConfigurationError):
        tl.Engine().load("r1")


# -- refusing to resume the wrong thing -------------------------------------------------------


async def test_resume_with_different_inputs_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    await crashed_run(path, counts, model)
    async with durable_engine(path, {"m": model}) as engine:
        with pytest.raises(InputError, match="other inputs"):
            await engine.run(pipeline(counts, set()), {"text": "something else"}, run_id="r1")
        # Completed runs too.
        done = await engine.run(pipeline(counts, set()), run_id="r1")
        assert done.ok
        with pytest.raises(InputError, match="other inputs"):
            await engine.run(pipeline(counts, set()), {"text": "something else"}, run_id="r1")
    assert counts == {"extract": 1, "classify": 2, "summarize": 1, "length": 1}


async def test_a_run_of_another_flow_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    await crashed_run(path, counts, model)
    other = tl.Flow("other", inputs={"text": str})

    @other.step
    def shout(text: str) -> str:
        counts.hit("shout")
        return text.upper()

    async with durable_engine(path, {"m": model}) as engine:
        with pytest.raises(InputError, match="belongs to flow 'pipeline'"):
            await engine.run(other, INPUTS, run_id="r1")
    assert counts["shout"] == 0


async def test_an_unknown_run_id_without_inputs_is_an_input_error(tmp_path: Path) -> None:
    counts = Counts()
    async with durable_engine(tmp_path / "t.db") as engine:
        with pytest.raises(InputError):
            await engine.run(pipeline(counts, set()), None, run_id="never-ran")
        assert engine.store is not None
        assert engine.store.get_run("never-ran") is None
    assert not counts


async def test_a_new_run_id_is_generated_and_recorded(tmp_path: Path) -> None:
    async with durable_engine(tmp_path / "t.db", {"m": priced_model(REPLIES)}) as engine:
        one = await engine.run(pipeline(Counts(), set()), INPUTS)
        two = await engine.run(pipeline(Counts(), set()), INPUTS)
        assert one.run_id != two.run_id
        assert engine.store is not None
        assert {r.run_id for r in engine.store.list_runs()} == {one.run_id, two.run_id}


# -- calls within a step, mapped elements, loop rounds ----------------------------------------


async def test_calls_made_before_a_crash_replay_and_only_the_rest_are_sent(
    tmp_path: Path,
) -> None:
    counts = Counts()
    model = priced_model(lambda request: request.prompt_text().upper())
    crash = {"after_two": True}
    flow = tl.Flow("three-calls", inputs={"text": str})

    @flow.step
    async def chat(text: str, llm: tl.LLM) -> list[str]:
        counts.hit("chat")
        replies = [await llm.generate(f"{text} one", model="m")]
        replies.append(await llm.generate(f"{text} two", model="m"))
        if crash["after_two"]:
            raise RuntimeError("crash between calls")
        replies.append(await llm.generate(f"{text} three", model="m"))
        return replies

    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        assert not (await engine.run(flow, {"text": "hi"}, run_id="c")).ok
    assert len(model.calls) == 2
    crash["after_two"] = False
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(flow, None, run_id="c")
    assert result["chat"] == ["HI ONE", "HI TWO", "HI THREE"]
    assert len(model.calls) == 3, "only the third call was sent"
    assert [c.source for c in result.calls] == ["journal", "journal", "live"]
    assert [c.call for c in result.calls] == [1, 2, 3]
    assert result.usage.calls == 3


async def test_a_partly_done_map_step_replays_its_elements_calls(tmp_path: Path) -> None:
    counts = Counts()
    model = priced_model(lambda request: f"label for {request.prompt_text()}")
    crash = {"element": True}
    flow = tl.Flow("mapped", inputs={"n": int})

    @flow.step
    def numbers(n: int) -> list[int]:
        counts.hit("numbers")
        return list(range(n))

    @flow.step(map_over="numbers")
    async def label(numbers: int, llm: tl.LLM) -> str:
        counts.hit(f"label[{numbers}]")
        reply = await llm.generate(f"item {numbers}", model="m")
        if numbers == 2 and crash["element"]:
            await asyncio.sleep(0.01)  # the other elements finish first
            raise RuntimeError("element 2 crashed after its call")
        return reply  # type: ignore[no-any-return]

    @flow.step
    def joined(label: list[str]) -> str:
        counts.hit("joined")
        return " | ".join(label)

    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        first = await engine.run(flow, {"n": 5}, run_id="map")
    assert first.steps["label"].status == "failed"
    assert len(model.calls) == 5
    crash["element"] = False
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(flow, None, run_id="map")
    assert result.ok, result.error
    assert len(model.calls) == 5, "every element's call was journaled and replayed"
    label_calls = [c for c in result.calls if c.step == "label"]
    assert sorted(c.index for c in label_calls) == [0, 1, 2, 3, 4]  # type: ignore[type-var]
    assert {c.source for c in label_calls} == {"journal"}
    assert result["joined"] == " | ".join(f"label for item {i}" for i in range(5))
    assert counts["numbers"] == 1, "the completed upstream step did not run again"
    assert counts["joined"] == 1
    assert result.steps["label"].elements == 5
    assert result.usage.calls == 5


class Draft(BaseModel):
    text: str
    final: bool


async def test_loop_rounds_replay_from_the_journal(tmp_path: Path) -> None:
    counts = Counts()
    model = priced_model(lambda request: {"text": request.prompt_text()[-30:], "final": False})
    crash = {"round3": True}
    flow = tl.Flow("loop", inputs={"topic": str})

    @flow.step(max_rounds=3, until=lambda d: d.final)
    async def refine(topic: str, round: tl.Round[Draft], llm: tl.LLM) -> Draft:
        counts.hit(f"round{round.number}")
        previous = round.previous.text if round.previous else ""
        draft = await llm.generate(
            f"round {round.number} on {topic} after {previous!r}", output=Draft, model="m"
        )
        if round.number == 3 and crash["round3"]:
            raise RuntimeError("crash in round 3 after its call")
        return draft  # type: ignore[no-any-return]

    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        first = await engine.run(flow, {"topic": "tea"}, run_id="loop")
    assert not first.ok and len(model.calls) == 3
    crash["round3"] = False
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(flow, None, run_id="loop")
    assert result.ok, result.error
    assert len(model.calls) == 3, "all three rounds' calls were replayed"
    assert [c.round for c in result.calls] == [1, 2, 3]
    assert {c.source for c in result.calls} == {"journal"}
    assert result.steps["refine"].rounds == 3
    assert isinstance(result["refine"], Draft)
    loop = [(d.kind, d.outcome) for d in result.decisions if d.step == "refine"]
    assert loop == [("loop", "continue"), ("loop", "continue"), ("loop", "stop")]
    # And once completed, the recorded result has the same decisions.
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        recorded = await engine.run(flow, None, run_id="loop")
    assert [d.to_dict() for d in recorded.decisions] == [d.to_dict() for d in result.decisions]
    assert counts == {"round1": 2, "round2": 2, "round3": 2}


# -- decisions and budgets --------------------------------------------------------------------


def routed(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("routed", inputs={"text": str})

    @flow.step
    async def route(text: str, llm: tl.LLM) -> Literal["short", "long"]:
        counts.hit("route")
        reply = await llm.generate(f"route {text}", model="m")
        return "short" if "short" in reply else "long"

    @flow.step(when=tl.branch("route", "short"))
    def short(text: str) -> str:
        counts.hit("short")
        return text[:3]

    @flow.step(when=tl.branch("route", "long"))
    def long(text: str) -> str:
        counts.hit("long")
        return text

    @flow.step(when=lambda route: route == "short")
    def note(route: str) -> str:
        counts.hit("note")
        return f"routed {route}"

    @flow.step
    def final(note: str, short: str | None = None, long: str | None = None) -> str:
        counts.hit("final")
        if crash["final"]:
            raise RuntimeError("final crashed")
        return f"{note}: {short or long}"

    return flow


async def test_routing_decisions_are_restored(tmp_path: Path) -> None:
    counts, crash = Counts(), {"final": True}
    model = priced_model(lambda request: "short please")
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        first = await engine.run(routed(counts, crash), {"text": "abcdef"}, run_id="d")
    assert first.steps["final"].status == "failed"
    crash["final"] = False
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        resumed = await engine.run(routed(counts, crash), None, run_id="d")
        recorded = await engine.run(routed(counts, crash), None, run_id="d")
    assert resumed.ok and resumed["final"] == "routed short: abc"
    assert counts == {"route": 1, "short": 1, "note": 1, "final": 2}
    assert resumed.steps["long"].status == "skipped"

    def decisions(result: tl.RunResult) -> list[dict[str, Any]]:
        return sorted((d.to_dict() for d in result.decisions), key=lambda d: d["step"])

    assert decisions(resumed) == decisions(first) == decisions(recorded)
    by_step = {d.step: d for d in resumed.decisions}
    assert (by_step["short"].kind, by_step["short"].outcome) == ("branch", "run")
    assert (by_step["long"].kind, by_step["long"].outcome) == ("branch", "skip")
    assert (by_step["note"].kind, by_step["note"].outcome) == ("when", "run")
    assert by_step["note"].values == {"route": "short"}


def budgeted(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("budgeted", inputs={"text": str})

    @flow.step
    async def first(text: str, llm: tl.LLM) -> str:
        counts.hit("first")
        return await llm.generate(f"first {text}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def second(first: str, llm: tl.LLM) -> str:
        counts.hit("second")
        if crash["second"]:
            raise RuntimeError("crashed before any call")
        a = await llm.generate(f"second a {first}", model="m")
        b = await llm.generate(f"second b {first}", model="m")
        return f"{a}/{b}"

    return flow


@pytest.mark.parametrize(("max_calls", "ok", "sent"), [(2, False, 2), (3, True, 3)])
async def test_restored_spending_counts_against_the_resumed_runs_budget(
    tmp_path: Path, max_calls: int, ok: bool, sent: int
) -> None:
    counts, crash = Counts(), {"second": True}
    model = priced_model(lambda request: "ok")
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        assert not (await engine.run(budgeted(counts, crash), {"text": "x"}, run_id="b")).ok
    assert len(model.calls) == 1
    crash["second"] = False
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(
            budgeted(counts, crash), None, run_id="b", budget=tl.Budget(max_calls=max_calls)
        )
    # The restored first call counts: second's two calls fit only in a budget of 3.
    assert result.ok is ok
    assert len(model.calls) == sent
    if not ok:
        assert result.error is not None
        assert (result.error.type, result.error.budget) == ("BudgetExceededError", "max_calls")
    assert counts["first"] == 1


async def test_restored_cost_counts_against_a_usd_budget(tmp_path: Path) -> None:
    # What each step costs, from an uninterrupted run.
    async with durable_engine(tmp_path / "control.db", {"m": priced_model(lambda r: "ok")}) as e:
        control = await e.run(budgeted(Counts(), {"second": False}), {"text": "x"})
    first_cost = control.steps["first"].usage.cost_usd
    second_cost = control.steps["second"].usage.cost_usd
    assert first_cost > 0 and second_cost > 0

    counts, crash = Counts(), {"second": True}
    model = priced_model(lambda request: "ok")
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        crashed = await engine.run(budgeted(counts, crash), {"text": "x"}, run_id="b")
    assert crashed.usage.cost_usd == pytest.approx(first_cost)
    crash["second"] = False
    # Enough for what is left to do, but not on top of what the first run spent.
    budget = tl.Budget(max_usd=second_cost + first_cost / 2, reserve_output_tokens=1)
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(budgeted(counts, crash), None, run_id="b", budget=budget)
    assert not result.ok
    assert result.error is not None and result.error.budget == "max_usd"
    assert len(model.calls) < 3
    assert result.usage.cost_usd <= budget.max_usd  # type: ignore[operator]


async def test_a_batch_engine_budget_counts_restored_spending(tmp_path: Path) -> None:
    counts, crash = Counts(), {"second": True}
    model = priced_model(lambda request: "ok")
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        assert not (await engine.run(budgeted(counts, crash), {"text": "x"}, run_id="b")).ok
    crash["second"] = False
    async with durable_engine(
        tmp_path / "t.db", {"m": model}, budget=tl.Budget(max_calls=2)
    ) as engine:
        result = await engine.run(budgeted(counts, crash), None, run_id="b")
    assert not result.ok
    assert result.error is not None and result.error.budget == "max_calls"
    assert len(model.calls) == 2


def test_priced_config_prices_the_test_model() -> None:
    assert PRICED.prices.price("function:test") is not None


def test_the_durable_api_is_exported_from_trellis() -> None:
    from trellis import errors
    from trellis.flow import policy

    assert tl.Cache is policy.Cache  # type: ignore[attr-defined]
    for name in ("StoreError", "SerializationError", "RunLockedError", "StepChangedError"):
        assert getattr(tl, name) is getattr(errors, name), name
        assert name in tl.__all__
