"""The driver of a Ray batch killed mid-batch: ``trellis resume BATCH --executor ray``
finishes it, every completed step and every paid call exactly once.

The batch runs in a ``trellis run ... --executor ray`` process of its own (a local Ray it
starts), against a mock server in this process that counts the paid calls; it is killed
(SIGKILL) while both workers are inside an item's last step, after its call. The resume
runs here, on the session's Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trellis.cli import app
from trellis.mockserver import MockServerThread

TESTS = Path(__file__).resolve().parent.parent
TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _in_second(lines: list[str]) -> set[str]:
    running: set[str] = set()
    for line in lines:
        word, item, *_ = line.split()
        if word == "second-start":
            running.add(item)
        elif word == "second-end":
            running.discard(item)
    return running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_driver_s_batch_is_finished_by_resume_on_ray(
    ray_session: Any, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    n = 5
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"x": i, "log_path": str(log), "hold": 2.5}) + "\n" for i in range(n))
    )
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    with MockServerThread(seed=0) as server:
        model = f"default=openai:mock-model?base_url={server.openai_base_url}"
        driver = subprocess.Popen(
            [
                *TRELLIS,
                "run",
                "distributed.flows:faulty",
                "--input-file",
                str(items),
                "--store",
                pg_url,
                "--executor",
                "ray",
                "--run-id",
                "dk",
                "-n",
                "2",
                "--lease-ttl",
                "2",
                "--model",
                model,
                "--no-progress",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Ray's processes too: cleaned up below
        )
        try:
            deadline = time.monotonic() + 120
            while len(_in_second(_lines(log))) < 2:
                if driver.poll() is not None:
                    pytest.fail(f"the driver ended first: {driver.stdout.read()!r}")  # type: ignore[union-attr]
                assert time.monotonic() < deadline, _lines(log)
                time.sleep(0.02)
            driver.send_signal(signal.SIGKILL)  # both workers are past their items' calls
            driver.wait(10)
            done_before = sum(line.startswith("second-end") for line in _lines(log))
            assert done_before < n
            # Its Ray goes with it (Ray reaps a dead driver's workers): until they are gone
            # they hold their items' leases, and resume would say "try again later".
            workers = {int(line.split()[2]) for line in _lines(log) if "second-start" in line}
            gone_by = time.monotonic() + 60
            while alive := {pid for pid in workers if _alive(pid)}:
                assert time.monotonic() < gone_by, f"workers {alive} outlived their driver"
                time.sleep(0.1)
            interrupted = _in_second(_lines(log))  # items whose last step died with them
            resumed = CliRunner().invoke(
                app,
                ["resume", "dk", "--store", pg_url, "--executor", "ray", "--lease-ttl", "2"],
                env={"COLUMNS": "200"},
            )
        finally:
            if driver.poll() is None:
                driver.kill()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)  # what the killed driver's Ray left
        requests = server.stats.requests
    assert resumed.exit_code == 0, (resumed.stdout, resumed.stderr)
    assert f"{n} done" in resumed.stdout + resumed.stderr
    lines = _lines(log)
    counted = Counter(
        line.rsplit(" ", 1)[0] if line.startswith("second-start") else line for line in lines
    )
    assert all(counted[f"first {i}"] == 1 for i in range(n)), lines  # no completed step re-ran
    assert all(counted[f"second-end {i}"] == 1 for i in range(n)), lines
    assert requests == n, lines  # every paid call exactly once, on the server's count
    starts = Counter(line.split()[1] for line in lines if line.startswith("second-start"))
    assert all(starts[i] == 2 for i in interrupted), lines  # resumed in that step
    assert sum(starts.values()) == n + len(interrupted), lines
