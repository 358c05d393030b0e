"""Running a batch: items through ``engine.run_many`` with a progress bar, then JSONL out.

Results are written after the batch, one line per item in *input* order, whatever order
the runs finished in. A configuration error (it would fail every item alike) stops the
batch at the first item that shows it.

With a store the batch is durable: one parent run (``batch_id``) whose items are child
runs. This process holds the parent's lease while it runs, so a second ``trellis resume``
of the same batch is refused; items already done are returned as recorded, the others run.
A batch budget (``--budget-*``) counts what earlier processes of the batch spent
(:mod:`trellis.engine.spend`), so a kill and any number of resumes stay within it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from trellis.cli.errors import CliError, configuration_error
from trellis.cli.files import check_not_input, write_atomic
from trellis.cli.formats import fmt_cost, fmt_usd
from trellis.cli.inputs import Item
from trellis.cli.jsonout import json_text
from trellis.cli.settings import Settings
from trellis.engine.engine import Engine
from trellis.engine.records import result_line
from trellis.engine.results import RunResult
from trellis.engine.spend import track_batch_spend
from trellis.flow.flow import Flow

__all__ = ["BatchRun", "check_output_path", "result_line", "write_results"]


class BatchRun:
    """One batch. ``results[i]`` is item i's result once it finished (None before), so a
    caller interrupted by Ctrl-C can still write what finished."""

    def __init__(
        self,
        flow: Flow,
        items: Sequence[Item],
        settings: Settings,
        *,
        concurrency: int,
        progress: Console | None,
        batch_id: str | None = None,
        rerun_changed: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.flow = flow
        self.items = items
        self.settings = settings
        self.concurrency = concurrency
        self.progress_console = progress
        self.results: list[RunResult | None] = [None] * len(items)
        self.config_error: str | None = None
        self.prices = settings.config.prices
        self.started = time.perf_counter()
        self.wall_s = 0.0
        self.batch_id = batch_id  # with a store: the parent run (it must exist already)
        self.rerun_changed = rerun_changed
        self._echo = echo or (lambda _text: None)

    @property
    def finished(self) -> list[RunResult]:
        return [r for r in self.results if r is not None]

    async def execute(self) -> None:
        self.started = time.perf_counter()
        try:
            with self._progress() as progress:
                task = progress.add_task(self.flow.name, total=len(self.items), status="")
                await self._run(progress, task)
        finally:
            self.wall_s = time.perf_counter() - self.started

    async def _run(self, progress: Progress, task: Any) -> None:
        done = failed = waiting = unpriced = 0
        cost = 0.0
        async with self.settings.engine() as engine:  # it holds the batch's lease
            self._count_earlier_spending(engine)
            self.prices = engine.config.prices
            stream = engine.run_many(
                self.flow,
                (item.inputs for item in self.items),
                concurrency=self.concurrency,
                budget=self.settings.run_budget,
                batch_id=self.batch_id,
                rerun_changed=self.rerun_changed,
            )
            async with contextlib.aclosing(stream) as results:
                async for index, result in results:
                    self.results[index] = result
                    message = configuration_error([result])
                    if message is not None:
                        self.config_error = message
                        break
                    if result.ok:
                        done += 1
                    elif result.status == "waiting":
                        waiting += 1
                    else:
                        failed += 1
                    cost += result.usage.cost_usd
                    unpriced += result.usage.unpriced_attempts
                    status = f"[green]✓ {done}[/]" + (f" [red]✗ {failed}[/]" if failed else "")
                    status += f" [yellow]⏸ {waiting}[/]" if waiting else ""
                    progress.update(task, advance=1, status=f"{status} {fmt_cost(cost, unpriced)}")

    def _count_earlier_spending(self, engine: Engine) -> None:
        """Under a batch budget, what earlier processes of this batch spent counts too."""
        store, guard = self.settings.store, engine.guard
        if store is None or self.batch_id is None or guard is None:
            return
        before = track_batch_spend(store, self.batch_id, guard)
        if before.calls:
            self._echo(
                f"batch budget: {before.calls} request(s), {before.tokens:,} tokens, "
                f"{fmt_usd(before.usd)} spent by earlier runs of batch {self.batch_id} "
                "count against it"
            )

    def _progress(self) -> Progress:
        console = self.progress_console
        return Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=console is None or not console.is_terminal,
            transient=False,
        )


def check_output_path(path: Path | None, input_file: Path | None = None) -> None:
    """Fail before running anything if the results could not be written (or would be
    written over the input file)."""
    if path is None or str(path) == "-":
        return
    check_not_input(path, input_file)
    if path.is_dir():
        raise CliError(f"--output {str(path)!r} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"--output {str(path)!r}: folder {str(parent)!r} does not exist")


def write_results(path: Path, items: Sequence[Item], results: Sequence[RunResult | None]) -> int:
    """Write one line per finished item in input order (``-``: stdout); return lines.

    A file is replaced atomically (see :mod:`trellis.cli.files`): never left truncated."""
    lines = [
        json_text(result_line(i, item.inputs, result))
        for i, (item, result) in enumerate(zip(items, results, strict=True))
        if result is not None
    ]
    text = "".join(line + "\n" for line in lines)
    if str(path) == "-":
        out: TextIO = sys.stdout
        out.write(text)
        out.flush()
    else:
        write_atomic(path, text)
    return len(lines)
