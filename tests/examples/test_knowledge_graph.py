"""examples/knowledge_graph.py: two LLM steps feeding a deterministic graph builder."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl


@pytest.fixture(scope="module")
def kg() -> ModuleType:
    return load_example("knowledge_graph")


def _deps(flow: tl.Flow, step: str) -> set[str]:
    plan = flow.compile()
    return {plan.steps[d].name for d in plan.deps[plan.index[step]]}


def test_graph_reads_entities_and_relationships_only(kg: ModuleType) -> None:
    assert _deps(kg.flow, "entities") == set()
    assert _deps(kg.flow, "relationships") == {"entities"}
    assert _deps(kg.flow, "graph") == {"entities", "relationships"}
    assert "llm" not in kg.flow.steps["graph"].injected.values()


async def test_graph_over_articles_on_the_simulator(kg: ModuleType) -> None:
    items = read_jsonl(EXAMPLES_DIR / "data" / "articles.jsonl")
    results: dict[int, tl.RunResult] = {}
    models = {"small": "sim:small?seed=3", "large": "sim:large?seed=3"}
    async with tl.Engine(models=models) as engine:
        async for index, result in engine.run_many(kg.flow, items, concurrency=12):
            results[index] = result
    assert len(results) == len(items)
    for result in results.values():
        assert result.ok, result.error
        entities, triples, graph = result["entities"], result["relationships"], result["graph"]
        # the builder is plain Python: no model call is ever made on its behalf
        assert [c for c in result.calls if c.step == "graph"] == []
        assert result.steps["graph"].usage.attempts == 0
        assert {c.step for c in result.calls} == {"entities", "relationships"}
        # one node per distinct entity, with its type
        expected = {
            (name.strip().casefold(), kind) for name, kind in entities.typed() if name.strip()
        }
        assert {(n.label.casefold(), n.type) for n in graph.nodes} <= expected
        assert len(graph.nodes) == len({name for name, _ in expected})
        assert len({n.id for n in graph.nodes}) == len(graph.nodes)
        # no dangling edge; every triple is either an edge or counted as dropped
        ids = {n.id for n in graph.nodes}
        for edge in graph.edges:
            assert edge.source in ids and edge.target in ids
        assert len(graph.edges) + graph.dropped_edges == len(triples.triples)


async def test_edges_link_known_entities_and_dangling_ones_are_dropped(kg: ModuleType) -> None:
    article = read_jsonl(EXAMPLES_DIR / "data" / "articles.jsonl")[0]["text"]
    replies: dict[str, dict[str, Any]] = {
        "Entities": {
            "persons": ["Amara Okonkwo", "Lars Eklund"],
            "organizations": ["Helix Robotics", "Norrvik Sensors"],
            "locations": ["Gothenburg"],
            "dates": ["March 14, 2024"],
        },
        "Relationships": {
            "triples": [
                {"subject": "Helix Robotics", "relation": "acquired", "object": "Norrvik Sensors"},
                # a different case still resolves to the entity
                {"subject": "amara okonkwo", "relation": "leads", "object": "Helix Robotics"},
                # not an extracted entity: the edge is dropped and counted
                {"subject": "Ridgeway Capital", "relation": "analyses", "object": "Helix Robotics"},
            ]
        },
    }
    prompts: dict[str, str] = {}

    def reply(request: tl.ModelRequest) -> dict[str, Any]:
        assert request.schema_name is not None
        prompts[request.schema_name] = request.prompt_text()
        return replies[request.schema_name]

    async with tl.Engine(models={"small": tl.FunctionModel(reply)}) as engine:
        result = await engine.run(kg.flow, {"text": article})
    result.raise_for_status()

    # the relationships step was shown every extracted entity and the text
    for name in ["Amara Okonkwo", "Lars Eklund", "Helix Robotics", "Gothenburg", "March 14, 2024"]:
        assert name in prompts["Relationships"]
    assert article in prompts["Relationships"]

    graph = result["graph"]
    assert {n.id: n.type for n in graph.nodes} == {
        "person:amara-okonkwo": "person",
        "person:lars-eklund": "person",
        "organization:helix-robotics": "organization",
        "organization:norrvik-sensors": "organization",
        "location:gothenburg": "location",
        "date:march-14-2024": "date",
    }
    assert [(e.source, e.type, e.target) for e in graph.edges] == [
        ("organization:helix-robotics", "acquired", "organization:norrvik-sensors"),
        ("person:amara-okonkwo", "leads", "organization:helix-robotics"),
    ]
    assert graph.dropped_edges == 1
