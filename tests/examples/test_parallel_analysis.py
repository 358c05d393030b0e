"""examples/parallel_analysis.py: independent aspects in parallel, bounded by concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

ASPECTS = ("tone", "risks", "key_points", "audience")


@pytest.fixture
def pa(load_example: Callable[[str], ModuleType]) -> ModuleType:
    return load_example("parallel_analysis")


@pytest.fixture
def document(read_jsonl: Callable[[Path], list[dict[str, Any]]], examples_dir: Path) -> str:
    text: str = read_jsonl(examples_dir / "data" / "documents.jsonl")[0]["document"]
    return text


class InFlightProbe:
    """A model that answers like the simulator, slowly, and records peak concurrency."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.sim = tl.SimModel("sim:small")
        self.delay_s = delay_s
        self.in_flight = 0
        self.peak = 0
        self.model = tl.FunctionModel(self.answer)

    async def answer(self, request: tl.ModelRequest) -> tl.ModelResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            return await self.sim.complete(request)
        finally:
            self.in_flight -= 1


def test_aspects_are_independent_and_aggregate_reads_them_all(pa: ModuleType) -> None:
    plan = pa.flow.compile()
    assert pa.flow.concurrency == 2
    for aspect in ASPECTS:
        assert plan.deps[plan.index[aspect]] == ()  # reads only the document input
    assert set(pa.flow.steps["aggregate"].reads) == set(ASPECTS)


async def test_makespan_shows_two_waves_of_calls(pa: ModuleType, document: str) -> None:
    latency = 0.1
    models = {"small": "sim:small?latency_ms=100", "large": "sim:large?latency_ms=100"}
    async with tl.Engine(models=models) as engine:
        result = await engine.run(pa.flow, {"document": document})
    assert result.ok, result.error
    assert result.usage.calls == 4
    # ceil(4 / 2) = 2 waves: about 2 x latency; unbounded would be 1x, sequential 4x.
    assert 1.8 * latency <= result.duration_s < 3.2 * latency


async def test_peak_in_flight_calls_equals_the_flow_concurrency(
    pa: ModuleType, document: str
) -> None:
    probe = InFlightProbe()
    async with tl.Engine(models={"small": probe.model, "large": probe.model}) as engine:
        result = await engine.run(pa.flow, {"document": document})
    assert result.ok, result.error
    assert len(probe.model.calls) == 4
    assert probe.peak == 2

    # The same steps without the limit: all four aspects are in flight at once.
    unbounded = tl.Flow("parallel-analysis-unbounded", inputs={"document": str})
    for spec in pa.flow.steps.values():
        unbounded.add(spec)
    probe = InFlightProbe()
    async with tl.Engine(models={"small": probe.model, "large": probe.model}) as engine:
        assert (await engine.run(unbounded, {"document": document})).ok
    assert probe.peak == 4


async def test_aggregate_combines_every_aspect(pa: ModuleType, document: str) -> None:
    async with tl.Engine(models={"small": "sim:small", "large": "sim:large"}) as engine:
        result = await engine.run(pa.flow, {"document": document})
    assert result.ok, result.error
    tone, risks, points, audience = (result[a] for a in ASPECTS)
    analysis = result["aggregate"]
    assert analysis.tone == f"{tone.label} ({tone.formality})"
    assert analysis.audience == audience.primary
    assert analysis.key_points == points.points
    assert sorted(analysis.top_risks) == sorted(
        f"[{r.severity}] {r.description}" for r in risks.risks
    )
    severities = [r.split("]")[0].lstrip("[") for r in analysis.top_risks]
    assert severities == sorted(severities, key=pa.SEVERITY_ORDER.__getitem__)
    assert result.usage.calls == 4 and result.steps["aggregate"].usage.calls == 0
    assert {c.step: c.role for c in result.calls}["risks"] == "large"
