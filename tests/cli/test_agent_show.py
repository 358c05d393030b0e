"""`trellis show` of agent steps and loops: turns with the model's replies, tool calls with
arguments and results or errors (live, or replayed from the journal), tokens and cost per
turn, and an evaluator-optimizer loop's rounds; `--json` keeps `RunResult.to_dict()`."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import Result

from . import helpers
from .helpers import FLOWS, SIM

AGENTIC = f"{FLOWS / 'agentic.py'}:flow"
EXIT_WAITING = 3


def invoke(*args: str) -> Result:
    return helpers.invoke(*args, columns=400)  # the turn tables are wide


def show_json(run_id: str) -> dict[str, Any]:
    result = invoke("show", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def waiting_run() -> Result:
    """The agentic flow on "Rome": the agent step and the loop are done, ``confirm`` ran its
    agent and waits for an approval."""
    result = invoke("run", AGENTIC, "-i", '{"city": "Rome"}', "--run-id", "rome", *SIM)
    assert result.exit_code == EXIT_WAITING, (result.stdout, result.stderr)
    return result


def section(text: str, start: str, end: str | None) -> str:
    """The lines of ``text`` from the one containing ``start`` to the one before ``end``."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if start in line)
    last = len(lines)
    if end is not None:
        last = next(i for i, line in enumerate(lines) if i > first and end in line)
    return "\n".join(lines[first:last])


def test_show_lists_agent_turns_with_tool_calls_tokens_and_cost(waiting_run: Result) -> None:
    assert "agent turns" in waiting_run.stdout  # `trellis run` summarises the transcript
    shown = invoke("show", "rome")
    assert shown.exit_code == 0, shown.stderr
    research = section(shown.stdout, "✓ research", "✓ refine")
    data = show_json("rome")
    turns = data["steps"]["research"]["turns"]
    assert len(turns) >= 2 and not turns[-1]["tool_calls"]
    assert f"agent  {len(turns)} turns" in research
    for turn in turns:  # every turn, with its tokens and cost
        line = f"turn {turn['turn']}  {turn['input_tokens']:,}/{turn['output_tokens']:,} tokens · $"
        assert line in research
    assert "final answer: {" in research
    calls = [call for turn in turns for call in turn["tool_calls"]]
    ok = [c for c in calls if c.get("result") is not None]
    failed = [c for c in calls if c.get("error") is not None]
    assert ok and failed  # local_time answers; weather always raises
    for call in ok:
        assert f"✓ local_time({call['arguments']}) → {call['result']}  live" in research
    for call in failed:
        assert call["name"] == "weather"
        assert f"✗ weather({call['arguments']}) → error: tool 'weather' raised LookupError" in (
            research
        )
        # where the tool raised, in the user's code: recorded, in --json and shown
        (frame,) = call["traceback"]
        assert frame["function"] == "weather" and frame["file"].endswith("agentic.py")
        assert frame["source"].startswith("raise LookupError(")
    assert research.count("in user code (most recent call last):") == len(failed)
    assert research.count("raise LookupError(") == len(failed)
    assert all(c["source"] == "live" for c in calls)


def test_evaluator_optimizer_rounds_show(waiting_run: Result) -> None:
    shown = invoke("show", "rome").stdout
    refine = section(shown, "✓ refine", "confirm")
    data = show_json("rome")
    rounds = data["steps"]["refine"]["rounds"]
    assert rounds >= 2
    loop = [d for d in data["decisions"] if d["step"] == "refine" and d["kind"] == "loop"]
    assert [d["values"]["round"] for d in loop] == list(range(1, rounds + 1))
    assert [d["outcome"] for d in loop] == ["continue"] * (rounds - 1) + ["stop"]
    for number in range(1, rounds + 1):
        assert re.search(rf"round {number}  2 calls · [\d,]+/[\d,]+ tokens · \$", refine)
        outcome = "stop" if number == rounds else "continue"
        assert f"loop → {outcome}: round {number}: " in refine
    assert "ran 3 times" not in waiting_run.stdout  # rounds are not re-runs


def test_a_waiting_agent_step_and_its_replay_after_the_answer(waiting_run: Result) -> None:
    waiting = section(invoke("show", "rome").stdout, "⏸ confirm", None)
    assert "agent  " in waiting and "live" in waiting  # the turns made before it waited
    assert "asks: Publish the note for Rome?" in waiting
    assert "answer: trellis approve rome confirm" in waiting
    before = show_json("rome")["steps"]["confirm"]["turns"]
    assert before and before[0]["tool_calls"]

    approved = invoke("approve", "rome", "confirm")
    assert approved.exit_code == 0, approved.stderr
    data = show_json("rome")
    assert data["status"] == "done" and data["outputs"]["confirm"].startswith("published")
    after = data["steps"]["confirm"]["turns"]
    assert [t["reply"] for t in after] == [t["reply"] for t in before]
    replayed = [c for t in after for c in t["tool_calls"]]
    assert replayed and all(c["source"] == "journal" for c in replayed)
    confirm = section(invoke("show", "rome").stdout, "✓ confirm", None)
    assert "local_time(" in confirm and "  journal" in confirm


def test_show_json_is_the_run_result_with_turns_and_question(waiting_run: Result) -> None:
    data = show_json("rome")
    research = data["steps"]["research"]
    assert set(research) >= {"turns", "question"} and research["question"] is None
    turn = research["turns"][0]
    assert set(turn) >= {
        "agent",
        "turn",
        "index",
        "round",
        "reply",
        "tool_calls",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    }
    call = turn["tool_calls"][0]
    assert set(call) >= {"id", "name", "arguments", "latency_s", "source"}
    assert ("result" in call) != ("error" in call)
    question = data["steps"]["confirm"]["question"]
    assert question["type"] == "Approval" and question["prompt"] == "Publish the note for Rome?"
    assert data["steps"]["refine"]["turns"] == []
