"""examples/adaptive_qa.py: classification routing, branch skips, bounded validation loop."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

SEED = 3
BRANCHES = {"direct": "direct", "snippets": "research", "reasoning": "reasoning"}


@pytest.fixture(scope="module")
def qa() -> ModuleType:
    return load_example("adaptive_qa")


@pytest.fixture(scope="module")
def results(qa: ModuleType) -> list[tl.RunResult]:
    """One pass over the sample questions on the simulator, shared by the tests below."""
    items = read_jsonl(EXAMPLES_DIR / "data" / "questions.jsonl")

    async def run_all() -> list[tl.RunResult]:
        out: dict[int, tl.RunResult] = {}
        models = {"small": f"sim:small?seed={SEED}", "large": f"sim:large?seed={SEED}"}
        async with tl.Engine(models=models) as engine:
            async for index, result in engine.run_many(qa.flow, items, concurrency=24):
                out[index] = result
        return [out[i] for i in range(len(items))]

    return asyncio.run(run_all())


def test_every_route_is_taken(results: list[tl.RunResult]) -> None:
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    routes = Counter(r["route"] for r in results)
    assert set(routes) == {"direct", "research", "reasoning"}


def test_route_follows_the_classification(qa: ModuleType, results: list[tl.RunResult]) -> None:
    for result in results:
        c = result["classification"]
        if c.requires_external_data:
            assert result["route"] == "research"
        elif c.complexity is qa.Complexity.SIMPLE:
            assert result["route"] == "direct"
        else:
            assert result["route"] == "reasoning"
        assert result["answer"].route == result["route"]


def test_exactly_one_branch_runs_the_others_are_skipped_by_branch(
    results: list[tl.RunResult],
) -> None:
    for result in results:
        route = result["route"]
        decisions = {d.step: d for d in result.decisions if d.kind == "branch"}
        assert set(decisions) == set(BRANCHES)
        ran = [step for step, label in BRANCHES.items() if result.steps[step].status == "done"]
        assert ran == [step for step, label in BRANCHES.items() if label == route]
        for step, label in BRANCHES.items():
            decision = decisions[step]
            assert decision.values == {"route": route}
            if label == route:
                assert decision.outcome == "run"
            else:
                assert decision.outcome == "skip"
                assert result.steps[step].status == "skipped"
        # research depends on the retrieval step and is skipped with it
        assert (result.steps["research"].status == "done") == (route == "research")
        # skipped branches made no model calls
        called = {c.step for c in result.calls}
        assert called <= {"classification", "direct", "research", "reasoning"}
        assert called - {"classification"} == ({"research"} if route == "research" else {route})


def test_research_answers_from_the_knowledge_base(
    qa: ModuleType, results: list[tl.RunResult]
) -> None:
    research = [r for r in results if r["route"] == "research"]
    assert research
    for result in research:
        snippets = result["snippets"]
        assert len(snippets) == 3
        assert all(s.source in qa.KNOWLEDGE_BASE for s in snippets)
        # retrieval is plain Python
        assert result.steps["snippets"].usage.attempts == 0


def test_reasoning_validates_and_retries_at_most_once(
    qa: ModuleType, results: list[tl.RunResult]
) -> None:
    reasoning = [r for r in results if r["route"] == "reasoning"]
    rounds = Counter(r.steps["reasoning"].rounds for r in reasoning)
    assert set(rounds) <= {1, 2}
    assert rounds[1] and rounds[2]  # this seed exercises both
    for result in reasoning:
        record = result.steps["reasoning"]
        loop = [d for d in result.decisions if d.step == "reasoning" and d.kind == "loop"]
        assert [d.values["round"] for d in loop] == list(range(1, record.rounds + 1))
        assert loop[-1].outcome == "stop"
        if record.rounds == 2:
            assert loop[0].outcome == "continue"  # round 1's verdict was invalid
        else:
            assert result["reasoning"].verdict.valid
        assert result["answer"].validated == result["reasoning"].verdict.valid
        # each round: one answer, then one validation, on the expected models
        tier = "large" if result["classification"].confidence < qa.ESCALATE_BELOW else "small"
        calls = [c for c in result.calls if c.step == "reasoning"]
        for number in range(1, record.rounds + 1):
            in_round = [(c.role, c.outcome) for c in calls if c.round == number]
            assert in_round == [(tier, "ok"), ("small", "ok")]


def _scripted(verdicts: list[dict[str, Any]]) -> tuple[tl.FunctionModel, list[tl.ModelRequest]]:
    """A model that routes to "reasoning" and returns the given verdicts in order."""
    seen: list[tl.ModelRequest] = []
    remaining = list(verdicts)

    def reply(request: tl.ModelRequest) -> dict[str, Any]:
        seen.append(request)
        if request.schema_name == "Classification":
            return {"complexity": "complex", "requires_external_data": False, "confidence": 0.9}
        if request.schema_name == "MultiStepAnswer":
            return {"reasoning_steps": ["a", "b"], "final_answer": "42", "assumptions": []}
        assert request.schema_name == "Verdict"
        return remaining.pop(0)

    return tl.FunctionModel(reply), seen


async def test_failed_validation_gets_exactly_one_more_round(qa: ModuleType) -> None:
    model, seen = _scripted(
        [
            {"valid": False, "problem": "step b does not follow from a"},
            {"valid": True, "problem": ""},
        ]
    )
    async with tl.Engine(models={"small": model, "large": model}) as engine:
        result = await engine.run(qa.flow, {"question": "What is six times seven?"})
    result.raise_for_status()
    assert result.steps["reasoning"].rounds == 2
    assert result["answer"].validated is True
    answers = [r.prompt_text() for r in seen if r.schema_name == "MultiStepAnswer"]
    assert len(answers) == 2
    assert "step b does not follow from a" in answers[1]  # round 2 is told what was wrong
    assert answers[0] != answers[1]


async def test_validation_loop_is_bounded(qa: ModuleType) -> None:
    invalid = {"valid": False, "problem": "circular"}
    model, seen = _scripted([invalid, invalid, invalid])
    async with tl.Engine(models={"small": model, "large": model}) as engine:
        result = await engine.run(qa.flow, {"question": "What is six times seven?"})
    result.raise_for_status()
    assert result.steps["reasoning"].rounds == 2  # never a third attempt
    assert sum(r.schema_name == "Verdict" for r in seen) == 2
    assert result["answer"].validated is False
    assert result["answer"].answer == "42"
