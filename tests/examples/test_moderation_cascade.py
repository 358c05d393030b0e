"""examples/moderation_cascade.py: early exit, stages gated by when=, cost per comment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

MODELS = {"small": "sim:small?seed=7", "large": "sim:large?seed=7"}


@pytest.fixture
def mc(load_example: Callable[[str], ModuleType]) -> ModuleType:
    return load_example("moderation_cascade")


@pytest.fixture
def comments(
    read_jsonl: Callable[[Path], list[dict[str, Any]]], examples_dir: Path
) -> list[dict[str, Any]]:
    return read_jsonl(examples_dir / "data" / "comments.jsonl")


async def run_all(flow: tl.Flow, items: Sequence[Mapping[str, Any]]) -> list[tl.RunResult]:
    results: dict[int, tl.RunResult] = {}
    async with tl.Engine(models=MODELS) as engine:
        async for index, result in engine.run_many(flow, items, concurrency=16):
            results[index] = result
    return [results[i] for i in range(len(items))]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("You are a [slur].", "slur"),
        ("Great deals at www.example.test", "spam_link"),
        ("Click here to claim your reward", "spam_phrase"),
        ("THIS IS TOTALLY UNACCEPTABLE behaviour", "shouting"),
    ],
)
def test_quick_filter_blocks_obvious_patterns_with_high_confidence(
    mc: ModuleType, text: str, rule: str
) -> None:
    verdict = mc.quick_filter(text)
    assert (verdict.verdict, verdict.confidence, verdict.rule) == ("block", "high", rule)


def test_quick_filter_is_unsure_about_everything_else(mc: ModuleType) -> None:
    verdict = mc.quick_filter("URGENT: is the workshop still on?")  # one capital word is fine
    assert (verdict.verdict, verdict.confidence) == ("allow", "low")


def test_classifier_is_a_deterministic_local_model(mc: ModuleType) -> None:
    rude = mc.classifier("Nobody wants you here, you worthless idiot.")
    kind = mc.classifier("Thanks, this was really helpful!")
    assert rude.score > 0.9 and kind.score < 0.1
    assert "idiot" in rude.top_terms
    assert mc.classifier("Nobody wants you here, you worthless idiot.") == rude


async def test_obvious_spam_is_decided_by_the_quick_filter_with_no_llm_call(
    mc: ModuleType, comments: list[dict[str, Any]]
) -> None:
    results = await run_all(mc.flow, comments)
    early = [r for r in results if r["quick_filter"].confidence == "high"]
    assert len(early) >= 8  # the dataset's spam and slurs
    for result in early:
        assert result.ok
        assert result["decision"].decided_by == "quick_filter"
        assert result["decision"].verdict == "block"
        assert result.steps["classifier"].status == "skipped"
        assert result.steps["llm_review"].status == "skipped"
        assert result.usage.calls == result.usage.attempts == 0
        assert result.calls == []
    texts = {r.inputs["text"] for r in early}
    assert "CHEAP PILLS NO PRESCRIPTION best prices www.pharma-deals.example" in texts
    assert "You are a [slur] and a [slur]. Get off this site, [slur]." in texts


async def test_llm_runs_only_for_ambiguous_classifier_scores(
    mc: ModuleType, comments: list[dict[str, Any]]
) -> None:
    results = await run_all(mc.flow, comments)
    low, high = mc.AMBIGUOUS
    for result in results:
        assert result.ok, result.error
        classifier = result.steps["classifier"]
        review = result.steps["llm_review"]
        ambiguous = classifier.status == "done" and low <= classifier.output.score <= high
        assert (review.status == "done") is ambiguous
        assert result.usage.calls == (1 if ambiguous else 0)
        decided_by = result["decision"].decided_by
        if ambiguous:
            assert decided_by == "llm_review"
            assert {c.step for c in result.calls} == {"llm_review"}
            assert result.calls[0].role == "small"
        else:
            assert review.status == "skipped"
            assert decided_by in ("quick_filter", "classifier")
        # Every skip is explained in the record.
        skipped = {d.step: d for d in result.decisions if d.outcome == "skip"}
        if classifier.status == "skipped":
            assert skipped["classifier"].kind == "when"
            assert skipped["llm_review"].kind == "skip"  # its condition reads a skipped step
    stages = Counter(r["decision"].decided_by for r in results)
    assert set(stages) == {"quick_filter", "classifier", "llm_review"}
    assert stages["llm_review"] < len(results) / 4  # the LLM is the exception, not the rule


async def test_cost_per_comment_is_zero_when_decided_early_and_far_below_all_llm(
    mc: ModuleType, comments: list[dict[str, Any]]
) -> None:
    results = await run_all(mc.flow, comments)
    costs = [r.usage.cost_usd for r in results]
    assert all(r.usage.cost_known for r in results)
    for result, cost in zip(results, costs, strict=True):
        if result["decision"].decided_by == "llm_review":
            assert cost > 0
        else:
            assert cost == 0.0  # exactly: no call was made

    # The counterfactual: the same LLM review step on every comment.
    all_llm = tl.Flow("all-llm-moderation", inputs={"text": str})
    all_llm.step(mc.llm_review)
    baseline = await run_all(all_llm, comments)
    assert all(r.ok and r.usage.calls == 1 for r in baseline)
    cascade_mean = sum(costs) / len(costs)
    all_llm_mean = sum(r.usage.cost_usd for r in baseline) / len(baseline)
    assert 0 < cascade_mean < 0.35 * all_llm_mean
