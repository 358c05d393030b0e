"""``trellis runs`` and ``trellis show``: what the store recorded, as tables or JSON.

The commands only: the runs are read by :mod:`trellis.engine.records` (the library's read
model of recorded runs) and drawn by :mod:`trellis.cli.run_views`. The JSON shapes are
documented in ``docs/cli.md`` and kept stable:

- ``trellis runs --json``: ``{"runs": [entry, ...]}``, see
  :func:`trellis.engine.records.run_entry`.
- ``trellis show RUN --json``: ``RunResult.to_dict()``; for a batch, plus ``"batch"``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any, Literal

import typer

from trellis.cli.errors import CliError, command
from trellis.cli.jsonout import json_text
from trellis.cli.options import StoreOption, json_flag

__all__ = ["runs", "show"]

StatusFilter = Literal["done", "failed", "running", "pending", "waiting"]


@command
def runs(
    flow: Annotated[
        str | None,
        typer.Option("--flow", metavar="NAME", help="Only runs of this flow.", show_default=False),
    ] = None,
    status: Annotated[
        StatusFilter | None,
        typer.Option(
            "--status",
            help=(
                "Only runs with this recorded status (an interrupted run is still "
                "'running': its process died before it finished). `waiting`: runs waiting "
                "for a person, batch items included (`trellis approve` / `trellis reply` "
                "answer them)."
            ),
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", min=1, metavar="N", help="Show at most N runs.")
    ] = 20,
    include_items: Annotated[
        bool,
        typer.Option(
            "--all", help="Include the items of batches (child runs) as runs of their own."
        ),
    ] = False,
    as_json: Annotated[
        bool,
        json_flag('Print {"runs": [...]} (shape in docs/cli.md) instead of a table.'),
    ] = False,
    store: StoreOption = None,
) -> None:
    """List recorded runs, newest first: id, flow, status, start, duration, steps finished,
    LLM calls, tokens and cost.

    A batch is one row (its items are counted in the steps column); `--all` lists the
    items too. A run whose process died shows as `interrupted`: `trellis resume ID`
    finishes it. A waiting run names the step(s) waiting for a person (`trellis show ID`
    puts the question); `--status waiting` lists them, batch items included.
    Cost is `unknown` when a model had no price.

    Example: `trellis runs --flow triage --status failed --json`
    """
    # The read model, the store and the views load when the command runs, not for `--help`.
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    from trellis.cli.run_views import runs_table
    from trellis.cli.stores import reading_store
    from trellis.engine.records import UNREADABLE_ERRORS, Waiting, list_entries, waiting_of

    waiting: dict[str, Waiting] = {}
    entries: list[dict[str, Any]] = []
    with reading_store(store) as (opened, url):
        if opened is not None:
            listed = list_entries(
                opened, flow=flow, status=status, include_items=include_items, limit=limit
            )
            entries = [entry for _, entry in listed]
            if not as_json:
                for row, entry in listed:
                    try:
                        readable = entry["status"] != "unreadable"
                        waiting[row.run_id] = waiting_of(opened, row) if readable else Waiting()
                    except UNREADABLE_ERRORS:
                        waiting[row.run_id] = Waiting()
    if as_json:
        typer.echo(json_text({"runs": entries}, indent=2))
        return
    console = Console()
    if not entries:
        what = " matching the filters" if (flow or status) else ""
        console.print(f"no runs{what} in {escape(url)}", highlight=False)
        return
    console.print(runs_table(entries, url, waiting, console.width))
    unreadable = [e["run_id"] for e in entries if e["status"] == "unreadable"]
    if unreadable:
        console.print(
            Text(
                f"{len(unreadable)} record(s) could not be read (`trellis show "
                f"{unreadable[0]}` says why)",
                style="dim",
            ),
            highlight=False,
            soft_wrap=True,
        )


@command
def show(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run or batch id (see `trellis runs`).", show_default=False
        ),
    ],
    as_json: Annotated[
        bool,
        json_flag(
            'Print the run as JSON: RunResult.to_dict() (a batch: plus "batch"); see docs/cli.md.'
        ),
    ] = False,
    expand: Annotated[
        bool,
        typer.Option(
            "--expand",
            help="Open sub-flow steps: show each child run's own steps, nested (by default "
            "one line per child run).",
        ),
    ] = False,
    prompts: Annotated[
        bool,
        typer.Option(
            "--prompts",
            help="Print each LLM attempt's messages and reply under its step (recorded "
            "by `trellis run --record-prompts`; --json includes them as each call's "
            '"prompt" and "output").',
        ),
    ] = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="A batch: list every item (by default the first and last 10 of a batch "
            "of more than 20).",
        ),
    ] = False,
    page: Annotated[
        int | None,
        typer.Option(
            "--page",
            min=1,
            help="A batch: list page N of its items (from 1; --limit items a page).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", min=1, help="A batch: items on a page (with --page)."),
    ] = 50,
    store: StoreOption = None,
) -> None:
    """Show one recorded run as a tree of its steps, in the order they run.

    Per step: status, model(s) used, calls and attempts, tokens, cost, latency, failed
    attempts by failure mode, mapped elements, routing decisions with the values they were
    made on, errors and skip reasons, and the output. A looping step: each round's calls
    and loop decision. An agent step: its turns — the model's reply, each tool call with
    its arguments and result or error (live, or replayed from the journal), tokens and
    cost per turn. A step waiting for a person: the question (prompt, expected type,
    details) and the `trellis approve` / `trellis reply` command that answers it. For a
    batch: item counts by status, a table of its items — the first and last 10; `--all`
    for every one, `--page N [--limit M]` for a page — (`trellis show ITEM-ID` for one of
    them) and the questions its waiting items ask. A sub-flow step: one line per child run
    (`--expand` nests their steps; `--json` always includes them under the step's
    "children").

    Example: `trellis show 20250101-120000-1a2b3c4d --json`
    """
    from rich.console import Console

    from trellis.cli.run_views import ItemRows, render_batch, render_run
    from trellis.cli.stores import find_run, store_of_run
    from trellis.engine.records import (
        UNREADABLE_ERRORS,
        StepOrder,
        Waiting,
        batch_items,
        interrupted,
        recorded_batch,
        recorded_result,
        waiting_of,
    )

    if every and page is not None:
        raise CliError("--all and --page cannot be used together: --all lists every item")
    if prompts and (every or page is not None):
        raise CliError("--prompts shows one run's attempts, not a batch's item list")
    rows = ItemRows(every=every, page=page, limit=limit)
    with store_of_run(store, run) as opened:
        try:
            row = find_run(opened, run)
            order = StepOrder(opened)
            now = time.time()
            entry: dict[str, Any] = {}
            waiting: dict[str, Waiting] = {}
            if row.is_batch and as_json:
                data = recorded_batch(opened, row, order, now)
                result = None
            elif row.is_batch:
                # The table shows some items: only theirs are summarised (a step count per
                # item reads its steps); the counts and usage are the whole batch's.
                children = batch_items(opened, row.run_id)
                shown = [
                    c for start, stop in rows.spans(len(children)) for c in children[start:stop]
                ]
                data = recorded_batch(opened, row, order, now, children=children, summarised=shown)
                counts = Counter(c.status for c in children)
                entry = {
                    "status": row.status,
                    "interrupted": interrupted(row, now),
                    "items": {"total": len(children), "done": counts["done"]},
                }
                waiting[row.run_id] = Waiting(items=counts["waiting"])
                for child in children:
                    waiting[child.run_id] = waiting_of(opened, child)
                result = None
            else:
                result = recorded_result(opened, row, order.of(row))
                data = result.to_dict()
        except UNREADABLE_ERRORS as exc:
            message = str(exc) or type(exc).__name__
            if repr(run) not in message:
                message = f"run {run!r} cannot be read: {message}"
            raise CliError(message) from None
    if as_json:
        typer.echo(json_text(data, indent=2))
        return
    console = Console()
    if result is None:
        if prompts:
            raise CliError(
                f"{row.run_id} is a batch: --prompts shows one run's attempts; "
                "give an item's id (trellis show ITEM-ID --prompts)"
            )
        total = int(data["batch"]["total"])
        if page is not None and page > rows.pages(total):
            raise CliError(
                f"--page {page} is past the last page: {total} item(s) make "
                f"{rows.pages(total)} page(s) of {limit}"
            )
        render_batch(console, data, row, entry, waiting, opened.url, rows)
    else:
        render_run(console, result, row, now, opened.url, expand=expand, prompts=prompts)
