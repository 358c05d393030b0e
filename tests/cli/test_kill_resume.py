"""The proof: a batch really killed (SIGKILL) halfway, then resumed by another process.

A 40-item batch of a three-step chain (two LLM calls on the simulator with 150-300 ms
latency, then a plain step) runs in a subprocess, four items at a time, recording into a
SQLite store. Once the store shows at least 8 items done, the process is killed with
SIGKILL (no cleanup of any kind can run) and ``trellis resume`` finishes the batch in a
new process. Then:

- the output file has exactly one line per item, in input order, every item done;
- no step that had completed before the kill ran again (every step appends
  ``item:step`` to a counter file when it starts): only steps running at the kill (at
  most one per item in flight, so at most ``concurrency``) ran twice;
- the model calls made across both processes (the simulator's call log) equal the calls
  recorded in the final runs plus the calls in flight at the kill (at most
  ``concurrency``), which were lost with the process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

FLOW = Path(__file__).parent / "flows" / "chain.py"
ITEMS = 40
CONCURRENCY = 4
KILL_AFTER = 8  # items done
STEPS = ("draft", "review", "publish")
BATCH = "kill-batch"
TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
    pytest.mark.serial,  # real processes killed mid-batch
]


def _query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the store read-only (the writer may be running); [] while it is not there yet."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # no tables yet, or briefly locked
        return []
    finally:
        conn.close()


def _done_items(db: Path) -> int:
    rows = _query(db, "SELECT COUNT(*) FROM runs WHERE parent_id = ? AND status = 'done'", BATCH)
    return int(rows[0][0]) if rows else 0


def _done_steps(db: Path) -> set[tuple[str, str]]:
    rows = _query(
        db,
        "SELECT r.inputs, s.step FROM steps s JOIN runs r ON r.run_id = s.run_id "
        "WHERE r.parent_id = ? AND s.status = 'done'",
        BATCH,
    )
    return {(json.loads(inputs)["item"], step) for inputs, step in rows}


def _journaled_attempts(db: Path) -> int:
    rows = _query(
        db,
        "SELECT c.attempts FROM calls c JOIN runs r ON r.run_id = c.run_id WHERE r.parent_id = ?",
        BATCH,
    )
    return sum(len(json.loads(attempts)) for (attempts,) in rows)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_mid_batch_then_resume(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"it{i:02d}"}) + "\n" for i in range(ITEMS)))
    db = tmp_path / "t.db"
    store = f"sqlite:///{db}"
    out = tmp_path / "out.jsonl"
    call_log = tmp_path / "calls.log"
    counter = tmp_path / "counter.log"
    env = {**os.environ, "TRELLIS_TEST_COUNTER": str(counter), "COLUMNS": "160"}
    env.pop("TRELLIS_STORE", None)
    binding = f"small=sim:small?latency_ms=150-300&call_log={call_log}"

    errors = tmp_path / "run.err"
    with errors.open("w") as stderr:
        first = subprocess.Popen(
            [
                *TRELLIS,
                "run",
                f"{FLOW}:flow",
                "--input-file",
                str(items),
                "--output",
                str(out),
                "--model",
                binding,
                "--concurrency",
                str(CONCURRENCY),
                "--store",
                store,
                "--run-id",
                BATCH,
                "--lease-ttl",
                "2",
                "--no-progress",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 90
        while _done_items(db) < KILL_AFTER:
            assert first.poll() is None, f"the batch ended before the kill: {errors.read_text()}"
            assert time.monotonic() < deadline, "the batch made no progress in 90 s"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)  # reaped: the resume sees a dead lease owner
    assert first.returncode == -signal.SIGKILL

    # What the killed process left behind (nothing changes it any more).
    done_at_kill = _done_items(db)
    steps_at_kill = _done_steps(db)
    counted_at_kill = Counter(_lines(counter))
    calls_at_kill = len(_lines(call_log))
    journaled_at_kill = _journaled_attempts(db)
    assert KILL_AFTER <= done_at_kill < ITEMS, done_at_kill
    assert not out.exists()  # the output is written when the batch is over
    in_flight_lost = calls_at_kill - journaled_at_kill
    assert 0 <= in_flight_lost <= CONCURRENCY, (calls_at_kill, journaled_at_kill)

    resumed = subprocess.run(
        [*TRELLIS, "resume", BATCH, "--store", store, "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming batch {BATCH}: {done_at_kill} of {ITEMS} items" in resumed.stderr
    assert f"{ITEMS} items: {ITEMS} done\n" in resumed.stdout

    # 1. Every item's output, exactly once, in input order.
    lines = [json.loads(line) for line in _lines(out)]
    assert [line["index"] for line in lines] == list(range(ITEMS))
    assert [line["run_id"] for line in lines] == [f"{BATCH}.{i}" for i in range(ITEMS)]
    assert all(line["status"] == "done" for line in lines)
    assert [line["outputs"]["publish"]["item"] for line in lines] == [
        f"it{i:02d}" for i in range(ITEMS)
    ]
    assert _done_items(db) == ITEMS

    # 2. Once and only once: completed steps never ran again; only the steps running at
    #    the kill (started, not recorded done) may have run twice.
    counted = Counter(_lines(counter))
    every = {f"it{i:02d}:{step}" for i in range(ITEMS) for step in STEPS}
    assert set(counted) == every
    running_at_kill = {key for key in counted_at_kill if tuple(key.split(":")) not in steps_at_kill}
    assert len(running_at_kill) <= CONCURRENCY, running_at_kill
    for key, n in counted.items():
        item, step = key.split(":")
        if (item, step) in steps_at_kill:
            assert n == 1, f"{key} completed before the kill but ran {n} times"
        else:
            assert n <= 1 + (key in running_at_kill), f"{key} ran {n} times"
    assert len(steps_at_kill) >= KILL_AFTER * len(STEPS)

    # 3. Calls: made across both processes == recorded in the final runs + lost in flight.
    final_attempts = _journaled_attempts(db)
    made = len(_lines(call_log))
    assert made == final_attempts + in_flight_lost, (made, final_attempts, in_flight_lost)
    assert 0 <= made - final_attempts <= CONCURRENCY
    assert final_attempts == 2 * ITEMS  # no faults: one attempt per call, two calls per item

    shown = subprocess.run(
        [*TRELLIS, "show", BATCH, "--store", store, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    batch = json.loads(shown.stdout)
    assert batch["status"] == "done"
    assert batch["batch"]["by_status"] == {"done": ITEMS}
    assert batch["usage"]["attempts"] == final_attempts
    assert sum(item["attempts"] for item in batch["batch"]["items"]) == final_attempts
