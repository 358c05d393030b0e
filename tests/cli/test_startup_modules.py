"""What ``trellis --help`` and a ``sim:`` run import: what they use, and nothing heavy
they do not (the HTTP client and TLS, the mock server, OpenTelemetry, the web UI, the eval
code, Ray's executor, the progress bar...). Start-up time is mostly imports
(bench/startup_workloads.py measures it); each check runs the real command in a fresh
interpreter, since this test process has imported everything.

A run does import ``ssl``: ``asyncio`` itself does, and a run needs asyncio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules (and their submodules) no help screen imports. (Not pydantic: typer itself
#: imports it to check the values of ``trellis CMD``'s options, --help included.)
NOT_FOR_HELP = (
    "asyncio",
    "ssl",
    "sqlite3",
    "httpx",
    "trellis.store",
    "trellis.engine",
    "trellis.flow",
    "trellis.models",
    "trellis.providers",
    "trellis.cluster",
    "trellis.mockserver",
    "trellis.eval",
    "trellis.ui",
    "trellis.cli.commands",
    "trellis.cli.stores",
    "rich.progress",
    "opentelemetry",
    "starlette",
    "uvicorn",
    "aiohttp",
    "ray",
)

#: The modules of each command but ``run`` and ``check`` (defined in ``trellis.cli.app``):
#: ``trellis CMD ...`` imports its own only (the console script builds the typer
#: application with the invoked command alone: ``trellis.cli.app.main``).
COMMAND_MODULES = {
    "mock-server": "trellis.cli.mock",
    "eval": "trellis.cli.eval",
    "fork": "trellis.cli.history",
    "diff": "trellis.cli.history",
    "resume": "trellis.cli.resume",
    "approve": "trellis.cli.human",
    "reply": "trellis.cli.human",
    "runs": "trellis.cli.inspect",
    "show": "trellis.cli.inspect",
    "ui": "trellis.cli.ui",
    "cache": "trellis.cli.cache",
}

#: Modules a one-item ``--quiet`` run on ``sim:`` does not import: nothing of the HTTP
#: providers, the other commands, the tables and progress bar (no rich at all), the
#: summaries, Postgres, OpenTelemetry, the web UI, Ray... and no typer or click: its
#: command line is parsed by ``trellis.cli.fastrun``.
NOT_FOR_A_SIM_RUN = (
    "typer",
    "click",
    "trellis.cli.app",
    "trellis.cli.options",
    *sorted(set(COMMAND_MODULES.values())),
    "trellis.cli.check",
    "trellis.cli.run_views",
    "trellis.cli.tokens",
    "trellis.engine.records",
    "trellis.store.postgres",
    "trellis.store.pgcluster",
    "httpx",
    "trellis.providers",
    "trellis.mockserver",
    "trellis.eval",
    "trellis.ui",
    "trellis.cluster",
    "trellis.history",
    "trellis.cli.batch",
    "trellis.cli.render",
    "trellis.cli.resuming",
    "trellis.cli.answering",
    "trellis.engine.summary",
    "trellis.engine.spend",
    "rich",
    "opentelemetry",
    "starlette",
    "uvicorn",
    "aiohttp",
    "ray",
)

FLOW = """
from pydantic import BaseModel

import trellis as tl


class Label(BaseModel):
    label: str


flow = tl.Flow("startup", inputs={"text": str})


@flow.step
async def classify(text: str, llm: tl.LLM) -> Label:
    return await llm.generate(f"Classify: {text}", output=Label, model="small")
"""

#: ``trellis ARGS`` as the console script runs it, then the modules it left loaded.
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
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _modules_of(args: list[str], cwd: Path) -> tuple[object, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        timeout=60,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def _heavy(loaded: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == b or m.startswith(b + ".") for b in banned))


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
        ["cache", "--help"],
        ["cache", "stats", "--help"],
        ["ui", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(args: list[str], tmp_path: Path) -> None:
    code, loaded = _modules_of(args, tmp_path)
    assert code in (0, None)
    banned = NOT_FOR_HELP
    if args == ["--help"]:  # printed by trellis.cli.roothelp: no typer, no rich
        assert "trellis.cli.roothelp" in loaded
        banned = (*NOT_FOR_HELP, "typer", "rich", "pydantic", "trellis.cli.app")
    else:
        assert "typer" in loaded
    heavy = _heavy(loaded, banned)
    assert not heavy, f"`trellis {' '.join(args)}` imported {heavy[:10]}"


@pytest.mark.parametrize("name", [*COMMAND_MODULES, "run", "check"])
def test_a_commands_help_imports_no_other_command(name: str, tmp_path: Path) -> None:
    code, loaded = _modules_of([name, "--help"], tmp_path)
    assert code in (0, None)
    others = {m for c, m in COMMAND_MODULES.items() if m != COMMAND_MODULES.get(name)}
    assert not others & loaded, f"`trellis {name} --help` imported {sorted(others & loaded)}"


def _sim_run(tmp_path: Path, *extra: str) -> tuple[object, set[str]]:
    (tmp_path / "startup_flow.py").write_text(FLOW)
    args = ["run", "startup_flow.py:flow", "--model", "small=sim:small"]
    store = ["--store", f"sqlite:///{tmp_path / 'runs.db'}"]
    return _modules_of([*args, *store, *extra], tmp_path)


def test_a_quiet_sim_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    code, loaded = _sim_run(tmp_path, "--input", '{"text": "The app keeps crashing"}', "--quiet")
    assert code in (0, None)
    assert {"trellis.engine.engine", "trellis.models.sim", "trellis.store.sqlite"} <= loaded
    assert "trellis.cli.fastrun" in loaded
    heavy = _heavy(loaded, NOT_FOR_A_SIM_RUN)
    assert not heavy, f"a quiet sim: run imported {heavy[:10]}"


@pytest.mark.parametrize(
    "extra",
    [
        ["-i", '{"text": "a"}', "-q", "--json"],
        ["-i", '{"text": "a"}', "--no-store", "--quiet"],
        ["--input={}", "-q"],  # a usage error (a required input): one error line
        ["-i", '{"text": "a"}', "-q", "--max-seconds", "30", "-n", "2", "--cache"],
    ],
    ids=" ".join,
)
def test_a_fast_path_run_imports_no_typer(tmp_path: Path, extra: list[str]) -> None:
    """What ``trellis.cli.fastrun`` parses runs without typer, click or rich."""
    code, loaded = _sim_run(tmp_path, *extra)
    assert code in (0, 2)
    assert "trellis.cli.fastrun" in loaded
    heavy = _heavy(loaded, ("typer", "click", "rich", "trellis.cli.app", "trellis.cli.options"))
    assert not heavy, f"trellis run {' '.join(extra)} imported {heavy[:10]}"


def test_what_the_fast_path_does_not_parse_goes_through_typer(tmp_path: Path) -> None:
    code, loaded = _sim_run(tmp_path, "-qi", '{"text": "a"}')  # combined short flags
    assert code in (0, None)
    assert {"typer", "trellis.cli.app"} <= loaded


@pytest.mark.parametrize("module", ["trellis.cli.fastrun", "trellis.cli.echo"])
def test_the_fast_path_modules_import_only_the_standard_library(module: str) -> None:
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(proc.stdout))
    outside = {m for m in loaded if m.split(".")[0] in ("typer", "click", "rich", "pydantic")}
    assert not outside, sorted(outside)
    trellis_modules = {m for m in loaded if m.startswith("trellis")}
    assert trellis_modules <= {"trellis", "trellis.cli", module}, sorted(trellis_modules)


def test_what_a_batch_and_a_table_use_still_loads(tmp_path: Path) -> None:
    """The lazy imports are there when they are needed: a batch's progress bar and
    summary, a single run's table."""
    items = tmp_path / "items.jsonl"
    items.write_text('{"text": "a"}\n{"text": "b"}\n')
    code, loaded = _sim_run(tmp_path, "--input-file", str(items))
    assert code in (0, None)
    assert {"trellis.cli.batch", "trellis.engine.summary", "rich.progress"} <= loaded
    code, loaded = _sim_run(tmp_path, "--input", '{"text": "a"}')
    assert code in (0, None)
    assert {"trellis.cli.render", "rich.table"} <= loaded


def test_a_command_that_reads_the_store_loads_what_it_needs(tmp_path: Path) -> None:
    code, loaded = _modules_of(["runs", "--store", "memory:"], tmp_path)
    assert code in (0, None)
    assert "trellis.engine.records" in loaded
