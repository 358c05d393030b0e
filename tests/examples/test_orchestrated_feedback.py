"""examples/orchestrated_feedback.py: a sub-flow per issue, collected failures, urgency
routing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

ISSUES = {  # issue -> the category the scripted model gives it
    "SSO login fails with 'invalid assertion'": "technical",
    "October invoice shows the old seat count": "billing",
    "Please add saved custom views": "feature_request",
    "Support took five days to reply": "support",
    "The export button crashes the app": "technical",
}


@pytest.fixture
def of(load_example: Callable[[str], ModuleType]) -> ModuleType:
    return load_example("orchestrated_feedback")


@pytest.fixture
def tickets(
    read_jsonl: Callable[[Path], list[dict[str, Any]]], examples_dir: Path
) -> list[dict[str, Any]]:
    return read_jsonl(examples_dir / "data" / "tickets.jsonl")


def scripted_model(urgency: str, *, refuse: Collection[str] = ()) -> tl.FunctionModel:
    """Answers by output type. A categorisation echoes its issue as the rationale, and the
    later an issue is in the list, the sooner it answers: completion order is reversed."""
    issues = list(ISSUES)

    async def answer(request: tl.ModelRequest) -> dict[str, Any]:
        if request.schema_name == "TicketAnalysis":
            return {"sentiment": "negative", "urgency": urgency, "issues": issues}
        if request.schema_name == "CategoryLabel":
            issue = request.messages[-1].content.rsplit("Issue: ", 1)[1]
            await asyncio.sleep(0.002 * (len(issues) - issues.index(issue)))
            if issue in refuse:
                raise tl.RefusalError("scripted refusal", model="function:test")
            return {"category": ISSUES[issue], "rationale": issue}
        assert request.schema_name == "Reply"
        return {"subject": f"Re: your {urgency} ticket", "body": "We are on it."}

    return tl.FunctionModel(answer)


async def run_with(of: ModuleType, model: tl.FunctionModel) -> tl.RunResult:
    async with tl.Engine(models={"small": model, "large": model}) as engine:
        return await engine.run(of.flow, {"feedback": "Everything is broken."})


async def test_every_ticket_is_categorised_per_issue_and_answered_once(
    of: ModuleType, tickets: list[dict[str, Any]]
) -> None:
    results: list[tl.RunResult] = []
    async with tl.Engine(models={"small": "sim:small?seed=3", "large": "sim:large"}) as engine:
        async for _, result in engine.run_many(of.flow, tickets, concurrency=8):
            results.append(result)
    assert len(results) == len(tickets)
    for result in results:
        assert result.ok, result.error
        analysis = result["extract"]
        categorised = result["categorise"]
        assert len(categorised) == len(analysis.issues) == result.steps["categorise"].elements
        assert [c.issue for c in categorised] == analysis.issues
        for assignment, item in zip(result["assign"], categorised, strict=True):
            assert assignment.category == item.category
            assert assignment.owner == of.TEAM_DIRECTORY[item.category]

        urgent = analysis.urgency == "high"
        ran = {s for s in ("urgent_response", "standard_response") if s in result.outputs}
        assert ran == {"urgent_response" if urgent else "standard_response"}
        assert result["result"].path == ("urgent" if urgent else "standard")
        branch = {d.step: d.outcome for d in result.decisions if d.kind == "branch"}
        assert branch == {
            "urgent_response": "run" if urgent else "skip",
            "standard_response": "skip" if urgent else "run",
        }
        assert result.usage.calls == 1 + len(analysis.issues) + 1
    paths = {r["result"].path for r in results}
    assert paths == {"urgent", "standard"}  # the sample exercises both branches


@pytest.mark.parametrize(
    ("urgency", "path", "role"),
    [("high", "urgent", "large"), ("medium", "standard", "small"), ("low", "standard", "small")],
)
async def test_categorise_keeps_input_order_and_route_follows_urgency(
    of: ModuleType, urgency: str, path: str, role: str
) -> None:
    model = scripted_model(urgency)
    result = await run_with(of, model)
    assert result.ok, result.error
    issues = list(ISSUES)
    categorised = result["categorise"]
    # Element i is the answer to issue i, though the answers arrived in reverse order.
    assert [c.rationale for c in categorised] == issues
    assert [c.issue for c in categorised] == issues
    assert [c.category for c in categorised] == list(ISSUES.values())
    assert [(a.issue, a.owner) for a in result["assign"]] == [
        (issue, of.TEAM_DIRECTORY[category]) for issue, category in ISSUES.items()
    ]
    outcome = result["result"]
    assert outcome.path == path and outcome.reply.subject == f"Re: your {urgency} ticket"
    response = f"{path}_response"
    other = "standard_response" if path == "urgent" else "urgent_response"
    assert result.steps[response].status == "done"
    assert result.steps[other].status == "skipped"
    assert [c.role for c in result.calls if c.step == response] == [role]
    assert len(model.calls) == 1 + len(ISSUES) + 1
    children = result.steps["categorise"].children
    assert [c.run_id.rsplit("/", 1)[1] for c in children] == [
        f"categorise[{i}]" for i in range(len(ISSUES))
    ]
    assert result.usage.calls == 1 + len(ISSUES) + 1  # the sub-flows' calls roll up


async def test_a_failed_issue_is_collected_at_its_index(of: ModuleType) -> None:
    issues = list(ISSUES)
    refused = issues[1]
    result = await run_with(of, scripted_model("high", refuse={refused}))
    assert result.ok, result.error  # one bad element does not fail the ticket

    categorised = result["categorise"]
    assert len(categorised) == len(issues)
    failure = categorised[1]
    assert isinstance(failure, tl.ElementFailure)
    assert (failure.index, failure.error) == (1, "SubflowError")
    assert "RefusalError: scripted refusal" in failure.message
    assert "categorise[1]" in failure.message  # the child run that failed
    for index, item in enumerate(categorised):
        if index != 1:
            assert isinstance(item, of.CategorisedIssue)
            assert item.rationale == issues[index]
    assert result.steps["categorise"].element_failures == 1

    assignments = result["assign"]
    assert (assignments[1].issue, assignments[1].category) == (refused, None)
    assert assignments[1].owner == of.TRIAGE_QUEUE
    assert all(a.owner != of.TRIAGE_QUEUE for i, a in enumerate(assignments) if i != 1)
    children = result.steps["categorise"].children
    assert [c.status for c in children] == ["done", "failed", "done", "done", "done"]
    refusals = [
        (i, c.step) for i, r in enumerate(children) for c in r.calls if c.outcome == "refusal"
    ]
    assert refusals == [(1, "label")]
    assert result.usage.attempts == sum(r.usage.attempts for r in children) + 2
    assert result["result"].path == "urgent"
