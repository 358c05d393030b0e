"""A big batch through the CLI: its peak memory, and reading it back with ``trellis show``.

- ``batch_rss_ratio_20000``: peak RSS of ``trellis run`` of a 2-step flow over 20 000
  items on ``sim:`` (zero latency, ``--concurrency 64``, the default SQLite store),
  against the same batch at 2 000 items. Each run is a fresh process; its peak is its
  ``VmHWM`` (``/proc/self/status``, read at exit), else ``ru_maxrss`` of the child.
- ``show_batch_ratio_20000``: wall time of ``trellis show BATCH`` on that store, against
  ``trellis show ITEM`` (one of its items) on the same store, in fresh processes.

Medians of ``reps`` repetitions (at most 3); sizes are the figure names' (``quick``: 200
against 20 items).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Goal, median, ratio_figure

BATCH_RSS_GOAL = Goal("<=", 1.25)
SHOW_BATCH_GOAL = Goal("<=", 2.0)

FLOW = """
import trellis as tl

flow = tl.Flow("two", inputs={"item": str})


@flow.step
async def first(item: str, llm: tl.LLM) -> str:
    return await llm.generate(f"Say something about {item}", model="small")


@flow.step
async def second(first: str, llm: tl.LLM) -> str:
    return await llm.generate(f"Shorten: {first}", model="small")
"""

# Runs the CLI in this process image and prints its VmHWM (kB) on stderr at exit.
_PROBE = (
    "import atexit, sys\n"
    "def _hwm():\n"
    "    try:\n"
    "        for line in open('/proc/self/status', encoding='ascii'):\n"
    "            if line.startswith('VmHWM:'):\n"
    "                sys.stderr.write('VMHWM_KB ' + line.split()[1] + '\\n')\n"
    "    except OSError:\n"
    "        pass\n"
    "atexit.register(_hwm)\n"
    "from trellis.cli import main\n"
    "sys.argv = ['trellis', *sys.argv[1:]]\n"
    "main()\n"
)


def _trellis(args: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``trellis ARGS`` in a fresh process: (wall seconds, peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROBE, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"trellis {' '.join(args)} failed ({proc.returncode}): {err[-2000:]}")
    peak = [line.split()[1] for line in err.splitlines() if line.startswith("VMHWM_KB ")]
    if peak:
        return seconds, int(peak[-1]) / 1024
    # No VmHWM (not Linux): the largest peak of any child so far (macOS: bytes).
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, children / (1024 * 1024) if sys.platform == "darwin" else children / 1024


def _batch(root: Path, n: int, run_id: str) -> tuple[float, float]:
    items = root / f"items-{n}.jsonl"
    if not items.exists():
        items.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(n)))
    args = ["run", "flow.py:flow", "-f", str(items), "--run-id", run_id, "-m", "small=sim:small"]
    args += ["--concurrency", "64", "-o", str(root / f"{run_id}.jsonl"), "--quiet"]
    return _trellis(args, root)


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``scale_batch`` group of ``bench/run.py`` (``--quick``: 200 items)."""
    return scale_batch_figures(sizes.rss < 10000, sizes.reps, say)


def scale_batch_figures(quick: bool, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    # --quick: a smoke run (sizes too small for the figures to mean anything).
    big, small = (200, 20) if quick else (20000, 2000)
    reps = max(1, min(reps, 3))
    with tempfile.TemporaryDirectory(prefix="trellis-scale-batch-") as tmp:
        root = Path(tmp)
        (root / "flow.py").write_text(FLOW)
        peaks: dict[int, list[float]] = {big: [], small: []}
        for rep in range(reps):
            for n in (small, big) if rep % 2 == 0 else (big, small):
                say(f"scale_batch: trellis run of {n} items (rep {rep + 1}/{reps})")
                peaks[n].append(_batch(root, n, f"b{n}-{rep}")[1])
        batch, item = f"b{big}-0", f"b{big}-0.{big // 2}"
        shows: dict[str, list[float]] = {batch: [], item: []}
        for rep in range(reps):
            for run in (batch, item) if rep % 2 == 0 else (item, batch):
                shows[run].append(_trellis(["show", run], root)[0])
    return {
        "batch_rss_ratio_20000": ratio_figure(
            peaks,
            big,
            small,
            baseline_unit="MB",
            baseline_what=f"peak RSS of the same batch at {small} items",
            goal=BATCH_RSS_GOAL,
            reps=reps,
            n=big,
            peak_rss_mb=median(peaks[big]),
            baseline_peak_rss_mb=median(peaks[small]),
            samples_mb=peaks[big],
            baseline_samples_mb=peaks[small],
        ),
        "show_batch_ratio_20000": ratio_figure(
            shows,
            batch,
            item,
            baseline_what="trellis show ITEM (one of the batch's items) on the same store",
            goal=SHOW_BATCH_GOAL,
            reps=reps,
            n=big,
            show_batch_s=median(shows[batch]),
            show_item_s=median(shows[item]),
            samples_s=shows[batch],
            baseline_samples_s=shows[item],
        ),
    }
