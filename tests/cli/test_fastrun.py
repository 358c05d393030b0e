"""``trellis run``'s fast path (``trellis.cli.fastrun``) against the typer command.

- its option table is the typer command's options (names, short flags, flags or values,
  repeatable, types, defaults, minimums): an option added or changed in ``app.py`` must
  be changed there too;
- a generated command line is either left to typer (``parse_run`` returns None) or
  parsed to exactly the ``RunOptions`` (and target) typer gives ``execute_run``;
- a real ``trellis run`` through it prints and exits as through typer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import typer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

import trellis.cli.commands
from trellis.cli.app import build_app
from trellis.cli.fastrun import RUN_OPTIONS, Opt, parse_run, run_options
from trellis.cli.jobs import RunOptions

from .helpers import FLOWS

KINDS: dict[Any, str] = {bool: "flag", str: "str", Path: "path", int: "int", float: "float"}


def _typer_run_command() -> Any:
    return get_command(build_app("run")).commands["run"]  # type: ignore[attr-defined]


# -- the option table is the typer command's ----------------------------------------------


def _declared(param: Any) -> Opt:
    annotation = param.type_descriptor.annotation
    multiple = bool(param.multiple)
    if multiple:
        (annotation,) = get_args(annotation)
    shorts = [o for o in param.opts if not o.startswith("--")]
    longs = [o for o in param.opts if o.startswith("--")]
    assert len(longs) == 1 and len(shorts) <= 1, param.opts
    assert not param.secondary_opts, param.secondary_opts  # no --x/--no-x pairs
    kind = KINDS[annotation]
    assert (kind == "flag") == bool(param.is_flag), param.name
    return Opt(
        dest=param.name,
        long=longs[0],
        short=shorts[0] if shorts else None,
        kind=kind,
        default=param.default,
        multiple=multiple,
        min=param.min,
    )


def test_the_option_table_is_the_typer_commands() -> None:
    command = _typer_run_command()
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option"]
    assert [(a.name, a.nargs, a.required) for a in arguments] == [("target", 1, True)]
    assert tuple(_declared(p) for p in options) == RUN_OPTIONS
    for p in options:  # nothing else changes how a value is read
        assert p.nargs == 1 and not p.count and p.envvar is None and p.callback is None
        assert p.max is None and not p.is_eager and p.prompt is None, p.name
        info = p.type_descriptor.parameter_info
        assert info.parser is None, p.name
        if _declared(p).kind == "path":  # what fastrun._path checks
            checks = (info.exists, info.file_okay, info.dir_okay, info.readable)
            assert checks == (False, True, True, True), p.name
            assert not (info.writable or info.resolve_path or info.allow_dash), p.name
            assert info.path_type is None, p.name


def test_run_options_takes_every_parameter_of_the_command() -> None:
    import inspect

    from trellis.cli.app import run

    signature = inspect.signature(inspect.unwrap(run))
    names = [n for n in signature.parameters if n != "target"]
    assert names == [o.dest for o in RUN_OPTIONS]
    assert list(inspect.signature(run_options).parameters) == names


# -- generated command lines: typer's RunOptions, or typer's own handling -----------------


def _typer_parse(args: list[str]) -> tuple[int, tuple[str, RunOptions] | None, str]:
    """``trellis run ARGS`` through the typer command, ``execute_run`` replaced by a
    recorder: the exit code, what it was called with, and the output."""
    calls: list[tuple[str, RunOptions]] = []

    def record(target: str, options: RunOptions) -> int:
        calls.append((target, options))
        return 0

    saved = trellis.cli.commands.execute_run
    trellis.cli.commands.execute_run = record  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(_APP, ["run", *args], env={"COLUMNS": "200"})
    finally:
        trellis.cli.commands.execute_run = saved
    return result.exit_code, (calls[0] if calls else None), result.output


_APP: typer.Typer = build_app("run")


def _typed(options: RunOptions) -> list[tuple[str, type, Any]]:
    import dataclasses

    return [
        (f.name, type(getattr(options, f.name)), getattr(options, f.name))
        for f in dataclasses.fields(options)
    ]


def _assert_same(args: list[str]) -> bool:
    """The fast parser leaves ``args`` to typer, or parses them as typer does; whether it
    took them."""
    parsed = parse_run(args)
    if parsed is None:
        return False
    code, call, output = _typer_parse(args)
    assert code == 0 and call is not None, (args, output)
    target, params = parsed
    assert call[0] == target
    assert _typed(call[1]) == _typed(run_options(**params)), args
    return True


INTS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, 99).map(lambda n: f"0{n}"),
    st.sampled_from(["-1", "+3", "1.0", "1e3", " 3", "3 ", "1_000", "٣", "", "x", "0x10"]),
    st.just("9" * 19),
)
FLOATS = st.one_of(
    INTS,
    st.floats(0, 1e6, allow_nan=False).map(repr),
    st.decimals(0, 1000, places=3).map(str),
    st.sampled_from(["inf", "nan", "-0.5", ".5", "5.", "1e-3", "0.0", "00.25", "-0"]),
)
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["-", "--", "--quiet", "-q", "x=y", "a b", "\udcff", "é", "{}", "-x"]),
)
JUNK = st.sampled_from(
    ["--help", "-h", "--", "-qf", "-ifoo", "--quiet=1", "--bogus", "-z", "extra", "-", "--inp"]
)


@st.composite
def _option(draw: st.DrawFn) -> list[str]:
    opt = draw(st.sampled_from(RUN_OPTIONS))
    names = [opt.long] + ([opt.short] if opt.short else [])
    name = draw(st.sampled_from(names))
    if opt.kind == "flag":
        return [name]
    value = draw({"int": INTS, "float": FLOATS}.get(opt.kind, TEXT))
    if name.startswith("--") and draw(st.booleans()):
        return [f"{name}={value}"]
    if draw(st.integers(0, 20)) == 0:
        return [name]  # the value left out (at the end: missing)
    return [name, value]


@st.composite
def _command_line(draw: st.DrawFn) -> list[str]:
    parts = draw(st.lists(st.one_of(_option(), _option(), _option(), JUNK.map(lambda j: [j]))))
    if draw(st.integers(0, 10)):  # the target, somewhere (mostly)
        target = draw(
            st.sampled_from(["flow.py:flow", "pkg.mod:flow", "f.py", "-", "é.py:f", "", " ", "—q"])
        )
        parts.insert(draw(st.integers(0, len(parts))), [target])
    return [token for part in parts for token in part]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_command_line())
@example(["flow.py:flow", "-i", "{}", "-m", "a=sim:a", "--model=b=sim:b", "-q"])
@example(["flow.py:flow", "-f", "items.jsonl", "-o", "-", "-n", "3", "--json"])
@example(["flow.py:flow", "--budget-usd", "0", "--budget-tokens=0", "--budget-calls", "007"])
@example(["--quiet", "flow.py:flow", "--max-seconds", "1.50", "--cache-ttl=2", "--lease-ttl", "3"])
@example(["flow.py:flow", "--concurrency", "0"])
@example(["flow.py:flow", "--input", "-"])
@example(["flow.py:flow", "--input", "a", "--input", "b"])
def test_a_command_line_is_parsed_as_typer_parses_it_or_left_to_typer(args: list[str]) -> None:
    _assert_same(args)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_well_formed_command_lines_take_the_fast_path(data: st.DataObject) -> None:
    """Every option of the table in each of its spellings, with ordinary values, the
    target anywhere among them."""
    chunks: list[list[str]] = []
    for opt in data.draw(st.lists(st.sampled_from(RUN_OPTIONS), unique=True)):
        for _ in range(data.draw(st.integers(1, 3)) if opt.multiple else 1):
            name = data.draw(st.sampled_from([opt.long] + ([opt.short] if opt.short else [])))
            if opt.kind == "flag":
                chunks.append([name])
                continue
            if opt.kind == "int":
                value = str(data.draw(st.integers(max(1, opt.min or 0), 500)))
            elif opt.kind == "float":
                value = data.draw(st.sampled_from(["0", "0.5", "3", "12.25", "100"]))
            else:
                value = data.draw(st.sampled_from(["x", "a=sim:b", '{"t": "é"}', "d/f.jsonl"]))
            long_form = name.startswith("--") and data.draw(st.booleans())
            chunks.append([f"{name}={value}"] if long_form else [name, value])
    chunks.insert(data.draw(st.integers(0, len(chunks))), ["examples/flow.py:flow"])
    args = [token for chunk in chunks for token in chunk]
    assert _assert_same(args), args


@pytest.mark.parametrize(
    "args",
    [
        ["flow.py:flow", "--help"],
        ["flow.py:flow", "-h"],
        ["flow.py:flow", "--concurrency", "0"],
        ["flow.py:flow", "-n", "two"],
        ["flow.py:flow", "--budget-usd", "-1"],
        ["flow.py:flow", "--max-seconds", "1e3"],
        ["flow.py:flow", "--input"],
        ["flow.py:flow", "--input="],
        ["flow.py:flow", "--quiet=yes"],
        ["flow.py:flow", "-qi", "{}"],
        ["flow.py:flow", "-i{}"],
        ["flow.py:flow", "--", "-q"],
        ["flow.py:flow", "--quiet", "--quiet"],
        ["flow.py:flow", "--run-id", "a", "--run-id", "b"],
        ["flow.py:flow", "other.py:flow"],
        ["flow.py:flow", "--inp", "{}"],
        ["flow.py:flow", "--input", "\udcff"],
        ["--quiet"],
        [],
    ],
    ids=repr,
)
def test_what_it_is_not_sure_of_goes_to_typer(args: list[str]) -> None:
    assert parse_run(args) is None


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_TRELLIS_COMPLETE", "bash_complete")
    assert parse_run(["flow.py:flow"]) is None


# -- a real trellis run: the same screens and exit codes ----------------------------------

#: ``trellis ARGS`` through the console script (the fast path when it applies), and a
#: note in $FASTRUN_PROBE of whether typer was imported.
FAST = """
import atexit, os, sys
atexit.register(lambda: open(os.environ["FASTRUN_PROBE"], "w").write(
    "typer" if "typer" in sys.modules else "fast"))
sys.argv[0] = "trellis"
from trellis.cli import main
main()
"""
#: ``trellis ARGS`` through typer, as the console script ran it before the fast path.
TYPER = """
import sys
sys.argv[0] = "trellis"
from trellis.cli.app import main
main()
"""

#: What differs from one run to the next: durations, latencies, throughput.
_TIMES = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m| items/s)\b")
_JSON_TIMES = re.compile(r'(?<="latency_s": )[0-9.e-]+|(?<="duration_s": )[0-9.e-]+')


def _masked(text: str) -> str:
    return _TIMES.sub("<t>", _JSON_TIMES.sub("0", text))


def _trellis(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRELLIS_STORE"}
    env.update(COLUMNS="120", FASTRUN_PROBE=str(cwd / "probe"), NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def _both(tmp_path: Path, args: list[str], files: dict[str, str] | None = None) -> list[Any]:
    """Run ``trellis ARGS`` both ways, each in a fresh folder; what each printed, exit code
    and the files it wrote (durations masked)."""
    seen = []
    for name, script in (("fast", FAST), ("typer", TYPER)):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in (files or {}).items():
            (folder / file).write_text(text)
        proc = _trellis(script, ["run", *args], folder)
        if name == "fast":
            assert (folder / "probe").read_text() == "fast", proc.stderr
        written = {
            p.name: _masked(p.read_text())
            for p in sorted(folder.iterdir())
            if p.suffix == ".jsonl" and p.name not in (files or {})
        }
        seen.append((proc.returncode, _masked(proc.stdout), _masked(proc.stderr), written))
    return seen


CHAIN = f"{FLOWS / 'chain.py'}:flow"


def _chain_inputs() -> str:
    return json.dumps({"item": "The app keeps crashing"})


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--quiet"],
        ["-q", "--no-store"],
        [],
        ["--json", "--no-store"],
    ],
    ids=" ".join,
)
def test_a_single_run_prints_and_exits_as_through_typer(tmp_path: Path, extra: list[str]) -> None:
    args = [CHAIN, "-i", _chain_inputs(), "--model", "small=sim:small", "--run-id", "r1", *extra]
    if "--no-store" in extra:
        args.remove("--run-id")
        args.remove("r1")
    fast, slow = _both(tmp_path, args)
    if "--json" in extra:  # ids, times: compare the shape and the outcome
        fast_json, slow_json = json.loads(fast[1]), json.loads(slow[1])
        assert fast[0] == slow[0] == 0 and fast[2] == slow[2]
        assert sorted(fast_json) == sorted(slow_json)
        assert fast_json["status"] == slow_json["status"] == "done"
        assert fast_json["outputs"] == slow_json["outputs"]
        return
    assert fast == slow
    assert fast[0] == 0


@pytest.mark.slow
def test_a_batch_with_an_output_file_is_the_same(tmp_path: Path) -> None:
    items = "\n".join(json.dumps({"item": t}) for t in ("a", "b", "c")) + "\n"
    args = [CHAIN, "-f", "items.jsonl", "-o", "out.jsonl", "-m", "small=sim:small"]
    fast, slow = _both(tmp_path, [*args, "--run-id", "b1", "-n", "2"], {"items.jsonl": items})
    assert fast == slow
    assert fast[0] == 0 and len(fast[3]["out.jsonl"].splitlines()) == 3


@pytest.mark.slow
def test_a_batch_to_stdout_is_the_same(tmp_path: Path) -> None:
    items = "\n".join(json.dumps({"item": t}) for t in ("a", "b")) + "\n"
    args = [CHAIN, "--input-file=items.jsonl", "--output=-", "--model=small=sim:small", "-q"]
    fast, slow = _both(tmp_path, [*args, "--run-id", "b2"], {"items.jsonl": items})
    assert fast == slow
    assert fast[0] == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["nowhere.py:flow", "-i", "{}"],  # a bad target
        [CHAIN, "-i", "{}", "-f", "items.jsonl"],  # options that exclude each other
        [CHAIN, "-i", "not json", "-m", "small=sim:small"],
        [CHAIN, "-i", _chain_inputs()],  # the role is not bound
        [CHAIN, "-i", _chain_inputs(), "-m", "small=nope:x"],
        [CHAIN, "-i", _chain_inputs(), "--no-store", "--run-id", "x"],
    ],
    ids=["target", "exclusive", "json", "unbound", "provider", "no-store-run-id"],
)
def test_an_error_is_the_same_line_and_exit_code(tmp_path: Path, args: list[str]) -> None:
    fast, slow = _both(tmp_path, args)
    assert fast == slow
    assert fast[0] == 2 and fast[2].startswith("error: ") and len(fast[2].splitlines()) == 1


@pytest.mark.slow
def test_a_failed_run_is_the_same(tmp_path: Path) -> None:
    failing = f"{FLOWS / 'odd.py'}:failing"
    fast, slow = _both(tmp_path, [failing, "-i", '{"text": "x"}', "-q", "--no-store"])
    assert fast == slow
    assert fast[0] == 1


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "ascii"])
@pytest.mark.parametrize("message", ["done in 2ms", "é ✓", "\x1b[1mbold\x1b[0m", ""])
@pytest.mark.parametrize("err", [False, True])
def test_echo_prints_what_typer_echo_prints(
    monkeypatch: pytest.MonkeyPatch, encoding: str, message: str, err: bool
) -> None:
    import io

    from trellis.cli.echo import echo

    printed = []
    for function in (echo, typer.echo):
        buffer = io.BytesIO()
        stream = io.TextIOWrapper(buffer, encoding=encoding, errors="replace")
        monkeypatch.setattr(sys, "stderr" if err else "stdout", stream)
        function(message, err=err)
        stream.flush()
        printed.append(buffer.getvalue())
    assert printed[0] == printed[1]


@pytest.mark.parametrize("option", ["--input-file", "-o", "--config"])
def test_an_existing_path_this_process_cannot_read_is_left_to_typer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    """typer refuses an existing path option it cannot read (exit 2, "is not readable");
    the fast path leaves it to typer instead of running (and writing, for -o) anyway. (The
    suite runs as root, who reads everything: ``os.access`` says what a user would get.)"""
    path = tmp_path / "locked.jsonl"
    path.write_text("")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != str(path) and real_access(p, mode))
    args = [f"{FLOWS}/chain.py:flow", "-i", "{}", option, str(path)]
    assert parse_run(args) is None
    assert parse_run([f"{FLOWS}/chain.py:flow", "-i", "{}", option, str(tmp_path / "new")])
    result = CliRunner().invoke(_APP, ["run", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "is not readable" in result.output
