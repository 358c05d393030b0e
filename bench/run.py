"""Trellis benchmark suite: ``python bench/run.py --out bench/results.json [--quick]``.

Every figure is the median of several repetitions, measured in the same process run as
its baseline (repetitions interleaved, order rotated), and reported with that baseline.
See ``bench/README.md`` for what each figure measures and its goal.

This file is the driver: the sizes, the table of groups (:data:`GROUPS`: each group is
measured by ``group(sizes, say)`` in its own ``bench/<name>_workloads.py``), the LangGraph
side run (``bench/langgraph_workloads.py``), the report and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import platform
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # running as a script puts it there; importing may not
    sys.path.insert(0, str(BENCH_DIR))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import trellis as tl  # noqa: E402


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes and repetition counts. Figure names keep the full-size numbers
    (``fanout_10000_...``); each figure records the ``n`` it actually used."""

    chain: int = 1000
    fanout_small: int = 1000
    fanout_large: int = 10000
    limited: int = 1000
    limit: int = 50
    sim: int = 1000
    rss: int = 10000
    durable: int = 1000  # the durable chain and the resumed run (per-step units)
    ratelimited: int = 200  # calls against the rate-limited mock server
    ratelimited_reps: int = 3  # ~10 s a repetition (the server admits 20 requests/s)
    reps: int = 5  # fan-outs, limited run, LangGraph, peak RSS
    chain_reps: int = 15  # the chains take milliseconds: more repetitions, steadier median
    langgraph_limit_s: float = 60.0  # a LangGraph run slower than this is re-run smaller
    outage: int = 200  # feedback-triage items in the outage / flaky batches
    outage_reps: int = 3  # ~6 s a repetition
    outage_s: float = 3.0
    outage_start_s: float = 1.5  # after the batch's first request: mid-batch
    outage_concurrency: int = 16
    eval_items: int = 10000  # replayed items of the eval throughput figure
    eval_reps: int = 1  # ~45 s a repetition at 10 000 items (run + eval of 3 variants)
    ui_runs: int = 20000  # recorded runs behind the UI's runs page
    ui_steps: int = 1000  # steps of the run the UI's run page draws


FULL = Sizes()
QUICK = Sizes(
    chain=100,
    fanout_small=100,
    fanout_large=1000,
    limited=100,
    sim=100,
    rss=1000,
    durable=200,
    ratelimited=40,
    ratelimited_reps=1,
    reps=2,
    chain_reps=2,
    outage=30,
    outage_reps=1,
    outage_s=1.0,
    outage_start_s=0.5,
    eval_items=200,
    eval_reps=2,
    ui_runs=2000,
    ui_steps=100,
)

Say = Callable[[str], None]

#: The groups of figures, in the order a full run measures them (``--only`` picks some),
#: each with the module whose ``group(sizes, say)`` measures it (a coroutine function or a
#: plain one). A module is imported when its group runs.
GROUPS: dict[str, str] = {
    "trellis": "trellis_workloads",
    "durable": "durable_workloads",
    "ratelimit": "ratelimit_workloads",
    "outage": "outage_workloads",
    "eval": "eval_workloads",
    "stream": "stream_workloads",
    "postgres": "postgres_workloads",
    "ray": "ray_workloads",
    "rss": "rss_workloads",
    "ui": "ui_workloads",
    "scale_batch": "scale_batch_workloads",
    "scale_llm": "scale_llm_workloads",
    "scale_durable": "scale_durable_workloads",
    "startup": "startup_workloads",
    "http": "http_workloads",
}
LANGGRAPH = "langgraph_workloads"


def measure(group: str, sizes: Sizes, say: Say) -> dict[str, Any]:
    """The figures of one group (a coroutine runs in its own event loop)."""
    figures = importlib.import_module(GROUPS[group]).group(sizes, say)
    if inspect.iscoroutine(figures):
        figures = asyncio.run(figures)
    result: dict[str, Any] = figures
    return result


def langgraph_side(sizes: Sizes, say: Say) -> dict[str, Any]:
    """The same workloads on LangGraph; its failure never breaks the Trellis figures."""
    try:
        result: dict[str, Any] = asyncio.run(
            importlib.import_module(LANGGRAPH).langgraph_figures(sizes, say)
        )
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return result


# -- report -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    def version_of(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "trellis": tl.__version__,
        "pydantic": version_of("pydantic"),
        "langgraph": version_of("langgraph"),
        "langgraph_checkpoint_sqlite": version_of("langgraph-checkpoint-sqlite"),
        "sqlite": sqlite3.sqlite_version,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.3f}"
    return f"{x:.3g}"


def _met(fig: dict[str, Any]) -> str:
    met = fig.get("meets_goal")
    return "—" if met is None else "[green]yes[/]" if met else "[bold red]NO[/]"


def print_report(console: Console, report: dict[str, Any]) -> None:
    quick = " (--quick: reduced sizes, figures are not meaningful)" if report["quick"] else ""
    m = report["machine"]
    table = Table(
        title=f"Trellis benchmarks{quick}",
        caption=(
            f"Python {m['python']}, {m['usable_cpus']} usable CPU(s); medians; "
            "ratio = value / baseline when both share a unit"
        ),
    )
    # A figure's name is what a reader (and the bench smoke test) looks up, so it is never
    # wrapped or cut: the other columns give way on a narrow console.
    names = report["figures"]
    table.add_column("figure", no_wrap=True, min_width=max(map(len, names), default=6))
    for col in ("n", "value", "unit", "baseline", "ratio", "goal", "met", "reps"):
        table.add_column(col, justify="left" if col in ("unit", "goal") else "right")
    for name, fig in report["figures"].items():
        table.add_row(
            name,
            str(fig["n"]),
            _fmt(fig["value"]),
            fig["unit"],
            f"{_fmt(fig['baseline'])} {fig['baseline_unit']}",
            _fmt(fig["ratio"]),
            fig["goal"],
            _met(fig),
            str(fig["reps"]),
        )
    console.print(table)

    lg = report["langgraph"]
    if not lg.get("available"):
        console.print(f"LangGraph: not measured ({lg.get('reason', 'skipped')}).")
        return
    side = Table(title=f"Trellis vs LangGraph {lg['version']} (same workloads, same process)")
    for col in ("workload", "n", "unit", "Trellis", "LangGraph", "Trellis/LangGraph", "baseline"):
        side.add_column(col, justify="left" if col in ("workload", "unit") else "right")
    notes: list[str] = []
    for name, fig in lg["figures"].items():
        if "error" in fig:
            side.add_row(name, "", "", "", "[red]error[/]", "", "")
            notes.append(f"{name}: {fig['error']}")
            continue
        side.add_row(
            name,
            str(fig["n"]),
            fig["unit"],
            _fmt(fig["trellis"]),
            _fmt(fig["value"]),
            _fmt(fig["ratio_trellis_over_langgraph"]),
            f"{_fmt(fig['baseline'])} {fig['baseline_unit']}",
        )
        if "note" in fig:
            notes.append(f"{name}: {fig['note']}")
    console.print(side)
    for note in notes:
        console.print(f"  note: {note}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, 2 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5, quick 2)")
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph side")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a goal is missed"
    )
    parser.add_argument(
        "--only",
        choices=sorted(GROUPS),
        action="append",
        help=(
            "measure only these groups of figures (repeatable); their figures are merged "
            "into --out when it exists, the others are kept as they were"
        ),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 1:
            raise SystemExit("--reps must be at least 1")
        sizes = replace(
            sizes,
            reps=args.reps,
            chain_reps=max(args.reps, sizes.chain_reps),
            ratelimited_reps=min(args.reps, sizes.ratelimited_reps),
            outage_reps=min(args.reps, sizes.outage_reps),
        )
    console = Console(width=None if sys.stdout.isatty() else 130)
    err = Console(stderr=True)

    def say(what: str) -> None:
        err.print(f"[dim]· {what}[/]")

    started = time.perf_counter()
    machine = machine_info()
    figures: dict[str, Any] = {}
    for group in args.only or list(GROUPS):
        figures.update(measure(group, sizes, say))
    if args.only or args.no_langgraph:
        langgraph: dict[str, Any] = {"available": False, "reason": "skipped (--no-langgraph)"}
    else:
        langgraph = langgraph_side(sizes, say)
    report: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine,
        "sizes": asdict(sizes),
        "duration_s": round(time.perf_counter() - started, 1),
        "figures": figures,
        "langgraph": langgraph,
    }
    if args.only and args.out.exists():  # merge: the other figures stay as measured
        previous = json.loads(args.out.read_text())
        merged = {**previous.get("figures", {}), **figures}
        report = {
            **previous,
            "figures": merged,
            "merged": {
                "groups": args.only,
                "machine": machine,
                "quick": args.quick,
                "timestamp_utc": machine["timestamp_utc"],
            },
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(console, report)
    missed = [name for name, fig in report["figures"].items() if fig["meets_goal"] is False]
    console.print(
        f"wrote {args.out} in {round(time.perf_counter() - started, 1):g} s; "
        + (f"goals missed: {', '.join(missed)}" if missed else "all goals met")
        + (" (--quick sizes: not meaningful)" if args.quick else "")
    )
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
