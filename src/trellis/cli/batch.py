"""Running a batch: items through ``engine.run_many`` with a progress bar, then JSONL out.

Results are written after the batch, one line per item in *input* order, whatever order
the runs finished in. A result is not kept once it is counted: each item leaves its
status, its output line (when there is an output file) and its share of the summary
(:class:`~trellis.engine.summary.SummaryBuilder`), so a batch's memory does not grow with
what its items did. A configuration error (it would fail every item alike) stops the
batch at the first item that shows it.

With a store the batch is durable: one parent run (``batch_id``) whose items are child
runs. This process holds the parent's lease while it runs, so a second ``trellis resume``
of the same batch is refused; items already done are returned as recorded, the others run.
A batch budget (``--budget-*``) counts what earlier processes of the batch spent
(:mod:`trellis.engine.spend`), so a kill and any number of resumes stay within it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, overload

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

from trellis.cli.errors import configuration_error
from trellis.cli.files import check_output_path, write_atomic
from trellis.cli.formats import fmt_cost, fmt_usd
from trellis.cli.inputs import Item
from trellis.cli.jsonout import json_text
from trellis.cli.settings import Settings
from trellis.engine.durable import BatchItems
from trellis.engine.engine import Engine
from trellis.engine.records import result_line
from trellis.engine.results import RunResult
from trellis.engine.spend import track_batch_spend
from trellis.engine.summary import SummaryBuilder
from trellis.flow.flow import Flow

__all__ = ["BatchRun", "check_output_path", "result_line", "result_lines", "write_results"]


class LineSpool:
    """The finished items' output lines, kept in a temporary file rather than in memory:
    :meth:`put` appends a line, and iterating gives them back in item order (16 bytes of
    memory an item, whatever the lines hold)."""

    def __init__(self, size: int) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._start = array("q", [-1]) * size
        self._length = array("q", [0]) * size

    def put(self, index: int, line: str) -> None:
        data = line.encode("utf-8")
        self._file.seek(0, os.SEEK_END)
        self._start[index] = self._file.tell()
        self._length[index] = len(data)
        self._file.write(data)

    def __iter__(self) -> Iterator[str]:
        file = self._file
        for start, length in zip(self._start, self._length, strict=True):
            if start >= 0:
                file.seek(start)
                yield file.read(length).decode("utf-8")

    def close(self) -> None:
        self._file.close()


class Statuses(Sequence[str | None]):
    """Each item's status once it finished (None before): one byte an item."""

    def __init__(self, size: int) -> None:
        self._codes = bytearray(size)  # 0: not finished; else 1 + its index in _names
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._codes)

    @overload
    def __getitem__(self, index: int) -> str | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str | None]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str | None] | None:
        if isinstance(index, slice):
            return [self._name(code) for code in self._codes[index]]
        return self._name(self._codes[index])

    def __iter__(self) -> Iterator[str | None]:
        return map(self._name, self._codes)

    def _name(self, code: int) -> str | None:
        return self._names[code - 1] if code else None

    def __setitem__(self, index: int, status: str) -> None:
        if status not in self._names:
            self._names.append(status)  # a handful: done, failed, waiting...
        self._codes[index] = self._names.index(status) + 1


class BatchRun:
    """One batch. ``statuses[i]`` is item i's status once it finished (None before), and
    with ``keep_lines`` ``lines[i]`` its output line, so a caller interrupted by Ctrl-C can
    still write what finished; ``tally`` summarises the finished items.

    ``items`` are read as they are used (an :class:`~trellis.cli.inputs.ItemFile`: from
    its file again); with a store, ``batch`` is the batch as recorded
    (:func:`~trellis.engine.durable.open_batch`), which its items run from."""

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
        keep_lines: bool = False,
        batch: BatchItems | None = None,
    ) -> None:
        self.flow = flow
        self.items = items
        self.settings = settings
        self.concurrency = concurrency
        self.progress_console = progress
        self.statuses = Statuses(len(items))
        self.lines = LineSpool(len(items)) if keep_lines else None
        self.tally = SummaryBuilder()
        self.config_error: str | None = None
        self.prices = settings.config.prices
        self.started = time.perf_counter()
        self.wall_s = 0.0
        self.batch_id = batch_id  # with a store: the parent run (it must exist already)
        self.batch = batch
        self.rerun_changed = rerun_changed
        self._echo = echo or (lambda _text: None)

    @property
    def finished(self) -> int:
        """How many items finished (done, failed or waiting)."""
        return self.tally.total

    def _keep(self, index: int, result: RunResult) -> None:
        """What the batch keeps of a finished item; the result itself is let go."""
        self.statuses[index] = result.status
        if self.lines is not None:
            self.lines.put(index, json_text(result_line(index, self.items[index].inputs, result)))
        self.tally.add(result)

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
            # A batch recorded already is not opened again; else its items are read as needed.
            items: BatchItems | Iterator[Mapping[str, Any]] = (
                self.batch if self.batch is not None else (item.inputs for item in self.items)
            )
            stream = engine.run_many(
                self.flow,
                items,
                concurrency=self.concurrency,
                budget=self.settings.run_budget,
                batch_id=self.batch_id,
                rerun_changed=self.rerun_changed,
            )
            async with contextlib.aclosing(stream) as results:
                async for index, result in results:
                    message = configuration_error([result])
                    if message is not None:
                        self.config_error = message
                        break
                    self._keep(index, result)
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


def result_lines(items: Sequence[Item], results: Sequence[RunResult | None]) -> list[str | None]:
    """Each finished item's output line (None for an item without a result)."""
    return [
        None if result is None else json_text(result_line(i, item.inputs, result))
        for i, (item, result) in enumerate(zip(items, results, strict=True))
    ]


def write_results(path: Path, lines: Iterable[str | None]) -> int:
    """Write the finished items' lines (:attr:`BatchRun.lines`, :func:`result_lines`) in
    input order (``-``: stdout), as they are read; return how many.

    A file is replaced atomically (see :mod:`trellis.cli.files`): never left truncated."""
    written = 0

    def pieces() -> Iterator[str]:
        nonlocal written
        for line in lines:
            if line is not None:
                written += 1
                yield line + "\n"

    if str(path) == "-":
        out: TextIO = sys.stdout
        out.writelines(pieces())
        out.flush()
    else:
        write_atomic(path, pieces())
    return written
