"""The console script builds the typer application with only the command it invokes
(``trellis.cli.app.main``): every screen and error of that command is the same as with
the whole application (``trellis.cli.app.app``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trellis.cli import app
from trellis.cli.app import COMMANDS, build_app, invoked_command
from trellis.cli.roothelp import COMMANDS as LISTED


def _output(application: typer.Typer, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(application, args, prog_name="trellis")
    return result.exit_code, result.output


ARGS = [
    *([name, "--help"] for name in COMMANDS),
    ["cache", "stats", "--help"],
    ["cache", "clear", "--help"],
    ["cache"],
    ["run"],
    ["run", "--no-such-option"],
    ["run", "flow.py", "--concurrency", "0"],
    ["check"],
    ["show"],
]


@pytest.mark.parametrize("args", ARGS, ids=" ".join)
def test_a_command_alone_prints_what_the_whole_app_prints(args: list[str]) -> None:
    assert invoked_command(args) == args[0]
    assert _output(build_app(args[0]), args) == _output(app, args)


def test_the_whole_app_has_every_command_in_the_listed_order() -> None:
    group = typer.main.get_command(app)
    assert list(COMMANDS) == [name for name, _ in LISTED]
    assert list(group.commands) == list(COMMANDS)  # type: ignore[attr-defined]
    alone = typer.main.get_command(build_app("run"))
    assert list(alone.commands) == ["run"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("args", [[], ["--version"], ["-h", "run"], ["nope"], ["--help"]])
def test_anything_but_a_command_first_gets_every_command(args: list[str]) -> None:
    assert invoked_command(args) is None


def test_the_console_script_still_reports_unknown_commands(tmp_path: Path) -> None:
    probe = "import sys; sys.argv = ['trellis', 'runz']\nfrom trellis.cli import main\nmain()"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2
    assert "No such command 'runz'" in proc.stderr
    assert "runs" in proc.stderr  # typer's "did you mean", from every command's name
