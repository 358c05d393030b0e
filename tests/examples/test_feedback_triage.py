"""examples/feedback_triage.py: routing, escalation and accounting over the sample data."""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

SEED = 7


@pytest.fixture(scope="module")
def triage() -> ModuleType:
    return load_example("feedback_triage")


@pytest.fixture(scope="module")
def items() -> list[dict[str, object]]:
    return read_jsonl(EXAMPLES_DIR / "data" / "feedback.jsonl")


async def _run_all(
    module: ModuleType, items: list[dict[str, object]], models: dict[str, object]
) -> list[tl.RunResult]:
    async def no_sleep(_: float) -> None:
        return None

    results: dict[int, tl.RunResult] = {}
    async with tl.Engine(models=models, seed=0, sleep=no_sleep) as engine:
        async for index, result in engine.run_many(module.flow, items, concurrency=16):
            results[index] = result
    assert sorted(results) == list(range(len(items)))
    return [results[i] for i in range(len(items))]


@pytest.fixture(scope="module")
def clean_results(triage: ModuleType, items: list[dict[str, object]]) -> list[tl.RunResult]:
    """One fault-free pass over the data set, shared by the tests below."""
    models = {"small": f"sim:small?seed={SEED}", "large": f"sim:large?seed={SEED}"}
    return asyncio.run(_run_all(triage, items, models))


async def test_every_item_is_triaged(clean_results: list[tl.RunResult]) -> None:
    assert len(clean_results) == 60
    for result in clean_results:
        assert result.ok, result.error
        final = result["triage"]
        assert final.sentiment == result["sentiment"]
        assert final.topics == result["topics"]
        assert final.plan == result["action_plan"]


async def test_escalation_runs_exactly_for_negative_high_priority(
    clean_results: list[tl.RunResult],
) -> None:
    escalated = skipped = 0
    for result in clean_results:
        sentiment, plan = result["sentiment"], result["action_plan"]
        should = sentiment.label == "negative" and plan.priority == "high"
        record = result.steps["escalation"]
        [decision] = [d for d in result.decisions if d.step == "escalation"]
        assert decision.kind == "when"
        assert decision.values == {"sentiment": sentiment, "action_plan": plan}
        if should:
            escalated += 1
            assert record.status == "done"
            assert decision.outcome == "run"
            ticket = result["escalation"]
            assert ticket.ticket_id.startswith("ESC-")
            assert ticket.actions == plan.items
            assert result["triage"].escalation == ticket
        else:
            skipped += 1
            assert record.status == "skipped"
            assert decision.outcome == "skip"
            assert "needs_escalation" in (record.reason or "")
            assert result["triage"].escalation is None
        # deterministic Python: the escalation step never calls a model
        assert not [c for c in result.calls if c.step == "escalation"]
    assert escalated > 0 and skipped > 0


async def test_topic_extraction_escalates_on_low_confidence(
    triage: ModuleType, clean_results: list[tl.RunResult]
) -> None:
    models_used: set[str] = set()
    for result in clean_results:
        topic_calls = [c for c in result.calls if c.step == "topics"]
        assert topic_calls
        expected = (
            "sim:large" if result["sentiment"].confidence < triage.ESCALATE_BELOW else "sim:small"
        )
        assert {c.model for c in topic_calls} == {expected}
        models_used.add(expected)
        # the other LLM steps always use the small model
        assert {c.model for c in result.calls if c.step != "topics"} == {"sim:small"}
    assert models_used == {"sim:large", "sim:small"}


async def test_run_cost_is_the_sum_of_call_costs(clean_results: list[tl.RunResult]) -> None:
    for result in clean_results:
        assert result.usage.cost_known
        assert result.usage.cost_usd > 0
        assert result.usage.cost_usd == pytest.approx(
            sum(c.cost_usd or 0.0 for c in result.calls), rel=1e-9
        )
        assert result.usage.cost_usd == pytest.approx(
            sum(r.usage.cost_usd for r in result.steps.values()), rel=1e-9
        )
        assert result.usage.attempts == len(result.calls)
        assert result.usage.input_tokens == sum(c.input_tokens for c in result.calls)


async def test_malformed_replies_are_reasked_and_counted(
    triage: ModuleType, items: list[dict[str, object]]
) -> None:
    # 30% of replies are cut-off JSON. Each call re-asks up to 3 times, then falls back to
    # the other model, so every item still gets valid outputs.
    models: dict[str, object] = {
        "small": {"model": f"sim:small?seed={SEED}&malformed_json=0.3", "fallbacks": ["large"]},
        "large": {"model": f"sim:large?seed={SEED}&malformed_json=0.3", "fallbacks": ["small"]},
    }
    results = await _run_all(triage, items, models)
    total_failures = 0
    for result in results:
        assert result.ok, result.error
        failed_calls = [c for c in result.calls if c.outcome != "ok"]
        assert {c.outcome for c in failed_calls} <= {tl.FailureMode.MALFORMED.value}
        assert result.usage.failures[tl.FailureMode.MALFORMED.value] == len(failed_calls)
        assert result.usage.attempts == result.usage.calls + len(failed_calls)
        # a re-ask is billed like any attempt
        assert result.usage.cost_usd == pytest.approx(
            sum(c.cost_usd or 0.0 for c in result.calls), rel=1e-9
        )
        total_failures += len(failed_calls)
    assert total_failures > 0
