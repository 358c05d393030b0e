"""What ``trellis run`` does once its options are parsed: one run, or a batch.

Both return the exit code; a usage or configuration problem is raised as :class:`CliError`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trellis.cli.batch import BatchRun, check_output_path, write_results
from trellis.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError, configuration_error
from trellis.cli.inputs import parse_input, read_items
from trellis.cli.render import fmt_seconds, fmt_usd, render_result, render_summary
from trellis.cli.settings import Settings
from trellis.cli.summary import BatchSummary, summarize
from trellis.engine.results import RunResult
from trellis.errors import InputError
from trellis.flow.flow import Flow

__all__ = ["run_batch", "run_once"]


def _required_inputs(flow: Flow) -> list[str]:
    return [name for name, spec in flow.compile().inputs.items() if spec.required]


async def _one(flow: Flow, inputs: dict[str, Any], settings: Settings) -> RunResult:
    async with settings.engine() as engine:
        try:
            return await engine.run(flow, inputs, budget=settings.run_budget)
        except InputError as exc:
            raise CliError(str(exc)) from None


def run_once(
    flow: Flow, input_json: str | None, settings: Settings, *, quiet: bool, as_json: bool
) -> int:
    if input_json is None:
        required = _required_inputs(flow)
        if required:
            example = json.dumps(dict.fromkeys(required, "..."))
            raise CliError(
                f"flow {flow.name!r} needs inputs ({', '.join(required)}): give "
                f"--input '{example}' or --input-file items.jsonl"
            )
        inputs: dict[str, Any] = {}
    else:
        inputs = parse_input(flow, input_json)
    result = asyncio.run(_one(flow, inputs, settings))
    message = configuration_error([result])
    if message is not None:
        raise CliError(message)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
    elif quiet:
        if result.ok:
            typer.echo(f"done in {fmt_seconds(result.duration_s)}")
        else:
            err = result.error
            typer.echo(f"failed: {err.type}: {err.message}" if err else "failed", err=True)
    else:
        render_result(Console(), result)
    return EXIT_OK if result.ok else EXIT_FAILED


def run_batch(
    flow: Flow,
    title: str,
    input_file: Path,
    output: Path | None,
    settings: Settings,
    *,
    concurrency: int,
    quiet: bool,
    as_json: bool,
    progress: bool,
) -> int:
    items = read_items(flow, input_file)
    check_output_path(output)
    to_stdout = output is not None and str(output) == "-"
    console = Console(stderr=to_stdout)
    batch = BatchRun(
        flow,
        items,
        settings,
        concurrency=concurrency,
        progress=Console(stderr=True) if progress else None,
    )
    interrupted = False
    try:
        asyncio.run(batch.execute())
    except KeyboardInterrupt:
        interrupted = True
    if batch.config_error is not None:
        raise CliError(batch.config_error)
    written = write_results(output, items, batch.results) if output is not None else None
    summary = summarize(batch.finished, prices=batch.prices, wall_s=batch.wall_s)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=2) + "\n")
    elif quiet:
        console.print(_one_line(summary), highlight=False, soft_wrap=True)
    else:
        render_summary(console, summary, f"{flow.name} ({title})")
    if written is not None and not to_stdout and not as_json:
        console.print(f"results: {written} line(s) written to {output}", highlight=False)
    elif output is None and not quiet and not as_json:
        console.print("[dim]per-item results not saved (add --output results.jsonl)[/]")
    if interrupted:
        unfinished = len(items) - len(batch.finished)
        typer.echo(f"interrupted: {unfinished} item(s) did not finish", err=True)
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


def _one_line(summary: BatchSummary) -> str:
    cost = fmt_usd(summary.cost_usd)
    if not summary.cost_known:
        cost = f"≥ {cost}"
    return (
        f"{summary.total} items: {summary.done} done, {summary.failed} failed · "
        f"{summary.attempts} attempts · {cost}"
    )
