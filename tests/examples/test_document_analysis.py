"""examples/document_analysis.py: selective context and per-step token accounting."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

LLM_STEPS = ("sentiment", "entities", "insights", "report")


@pytest.fixture(scope="module")
def da() -> ModuleType:
    return load_example("document_analysis")


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return [r["document"] for r in read_jsonl(EXAMPLES_DIR / "data" / "documents.jsonl")]


def _recording_sim(name: str, seen: list[tl.ModelRequest]) -> tl.FunctionModel:
    """The simulator, wrapped to keep every request it answers (named like it, so priced)."""
    sim = tl.SimModel(name, {"seed": 5})

    async def answer(request: tl.ModelRequest) -> tl.ModelResponse:
        seen.append(request)
        return await sim.complete(request)

    return tl.FunctionModel(answer, name=name)


def test_report_does_not_read_the_document(da: ModuleType) -> None:
    plan = da.flow.compile()
    reads = {spec.name: set(spec.reads) for spec in plan.steps}
    assert reads == {
        "sentiment": {"document"},
        "entities": {"document"},
        "insights": {"document", "sentiment", "entities"},
        "report": {"sentiment", "insights"},
    }


async def test_report_prompt_never_contains_the_document(
    da: ModuleType, documents: list[str]
) -> None:
    seen: list[tl.ModelRequest] = []
    models = {
        "small": _recording_sim("sim:small", seen),
        "large": _recording_sim("sim:large", seen),
    }
    async with tl.Engine(models=models) as engine:
        for document in documents:
            seen.clear()
            result = await engine.run(da.flow, {"document": document})
            result.raise_for_status()
            prompts = {r.schema_name: r.prompt_text() for r in seen}
            assert set(prompts) == {"DocumentSentiment", "Entities", "Insights", "Report"}
            # the steps that declare the document get it ...
            for schema in ("DocumentSentiment", "Entities", "Insights"):
                assert document in prompts[schema]
            # ... the report does not: not the text, not any of its sentences
            sentences = [s for s in re.split(r"(?<=[.!?])\s+", document) if len(s) > 30]
            assert sentences
            assert not [s for s in sentences if s in prompts["Report"]]
            # and it pays for far fewer input tokens than the step that reads the document
            usage = {name: result.steps[name].usage for name in LLM_STEPS}
            assert usage["report"].input_tokens * 2 < usage["insights"].input_tokens


async def test_tokens_are_accounted_per_step_and_sum_to_the_run(
    da: ModuleType, documents: list[str]
) -> None:
    models = {"small": "sim:small?seed=5", "large": "sim:large?seed=5"}
    async with tl.Engine(models=models) as engine:
        for document in documents:
            result = await engine.run(da.flow, {"document": document})
            result.raise_for_status()
            steps = [result.steps[name].usage for name in LLM_STEPS]
            for name, usage in zip(LLM_STEPS, steps, strict=True):
                assert usage.calls == 1, name
                assert usage.input_tokens > 0 and usage.output_tokens > 0, name
                assert usage.cost_usd > 0, name
                calls = [c for c in result.calls if c.step == name]
                assert usage.input_tokens == sum(c.input_tokens for c in calls)
            total = result.usage
            assert total.calls == sum(s.calls for s in steps)
            assert total.attempts == sum(s.attempts for s in steps)
            assert total.input_tokens == sum(s.input_tokens for s in steps)
            assert total.output_tokens == sum(s.output_tokens for s in steps)
            assert total.cost_usd == pytest.approx(sum(s.cost_usd for s in steps), rel=1e-9)
            # the step that reads the document and two analyses is the most expensive to feed
            assert max(steps, key=lambda s: s.input_tokens) is result.steps["insights"].usage
