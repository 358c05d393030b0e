"""examples/approval.py: the run waits for a person, durably; approval creates one ticket."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import load_example

FEEDBACK = "Our whole team has been locked out of SSO since 9am."
DRAFT = {
    "title": "SSO lockout for the whole account",
    "severity": "sev2",
    "team": "platform-engineering",
    "summary": "Every SSO sign-in fails with 'invalid assertion' since 09:00.",
}


@pytest.fixture(scope="module")
def approval() -> ModuleType:
    return load_example("approval")


@pytest.fixture
def tickets(approval: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The stand-in tracker, empty for each test."""
    created: list[Any] = []
    monkeypatch.setattr(approval, "TICKETS", created)
    return created


def _engine(path: Path, model: tl.Model) -> tl.Engine:
    """A fresh engine on the store file: as if in another process."""
    return tl.Engine(models={"small": model}, store=tl.SQLiteStore(path))


async def _start(approval: ModuleType, path: Path) -> tuple[str, tl.FunctionModel]:
    model = tl.FunctionModel(lambda request: DRAFT)
    async with _engine(path, model) as engine:
        result = await engine.run(approval.flow, {"feedback": FEEDBACK})
    assert len(model.calls) == 1
    return result.run_id, model


async def test_the_run_waits_with_the_draft_and_nothing_after_it_runs(
    approval: ModuleType, tickets: list[Any], tmp_path: Path
) -> None:
    model = tl.FunctionModel(lambda request: DRAFT)
    async with _engine(tmp_path / "runs.db", model) as engine:
        result = await engine.run(approval.flow, {"feedback": FEEDBACK})
        assert result.status == "waiting"
        assert result["draft_ticket"] == approval.TicketDraft(**DRAFT)
        step = result.steps["approval"]
        assert step.status == "waiting"
        assert step.question is not None
        assert step.question["prompt"] == "Create this escalation ticket?"
        assert step.question["details"] == DRAFT
        assert step.question["schema"]["required"] == ["approved"]
        for name in ("create_ticket", "notify"):
            assert result.steps[name].status == "pending"
        assert tickets == []
        # the store says the same
        assert engine.load(result.run_id).status == "waiting"


async def test_approval_from_a_new_engine_creates_the_ticket_once(
    approval: ModuleType, tickets: list[Any], tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    run_id, _ = await _start(approval, path)

    later = tl.FunctionModel(lambda request: pytest.fail("the draft must not be redone"))
    async with _engine(path, later) as engine:
        answer = {"approved": True, "comment": "go"}
        result = await engine.reply(approval.flow, run_id, "approval", answer)
        assert result.status == "done"
        assert result["approval"] == tl.Approval(approved=True, comment="go")
        ticket = result["create_ticket"]
        assert tickets == [ticket]
        assert ticket.title == DRAFT["title"] and ticket.id == f"ESC-{run_id[-8:].upper()}"
        assert result["notify"].outcome == "created" and ticket.id in result["notify"].message
        [decision] = [d for d in result.decisions if d.step == "create_ticket"]
        assert (decision.kind, decision.outcome) == ("when", "run")

        # the finished run is recorded: running or answering it again creates nothing
        again = await engine.run(approval.flow, run_id=run_id)
        assert again.status == "done" and again["create_ticket"] == ticket
        with pytest.raises(tl.InputError, match="not waiting"):
            await engine.reply(approval.flow, run_id, "approval", answer)
    assert later.calls == []
    assert len(tickets) == 1


async def test_a_rejection_creates_nothing(
    approval: ModuleType, tickets: list[Any], tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    run_id, _ = await _start(approval, path)
    async with _engine(path, tl.TestModel()) as engine:
        rejection = tl.Approval(approved=False, comment="not a sev2")
        result = await engine.reply(approval.flow, run_id, "approval", rejection)
    assert result.status == "done"
    assert result.steps["create_ticket"].status == "skipped"
    assert result["notify"] == approval.Notice(
        outcome="rejected", message="Escalation not created: not a sev2."
    )
    [decision] = [d for d in result.decisions if d.step == "create_ticket"]
    assert decision.outcome == "skip"
    assert decision.values == {"approval": rejection}
    assert tickets == []


async def test_an_invalid_answer_is_refused_and_the_run_keeps_waiting(
    approval: ModuleType, tickets: list[Any], tmp_path: Path
) -> None:
    path = tmp_path / "runs.db"
    run_id, _ = await _start(approval, path)
    async with _engine(path, tl.TestModel()) as engine:
        with pytest.raises(tl.InputError, match="approved"):
            await engine.reply(approval.flow, run_id, "approval", {"approved": "maybe later"})
        waiting = engine.load(run_id, approval.flow)
        assert waiting.status == "waiting"
        assert waiting.steps["approval"].status == "waiting"
        assert waiting.steps["create_ticket"].status == "pending"
        assert tickets == []

        # a valid answer still goes through
        result = await engine.reply(approval.flow, run_id, "approval", {"approved": True})
    assert result.status == "done"
    assert len(tickets) == 1
