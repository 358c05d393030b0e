"""Questions inside a (mapped) sub-flow on the command line: `trellis run` and `trellis show`
of the parent list each by its step path with the command that answers it, `trellis runs
--status waiting` lists the parent once, `trellis approve RUN reviews[0]/approve` (or the
child's run id with its step) answers from another process, and the parent finishes with
nothing run or paid twice; `--json` lists the children's calls once, under their paths."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .helpers import FLOWS, SIM, TRELLIS, assert_one_error_line, invoke

FIXES = f"{FLOWS / 'subflow_approval.py'}:flow"
EXIT_WAITING = 3


@pytest.fixture(autouse=True)
def _counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows' side effects land in ``published.txt`` (conftest isolates the rest)."""
    monkeypatch.setenv("TRELLIS_TEST_COUNTER", str(tmp_path / "published.txt"))


def published(tmp_path: Path) -> list[str]:
    path = tmp_path / "published.txt"
    return sorted(path.read_text().splitlines()) if path.exists() else []


def shown(run_id: str) -> dict[str, Any]:
    result = invoke("show", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_questions_inside_a_mapped_subflow_are_shown_and_answered_by_path(
    tmp_path: Path,
) -> None:
    inputs = json.dumps({"issues": ["login", "auto-typo", "billing"]})
    started = invoke("run", FIXES, "-i", inputs, "--run-id", "f1", *SIM)
    assert started.exit_code == EXIT_WAITING, (started.stdout, started.stderr)
    assert "trellis approve f1 'reviews[0]/approve'" in started.stdout
    assert "trellis approve f1 'reviews[2]/approve'" in started.stdout
    assert published(tmp_path) == ["auto-typo:True"]

    show = invoke("show", "f1")
    assert show.exit_code == 0, show.stderr
    assert "⏸ reviews[0]/approve" in show.stdout
    assert "asks: Publish the fix for 'login'?" in show.stdout
    assert "answer: trellis approve f1 'reviews[2]/approve'" in show.stdout
    assert "waiting for input: 2 questions" in show.stdout
    waiting = invoke("runs", "--status", "waiting")
    assert "waiting (reviews[0]/approve, reviews[2]/approve)" in waiting.stdout
    listed = json.loads(invoke("runs", "--status", "waiting", "--json").stdout)["runs"]
    assert [e["run_id"] for e in listed] == ["f1"], "the children are listed under the parent"
    before = shown("f1")
    calls = before["calls"]
    assert sorted(c["step"] for c in calls) == [f"reviews[{i}]/draft" for i in range(3)]

    # A wrong address says what waits; the run keeps waiting.
    assert_one_error_line(
        invoke("approve", "f1", "reviews[1]/approve"),
        "'reviews[1]/approve'",
        "not waiting",
        "waiting: reviews[0]/approve, reviews[2]/approve",
    )
    assert_one_error_line(
        invoke("reply", "f1", "reviews[0]/approve", "--input", '{"approved": "maybe"}'),
        "not a valid Approval",
        "still waiting",
    )

    # By path, from a fresh process: the parent still waits for the other question.
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.run(
        [*TRELLIS, "approve", "f1", "reviews[2]/approve", "--comment", "fine"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert first.returncode == EXIT_WAITING, first.stderr
    assert "approved (fine): step 'reviews[2]/approve' of run f1" in first.stderr
    assert published(tmp_path) == ["auto-typo:True", "billing:True"]

    # By the child's run id and its step: the same question.
    last = invoke("approve", "f1/reviews[0]", "approve", "--reject", "--json")
    assert last.exit_code == 0, last.stderr
    data = json.loads(last.stdout)
    assert data["run_id"] == "f1" and data["status"] == "done"
    assert data["outputs"]["summary"] == "login: held; auto-typo: published; billing: published"
    assert published(tmp_path) == ["auto-typo:True", "billing:True", "login:False"]

    after = shown("f1")
    assert after["status"] == "done"
    steps = sorted(c["step"] for c in after["calls"])
    assert steps == [f"reviews[{i}]/draft" for i in range(3)], "each draft was paid once"
    assert after["usage"]["attempts"] == len(after["calls"]) == 3
    assert after["usage"]["input_tokens"] == sum(c["input_tokens"] for c in after["calls"])
    for field in ("calls", "attempts", "input_tokens", "output_tokens", "cost_usd"):
        assert after["usage"][field] == before["usage"][field], f"{field}: nothing paid again"
    children = after["steps"]["reviews"]["children"]
    assert [c["status"] for c in children] == ["done", "done", "done"]
