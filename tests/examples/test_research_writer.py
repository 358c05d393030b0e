"""examples/research_writer.py: a step sees the state it declares and nothing else."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

TOPIC = "Remote work five years later"
KEYWORD = "zephyrquokka"  # only the keywords step ever produces these two strings
ANGLE = "the quiet return of the office bus"


@pytest.fixture(scope="module")
def rw() -> ModuleType:
    return load_example("research_writer")


def test_write_depends_on_outline_and_research_only(rw: ModuleType) -> None:
    plan = rw.flow.compile()
    deps = {name: {plan.steps[d].name for d in plan.deps[plan.index[name]]} for name in plan.index}
    assert deps == {
        "research": set(),
        "keywords": {"research"},
        "outline": {"research", "keywords"},
        "write": {"outline", "research"},
    }
    write = rw.flow.steps["write"]
    assert [p.name for p in write.params] == ["outline", "research"]
    assert set(write.injected.values()) == {"llm"}


async def test_write_prompt_has_no_undeclared_state(rw: ModuleType) -> None:
    replies: dict[str, dict[str, Any]] = {
        "Research": {
            "findings": [
                {"claim": "Hybrid schedules became the norm", "evidence": "2024 survey"},
                {"claim": "Office leases shrank", "evidence": "commercial real-estate data"},
            ]
        },
        "Keywords": {"keywords": [KEYWORD, "hybrid work"], "angle": ANGLE},
        "Outline": {
            "title": "Hybrid, for good",
            "sections": [
                {"heading": "What stuck", "points": ["Hybrid schedules"]},
                {"heading": "What didn't", "points": ["Fully remote teams"]},
            ],
        },
        "Article": {"title": "Hybrid, for good", "body": "Five years on, ..."},
    }
    prompts: dict[str, str] = {}

    def reply(request: tl.ModelRequest) -> dict[str, Any]:
        assert request.schema_name is not None
        prompts[request.schema_name] = request.prompt_text()
        return replies[request.schema_name]

    model = tl.FunctionModel(reply)
    async with tl.Engine(models={"small": model, "large": model}) as engine:
        result = await engine.run(rw.flow, {"topic": TOPIC})
    result.raise_for_status()
    assert result["write"].title == "Hybrid, for good"

    # the outline step declared the keywords and received them ...
    assert KEYWORD in prompts["Outline"] and ANGLE in prompts["Outline"]
    assert TOPIC in prompts["Outline"]
    # ... the write step did not declare them (nor the topic) and never saw them
    write_prompt = prompts["Article"]
    assert KEYWORD not in write_prompt
    assert ANGLE not in write_prompt
    assert TOPIC not in write_prompt
    # while what it did declare is all there
    assert "Hybrid, for good" in write_prompt and "What didn't" in write_prompt
    assert "commercial real-estate data" in write_prompt


async def test_articles_for_every_sample_topic(rw: ModuleType) -> None:
    items = read_jsonl(EXAMPLES_DIR / "data" / "topics.jsonl")
    models = {"small": "sim:small?seed=11", "large": "sim:large?seed=11"}
    async with tl.Engine(models=models) as engine:
        async for _, result in engine.run_many(rw.flow, items, concurrency=8):
            assert result.ok, result.error
            assert [c.step for c in result.calls] == ["research", "keywords", "outline", "write"]
            assert {c.step: c.model for c in result.calls}["write"] == "sim:large"
