"""examples/agents_vote.py: parallel reviewers, majority vote, a judge only on ties."""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import load_example

REQUEST = "Annual customer asks for a refund of 5 unused months; policy says 30 days."
JUDGE_SYSTEM = "You are the head of customer operations"


@pytest.fixture(scope="module")
def vote() -> ModuleType:
    return load_example("agents_vote")


class Script:
    """Each reviewer (found by its brief, the system prompt) votes as scripted, after a
    short pause; the judge rules ``judge_says``."""

    def __init__(self, vote: ModuleType, verdicts: dict[str, str], judge_says: str) -> None:
        self.briefs = {r.brief: r.name for r in vote.PANEL}
        self.verdicts = verdicts
        self.judge_says = judge_says
        self.in_flight = self.peak = 0
        self.reviewer_requests: dict[str, tl.ModelRequest] = {}
        self.judge_requests: list[tl.ModelRequest] = []
        self.model = tl.FunctionModel(self.reply)

    async def reply(self, request: tl.ModelRequest) -> dict[str, Any]:
        system = request.messages[0].content
        assert request.messages[0].role == "system" and request.schema_name == "Ballot"
        if system.startswith(JUDGE_SYSTEM):
            self.judge_requests.append(request)
            return {"verdict": self.judge_says, "rationale": "goodwill outweighs the cost"}
        name = self.briefs[system]
        self.reviewer_requests[name] = request
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return {"verdict": self.verdicts[name], "rationale": f"{name} says {self.verdicts[name]}"}


async def _run(vote: ModuleType, script: Script) -> tl.RunResult:
    async with tl.Engine(models={"small": script.model, "large": script.model}) as engine:
        result = await engine.run(vote.flow, {"request": REQUEST})
    result.raise_for_status()
    return result


@pytest.mark.parametrize(
    ("verdicts", "winner", "count"),
    [
        ({"policy": "deny", "advocate": "grant", "risk": "grant", "finance": "grant"}, "grant", 3),
        ({"policy": "deny", "advocate": "deny", "risk": "deny", "finance": "grant"}, "deny", 3),
        ({"policy": "deny", "advocate": "deny", "risk": "deny", "finance": "deny"}, "deny", 4),
    ],
)
async def test_a_majority_decides_and_the_judge_is_not_called(
    vote: ModuleType, verdicts: dict[str, str], winner: str, count: int
) -> None:
    script = Script(vote, verdicts, judge_says="grant")
    result = await _run(vote, script)

    assert [(v.reviewer, v.verdict) for v in result["votes"]] == list(verdicts.items())
    assert result["tally"].majority == winner
    ruling = result["ruling"]
    assert (ruling.verdict, ruling.decided_by) == (winner, "majority")
    assert ruling.reasoning == f"{count} of 4 reviewers voted {winner}"
    assert script.judge_requests == []
    assert result.steps["judge"].status == "skipped"
    [decision] = [d for d in result.decisions if d.step == "judge"]
    assert (decision.kind, decision.outcome) == ("when", "skip")
    assert decision.values == {"tally": result["tally"]}


@pytest.mark.parametrize("judge_says", ["grant", "deny"])
async def test_a_tie_goes_to_the_judge_once(vote: ModuleType, judge_says: str) -> None:
    verdicts = {"policy": "deny", "advocate": "grant", "risk": "deny", "finance": "grant"}
    script = Script(vote, verdicts, judge_says=judge_says)
    result = await _run(vote, script)

    assert result["tally"].counts == {"deny": 2, "grant": 2}
    assert result["tally"].majority is None
    [request] = script.judge_requests
    prompt = request.prompt_text()
    for name, verdict in verdicts.items():  # the judge weighs every argument
        assert f"- {name} ({verdict}): {name} says {verdict}" in prompt
    ruling = result["ruling"]
    assert (ruling.verdict, ruling.decided_by) == (judge_says, "judge")
    assert ruling.reasoning == "goodwill outweighs the cost"
    assert [c.step for c in result.calls].count("judge") == 1


async def test_reviewers_vote_concurrently_each_with_its_own_model_and_temperature(
    vote: ModuleType,
) -> None:
    verdicts = {"policy": "deny", "advocate": "grant", "risk": "grant", "finance": "grant"}
    script = Script(vote, verdicts, judge_says="deny")
    result = await _run(vote, script)

    assert script.peak == len(vote.PANEL) == 4  # all four were in flight at once
    assert result.steps["votes"].elements == 4
    for reviewer in vote.PANEL:
        request = script.reviewer_requests[reviewer.name]
        assert request.temperature == reviewer.temperature
        assert REQUEST in request.prompt_text()
    roles = sorted((c.index, c.role) for c in result.calls if c.step == "votes")
    assert roles == [(i, r.model) for i, r in enumerate(vote.PANEL)]


async def test_on_the_simulator_the_judge_runs_exactly_on_ties(vote: ModuleType) -> None:
    decided_by = set()
    for seed in range(6):
        models = {"small": f"sim:small?seed={seed}", "large": f"sim:large?seed={seed}"}
        async with tl.Engine(models=models) as engine:
            result = await engine.run(vote.flow, {"request": REQUEST})
        result.raise_for_status()
        counts = result["tally"].counts
        tie = len(set(counts.values())) == 1 and len(counts) == 2
        assert (result.steps["judge"].status == "done") == tie
        ruling = result["ruling"]
        decided_by.add(ruling.decided_by)
        assert ruling.decided_by == ("judge" if tie else "majority")
        assert sum(counts.values()) == len(ruling.votes) == 4
    assert decided_by == {"majority", "judge"}  # these seeds exercise both paths
