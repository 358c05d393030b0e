"""The ``rss`` group of ``bench/run.py``: peak memory of the large fan-out.

``peak_rss_mb_fanout_10000``: the fan-out in a fresh subprocess (``bench/rss_probe.py``),
against a subprocess that imports trellis and gathers the same sleeps; the two kinds of
probe alternate, their order swapped every repetition. The probe reports its ``VmHWM``
(``ru_maxrss`` where ``/proc`` does not exist; see ``bench/README.md``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Goal, median, unit_figure

RSS_GOAL = Goal("<", 100.0)
PROBE = Path(__file__).resolve().parent / "rss_probe.py"


def rss_probe(mode: str, n: int) -> dict[str, Any]:
    """One run of ``rss_probe.py MODE N`` in a fresh process: its JSON report."""
    proc = subprocess.run(
        [sys.executable, str(PROBE), mode, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rss_probe.py {mode} {n} failed:\n{proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    n = sizes.rss
    say(f"peak RSS: fan-out of {n} in fresh subprocesses")
    probes: dict[str, list[dict[str, Any]]] = {"asyncio": [], "trellis": []}
    for rep in range(sizes.reps):
        order = ["asyncio", "trellis"] if rep % 2 == 0 else ["trellis", "asyncio"]
        for mode in order:
            probes[mode].append(rss_probe(mode, n))
    peak = {mode: [float(p["peak_rss_mb"]) for p in ps] for mode, ps in probes.items()}
    exact = all(p["vm_hwm_mb"] is not None for ps in probes.values() for p in ps)
    return {
        "peak_rss_mb_fanout_10000": unit_figure(
            peak,
            "trellis",
            "asyncio",
            unit="MB",
            baseline_what=f"a subprocess that imports trellis and gathers {n} sleeps",
            goal=RSS_GOAL,
            reps=sizes.reps,
            n=n,
            increment_mb=median(peak["trellis"]) - median(peak["asyncio"]),
            method=(
                "VmHWM of the probe process (/proc/self/status)"
                if exact
                else "ru_maxrss (may include the parent's RSS, inherited across exec)"
            ),
            ru_maxrss_mb_median=median([float(p["ru_maxrss_mb"]) for p in probes["trellis"]]),
        )
    }
