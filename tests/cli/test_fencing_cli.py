"""Fencing with real processes: one owner per run, even after a stall.

- SIGSTOP: a batch is stopped past its lease, ``trellis resume`` finishes it in another
  process, then the stopped process is continued: it must not overwrite a single finished
  item, and it exits non-zero saying it lost the lease.
- A plain step blocking the event loop past the lease (no heartbeat can run): the same.
- Two ``trellis run`` with the same new id at once: one runs, the other gets the lease
  error, never a raw ``UNIQUE constraint failed``.
- SIGTERM releases leases as Ctrl-C does: an immediate resume need not wait for them.
- ``--lease-ttl`` rejects inf, nan, 0 and negative values.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trellis.cli import app

FLOWS = Path(__file__).parent / "flows"
CHAIN = f"{FLOWS / 'chain.py'}:flow"
BLOCKING = f"{FLOWS / 'blocking.py'}:flow"
TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="needs SIGSTOP and /proc"),
    pytest.mark.serial,  # real processes racing for leases with 1 s TTLs
]


def _query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the store read-only (a writer may be running); [] while it is not there yet."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _snapshot(db: Path, prefix: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every record of the runs named ``prefix...``: run rows and step rows."""
    runs = _query(
        db,
        "SELECT run_id, status, finished_at, error, usage, lease_owner, lease_epoch FROM runs "
        "WHERE run_id LIKE ? ORDER BY run_id",
        prefix + "%",
    )
    steps = _query(
        db,
        "SELECT run_id, step, status, output, error FROM steps WHERE run_id LIKE ? "
        "ORDER BY run_id, step",
        prefix + "%",
    )
    return runs, steps


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "200", **extra}
    env.pop("TRELLIS_STORE", None)
    return env


def _start(args: list[str], cwd: Path, env: dict[str, str], err: Path) -> subprocess.Popen[str]:
    with err.open("w") as stderr:
        return subprocess.Popen(
            [*TRELLIS, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True
        )


def _trellis(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*TRELLIS, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_for(condition: Any, what: str, process: subprocess.Popen[str], err: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {err.read_text()}"
        assert time.monotonic() < deadline, f"no {what} within 60 s"
        time.sleep(0.02)


def _ensure_ended(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
    process.wait(timeout=30)


def test_a_batch_stopped_past_its_lease_never_overwrites_the_resumed_items(
    tmp_path: Path,
) -> None:
    items = tmp_path / "items.jsonl"
    count = 40
    items.write_text("".join(json.dumps({"item": f"it{i:02d}"}) + "\n" for i in range(count)))
    db = tmp_path / "t.db"
    store = f"sqlite:///{db}"
    env = _env(tmp_path)
    err = tmp_path / "first.err"
    first = _start(
        [
            "run",
            CHAIN,
            "--input-file",
            str(items),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--model",
            "small=sim:small?latency_ms=100-200",
            "--concurrency",
            "4",
            "--store",
            store,
            "--run-id",
            "stall",
            "--lease-ttl",
            "1",
            "--no-progress",
        ],
        tmp_path,
        env,
        err,
    )
    try:

        def done_items() -> int:
            rows = _query(
                db, "SELECT COUNT(*) FROM runs WHERE parent_id = 'stall' AND status = 'done'"
            )
            return int(rows[0][0]) if rows else 0

        _wait_for(lambda: done_items() >= 8, "8 items done", first, err)
        os.kill(first.pid, signal.SIGSTOP)  # mid-batch: four items in flight
        time.sleep(2.0)  # past the 1 s lease: it could not renew it
        assert done_items() < count
        resumed = _trellis(["resume", "stall", "--store", store, "--no-progress"], tmp_path, env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"{count} items: {count} done" in resumed.stdout
        finished = _snapshot(db, "stall")
        assert len(finished[0]) == count + 1 and len(finished[1]) == 3 * count
        assert all(row[1] == "done" for row in finished[0]), finished[0]

        os.kill(first.pid, signal.SIGCONT)  # the stalled process wakes up
        first.wait(timeout=60)
    finally:
        _ensure_ended(first)
    message = err.read_text()
    assert first.returncode not in (0, None), message
    assert "lost its lease" in message or "lease (epoch" in message, message
    assert "Traceback" not in message, message
    assert _snapshot(db, "stall") == finished, "the woken process overwrote finished records"


def test_a_plain_step_blocking_past_its_lease_cannot_write_after_a_resume(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    store = f"sqlite:///{db}"
    marker = tmp_path / "blocked"
    release = tmp_path / "release"
    env = _env(tmp_path, TRELLIS_TEST_MARKER=str(marker), TRELLIS_TEST_RELEASE=str(release))
    err = tmp_path / "first.err"
    args = ["run", BLOCKING, "--input", '{"item": "x"}', "--store", store, "--run-id", "b"]
    first = _start([*args, "--lease-ttl", "1"], tmp_path, env, err)
    try:
        _wait_for(marker.exists, "the blocking step", first, err)
        time.sleep(1.5)  # the event loop is blocked: the 1 s lease expires unrenewed
        # The first process stays blocked until the resume has finished, however slowly a
        # loaded machine starts the second process.
        resumed = _trellis(["resume", "b", "--store", store], tmp_path, env)
        release.touch()
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        finished = _snapshot(db, "b")
        assert [s[1:4] for s in finished[1]] == [
            ("after", "done", '"x: a later process!"'),
            ("block", "done", '"x: a later process"'),
        ]
        assert first.poll() is None, "the first process was still blocked during the resume"
        first.wait(timeout=60)
    finally:
        _ensure_ended(first)
    message = err.read_text()
    assert first.returncode == 2, message
    assert message.startswith("error: run b: ") and "lease" in message, message
    assert _snapshot(db, "b") == finished, "the blocked process overwrote the resumed run"


@pytest.mark.parametrize("kind", ["run", "batch"])
def test_two_runs_with_the_same_new_id_at_once_one_gets_the_lease_error(
    tmp_path: Path, kind: str
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"item": "a"}\n{"item": "b"}\n')
    db = tmp_path / "t.db"
    env = _env(tmp_path)
    source = ["--input", '{"item": "a"}'] if kind == "run" else ["--input-file", str(items)]
    for attempt in range(2):
        run_id = f"race{attempt}"
        args = [
            *TRELLIS,
            "run",
            CHAIN,
            *source,
            "--model",
            "small=sim:small?latency_ms=1000",  # the winner holds the lease for 2 s
            "--store",
            f"sqlite:///{db}",
            "--run-id",
            run_id,
            "--no-progress",
            "--quiet",
        ]
        both = [
            subprocess.Popen(
                args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(2)
        ]
        outcomes = []
        for process in both:
            _out, errors = process.communicate(timeout=60)
            outcomes.append((process.returncode, errors.decode()))
        assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
        message = next(text for code, text in outcomes if code == 2)
        assert "UNIQUE" not in message and "Traceback" not in message, message
        assert message.startswith(f"error: run {run_id} is being executed by "), message


def test_sigterm_releases_the_leases_like_ctrl_c(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"it{i:02d}"}) + "\n" for i in range(20)))
    db = tmp_path / "t.db"
    store = f"sqlite:///{db}"
    env = _env(tmp_path)
    err = tmp_path / "first.err"
    first = _start(
        [
            "run",
            CHAIN,
            "--input-file",
            str(items),
            "--model",
            "small=sim:small?latency_ms=200-300",
            "--concurrency",
            "4",
            "--store",
            store,
            "--run-id",
            "term",
            "--lease-ttl",
            "120",
            "--no-progress",
        ],
        tmp_path,
        env,
        err,
    )
    try:

        def leased_items() -> int:
            rows = _query(
                db,
                "SELECT COUNT(*) FROM runs WHERE parent_id = 'term' AND lease_owner IS NOT NULL",
            )
            return int(rows[0][0]) if rows else 0

        _wait_for(lambda: leased_items() >= 2, "items running", first, err)
        os.kill(first.pid, signal.SIGTERM)
        first.wait(timeout=30)
    finally:
        _ensure_ended(first)
    assert first.returncode == 130, err.read_text()  # as after Ctrl-C: interrupted
    leased = _query(db, "SELECT run_id FROM runs WHERE lease_owner IS NOT NULL")
    assert leased == [], f"leases left behind: {leased}"
    started = time.monotonic()
    resumed = _trellis(["resume", "term", "--store", store, "--no-progress"], tmp_path, env, 60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "waiting" not in resumed.stderr, resumed.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "-inf"])
def test_lease_ttl_rejects_values_that_are_not_a_positive_finite_duration(value: str) -> None:
    result = CliRunner().invoke(
        app,
        ["run", CHAIN, "--input", '{"item": "x"}', "--store", "memory:", f"--lease-ttl={value}"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --lease-ttl must be a finite"), lines


def test_resume_waits_out_the_lease_of_a_killed_owner_not_yet_reaped(tmp_path: Path) -> None:
    """A zombie still answers ``kill(pid, 0)``: it must count as dead, not as a live holder."""
    from trellis.cli.leases import wait_for_dead_leases
    from trellis.store import RunRow, SQLiteStore

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while (Path(f"/proc/{child.pid}/stat").read_bytes().rpartition(b")")[2].split()[0]) != b"Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        owner = f"{socket.gethostname()}:{child.pid}:tag"
        with SQLiteStore(tmp_path / "t.db") as store:
            store.create_run(
                RunRow(
                    run_id="z",
                    flow="f",
                    status="running",
                    inputs="{}",
                    started_at=1.0,
                    lease_owner=owner,
                    lease_expires=time.time() + 5,
                )
            )
            row = store.get_run("z")
            assert row is not None
            said: list[str] = []
            slept: list[float] = []
            wait_for_dead_leases(store, [row], echo=said.append, sleep=slept.append)
    finally:
        child.wait()
    assert len(said) == 1 and f"stopped process {child.pid}" in said[0], said
    assert len(slept) == 1 and 4 < slept[0] <= 5.1, slept
