"""Helpers shared by the CLI tests (and by CLI tests elsewhere: ``from cli.helpers import
...``). The autouse fixture in ``conftest.py`` calls :func:`isolate`; a test module outside
this folder that runs the CLI does the same in an autouse fixture of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from trellis.cli import app

__all__ = [
    "FLOWS",
    "SIM",
    "TRELLIS",
    "assert_one_error_line",
    "calls_in",
    "invoke",
    "isolate",
    "read_jsonl",
    "runs_json",
    "sim",
    "write_items",
]

FLOWS = Path(__file__).parent / "flows"
SIM = ["--model", "small=sim:small"]
#: The ``trellis`` command in a process of its own (for signals and kills).
TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty working folder (the default store lands there), no $TRELLIS_STORE or
    step counter from outside, and ``sys.path`` restored after the flow imports."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRELLIS_STORE", raising=False)
    monkeypatch.delenv("TRELLIS_TEST_COUNTER", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


def sim(log: Path, extra: str = "") -> list[str]:
    """``--model small=sim:small`` logging every attempt to ``log``."""
    return ["--model", f"small=sim:small?call_log={log}{extra}"]


def calls_in(log: Path) -> int:
    """How many attempts the simulator logged to ``log`` (see :func:`sim`)."""
    return len(log.read_text().splitlines()) if log.exists() else 0


def invoke(*args: str, columns: int = 200, env: dict[str, str] | None = None) -> Result:
    """``trellis ARGS`` in this process, at ``columns`` wide (wide enough by default that
    rich does not wrap the lines the tests look for), with ``env`` added to the environment."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns), **(env or {})})


def assert_one_error_line(result: Result, *fragments: str) -> str:
    """Exit code 2 and exactly one ``error: ...`` line on stderr naming every fragment."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def runs_json(*args: str) -> list[dict[str, Any]]:
    """``trellis runs --json ARGS``'s entries."""
    result = invoke("runs", "--json", *args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"runs"}
    return list(data["runs"])


def write_items(path: Path, items: list[dict[str, Any]], *, blank_after: int = -1) -> Path:
    """A JSONL file of flow inputs, one object a line (and a blank line after the item at
    ``blank_after``, which readers must skip)."""
    lines = [
        json.dumps(item) + ("\n\n" if i == blank_after else "\n") for i, item in enumerate(items)
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file, one a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
