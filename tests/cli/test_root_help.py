"""``trellis --help`` is printed by ``trellis.cli.roothelp`` without typer: it must be the
screen typer's rich help prints (same commands, same text, same layout)."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from trellis.cli import app
from trellis.cli.roothelp import COMMANDS, render


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_the_fast_root_help_is_typers(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERMINAL_WIDTH", str(width))
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", width, raising=False)
    result = CliRunner().invoke(app, ["--help"], prog_name="trellis")
    assert result.exit_code == 0
    assert render(width, color=False) == result.output


def test_every_command_is_listed() -> None:
    group = typer.main.get_command(app)
    assert [name for name, _ in COMMANDS] == list(group.commands)  # type: ignore[attr-defined]
