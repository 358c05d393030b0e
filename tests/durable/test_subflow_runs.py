"""Sub-flows at run time: child runs, once-and-only-once across a crash and resume inside
one, cost roll-up, budgets and concurrency across the boundary, maps, nested runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.store import MemoryStore, SQLiteStore

from . import Counts, durable_engine, priced_model, reply_by_schema


class Verdict(BaseModel):
    issue: str
    severity: int


REPLIES = reply_by_schema({"Verdict": {"issue": "price", "severity": 3}, None: "a fix"})


def review_flow(counts: Counts, crash: set[str]) -> tl.Flow:
    """The child: judge (LLM) -> propose (LLM, may crash after its call) -> report."""
    review = tl.Flow("review", inputs={"issue": str})

    @review.step
    async def judge(issue: str, llm: tl.LLM) -> Verdict:
        counts.hit(f"judge:{issue}")
        return await llm.generate(f"Judge {issue}", output=Verdict, model="m")  # type: ignore[no-any-return]

    @review.step
    async def propose(judge: Verdict, issue: str, llm: tl.LLM) -> str:
        counts.hit(f"propose:{issue}")
        text = await llm.generate(f"Fix {issue} ({judge.severity})", model="m")
        if issue in crash:
            raise RuntimeError("killed between the child's steps")
        return str(text)

    @review.step
    def report(judge: Verdict, propose: str) -> str:
        counts.hit("report")
        return f"{judge.severity}: {propose}"

    return review


def parent_flow(counts: Counts, crash: set[str], **kw: Any) -> tl.Flow:
    parent = tl.Flow("feedback", inputs={"issues": list[str]}, **kw)

    @parent.step
    def cleaned(issues: list[str]) -> list[str]:
        counts.hit("cleaned")
        return [i.strip() for i in issues]

    parent.subflow(
        review_flow(counts, crash),
        name="reviews",
        inputs={"issue": "cleaned"},
        map_over="cleaned",
    )

    @parent.step
    def joined(reviews: list[str]) -> str:
        counts.hit("joined")
        return " | ".join(reviews)

    return parent


INPUTS = {"issues": [" a ", "b"]}


async def test_a_subflow_runs_as_child_runs_and_returns_its_result() -> None:
    counts, model = Counts(), priced_model(REPLIES)
    store = MemoryStore()
    async with tl.Engine(store=store, models={"m": model}) as engine:
        result = await engine.run(parent_flow(counts, set()), INPUTS, run_id="p")
    assert result.ok, result.error
    assert result["joined"] == "3: a fix | 3: a fix"
    children = result.steps["reviews"].children
    assert [c.run_id for c in children] == ["p/reviews[0]", "p/reviews[1]"]
    assert [c.inputs for c in children] == [{"issue": "a"}, {"issue": "b"}]
    rows = store.list_runs(parent_id="p")
    assert {(r.run_id, r.status, r.item_index) for r in rows} == {
        ("p/reviews[0]", "done", 0),
        ("p/reviews[1]", "done", 1),
    }
    assert {s.step for s in store.load_steps("p/reviews[1]")} == {"judge", "propose", "report"}
    assert store.list_runs(top_level=True)[0].run_id == "p"
    assert len(store.list_runs(top_level=True)) == 1


async def test_crash_inside_a_subflow_resumes_inside_it_once_and_only_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    counts, model = Counts(), priced_model(REPLIES)
    async with durable_engine(path, {"m": model}) as engine:
        first = await engine.run(parent_flow(counts, {"b"}), INPUTS, run_id="r")
    assert first.status == "failed"
    assert first.steps["reviews"].status == "failed"
    assert isinstance(first.steps["reviews"].exception, tl.SubflowError)
    assert "r/reviews[1]" in str(first.steps["reviews"].reason)
    assert len(model.calls) == 4  # judge + propose, for each issue
    async with durable_engine(path, {"m": model}) as engine:  # a new "process"
        result = await engine.run(parent_flow(counts, set()), run_id="r")
    assert result.ok, result.error
    assert len(model.calls) == 4, "the journaled calls inside the child were replayed"
    assert result.usage.attempts == 4, "and counted once: the child's spend is not 'earlier'"
    assert counts == {
        "cleaned": 1,
        "judge:a": 1,
        "judge:b": 1,  # restored inside the child, not re-run
        "propose:a": 1,
        "propose:b": 2,  # re-run (it crashed), its LLM call replayed from the journal
        "report": 2,
        "joined": 1,
    }
    with SQLiteStore(path) as store:
        assert {r.run_id: r.status for r in store.list_runs(parent_id="r")} == {
            "r/reviews[0]": "done",
            "r/reviews[1]": "done",
        }


async def test_usage_and_cost_roll_up_exactly_into_the_step_and_the_run() -> None:
    counts, model = Counts(), priced_model(REPLIES)
    async with tl.Engine(store=MemoryStore(), models={"m": model}, config=_priced()) as engine:
        result = await engine.run(parent_flow(counts, set()), INPUTS, run_id="c")
    step = result.steps["reviews"]
    children = step.children
    child_cost = sum(c.usage.cost_usd for c in children)
    child_tokens = sum(c.usage.total_tokens for c in children)
    assert child_cost > 0
    assert step.usage.cost_usd == pytest.approx(child_cost, rel=0, abs=1e-15)
    assert step.usage.attempts == sum(c.usage.attempts for c in children) == 4
    assert step.usage.total_tokens == child_tokens
    assert result.usage.cost_usd == pytest.approx(child_cost, rel=0, abs=1e-15)
    assert result.usage.total_tokens == child_tokens
    per_call = sum(c.cost_usd or 0.0 for child in children for c in child.calls)
    assert result.usage.cost_usd == pytest.approx(per_call, rel=0, abs=1e-15)


async def test_the_parents_budget_applies_inside_the_subflow() -> None:
    counts, model = Counts(), priced_model(REPLIES)
    async with tl.Engine(models={"m": model}) as engine:
        result = await engine.run(parent_flow(counts, set()), INPUTS, budget=tl.Budget(max_calls=3))
    assert result.status == "failed"
    assert isinstance(result.exception, tl.BudgetExceededError)
    assert len(model.calls) == 3, "the fourth request was refused by the parent's guard"
    assert result.usage.attempts == 3


async def test_the_parents_concurrency_limit_applies_inside_the_subflow() -> None:
    live = peak = 0
    child = tl.Flow("slow", inputs={"x": int})

    @child.step
    async def work(x: int) -> int:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.01)
        live -= 1
        return x

    parent = tl.Flow("wide", inputs={"xs": list[int]}, concurrency=2)
    parent.subflow(child, name="each", inputs={"x": "xs"}, map_over="xs")
    result = await parent.run({"xs": list(range(8))})
    assert result.ok, result.error
    assert result["each"] == list(range(8))
    assert peak == 2


async def test_a_map_of_subflows_collects_failures() -> None:
    child = tl.Flow("check", inputs={"x": int})

    @child.step
    def positive(x: int) -> int:
        if x < 0:
            raise ValueError(f"{x} is negative")
        return x

    parent = tl.Flow("many", inputs={"xs": list[int]})
    parent.subflow(child, name="each", inputs={"x": "xs"}, map_over="xs", on_error="collect")
    result = await parent.run({"xs": [1, -2, 3]})
    assert result.ok, result.error
    out = result["each"]
    assert out[0] == 1 and out[2] == 3
    assert isinstance(out[1], tl.ElementFailure)
    assert out[1].error == "SubflowError" and "-2 is negative" in out[1].message
    assert result.steps["each"].element_failures == 1


async def test_rerun_changed_detects_a_change_inside_the_subflow() -> None:
    store = MemoryStore()
    counts, model = Counts(), priced_model(REPLIES)

    def build(suffix: str) -> tl.Flow:
        child = tl.Flow("inner", inputs={"x": int})

        @child.step
        def first(x: int) -> int:
            counts.hit("first")
            return x

        if suffix:

            @child.step
            def second(first: int) -> str:
                counts.hit("second")
                return f"{first}!"
        else:

            @child.step
            def second(first: int) -> str:
                counts.hit("second")
                return f"{first}"

        parent = tl.Flow("outer", inputs={"x": int})
        parent.subflow(child, name="inner")
        return parent

    async with tl.Engine(store=store, models={"m": model}) as engine:
        await engine.run(build(""), {"x": 1}, run_id="o")
        store.update_run("o", status="failed")  # as if it had been interrupted
        with pytest.raises(tl.StepChangedError, match="'inner'"):
            await engine.run(build("!"), {"x": 1}, run_id="o", rerun_changed=False)
        result = await engine.run(build("!"), run_id="o", rerun_changed=True)
    assert result.ok, result.error
    assert result["inner"] == "1!"
    assert counts == {"first": 1, "second": 2}, "only the changed child step re-ran"


async def test_a_run_started_inside_a_step_is_refused_pointing_to_subflow() -> None:
    inner = tl.Flow("inner", inputs={"x": int})
    inner.step(name="double")(lambda x: 2 * x)
    outer = tl.Flow("outer", inputs={"x": int})

    @outer.step
    async def nested(x: int) -> int:
        result = await inner.run({"x": x})
        return int(result["double"])

    result = await outer.run({"x": 2})
    assert result.status == "failed"
    assert isinstance(result.exception, tl.NestedRunError)
    assert "subflow" in str(result.exception)


def _priced() -> tl.Config:
    from . import PRICED

    return PRICED
