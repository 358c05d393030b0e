"""A new user's papercuts (issue 9), each reproduced: narrow terminals, unpriced costs,
interruptions, configuration errors in the middle of a batch, finding the project's store
from a subdirectory."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import FLOWS, SIM, TRELLIS, assert_one_error_line, invoke, runs_json, write_items

CHAIN = f"{FLOWS / 'chain.py'}:flow"


def _items(tmp_path: Path, n: int) -> Path:
    return write_items(tmp_path / "items.jsonl", [{"item": f"it{i}"} for i in range(n)])


# -- width -----------------------------------------------------------------------------------


def test_runs_at_80_columns_keeps_every_id_and_flow_whole(tmp_path: Path) -> None:
    assert invoke("run", CHAIN, "--input", '{"item": "a"}', *SIM, "-q").exit_code == 0
    batch = invoke("run", CHAIN, "-f", str(_items(tmp_path, 2)), *SIM, "-q")
    assert batch.exit_code == 0, batch.stderr
    for args in ((), ("--all",)):
        shown = invoke("runs", *args, columns=80)
        assert shown.exit_code == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert all(len(line.rstrip()) <= 80 for line in lines), shown.stdout
        for entry in runs_json(*args):
            row = [line for line in lines if line.split()[:1] == [entry["run_id"]]]
            assert row, f"{entry['run_id']} not shown whole:\n{shown.stdout}"
            assert "chain" in row[0].split(), row[0]
        assert "status" in lines[2] and "cost" in lines[2], lines[2]
    wide = invoke("runs", columns=200)
    assert "tokens" in wide.stdout and "started" in wide.stdout  # nothing left out when wide


# -- cost ------------------------------------------------------------------------------------


def test_quiet_batch_on_an_unpriced_model_says_unknown_not_at_least_zero(tmp_path: Path) -> None:
    result = invoke(
        "run", CHAIN, "-f", str(_items(tmp_path, 2)), "--model", "small=sim:unpriced", "-q"
    )
    assert result.exit_code == 0, result.stderr
    assert "≥ $0" not in result.stdout
    assert "unknown (4 calls unpriced)" in result.stdout, result.stdout


# -- interruptions ---------------------------------------------------------------------------


def test_a_configuration_error_mid_batch_names_the_batch_and_leaves_it_resumable(
    tmp_path: Path,
) -> None:
    items = _items(tmp_path, 3)
    failed = invoke("run", CHAIN, "-f", str(items), "--run-id", "cfg")  # role small unbound
    line = assert_one_error_line(failed, "model role 'small' is not bound", "batch cfg")
    assert "trellis resume cfg" in line
    resumed = invoke("resume", "cfg", *SIM, "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert "3 items: 3 done, 0 failed" in resumed.stdout


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def _interrupt_when(
    process: subprocess.Popen[str], condition: Any, what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"{what} did not happen: {out}\n{err}")
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)


def _interruptible() -> None:
    """In the child before it starts: SIGINT back to its default. A shell without job
    control starts background commands with SIGINT ignored, and a child inherits that;
    these tests must not depend on how the suite itself was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRELLIS_STORE"}
    env["COLUMNS"] = "200"
    return env


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_ctrl_c_on_a_single_run_prints_its_id_and_how_to_resume_it(tmp_path: Path) -> None:
    db = tmp_path / ".trellis" / "trellis.db"
    process = subprocess.Popen(
        [*TRELLIS, "run", CHAIN, "-i", '{"item": "slow"}', "-m", "small=sim:small?latency_ms=400"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    _interrupt_when(process, lambda: _query(db, "SELECT run_id FROM runs"), "the run starting")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, (out, err)
    [(run_id,)] = _query(db, "SELECT run_id FROM runs")
    assert f"interrupted: run {run_id} did not finish" in err, err
    assert f"trellis resume {run_id}" in err, err
    assert "Traceback" not in err
    resumed = subprocess.run(
        [*TRELLIS, "resume", run_id, "-q"],
        cwd=tmp_path,
        env=_env(tmp_path),
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_the_summary_after_ctrl_c_shows_what_was_spent(tmp_path: Path) -> None:
    """Items interrupted mid-way made LLM calls (journaled, paid for): the one-line summary
    counts them, so its attempts are every recorded attempt and its cost is not $0."""
    db = tmp_path / ".trellis" / "trellis.db"
    items = _items(tmp_path, 8)
    process = subprocess.Popen(
        [
            *TRELLIS,
            "run",
            CHAIN,
            "-f",
            str(items),
            "-q",
            "-n",
            "4",
            "--run-id",
            "int",
            "-m",
            "small=sim:small?latency_ms=500",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    _interrupt_when(
        process,
        lambda: (_query(db, "SELECT COUNT(*) FROM calls") or [(0,)])[0][0] >= 2,
        "LLM calls being journaled",
    )
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, (out, err)
    assert "interrupted:" in err and "trellis resume int" in err, err
    journaled = sum(
        len(json.loads(attempts)) for (attempts,) in _query(db, "SELECT attempts FROM calls")
    )
    match = re.search(r"· (\d+) attempts · (\S+)", out)
    assert match, out
    assert int(match.group(1)) == journaled >= 2, out
    assert match.group(2) != "$0", out


# -- store discovery -------------------------------------------------------------------------


def test_commands_in_a_subdirectory_use_the_projects_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = invoke("run", CHAIN, "-i", '{"item": "a"}', *SIM, "--json")
    assert first.exit_code == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert [e["run_id"] for e in runs_json()] == [run_id]
    assert invoke("show", run_id).exit_code == 0
    second = invoke("run", CHAIN, "-i", '{"item": "b"}', *SIM, "-q")
    assert second.exit_code == 0, second.stderr
    assert not (sub / ".trellis").exists()
    assert len(runs_json()) == 2
    monkeypatch.chdir(tmp_path)
    assert len(runs_json()) == 2  # recorded in the project's store


def test_a_store_entry_in_trellis_toml_names_the_store_for_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "trellis.toml").write_text(
        '[models]\nsmall = "sim:small"\n\n[store]\nurl = "sqlite:///data/runs.db"\n'
    )
    (tmp_path / "data").mkdir()
    assert invoke("run", CHAIN, "-i", '{"item": "a"}', "-q").exit_code == 0
    assert (tmp_path / "data" / "runs.db").exists()
    assert not (tmp_path / ".trellis").exists()
    sub = tmp_path / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert len(runs_json()) == 1
    # From the subdirectory the project's roles are bound too, and the run lands in its
    # store (the roles and the store come from the same trellis.toml).
    from_sub = invoke("run", CHAIN, "-i", '{"item": "b"}', "-q")
    assert from_sub.exit_code == 0, from_sub.stderr
    assert len(runs_json()) == 2 and not (sub / ".trellis").exists()
    os.environ.pop("TRELLIS_STORE", None)
    assert len(runs_json("--store", str(tmp_path / "elsewhere.db"))) == 0  # --store wins


# -- times -----------------------------------------------------------------------------------


def _entries(*args: str) -> dict[str, dict[str, Any]]:
    return {e["run_id"]: e for e in runs_json("--all", *args)}


def test_item_times_are_their_own_and_queue_wait_is_recorded_apart(tmp_path: Path) -> None:
    """One at a time: each item starts when the previous one ends, its recorded duration is
    its run time (as the live result says), and the wait before it is ``queued_s``."""
    items = _items(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    slow = ["--model", "small=sim:small?latency_ms=60"]
    result = invoke(
        "run", CHAIN, "-f", str(items), *slow, "-n", "1", "--run-id", "t", "-o", str(out)
    )
    assert result.exit_code == 0, result.stderr
    live = {
        line["run_id"]: line["duration_s"] for line in map(json.loads, out.read_text().splitlines())
    }
    entries = _entries()
    batch = entries["t"]
    starts = [entries[f"t.{i}"]["started_at"] for i in range(3)]
    assert starts == sorted(starts) and len(set(starts)) == 3, starts
    for i in range(3):
        item = entries[f"t.{i}"]
        assert item["duration_s"] == pytest.approx(live[f"t.{i}"], abs=0.05), (item, live)
        assert item["queued_s"] == pytest.approx(item["started_at"] - batch["started_at"], abs=1e-5)
    assert (
        entries["t.2"]["queued_s"]
        >= entries["t.0"]["duration_s"] + entries["t.1"]["duration_s"] - 0.05
    )


def test_resuming_a_completed_batch_does_not_grow_its_duration(tmp_path: Path) -> None:
    items = _items(tmp_path, 2)
    assert invoke("run", CHAIN, "-f", str(items), *SIM, "--run-id", "done", "-q").exit_code == 0
    before = _entries()["done"]
    time.sleep(0.5)
    again = invoke("resume", "done", "-q")
    assert again.exit_code == 0, again.stderr
    after = _entries()["done"]
    assert (after["finished_at"], after["duration_s"]) == (
        before["finished_at"],
        before["duration_s"],
    )
    assert after["status"] == "done"


# -- accounting across resumes ---------------------------------------------------------------


def test_a_resumed_batch_keeps_the_cost_and_attempts_of_earlier_attempts(tmp_path: Path) -> None:
    """Items that fail (every reply invalid) are retried by each resume: the provider's call
    log grows, and so do the recorded and summarised attempts and cost."""
    log = tmp_path / "calls.log"
    failing = ["--model", f"small=sim:small?invalid_json=1&call_log={log}"]
    items = _items(tmp_path, 2)
    first = invoke("run", CHAIN, "-f", str(items), *failing, "--run-id", "acc", "--json")
    assert first.exit_code == 1, first.stderr
    costs = [json.loads(first.stdout)["cost_usd"]]
    for _ in range(2):
        resumed = invoke("resume", "acc", *failing, "--json")
        assert resumed.exit_code == 1, resumed.stderr
        summary = json.loads(resumed.stdout)
        sent = len(log.read_text().splitlines())
        assert summary["attempts"] == sent, (summary["attempts"], sent)
        costs.append(summary["cost_usd"])
        entries = _entries()
        assert entries["acc"]["attempts"] == sent
        assert sum(entries[f"acc.{i}"]["attempts"] for i in range(2)) == sent
    assert costs[1] == pytest.approx(2 * costs[0]) and costs[2] == pytest.approx(3 * costs[0])


def test_the_project_config_is_looked_up_to_the_projects_root_and_no_further(
    tmp_path: Path,
) -> None:
    from trellis.cli.stores import project_config

    outside = tmp_path / "trellis.toml"
    outside.write_text('[models]\nsmall = "sim:small"\n')
    repo = tmp_path / "repo"
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()
    assert project_config(deep) is None  # above the repository: not the project's
    (repo / "trellis.toml").write_text('[models]\nsmall = "sim:small"\n')
    assert project_config(deep) == repo / "trellis.toml"
    (deep / "trellis.toml").write_text("")
    assert project_config(deep) == deep / "trellis.toml"  # the nearest one wins


def test_a_configuration_someone_else_could_plant_above_is_not_used(tmp_path: Path) -> None:
    """A trellis.toml found above the working directory names code to import and where
    keys are sent: one in a folder anyone may write to (like /tmp) is ignored, as git
    ignores a repository another user owns; the working directory's own one counts."""
    from trellis.cli.stores import project_config

    shared = tmp_path / "shared"
    work = shared / "work"
    work.mkdir(parents=True)
    shared.chmod(0o1777)  # world-writable, sticky: /tmp's mode
    (shared / "trellis.toml").write_text('[models]\nsmall = "sim:small"\n')
    (tmp_path / ".git").mkdir()
    assert project_config(work) is None
    (work / "trellis.toml").write_text('[models]\nsmall = "sim:small"\n')
    assert project_config(work) == work / "trellis.toml"
