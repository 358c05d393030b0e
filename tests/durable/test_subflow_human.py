"""Questions to a person inside sub-flows (plain and mapped), and a child's calls listed in
the parent's result.

A human step inside a child run parks the child (``waiting``) and the parent's sub-flow
step with it; ``engine.reply`` addresses the question by its step path from the parent
(``review/approve``, ``reviews[1]/approve``) or by the child's run id, records the answer
in the child's journal and resumes the parent: every step function and model call is
counted, so "nothing runs twice, nothing is paid twice" is asserted directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trellis as tl
from trellis.engine.records import recorded_result
from trellis.errors import InputError
from trellis.store import SQLiteStore

from . import Counts, durable_engine, priced_model

APPROVE = {"approved": True, "comment": "ok"}


def review_flow(counts: Counts) -> tl.Flow:
    """The child: draft (LLM) -> approve (a person; items starting with "auto" skip the
    question) -> publish."""
    review = tl.Flow("review", inputs={"issue": str})

    @review.step
    async def draft(issue: str, llm: tl.LLM) -> str:
        counts.hit(f"draft:{issue}")
        return str(await llm.generate(f"Draft a fix for {issue}", model="m"))

    @review.step
    async def approve(draft: str, issue: str, human: tl.Human) -> bool:
        counts.hit(f"approve:{issue}")
        if issue.startswith("auto"):
            return True
        answer = await human.approve(f"Publish the fix for {issue}?", details={"draft": draft})
        return answer.approved

    @review.step
    def publish(draft: str, approve: bool) -> str:
        counts.hit(f"publish:{draft}")
        return f"{'published' if approve else 'held'}: {draft}"

    return review


def single_flow(counts: Counts) -> tl.Flow:
    parent = tl.Flow("one_review", inputs={"issue": str})

    @parent.step
    async def triage(issue: str, llm: tl.LLM) -> str:
        counts.hit("triage")
        await llm.generate(f"Triage {issue}", model="m")
        return issue.strip()

    parent.subflow(review_flow(counts), name="review", inputs={"issue": "triage"})

    @parent.step
    def done(review: str) -> str:
        counts.hit("done")
        return review.upper()

    return parent


def mapped_flow(counts: Counts) -> tl.Flow:
    parent = tl.Flow("reviews", inputs={"issues": list[str]})
    parent.subflow(
        review_flow(counts), name="reviews", inputs={"issue": "issues"}, map_over="issues"
    )

    @parent.step
    def joined(reviews: list[str]) -> str:
        counts.hit("joined")
        return " | ".join(reviews)

    return parent


def model() -> tl.FunctionModel:
    return priced_model(lambda request: "a fix")


async def run(
    db: Path, flow: tl.Flow, inputs: dict[str, Any] | None, m: tl.FunctionModel, run_id: str
) -> tl.RunResult:
    async with durable_engine(db, {"m": m}) as engine:
        return await engine.run(flow, inputs, run_id=run_id)


async def reply(
    db: Path, flow: tl.Flow, m: tl.FunctionModel, run_id: str, step: str, answer: Any
) -> tl.RunResult:
    """From a fresh engine and store connection, as another process would."""
    async with durable_engine(db, {"m": m}) as engine:
        return await engine.reply(flow, run_id, step, answer)


def statuses(db: Path, parent: str) -> dict[str, str]:
    with SQLiteStore(db) as store:
        return {r.run_id: r.status for r in store.list_runs(parent_id=parent)}


async def test_a_question_inside_a_subflow_parks_the_parent_and_is_answered_by_path(
    tmp_path: Path,
) -> None:
    db, counts, m = tmp_path / "h.db", Counts(), model()
    first = await run(db, single_flow(counts), {"issue": " login "}, m, "s1")
    assert first.status == "waiting"
    step = first.steps["review"]
    assert step.status == "waiting"
    assert first.steps["done"].status == "pending"
    assert statuses(db, "s1") == {"s1/review": "waiting"}
    question = step.question
    assert question is not None and question["type"] == "sub-flow"
    [leaf] = question["subflow"]
    assert leaf["path"] == "review/approve"
    assert (leaf["run_id"], leaf["step"]) == ("s1/review", "approve")
    assert leaf["prompt"] == "Publish the fix for login?" and leaf["type"] == "Approval"
    assert leaf["details"] == {"draft": "a fix"}
    assert len(m.calls) == 2

    # An answer to a path that does not wait says what does.
    with pytest.raises(InputError, match=r"'review/draft'.*waiting: review/approve"):
        await reply(db, single_flow(counts), m, "s1", "review/draft", APPROVE)

    result = await reply(db, single_flow(counts), m, "s1", "review/approve", APPROVE)
    assert result.ok, result.error
    assert result["done"] == "PUBLISHED: A FIX"
    assert len(m.calls) == 2, "no call was paid twice"
    assert result.usage.attempts == len(result.calls) == 2, "nor counted twice"
    assert result.usage.cost_usd == pytest.approx(first.usage.cost_usd, rel=1e-12)
    assert counts == {
        "triage": 1,
        "draft:login": 1,
        "approve:login": 2,  # the waiting step's code runs again up to its question
        "publish:a fix": 1,
        "done": 1,
    }
    assert statuses(db, "s1") == {"s1/review": "done"}
    with pytest.raises(InputError, match="is done, not waiting"):
        await reply(db, single_flow(counts), m, "s1", "review/approve", APPROVE)


async def test_the_child_run_id_addresses_the_same_question(tmp_path: Path) -> None:
    db, counts, m = tmp_path / "h.db", Counts(), model()
    await run(db, single_flow(counts), {"issue": "x"}, m, "s2")
    rejected = {"approved": False, "comment": "no"}
    result = await reply(db, single_flow(counts), m, "s2/review", "approve", rejected)
    assert result.ok, result.error
    assert result.run_id == "s2", "the parent resumed and finished"
    assert result["done"] == "HELD: A FIX"
    assert len(m.calls) == 2


async def test_an_invalid_answer_inside_a_subflow_is_refused_and_the_run_keeps_waiting(
    tmp_path: Path,
) -> None:
    db, counts, m = tmp_path / "h.db", Counts(), model()
    await run(db, single_flow(counts), {"issue": "x"}, m, "s3")
    with pytest.raises(InputError, match=r"'review/approve'.*not a valid Approval.*still waiting"):
        await reply(db, single_flow(counts), m, "s3", "review/approve", {"approved": "maybe"})
    assert statuses(db, "s3") == {"s3/review": "waiting"}
    async with durable_engine(db, {"m": m}) as engine:
        waiting = engine.load("s3")
    [leaf] = waiting.steps["review"].question["subflow"]  # type: ignore[index]
    assert "not a valid Approval" in leaf["error"]
    result = await reply(db, single_flow(counts), m, "s3", "review/approve", APPROVE)
    assert result.ok, result.error
    assert len(m.calls) == 2
    assert counts["draft:x"] == 1 and counts["triage"] == 1


async def test_questions_of_a_mapped_subflow_are_answered_one_by_one(tmp_path: Path) -> None:
    db, counts, m = tmp_path / "h.db", Counts(), model()
    issues = {"issues": ["a", "auto-b", "c"]}
    first = await run(db, mapped_flow(counts), issues, m, "m1")
    assert first.status == "waiting"
    paths = [q["path"] for q in first.steps["reviews"].question["subflow"]]  # type: ignore[index]
    assert paths == ["reviews[0]/approve", "reviews[2]/approve"]
    assert statuses(db, "m1") == {
        "m1/reviews[0]": "waiting",
        "m1/reviews[1]": "done",  # asked nobody
        "m1/reviews[2]": "waiting",
    }
    assert len(m.calls) == 3

    second = await reply(db, mapped_flow(counts), m, "m1", "reviews[2]/approve", APPROVE)
    assert second.status == "waiting"
    [left] = second.steps["reviews"].question["subflow"]  # type: ignore[index]
    assert left["path"] == "reviews[0]/approve"
    assert statuses(db, "m1")["m1/reviews[2]"] == "done"

    rejected = {"approved": False, "comment": None}
    result = await reply(db, mapped_flow(counts), m, "m1/reviews[0]", "approve", rejected)
    assert result.ok, result.error
    assert result["joined"] == "held: a fix | published: a fix | published: a fix"
    assert len(m.calls) == 3, "each draft's call was paid once"
    assert result.usage.attempts == len(result.calls) == 3, "and counted once"
    assert result.usage.cost_usd == pytest.approx(first.usage.cost_usd, rel=1e-12)
    assert counts["draft:a"] == counts["draft:auto-b"] == counts["draft:c"] == 1
    assert counts["approve:auto-b"] == 1, "a finished child is restored, not re-run"
    assert counts["joined"] == 1
    assert counts["publish:a fix"] == 3


# -- a child's calls in the parent's result ----------------------------------------------------


def _cost(calls: list[tl.CallRecord]) -> float:
    return sum(c.cost_usd or 0.0 for c in calls)


async def test_child_calls_are_listed_once_in_the_parent_with_their_paths(tmp_path: Path) -> None:
    db, counts, m = tmp_path / "h.db", Counts(), model()
    issues = {"issues": ["auto-a", "auto-b"]}
    async with durable_engine(db, {"m": m}) as engine:  # priced: totals compared in dollars
        result = await engine.run(mapped_flow(counts), issues, run_id="c1")
    assert result.ok, result.error
    steps = [c.step for c in result.calls]
    assert sorted(steps) == ["reviews[0]/draft", "reviews[1]/draft"]
    assert len(result.calls) == len(m.calls) == result.usage.attempts == 2
    # The roll-up is unchanged by the listing: the run's totals count each call once.
    children = result.steps["reviews"].children
    assert result.usage.cost_usd > 0
    assert result.usage.cost_usd == pytest.approx(_cost(result.calls), rel=1e-12)
    assert result.usage.cost_usd == pytest.approx(
        sum(c.usage.cost_usd for c in children), rel=1e-12
    )
    assert result.usage.total_tokens == sum(c.total_tokens for c in result.calls)
    assert [c.step for child in children for c in child.calls] == ["draft", "draft"]

    # Read back: the recorded run (and so `trellis show --json`) lists the same calls.
    with SQLiteStore(db) as store:
        row = store.get_run("c1")
        assert row is not None
        shown = recorded_result(store, row, [])
    listed = shown.to_dict()["calls"]
    assert sorted(c["step"] for c in listed) == steps and len(listed) == 2
    assert shown.usage.cost_usd == pytest.approx(_cost(shown.calls), rel=1e-12)


async def test_a_resumed_parent_lists_its_restored_childrens_calls_once(tmp_path: Path) -> None:
    """The sub-flow step completed before the crash: on resume it is restored, and its
    children's calls are listed (replayed from the journal), not paid again."""
    db, m = tmp_path / "h.db", model()
    crash = {"on": True}
    child = tl.Flow("titled", inputs={"item": str})

    @child.step
    async def title(item: str, llm: tl.LLM) -> str:
        return str(await llm.generate(f"A title for {item}", model="m"))

    parent = tl.Flow("crashy", inputs={"items": list[str]})
    parent.subflow(child, name="titles", inputs={"item": "items"}, map_over="items")

    @parent.step
    def last(titles: list[str]) -> int:
        if crash["on"]:
            raise RuntimeError("killed after the sub-flow")
        return len(titles)

    first = await run(db, parent, {"items": ["x", "y"]}, m, "r1")
    assert first.status == "failed"
    assert sorted(c.step for c in first.calls) == ["titles[0]/title", "titles[1]/title"]
    crash["on"] = False
    result = await run(db, parent, None, m, "r1")
    assert result.ok, result.error
    assert len(m.calls) == 2
    assert sorted(c.step for c in result.calls) == ["titles[0]/title", "titles[1]/title"]
    assert {c.source for c in result.calls} == {"journal"}
    assert result.usage.attempts == len(result.calls) == 2


async def test_a_resume_after_the_answer_continues_inside_the_child(tmp_path: Path) -> None:
    """The answer is recorded, then the run stops (a step after it crashes): a plain
    resume (what `trellis resume` does) continues from inside the child and finishes the
    parent, the answer kept, nothing re-run that completed and nothing paid twice."""
    db, counts, m = tmp_path / "h.db", Counts(), model()
    crash = {"on": True}
    child = review_flow(counts)

    @child.step
    def archive(publish: str) -> str:
        counts.hit("archive")
        if crash["on"]:
            raise RuntimeError("killed after the answer")
        return publish + " (archived)"

    parent = tl.Flow("archived", inputs={"issue": str})
    parent.subflow(child, name="review", inputs={"issue": "issue"}, output="archive")
    await run(db, parent, {"issue": "x"}, m, "a1")
    failed = await reply(db, parent, m, "a1", "review/approve", APPROVE)
    assert failed.status == "failed" and failed.steps["review"].status == "failed"
    crash["on"] = False
    result = await run(db, parent, None, m, "a1")
    assert result.ok, result.error
    assert result["review"] == "published: a fix (archived)"
    assert len(m.calls) == 1 and result.usage.attempts == 1
    assert counts["draft:x"] == 1 and counts["publish:a fix"] == 1
    assert counts["approve:x"] == 2  # asked, then answered; the resume restored it
    assert counts["archive"] == 2
