"""Human in the loop on the command line: a run waits (exit code 3), `trellis runs --status
waiting` / `trellis show` say what for, `trellis approve` / `trellis reply` answer it — from
another process too — and a batch whose items wait is finished by answering them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

import trellis as tl
from trellis.store import SQLiteStore

from .helpers import assert_one_error_line, invoke

FLOWS = Path(__file__).parent / "flows"
APPROVAL = f"{FLOWS / 'approval.py'}:flow"
ASKING = f"{FLOWS / 'asking.py'}:flow"
SIM = ["--model", "small=sim:small"]
TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]
EXIT_WAITING = 3


@pytest.fixture(autouse=True)
def _counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flows' side effects land in ``tickets.txt`` (conftest isolates the rest)."""
    monkeypatch.setenv("TRELLIS_TEST_COUNTER", str(tmp_path / "tickets.txt"))


def tickets(tmp_path: Path) -> list[str]:
    path = tmp_path / "tickets.txt"
    return path.read_text().splitlines() if path.exists() else []


def waiting_runs() -> dict[str, dict[str, Any]]:
    result = invoke("runs", "--status", "waiting", "--json")
    assert result.exit_code == 0, result.stderr
    return {entry["run_id"]: entry for entry in json.loads(result.stdout)["runs"]}


def shown(run_id: str) -> dict[str, Any]:
    result = invoke("show", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def start_waiting(run_id: str, issue: str = "login broken") -> Result:
    result = invoke("run", APPROVAL, "-i", json.dumps({"issue": issue}), "--run-id", run_id, *SIM)
    assert result.exit_code == EXIT_WAITING, (result.stdout, result.stderr)
    return result


# -- one run -----------------------------------------------------------------------------------


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_approval_waits_is_listed_shown_and_approved_from_another_process(tmp_path: Path) -> None:
    started = start_waiting("t1")
    assert "⏸ review  waiting" in started.stdout
    assert "asks: Create an escalation ticket for 'login broken'?" in started.stdout
    assert "expects: Approval {approved: boolean (required)" in started.stdout
    assert "trellis approve t1 review\n" in started.stdout
    assert "trellis approve t1 review --reject --comment 'why'" in started.stdout
    assert "· ticket  pending" in started.stdout

    assert waiting_runs()["t1"]["status"] == "waiting"
    table = invoke("runs", "--status", "waiting")
    assert "t1" in table.stdout and "waiting (review)" in table.stdout
    assert "t1" not in invoke("runs", "--status", "done").stdout

    show = invoke("show", "t1")
    assert show.exit_code == 0, show.stderr
    assert "asks: Create an escalation ticket for 'login broken'?" in show.stdout
    assert "expects: Approval" in show.stdout
    assert '"issue": "login broken"' in show.stdout  # the details
    assert "answer: trellis approve t1 review" in show.stdout
    data = shown("t1")
    assert data["status"] == "waiting"
    question = data["steps"]["review"]["question"]
    assert question["type"] == "Approval" and question["details"]["issue"] == "login broken"
    assert data["steps"]["ticket"]["status"] == "pending"

    # Wrong answers: one error line each, and the run keeps waiting.
    wrong = invoke("reply", "t1", "review", "--input", '{"approved": "maybe"}')
    assert_one_error_line(wrong, "not a valid Approval", "approved", "still waiting")
    assert_one_error_line(invoke("reply", "t1", "review", "-i", "{nope"), "not valid JSON")
    assert_one_error_line(
        invoke("approve", "t1", "draft"), "step 'draft'", "not waiting", "waiting: review"
    )
    assert_one_error_line(invoke("approve", "nope", "review"), "no run 'nope'")
    assert waiting_runs()["t1"]["status"] == "waiting"
    assert (
        "refused: the last answer: the answer is not a valid Approval"
        in invoke("show", "t1").stdout
    )
    assert tickets(tmp_path) == []

    # The answer, from a fresh process: the run resumes and the ticket is created once.
    env = {**os.environ, "COLUMNS": "200"}
    approved = subprocess.run(
        [*TRELLIS, "approve", "t1", "review", "--comment", "ship it"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert approved.returncode == 0, approved.stderr
    assert "✓ done" in approved.stdout and "✓ ticket  done" in approved.stdout
    assert "approved (ship it): step 'review' of run t1" in approved.stderr
    assert tickets(tmp_path) == ["login broken:True"]
    data = shown("t1")
    assert data["status"] == "done"
    assert data["outputs"]["ticket"]["created"] is True
    assert data["outputs"]["ticket"]["comment"] == "ship it"
    assert data["calls"] and len(data["calls"]) == 1  # the draft was not asked again
    assert "t1" not in waiting_runs()

    assert_one_error_line(invoke("approve", "t1", "review"), "run t1 is done, not waiting")
    assert tickets(tmp_path) == ["login broken:True"]


def test_reject_with_a_comment(tmp_path: Path) -> None:
    start_waiting("r1", "spam")
    rejected = invoke("approve", "r1", "review", "--reject", "--comment", "not a bug", "--json")
    assert rejected.exit_code == 0, rejected.stderr
    data = json.loads(rejected.stdout)
    assert data["status"] == "done"
    assert data["outputs"]["review"] == {"approved": False, "comment": "not a bug"}
    assert data["outputs"]["ticket"]["created"] is False
    assert tickets(tmp_path) == ["spam:False"]


def test_quiet_and_json_outputs_of_a_waiting_run() -> None:
    quiet = invoke("run", APPROVAL, "-i", '{"issue": "q"}', "--run-id", "q1", "-q", *SIM)
    assert quiet.exit_code == EXIT_WAITING
    assert quiet.stdout.strip() == "waiting: step 'review' asks Approval: trellis approve q1 review"
    as_json = invoke("run", APPROVAL, "-i", '{"issue": "j"}', "--run-id", "j1", "--json", *SIM)
    assert as_json.exit_code == EXIT_WAITING
    data = json.loads(as_json.stdout)
    assert data["status"] == "waiting" and data["steps"]["review"]["status"] == "waiting"
    # Resuming without an answer: it waits again, nothing else happens.
    again = invoke("resume", "j1", "-q")
    assert again.exit_code == EXIT_WAITING, again.stderr
    assert len(shown("j1")["calls"]) == 1


def test_reply_with_typed_input() -> None:
    started = invoke("run", ASKING, "-i", '{"issue": "slow search"}', "--run-id", "a1")
    assert started.exit_code == EXIT_WAITING, started.stderr
    assert "expects: Triage {priority: " in started.stdout
    assert "owner: string (required) — who handles it" in started.stdout
    sample = """trellis reply a1 triage --input '{"priority": "low", "owner": "..."}'"""
    assert sample in started.stdout
    assert_one_error_line(
        invoke("approve", "a1", "triage"), "asks for Triage, not an approval", "trellis reply a1"
    )
    wrong = invoke("reply", "a1", "triage", "-i", '{"priority": "urgent", "owner": "ann"}')
    assert_one_error_line(wrong, "not a valid Triage", "priority", "still waiting")
    assert "priority" in shown("a1")["steps"]["triage"]["question"]["error"]
    answered = invoke("reply", "a1", "triage", "-i", '{"priority": "high", "owner": "ann"}')
    assert answered.exit_code == 0, answered.stderr
    assert shown("a1")["outputs"]["summary"] == "high for ann (1h)"


def test_commands_name_a_store_that_is_not_the_default() -> None:
    started = invoke(
        "run", APPROVAL, "-i", '{"issue": "s"}', "--run-id", "s1", "--store", "mine.db", *SIM
    )
    assert started.exit_code == EXIT_WAITING
    assert "trellis approve s1 review --store sqlite:///mine.db" in started.stdout
    assert_one_error_line(invoke("approve", "s1", "review"), "no run 's1'")
    assert invoke("approve", "s1", "review", "--store", "mine.db").exit_code == 0


def test_waiting_needs_a_store() -> None:
    result = invoke("run", APPROVAL, "-i", '{"issue": "x"}', "--no-store", *SIM)
    assert_one_error_line(result, "waits for a person", "store")


def test_a_run_started_from_python_is_answered_from_python(tmp_path: Path) -> None:
    flow = tl.Flow("api", inputs={"x": int})

    @flow.step
    async def check(x: int, human: tl.Human) -> tl.Approval:
        return await human.approve(f"ok {x}?")

    async def record(store: SQLiteStore) -> None:
        async with tl.Engine(store=store) as engine:
            result = await engine.run(flow, {"x": 2}, run_id="api1")
            assert result.status == "waiting"

    with SQLiteStore(tmp_path / ".trellis/trellis.db") as store:
        asyncio.run(record(store))
    assert "ok 2?" in invoke("show", "api1").stdout
    assert_one_error_line(
        invoke("approve", "api1", "check"), "not started with `trellis run`", "engine.reply"
    )


def test_help_documents_the_commands_and_the_waiting_exit_code() -> None:
    run_help = invoke("run", "--help").stdout
    assert "3 when the run" in run_help and "trellis approve" in run_help
    approve_help = invoke("approve", "--help").stdout
    for text in ("--reject", "--comment", "--store", "3 it waits again", "BATCH.3"):
        assert text in approve_help
    reply_help = invoke("reply", "--help").stdout
    for text in ("--input", "wrong type", "keeps waiting"):
        assert text in " ".join(reply_help.split())
    assert "waiting" in invoke("runs", "--help").stdout


# -- a batch ------------------------------------------------------------------------------------


def test_batch_items_wait_and_answering_them_finishes_the_batch(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"issue": f"bug {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    ran = invoke("run", APPROVAL, "-f", str(items), "-o", str(out), "--run-id", "B", *SIM)
    assert ran.exit_code == EXIT_WAITING, (ran.stdout, ran.stderr)
    assert "3 items: 0 done, 3 waiting for input" in ran.stdout
    for i in range(3):
        assert f"trellis approve B.{i} review\n" in ran.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["waiting"] * 3

    as_json = invoke("resume", "B", "--json", "--output", str(tmp_path / "again.jsonl"))
    assert as_json.exit_code == EXIT_WAITING, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["waiting"] == 3 and summary["failed"] == 0
    assert summary["questions"][1]["commands"][0] == "trellis approve B.1 review"

    assert set(waiting_runs()) == {"B", "B.0", "B.1", "B.2"}  # the batch waits too
    batch_show = invoke("show", "B")
    assert "batch B  waiting" in batch_show.stdout
    assert "trellis approve B.2 review" in batch_show.stdout
    assert_one_error_line(invoke("approve", "B", "review"), "is a batch", "B.0")

    first = invoke("approve", "B.0", "review")
    assert first.exit_code == 0, first.stderr
    assert "batch B: 2 item(s) still waiting" in first.stderr
    second = invoke("approve", "B.1", "review", "--reject")
    assert second.exit_code == 0, second.stderr
    statuses = [json.loads(line)["status"] for line in out.read_text().splitlines()]
    assert statuses == ["waiting"] * 3  # rewritten once the batch is done
    last = invoke("approve", "B.2", "review")
    assert last.exit_code == 0, last.stderr
    assert "batch B: every item is done now" in last.stderr
    assert "3 items: 3 done, 0 failed" in last.stdout

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert [line["status"] for line in lines] == ["done"] * 3
    assert [line["outputs"]["ticket"]["created"] for line in lines] == [True, False, True]
    assert sorted(tickets(tmp_path)) == ["bug 0:True", "bug 1:False", "bug 2:True"]
    assert waiting_runs() == {}
    batch = json.loads(invoke("runs", "--json").stdout)["runs"]
    assert [(r["run_id"], r["status"]) for r in batch] == [("B", "done")]
    assert batch[0]["items"]["done"] == 3


def test_answering_the_last_waiting_item_of_a_batch_with_a_failed_item(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"issue": "tracker down"}\n{"issue": "fine"}\n')
    out = tmp_path / "out.jsonl"
    ran = invoke("run", APPROVAL, "-f", str(items), "-o", str(out), "--run-id", "F", *SIM)
    assert ran.exit_code == EXIT_WAITING, ran.stderr
    failed = invoke("approve", "F.0", "review")
    assert failed.exit_code == 1, failed.stderr
    assert "RuntimeError: the ticket tracker is down" in failed.stdout
    last = invoke("approve", "F.1", "review", "--json")
    assert last.exit_code == 0, last.stderr
    assert json.loads(last.stdout)["status"] == "done"
    assert "no item waits for input any more: 1 done, 1 failed" in last.stderr
    assert "trellis resume F" in last.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["index"], line["status"]) for line in lines] == [(0, "failed"), (1, "done")]
    assert tickets(tmp_path) == ["tracker down:True", "fine:True"]
