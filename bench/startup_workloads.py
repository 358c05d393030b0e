"""Start-up: what a user waits for before Trellis does anything.

- ``startup_ratio_run``: wall time of a fresh ``trellis run`` of a one-step flow (one
  structured call to ``sim:small``, one item, the default SQLite store in a scratch
  folder), against a fresh ``python -c pass``.
- ``startup_ratio_help``: wall time of ``trellis --help``, against the same baseline.

Also recorded with them: a fresh ``python -c "import trellis"`` (``import_ms``), which
loads none of the package's parts until a name is used.

Each repetition starts new processes, interleaved with the baseline (order rotated);
medians of ``reps`` after one warm-up of each. Every child process, the baseline's too,
may use bytecode as a pip-installed user's does (pip compiles the package when it
installs it): ``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment and
``PYTHONPYCACHEPREFIX`` points at a scratch folder, so the warm-up compiles every module
either side imports (Trellis, its dependencies, the standard library) once, into that
folder, and the timed repetitions load the ``.pyc`` files, without writing next to any
source. The warm-up fills the OS file cache too: both are warm for a user's second
command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Goal, median, ratio_figure

RUN_GOAL = Goal("<=", 15.0)
HELP_GOAL = Goal("<=", 8.0)

FLOW_FILE = """
from pydantic import BaseModel

import trellis as tl


class Label(BaseModel):
    label: str


flow = tl.Flow("startup", inputs={"text": str})


@flow.step
async def classify(text: str, llm: tl.LLM) -> Label:
    return await llm.generate(f"Classify: {text}", output=Label, model="small")
"""


#: How both sides of each figure load their modules (the ``*_what`` of the figures).
BYTECODE = (
    "(both it and the baseline with bytecode, as a pip install has: "
    "PYTHONPYCACHEPREFIX in a scratch folder, no PYTHONDONTWRITEBYTECODE, warmed once)"
)


RUN_WHAT = "a fresh 1-item `trellis run` on sim:"


def _trellis_command() -> list[str]:
    """The console script next to this interpreter (what a user types), or ``-m trellis``."""
    script = Path(sys.executable).with_name("trellis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trellis"]


def _bytecode_env(cache: Path) -> dict[str, str]:
    """This environment, with bytecode written and read under ``cache`` (for both sides)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``startup`` group of ``bench/run.py``."""
    reps = sizes.reps
    with tempfile.TemporaryDirectory(prefix="trellis-bench-startup-") as tmp:
        folder = Path(tmp)
        (folder / "startup_flow.py").write_text(FLOW_FILE)
        env = _bytecode_env(folder / "pycache")
        env["TRELLIS_STORE"] = f"sqlite:///{folder / 'runs.db'}"
        trellis = _trellis_command()
        commands = {
            "pass": [sys.executable, "-c", "pass"],
            "import": [sys.executable, "-c", "import trellis"],
            "help": [*trellis, "--help"],
            "run": [
                *trellis,
                "run",
                "startup_flow.py:flow",
                "--input",
                '{"text": "The app keeps crashing"}',
                "--model",
                "small=sim:small",
                "--quiet",
            ],
        }
        say(f"startup: trellis run, trellis --help and import trellis, {reps} fresh processes")
        names = list(commands)
        for name in names:  # warm-up: compiles into the scratch bytecode cache
            _timed(commands[name], folder, env)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for rep in range(reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_timed(commands[name], folder, env))
    return {
        key: ratio_figure(
            samples,
            name,
            "pass",
            baseline_unit="ms",
            baseline_scale=1e3,
            baseline_what="a fresh `python -c pass` (the same bytecode cache)",
            goal=goal,
            reps=reps,
            n=1,
            ms=median(samples[name]) * 1e3,
            what=what,
            samples_ms=[x * 1e3 for x in samples[name]],
            import_ms=median(samples["import"]) * 1e3,
            baseline_samples_ms=[x * 1e3 for x in samples["pass"]],
        )
        for name, key, goal, what in (
            ("run", "startup_ratio_run", RUN_GOAL, f"{RUN_WHAT} {BYTECODE}"),
            ("help", "startup_ratio_help", HELP_GOAL, f"a fresh `trellis --help` {BYTECODE}"),
        )
    }
