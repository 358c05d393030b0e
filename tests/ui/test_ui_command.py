"""``trellis ui`` as a user starts it: a process that prints its URL with the token and
serves the store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trellis.ui.server import free_port

pytestmark = pytest.mark.slow  # a process of its own (~1 s)


def test_trellis_ui_prints_its_url_with_a_token_and_serves(
    sample: tuple[Path, dict[str, str]],
) -> None:
    store, ids = sample
    port = free_port()
    command = [sys.executable, "-c", "from trellis.cli import main; main()"]
    process = subprocess.Popen(
        [*command, "ui", "--store", str(store), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        url = lines[1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        token = url.split("token=", 1)[1]
        assert len(token) >= 24
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs") as r:
                    listed = json.load(r)
                break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert {run["run_id"] for run in listed["runs"]} == set(ids.values())
        answer = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/runs/{ids['waiting']}/steps/approval/answer",
            data=json.dumps({"answer": {"approved": True}, "approval": True}).encode(),
            headers={"x-trellis-token": "not-the-token", "content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(answer)
        assert refused.value.code == 403
    finally:
        process.terminate()
        process.wait(timeout=10)
