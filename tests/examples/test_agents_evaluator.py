"""examples/agents_evaluator.py: a writer/critic loop bounded by max_rounds and until=."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import load_example

INCIDENT = "Exports failed for EU customers from 14:00 to 14:50 UTC."


@pytest.fixture(scope="module")
def ev() -> ModuleType:
    return load_example("agents_evaluator")


class Script:
    """The writer answers ``draft <n>``; the critic gives ``verdicts`` in order (then
    keeps failing), raising ``issue <n>`` whenever it fails a draft."""

    def __init__(self, verdicts: list[bool]) -> None:
        self.verdicts = verdicts
        self.writer_prompts: list[str] = []
        self.critic_prompts: list[str] = []
        self.model = tl.FunctionModel(self.reply)

    def reply(self, request: tl.ModelRequest) -> Any:
        if request.schema_name is None:
            self.writer_prompts.append(request.prompt_text())
            return f"draft {len(self.writer_prompts)}"
        assert request.schema_name == "Critique"
        self.critic_prompts.append(request.prompt_text())
        n = len(self.critic_prompts)
        passed = self.verdicts[n - 1] if n <= len(self.verdicts) else False
        issues = [] if passed else [f"issue {n}"]
        return {"passed": passed, "score": 9 if passed else 4, "issues": issues}


async def _run(ev: ModuleType, script: Script) -> tl.RunResult:
    async with tl.Engine(models={"small": script.model, "large": script.model}) as engine:
        result = await engine.run(ev.flow, {"incident": INCIDENT})
    result.raise_for_status()
    return result


async def test_stops_in_the_round_the_critic_passes(ev: ModuleType) -> None:
    script = Script([False, False, True])
    result = await _run(ev, script)

    assert result.steps["refine"].rounds == 3
    loop = [d for d in result.decisions if d.kind == "loop"]
    assert [(d.step, d.outcome, d.values["round"]) for d in loop] == [
        ("refine", "continue", 1),
        ("refine", "continue", 2),
        ("refine", "stop", 3),
    ]
    # each round's output is recorded with its loop decision (visible in `trellis show`)
    assert [len(d.values["output"].revisions) for d in loop] == [1, 2, 3]
    assert loop[-1].reason == "round 3: until() is true"
    # every round's draft and critique is in the output, oldest first
    revisions = result["refine"].revisions
    assert [(r.round, r.draft, r.critique.passed) for r in revisions] == [
        (1, "draft 1", False),
        (2, "draft 2", False),
        (3, "draft 3", True),
    ]
    assert [r.critique.issues for r in revisions] == [["issue 1"], ["issue 2"], []]
    # two calls per round (writer, critic), each recorded with its round
    assert [(c.round, c.role) for c in result.calls] == [
        (1, "small"), (1, "large"), (2, "small"), (2, "large"), (3, "small"), (3, "large"),
    ]  # fmt: skip
    # the writer revises what the critic saw, against the critic's issues
    assert "draft" not in script.writer_prompts[0] and INCIDENT in script.writer_prompts[0]
    assert "draft 1" in script.writer_prompts[1] and "issue 1" in script.writer_prompts[1]
    assert "draft 2" in script.writer_prompts[2] and "issue 2" in script.writer_prompts[2]
    assert all(f"draft {n}" in p for n, p in enumerate(script.critic_prompts, 1))
    update = result["update"]
    assert (update.text, update.rounds, update.needs_review) == ("draft 3", 3, False)


async def test_a_critic_that_never_passes_stops_at_max_rounds(ev: ModuleType) -> None:
    script = Script([])
    result = await _run(ev, script)

    n = ev.MAX_ROUNDS
    assert result.steps["refine"].rounds == n
    loop = [d for d in result.decisions if d.kind == "loop"]
    assert [d.outcome for d in loop] == ["continue"] * (n - 1) + ["stop"]
    assert loop[-1].reason == f"round {n}: max_rounds={n} reached"
    assert [r.draft for r in result["refine"].revisions] == [f"draft {i}" for i in range(1, n + 1)]
    assert len(script.model.calls) == 2 * n
    update = result["update"]
    assert (update.text, update.rounds, update.needs_review) == (f"draft {n}", n, True)


async def test_passing_on_the_first_round_makes_no_revision(ev: ModuleType) -> None:
    result = await _run(ev, Script([True]))
    assert result.steps["refine"].rounds == 1
    assert [d.outcome for d in result.decisions if d.kind == "loop"] == ["stop"]
    assert result["update"].rounds == 1


async def test_on_the_simulator_the_loop_is_bounded_and_recorded(ev: ModuleType) -> None:
    async with tl.Engine(models={"small": "sim:small", "large": "sim:large?seed=1"}) as engine:
        result = await engine.run(ev.flow, {"incident": INCIDENT})
    result.raise_for_status()
    revisions = result["refine"].revisions
    rounds = result.steps["refine"].rounds
    assert rounds is not None and 1 <= rounds <= ev.MAX_ROUNDS
    assert [r.round for r in revisions] == list(range(1, rounds + 1))
    loop = [d.outcome for d in result.decisions if d.kind == "loop"]
    assert loop == ["continue"] * (rounds - 1) + ["stop"]
    assert revisions[-1].critique.passed or rounds == ev.MAX_ROUNDS
    assert all(not r.critique.passed for r in revisions[:-1])
