"""``trellis --help`` and ``trellis CMD --help`` start without loading the engine.

A command's declaration (options, help) is all its help needs; what it does is imported
when it runs. Each check runs in a fresh interpreter (this process has imported it all).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: What a help screen must not load: the engine, flows, the Ray executor, the providers and
#: their HTTP client, the mock server and the web UI. (Not pydantic: typer itself imports
#: it to read a command's parameters.)
HEAVY = (
    "trellis.engine.engine",
    "trellis.engine.records",
    "trellis.flow.flow",
    "trellis.cluster",
    "trellis.cli.commands",
    "trellis.providers",
    "trellis.mockserver",
    "trellis.ui",
    "httpx",
)

PROBE = """
import json, sys
sys.argv = ["trellis", *json.loads(sys.argv[1])]
from trellis.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _help_of(args: list[str]) -> tuple[object, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report = json.loads(proc.stdout.splitlines()[-1])
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["check", "--help"],
        ["resume", "--help"],
        ["approve", "--help"],
        ["show", "--help"],
        ["eval", "--help"],
        ["cache", "stats", "--help"],
    ],
    ids=" ".join,
)
def test_help_loads_no_engine(args: list[str]) -> None:
    code, loaded = _help_of(args)
    assert code in (0, None)
    heavy = sorted(m for m in loaded if m.startswith(HEAVY))
    assert not heavy, f"`trellis {' '.join(args)}` loaded {heavy[:8]}"


def test_a_command_that_runs_loads_what_it_needs() -> None:
    """The lazy imports are still there when a command does its work."""
    code, loaded = _help_of(["runs", "--store", "memory:"])
    assert code in (0, None)
    assert "trellis.engine.records" in loaded
