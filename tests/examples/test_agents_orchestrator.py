"""examples/agents_orchestrator.py: planner -> parallel tool-using workers -> synthesizer."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import trellis as tl
from trellis.mockserver import MockServer

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

APPROACH = "PLANNER-PRIVATE: start from the pricing notes"  # only the planner writes this
SUBTASKS = [
    {"title": f"Part {n}", "question": f"Question number {n} about Team pricing?"}
    for n in range(1, 6)
]


@pytest.fixture(scope="module")
def orch() -> ModuleType:
    return load_example("agents_orchestrator")


def _turn(request: tl.ModelRequest) -> int:
    """1 + the tool rounds already in the conversation."""
    return 1 + sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)


def _question(request: tl.ModelRequest) -> str:
    user = next(m.content for m in request.messages if m.role == "user")
    return user.rsplit(": ", 1)[1]


def _tool_calls(*calls: tuple[str, dict[str, Any]]) -> tl.ModelResponse:
    return tl.ModelResponse(
        text="",
        usage=tl.Usage(50, 10),
        finish_reason="tool_calls",
        tool_calls=tuple(
            tl.ToolCall(f"call_{n}", name, json.dumps(args)) for n, (name, args) in enumerate(calls)
        ),
    )


class Script:
    """A scripted model for every role: the planner, the workers and the synthesizer.

    A worker calls ``first_calls`` in its first turn (after a pause, the later subtasks
    pausing less so they finish first), then answers ``answer to <question>``."""

    def __init__(self, first_calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.first_calls = first_calls
        self.in_flight = 0
        self.peak = 0
        self.prompts: dict[str, str] = {}
        self.worker_requests: list[tl.ModelRequest] = []
        self.model = tl.FunctionModel(self.reply)

    async def reply(self, request: tl.ModelRequest) -> Any:
        if request.tools:
            self.worker_requests.append(request)
            question = _question(request)
            if _turn(request) == 1:
                position = [s["question"] for s in SUBTASKS].index(question)
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                await asyncio.sleep(0.004 * (len(SUBTASKS) - position))
                self.in_flight -= 1
                return _tool_calls(*self.first_calls)
            return {"answer": f"answer to {question}", "sources": ["N1"]}
        assert request.schema_name is not None
        self.prompts[request.schema_name] = request.prompt_text()
        if request.schema_name == "Plan":
            return {"approach": APPROACH, "subtasks": SUBTASKS}
        assert request.schema_name == "Report"
        return {"summary": "Raising the price pays.", "key_points": ["revenue up"]}


def _spy(fn: Callable[..., Any], log: list[str]) -> Callable[..., Any]:
    """The tool, recording each execution (same signature: same schema)."""

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        log.append(fn.__name__)
        return fn(**kwargs)

    return wrapper


async def _run(orch: ModuleType, script: Script) -> tl.RunResult:
    async with tl.Engine(models={"small": script.model, "large": script.model}) as engine:
        return await engine.run(orch.flow, {"request": "Should we raise the Team price?"})


async def test_one_worker_per_subtask_in_order_concurrently_and_bounded(
    orch: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []
    monkeypatch.setattr(orch, "search_notes", _spy(orch.search_notes, executed))
    script = Script([("search_notes", {"query": "team plan price", "limit": 2})])
    result = await _run(orch, script)
    result.raise_for_status()

    findings = result["research"]
    assert len(findings) == len(SUBTASKS) == result.steps["research"].elements
    # in plan order, though the workers finished in reverse order
    assert [f.subtask for f in findings] == [s["title"] for s in SUBTASKS]
    assert [f.answer for f in findings] == [f"answer to {s['question']}" for s in SUBTASKS]
    # five workers, but the flow runs at most four step executions at once
    assert orch.flow.concurrency == 4
    assert script.peak == 4
    assert executed == ["search_notes"] * len(SUBTASKS)
    # each worker's transcript: a tool round with the notes found, then its answer
    turns = result.steps["research"].turns
    assert sorted((t["index"], t["turn"]) for t in turns) == [
        (i, n) for i in range(len(SUBTASKS)) for n in (1, 2)
    ]
    for turn in turns:
        if turn["turn"] == 1:
            [call] = turn["tool_calls"]
            assert call["name"] == "search_notes" and "N1" in call["result"]
        else:
            assert turn["tool_calls"] == []


async def test_an_invalid_tool_call_goes_back_to_the_model_and_never_runs(
    orch: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []
    monkeypatch.setattr(orch, "search_notes", _spy(orch.search_notes, executed))
    monkeypatch.setattr(orch, "calculate", _spy(orch.calculate, executed))
    script = Script(
        [
            ("search_notes", {"query": "price", "limit": 50}),  # limit must be 1..5
            ("calculate", {"expression": "4200 * 18 * 12"}),
        ]
    )
    result = await _run(orch, script)
    result.raise_for_status()

    assert executed == ["calculate"] * len(SUBTASKS)  # search_notes never ran
    for turn in (t for t in result.steps["research"].turns if t["turn"] == 1):
        bad, good = turn["tool_calls"]
        assert "result" not in bad
        assert "limit" in bad["error"] and "not run" in bad["error"]
        assert good["result"] == "4200 * 18 * 12 = 907,200.00"
    # the error went back to the model as the answer to its call
    second_turns = [r for r in script.worker_requests if _turn(r) == 2]
    assert len(second_turns) == len(SUBTASKS)
    for request in second_turns:
        tool_messages = {m.tool_call_id: m.content for m in request.messages if m.role == "tool"}
        assert "not run" in tool_messages["call_0"]
        assert tool_messages["call_1"] == "4200 * 18 * 12 = 907,200.00"


async def test_synthesizer_reads_only_the_request_and_the_findings(orch: ModuleType) -> None:
    synthesize = orch.flow.steps["synthesize"]
    assert [p.name for p in synthesize.params] == ["request", "research"]

    script = Script([("search_notes", {"query": "team plan price"})])
    result = await _run(orch, script)
    result.raise_for_status()
    prompt = script.prompts["Report"]
    assert "Should we raise the Team price?" in prompt
    for subtask in SUBTASKS:
        assert f"{subtask['title']}: answer to {subtask['question']}" in prompt
    assert APPROACH not in script.prompts["Report"]  # the planner's notes stay with it
    assert "$12 per seat" not in prompt  # so do the workers' tool results
    assert result["plan"].approach == APPROACH


def test_tools_are_deterministic_plain_python(orch: ModuleType) -> None:
    hits = orch.search_notes("competitor price per seat", limit=2)
    assert [n.id for n in hits] == ["N5", "N1"]
    assert orch.search_notes("zebra") == "no notes match 'zebra'"
    assert orch.calculate("(14 - 12) * 18") == "(14 - 12) * 18 = 36.00"
    assert orch.calculate("__import__('os')").startswith("cannot evaluate")


async def test_every_sample_request_on_the_simulator() -> None:
    orch = load_example("agents_orchestrator")
    items = read_jsonl(EXAMPLES_DIR / "data" / "research_requests.jsonl")
    assert len(items) == 8
    results: dict[int, tl.RunResult] = {}
    async with tl.Engine(models={"small": "sim:small?seed=1", "large": "sim:large"}) as engine:
        async for index, result in engine.run_many(orch.flow, items, concurrency=8):
            results[index] = result
    for result in results.values():
        assert result.ok, result.error
        subtasks = result["plan"].subtasks
        findings = result["research"]
        assert [f.subtask for f in findings] == [s.title for s in subtasks]
        turns = result.steps["research"].turns
        assert {t["index"] for t in turns} == set(range(len(subtasks)))
        for turn in turns:
            for call in turn["tool_calls"]:
                assert call["name"] in {"search_notes", "calculate"}
                assert ("result" in call) != ("error" in call)
        assert [c.step for c in result.calls].count("synthesize") == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_the_example_over_http_against_the_mock_server(provider: str) -> None:
    """Both providers' clients against ``trellis mock-server``: under ``anthropic:`` the
    workers' final answer is a call of the output tool (``tool_choice: any``), made once
    their 1-3 tool rounds are done (the sim's agent policy, which the mock server shares),
    not another random tool call until ``max_turns`` runs out."""
    orch = load_example("agents_orchestrator")
    async with MockServer(seed=1) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        model = f"{provider}:mock-model?base_url={base}&api_key=test"
        async with tl.Engine(models={"small": model, "large": model}) as engine:
            result = await engine.run(orch.flow, {"request": "Should we raise the Team price?"})
    assert result.ok, result.error
    findings = result["research"]
    assert [f.subtask for f in findings] == [s.title for s in result["plan"].subtasks]
    turns = result.steps["research"].turns
    for index in range(len(findings)):
        mine = sorted((t for t in turns if t["index"] == index), key=lambda t: t["turn"])
        assert mine[-1]["tool_calls"] == []  # the final answer...
        assert len(mine) <= 4  # ...after at most three tool rounds, as the sim's agent gives it
        assert all(
            c["name"] in {"search_notes", "calculate"} for t in mine for c in t["tool_calls"]
        )
    assert server.stats.by_status == {200: server.stats.requests}
