"""User-code tracebacks: the frames of the user's own code, never Trellis's or the stdlib's."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import trellis as tl
from trellis.tracebacks import Frame, format_frames, user_frames, user_location


def _load(tmp_path: Path, source: str) -> dict[str, object]:
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    namespace: dict[str, object] = {"__name__": "user_code"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_frames_are_the_users_own_with_file_line_function_and_source(tmp_path: Path) -> None:
    code = _load(
        tmp_path,
        """
        import json

        def parse(text):
            return json.loads(text)  # the stdlib raises below

        def step(text):
            return parse(text)
        """,
    )
    try:
        code["step"]("{not json")  # type: ignore[operator]
    except ValueError as exc:
        frames = user_frames(exc)
    files = {f.file for f in frames}
    assert files == {__file__, str(tmp_path / "user_code.py")}, frames  # no json/ frames
    assert [f.function for f in frames][-2:] == ["step", "parse"]
    assert frames[-1].line == 5
    assert frames[-1].source == "return json.loads(text)  # the stdlib raises below"


def test_a_configuration_error_points_at_the_users_call(tmp_path: Path) -> None:
    try:
        _load(tmp_path, "import trellis as tl\n\nbudget = tl.Budget(max_usd=-1)\n")
    except tl.ConfigurationError as exc:
        where = user_location(exc)
    assert where is not None
    assert where.file == str(tmp_path / "user_code.py") and where.line == 3
    assert where.source == "budget = tl.Budget(max_usd=-1)"


def test_a_wrapped_error_is_followed_to_the_original() -> None:
    def user_code() -> None:
        raise KeyError("missing")

    try:
        try:
            user_code()
        except KeyError as inner:
            raise tl.StepError("step 's' raised KeyError", step="s") from inner
    except tl.StepError as exc:
        frames = user_frames(exc)
    assert frames[-1].function == "user_code"


def test_frames_round_trip_through_json_and_format_like_python() -> None:
    frame = Frame(file="/p/flow.py", line=12, function="topics", source="return x[0]")
    assert Frame.from_dict(json.loads(json.dumps(frame.to_dict()))) == frame
    lines = format_frames([frame])
    assert lines[0].endswith("flow.py:12 in topics") and lines[1].strip() == "return x[0]"


def test_no_traceback_means_no_frames() -> None:
    assert user_frames(ValueError("never raised")) == ()
    assert user_location(ValueError("never raised")) is None


@pytest.mark.parametrize("limit", [1, 3])
def test_the_innermost_frames_are_kept_under_a_limit(limit: int) -> None:
    def recurse(n: int) -> None:
        if n == 0:
            raise RuntimeError("bottom")
        recurse(n - 1)

    try:
        recurse(6)
    except RuntimeError as exc:
        frames = user_frames(exc, limit=limit)
    assert len(frames) == limit
    assert frames[-1].source == 'raise RuntimeError("bottom")'


def test_the_cli_points_a_configuration_error_at_the_users_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trellis.cli import app

    flow_file = tmp_path / "flow.py"
    flow_file.write_text(
        "import trellis as tl\n\nflow = tl.Flow('x')\nbudget = tl.Budget(max_usd=-1)\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["check", str(flow_file)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "Budget.max_usd cannot be negative" in result.output
    assert "flow.py:4)" in result.output and "policy.py" not in result.output
