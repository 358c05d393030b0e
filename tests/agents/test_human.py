"""Human in the loop: a step waits for a person without holding anything in memory.

The run ends with status ``waiting``; ``engine.reply`` (from a new engine and store
connection, as another process days later would) records the answer and resumes the run.
Every step function and model call is counted, so "nothing runs twice" is asserted
directly: completed steps and journaled LLM calls are replayed; only the waiting step's
code runs again, up to its question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, TypeAdapter

import trellis as tl
from trellis.engine.journal import record_from_row
from trellis.errors import ConfigurationError, FlowDefinitionError, InputError
from trellis.store import SQLiteStore

from . import Counts, durable_engine


class Ticket(BaseModel):
    title: str
    priority: Literal["low", "high"]


TICKET = {"title": "Refund not received", "priority": "high"}


def escalation_flow(counts: Counts) -> tl.Flow:
    """draft (LLM) -> review (LLM summary, then a person approves) -> create;
    ``stats`` is independent of the review."""
    flow = tl.Flow("escalation", inputs={"complaint": str})

    @flow.step
    async def draft(complaint: str, llm: tl.LLM) -> Ticket:
        counts.hit("draft")
        return await llm.generate(f"Ticket for: {complaint}", output=Ticket)

    @flow.step
    async def review(draft: Ticket, llm: tl.LLM, human: tl.Human) -> tl.Approval:
        counts.hit("review")
        summary = await llm.generate(f"Summarise: {draft.title}")
        return await human.approve(
            "Create this escalation ticket?", details={"ticket": draft, "summary": summary}
        )

    @flow.step
    def create(draft: Ticket, review: tl.Approval) -> str:
        counts.hit("create")
        if not review.approved:
            return f"not created: {review.comment}"
        return f"created: {draft.title}"

    @flow.step
    def stats(complaint: str) -> int:
        counts.hit("stats")
        return len(complaint)

    return flow


def counting_model(counts: Counts) -> tl.FunctionModel:
    def reply(request: tl.ModelRequest) -> Any:
        counts.hit("model")
        return TICKET if request.schema_name == "Ticket" else "A refund is late."

    return tl.FunctionModel(reply, name="function:test")


INPUTS = {"complaint": "I was charged twice and no refund came."}


async def start(db: Path, counts: Counts, run_id: str = "w1") -> tl.RunResult:
    async with durable_engine(db, {"default": counting_model(counts)}) as engine:
        return await engine.run(escalation_flow(counts), INPUTS, run_id=run_id)


async def reply(
    db: Path, counts: Counts, step: str, answer: Any, run_id: str = "w1"
) -> tl.RunResult:
    """Reply from a fresh engine and store connection (another process, days later)."""
    async with durable_engine(db, {"default": counting_model(counts)}) as engine:
        return await engine.reply(escalation_flow(counts), run_id, step, answer)


def stored_status(db: Path, run_id: str) -> str:
    store = SQLiteStore(db)
    try:
        row = store.get_run(run_id)
        assert row is not None
        return row.status
    finally:
        store.close()


# --------------------------------------------------------------------------- waiting


async def test_a_step_waiting_for_approval_parks_the_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    result = await start(db, counts)

    assert result.status == "waiting"
    assert not result.ok
    assert stored_status(db, "w1") == "waiting"
    review = result.steps["review"]
    assert review.status == "waiting"
    assert review.reason == "waiting for input: Create this escalation ticket?"
    # Dependents wait; independent steps ran.
    assert result.steps["create"].status == "pending"
    assert result.steps["create"].reason == "waits for step 'review'"
    assert result.steps["draft"].status == "done"
    assert result["stats"] == len(INPUTS["complaint"])
    assert counts == {"draft": 1, "review": 1, "stats": 1, "model": 2}


async def test_the_question_is_recorded_with_prompt_schema_and_details(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    result = await start(db, Counts())
    question = result.steps["review"].question
    assert question is not None
    assert question["prompt"] == "Create this escalation ticket?"
    assert question["type"] == "Approval"
    assert question["schema"] == TypeAdapter(tl.Approval).json_schema()
    assert question["details"] == {"ticket": TICKET, "summary": "A refund is late."}
    assert question["index"] is None
    assert question["round"] is None
    assert isinstance(question["key"], str)
    assert question["key"].startswith("review|")
    assert "error" not in question

    # The question is in the store, readable without the flow.
    async with durable_engine(db) as engine:
        loaded = engine.load("w1")
    assert loaded.status == "waiting"
    assert loaded.steps["review"].status == "waiting"
    assert loaded.steps["review"].question == question
    assert loaded.steps["create"].status == "pending"


async def test_a_new_engine_approves_and_the_run_completes(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)

    result = await reply(db, counts, "review", tl.Approval(approved=True))

    assert result.status == "done", result.error
    assert stored_status(db, "w1") == "done"
    assert result["review"] == tl.Approval(approved=True, comment=None)
    assert result["create"] == "created: Refund not received"
    # Nothing ran twice: draft, stats and both model calls were replayed; the waiting
    # step's code ran again up to its question, which now has an answer.
    assert counts == {"draft": 1, "review": 2, "stats": 1, "model": 2, "create": 1}
    assert {c.source for c in result.calls} == {"journal"}


async def test_reject_with_a_comment(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)
    result = await reply(db, counts, "review", {"approved": False, "comment": "duplicate"})
    assert result.status == "done"
    assert result["review"] == tl.Approval(approved=False, comment="duplicate")
    assert result["create"] == "not created: duplicate"


async def test_rerunning_a_waiting_run_without_a_reply_stays_waiting(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)

    async with durable_engine(db, {"default": counting_model(counts)}) as engine:
        again = await engine.run(escalation_flow(counts), run_id="w1")

    assert again.status == "waiting"
    assert again.steps["review"].status == "waiting"
    assert again.steps["create"].status == "pending"
    assert stored_status(db, "w1") == "waiting"
    # No model call, no completed step ran again; only the waiting step's code, up to its
    # question.
    assert counts == {"draft": 1, "review": 2, "stats": 1, "model": 2}
    assert again.steps["review"].question == stored_question(db, "w1", "review")


def stored_question(db: Path, run_id: str, step: str) -> dict[str, Any] | None:
    store = SQLiteStore(db)
    try:
        [row] = [s for s in store.load_steps(run_id) if s.step == step]
        return record_from_row(row).question
    finally:
        store.close()


# --------------------------------------------------------------------------- invalid replies


async def test_an_invalid_answer_is_rejected_and_the_run_keeps_waiting(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)

    with pytest.raises(InputError, match=r"step 'review': the answer is not a valid Approval") as e:
        await reply(db, counts, "review", {"approved": "perhaps"})
    assert "approved" in str(e.value)
    assert "still waiting" in str(e.value)
    assert stored_status(db, "w1") == "waiting"

    # The bad answer was discarded: a plain re-run waits again, without the error.
    async with durable_engine(db, {"default": counting_model(counts)}) as engine:
        again = await engine.run(escalation_flow(counts), run_id="w1")
    assert again.status == "waiting"
    assert again.steps["review"].question is not None
    assert "error" not in again.steps["review"].question

    # A later valid answer works.
    done = await reply(db, counts, "review", {"approved": True, "comment": "ok"})
    assert done.status == "done"
    assert done["create"] == "created: Refund not received"
    assert counts["model"] == 2
    assert counts["create"] == 1


@pytest.mark.parametrize(
    "answer", ["yes", 1, None, {"comment": "missing the decision"}, {"approved": []}]
)
async def test_wrong_shapes_are_input_errors(tmp_path: Path, answer: Any) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)
    with pytest.raises(InputError, match="not a valid Approval"):
        await reply(db, counts, "review", answer)
    assert stored_status(db, "w1") == "waiting"
    assert "create" not in counts


async def test_reply_to_a_step_that_is_not_waiting(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)
    with pytest.raises(InputError, match=r"step 'stats' of run 'w1' is not waiting.*review"):
        await reply(db, counts, "stats", 3)
    with pytest.raises(InputError, match=r"step 'nope' of run 'w1' is not waiting"):
        await reply(db, counts, "nope", 3)
    assert stored_status(db, "w1") == "waiting"
    # Those replies were not recorded: the real one still works.
    assert (await reply(db, counts, "review", {"approved": True})).status == "done"


async def test_reply_to_an_unknown_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)
    with pytest.raises(InputError, match=r"no run 'missing'"):
        await reply(db, counts, "review", {"approved": True}, run_id="missing")


async def test_reply_to_a_done_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    await start(db, counts)
    await reply(db, counts, "review", {"approved": True})
    with pytest.raises(InputError, match=r"run 'w1' is done, not waiting for input"):
        await reply(db, counts, "review", {"approved": False})
    assert counts["create"] == 1


async def test_reply_needs_a_store() -> None:
    async with tl.Engine() as engine:
        with pytest.raises(ConfigurationError, match="no store"):
            await engine.reply(escalation_flow(Counts()), "w1", "review", {"approved": True})


# --------------------------------------------------------------------------- typed input


class Refund(BaseModel):
    amount: float
    currency: Literal["EUR", "USD"]


def refund_flow(counts: Counts) -> tl.Flow:
    flow = tl.Flow("refund", inputs={"order": str})

    @flow.step
    async def decide(order: str, human: tl.Human) -> str:
        counts.hit("decide")
        refund = await human.ask(
            f"Refund for order {order}?", output=Refund, details={"order": order}
        )
        counts.hit("answered")
        note = await human.ask("A note for the customer?", output=str)
        return f"{refund.amount:.2f} {refund.currency}: {note}"

    return flow


async def test_typed_input_and_two_questions_in_one_step(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = refund_flow(counts)
    async with durable_engine(db) as engine:
        first = await engine.run(flow, {"order": "A-17"}, run_id="rf")
    assert first.status == "waiting"
    question = first.steps["decide"].question
    assert question is not None
    assert question["type"] == "Refund"
    assert question["schema"]["required"] == ["amount", "currency"]
    assert question["details"] == {"order": "A-17"}

    async with durable_engine(db) as engine:
        with pytest.raises(InputError, match=r"currency"):
            await engine.reply(flow, "rf", "decide", {"amount": 12.5, "currency": "GBP"})
    async with durable_engine(db) as engine:
        second = await engine.reply(flow, "rf", "decide", {"amount": 12.5, "currency": "EUR"})
    # The first answer is in; the step now waits on its second question.
    assert second.status == "waiting"
    question2 = second.steps["decide"].question
    assert question2 is not None
    assert question2["prompt"] == "A note for the customer?"
    assert question2["type"] == "str"
    assert question2["key"] != question["key"]

    async with durable_engine(db) as engine:
        done = await engine.reply(flow, "rf", "decide", "Sorry for the delay")
    assert done.status == "done", done.error
    assert done["decide"] == "12.50 EUR: Sorry for the delay"
    assert counts["answered"] == 2  # once when answered, once on the final resume


async def test_human_inside_a_mapped_step_asks_one_element_at_a_time(tmp_path: Path) -> None:
    """Each element's question parks the step; answers are given in element order, the
    step waiting again on the next element's question until every element has one."""
    db = tmp_path / "runs.db"
    counts = Counts()
    flow = tl.Flow("labelling", inputs={"items": list[str]})

    @flow.step(map_over="items")
    async def label(items: str, llm: tl.LLM, human: tl.Human) -> str:
        guess = await llm.generate(f"Guess a label for {items}")
        return await human.ask(f"Label for {items}?", output=str, details={"guess": guess})

    def guess(request: tl.ModelRequest) -> str:
        counts.hit("model")
        return "spam"

    models = {"default": tl.FunctionModel(guess)}
    async with durable_engine(db, models) as engine:
        result = await engine.run(flow, {"items": ["a", "b", "c"]}, run_id="m1")

    answers = iter(["ham", "spam", "eggs"])
    for expected_index in range(3):
        assert result.status == "waiting"
        question = result.steps["label"].question
        assert question is not None
        assert question["index"] == expected_index
        assert question["prompt"] == f"Label for {'abc'[expected_index]}?"
        assert question["details"] == {"guess": "spam"}
        async with durable_engine(db, models) as engine:
            result = await engine.reply(flow, "m1", "label", next(answers))

    assert result.status == "done", result.error
    assert result["label"] == ["ham", "spam", "eggs"]
    assert counts["model"] == 3  # each element's LLM call was made once


# --------------------------------------------------------------------------- misuse


async def test_human_without_a_store_fails_the_step_clearly() -> None:
    counts = Counts()
    async with tl.Engine(models={"default": counting_model(counts)}) as engine:
        result = await engine.run(escalation_flow(counts), INPUTS)
    assert result.status == "failed"
    assert isinstance(result.exception, ConfigurationError)
    record = result.steps["review"]
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.type == "ConfigurationError"
    assert "step 'review' waits for a person" in record.error.message
    assert "store=" in record.error.message
    assert result.steps["create"].status == "cancelled"


def test_a_sync_step_cannot_ask_for_a_human() -> None:
    flow = tl.Flow("sync_human", inputs={"x": str})
    with pytest.raises(FlowDefinitionError, match=r"step 'ask'.*tl\.Human.*async def ask"):

        @flow.step
        def ask(x: str, human: tl.Human) -> str:
            return x

        flow.compile()


async def test_approval_model_defaults() -> None:
    assert tl.Approval(approved=True).comment is None
    assert tl.Approval.model_validate({"approved": False, "comment": "no"}).approved is False


async def test_two_independent_steps_wait_and_are_answered_separately(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    flow = tl.Flow("pair", inputs={"word": str})

    @flow.step
    async def word_ok(word: str, human: tl.Human) -> tl.Approval:
        return await human.approve(f"Is {word!r} acceptable?")

    @flow.step
    async def times(word: str, human: tl.Human) -> int:
        return await human.ask("How many times?", output=int)

    @flow.step
    def repeat(word: str, word_ok: tl.Approval, times: int) -> str:
        return word * times if word_ok.approved else ""

    async with durable_engine(db) as engine:
        first = await engine.run(flow, {"word": "ab"}, run_id="p1")
    assert first.status == "waiting"
    assert {n: r.status for n, r in first.steps.items()} == {
        "word_ok": "waiting",
        "times": "waiting",
        "repeat": "pending",
    }
    async with durable_engine(db) as engine:
        second = await engine.reply(flow, "p1", "times", 3)
    assert second.status == "waiting"
    assert second.steps["times"].status == "done"
    assert second.steps["word_ok"].status == "waiting"
    async with durable_engine(db) as engine:
        done = await engine.reply(flow, "p1", "word_ok", {"approved": True})
    assert done.status == "done"
    assert done["repeat"] == "ababab"


async def test_human_inside_a_loop_records_the_round(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    flow = tl.Flow("rounds", inputs={"topic": str})

    @flow.step(max_rounds=3, until=lambda d: d.endswith("!"))
    async def draft(topic: str, round: tl.Round[str], human: tl.Human) -> str:
        return await human.ask(f"Draft {round.number} about {topic}?", output=str)

    async with durable_engine(db) as engine:
        result = await engine.run(flow, {"topic": "tea"}, run_id="l1")
    for number, answer in ((1, "meh"), (2, "great!")):
        assert result.status == "waiting"
        question = result.steps["draft"].question
        assert question is not None
        assert (question["round"], question["prompt"]) == (number, f"Draft {number} about tea?")
        async with durable_engine(db) as engine:
            result = await engine.reply(flow, "l1", "draft", answer)
    assert result.status == "done"
    assert result["draft"] == "great!"
    assert result.steps["draft"].rounds == 2
