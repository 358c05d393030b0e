"""What ``trellis approve`` / ``trellis reply`` (and the web UI's answer form) do: hand a
waiting step its answer, resume the run, and finish its batch when it was the last item
the batch waited for (see :mod:`trellis.cli.human` for the commands).

Imported when a command answers, not at the start of every command.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from trellis.cli.batch import result_lines, write_results
from trellis.cli.commands import (
    DURABLE_ERRORS,
    exit_code,
    print_result,
    recorded_items,
    run_batch,
)
from trellis.cli.errors import CliError, configuration_error
from trellis.cli.jobs import BatchJob, Display
from trellis.cli.leases import wait_for_dead_leases
from trellis.cli.render import answer_commands, is_approval, store_args
from trellis.cli.resuming import recorded_settings
from trellis.cli.run_meta import RunMeta, meta_of
from trellis.cli.settings import Settings
from trellis.cli.stores import find_run, store_of_run
from trellis.engine.durable import load_result
from trellis.engine.human import find_question, top_of
from trellis.engine.records import batch_items
from trellis.engine.results import RunResult
from trellis.errors import InputError
from trellis.flow.flow import Flow
from trellis.store.base import RunRow, Store

__all__ = ["answer_from_cli", "answer_waiting_step"]


def _note(text: str) -> None:
    typer.echo(text, err=True)


def answer_from_cli(
    run: str,
    step: str,
    answer: Any,
    *,
    approval: bool,
    store: str | None,
    models: list[str],
    quiet: bool,
    as_json: bool,
) -> int:
    with store_of_run(store, run) as opened:
        result = answer_waiting_step(
            opened,
            run,
            step,
            answer,
            approval=approval,
            models=models,
            quiet=quiet,
            as_json=as_json,
            show=lambda result: print_result(result, opened.url, quiet=quiet, as_json=as_json),
        )
    return exit_code(result)


def answer_waiting_step(
    opened: Store,
    run: str,
    step: str,
    answer: Any,
    *,
    approval: bool,
    models: list[str],
    quiet: bool,
    as_json: bool,
    show: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Answer ``step`` of waiting run ``run`` in ``opened`` and resume the run: the one
    path of ``trellis approve`` / ``reply`` and of the web UI's answer forms. The answer
    is validated exactly as the step's declared type says (a CliError names what is
    wrong, and the run keeps waiting); a batch item's batch is finished when it was the
    last item waiting. ``show`` prints the result before the batch is looked at."""
    try:
        row = find_run(opened, run)
        # A question inside a sub-flow, addressed by its child run (RUN/review approve):
        # the same as the top-level run with the step path (RUN review/approve).
        top, path = top_of(opened, row.run_id, step)
        if top != row.run_id:
            run, step = top, path
            row = find_run(opened, run)
        question = _waiting_question(opened, row, step)
        if approval and not is_approval(question):
            command = answer_commands(run, step, question, opened.url)[0]
            raise CliError(
                f"step {step!r} of run {run} asks for {question.get('type')}, not an approval: "
                f"answer it with `{command}`"
            )
        meta_of(
            opened,
            row,
            answer=f"answer it from Python: await engine.reply(flow, {run!r}, {step!r}, answer)",
        )
        meta, flow, settings = recorded_settings(
            opened, row, models=models, lease_ttl=None, quiet=quiet
        )
        wait_for_dead_leases(opened, [row], echo=_note)
        result = asyncio.run(_reply(flow, settings, run, step, answer))
        message = configuration_error([result])
        if message is not None:
            raise CliError(message)
        if not quiet:
            what = _answered(answer) if approval else "answered"
            _note(f"{what}: step {step!r} of run {run}; the run is {result.status} now")
        if show is not None:
            show(result)
        if row.parent_id is not None:
            try:
                _after_item(
                    opened, row.parent_id, meta, flow, settings, quiet=quiet, as_json=as_json
                )
            except CliError as exc:  # the answer was taken: say what went wrong after it
                _note(f"batch {row.parent_id}: {exc.message}")
            except DURABLE_ERRORS as exc:
                _note(f"batch {row.parent_id}: {exc}")
    except DURABLE_ERRORS as exc:  # an invalid answer (InputError), a lease held elsewhere...
        raise CliError(str(exc)) from None
    return result


def _answered(answer: dict[str, Any]) -> str:
    verdict = "approved" if answer["approved"] else "rejected"
    return f"{verdict} ({answer['comment']})" if answer.get("comment") else verdict


async def _reply(flow: Flow, settings: Settings, run: str, step: str, answer: Any) -> RunResult:
    async with settings.engine() as engine:
        return await engine.reply(flow, run, step, answer)


def _waiting_question(store: Store, row: RunRow, step: str) -> dict[str, Any]:
    """The question ``step`` of ``row`` waits on; a CliError saying what waits otherwise."""
    run = row.run_id
    if row.is_batch:
        items = [item for item in batch_items(store, run) if item.status == "waiting"]
        if not items:
            raise CliError(f"run {run} is a batch and none of its items is waiting for input")
        names = ", ".join(item.run_id for item in items[:5])
        more = f" and {len(items) - 5} more" if len(items) > 5 else ""
        raise CliError(
            f"run {run} is a batch: answer its waiting items one by one ({names}{more}; "
            f"`trellis runs --status waiting{store_args(store.url)}` lists them)"
        )
    if row.status != "waiting":
        raise CliError(f"run {run} is {row.status}, not waiting for input")
    try:
        return find_question(store, run, step).question
    except InputError as exc:
        raise CliError(str(exc).replace(f"run {run!r}", f"run {run}")) from None


def _after_item(
    store: Store,
    batch_id: str,
    meta: RunMeta,
    flow: Flow,
    settings: Settings,
    *,
    quiet: bool,
    as_json: bool,
) -> None:
    """After an item of ``batch_id`` was answered: say what the batch still waits for, or
    finish it (every item done: the resume path, nothing runs again; some failed: rewrite
    the output file from what is recorded and say how to retry them)."""
    children = batch_items(store, batch_id)
    counts = Counter(child.status for child in children)
    waiting = counts["waiting"]
    unfinished = counts["running"] + counts["pending"]
    if waiting or unfinished:
        if quiet:
            return
        parts = []
        if waiting:
            parts.append(f"{waiting} item(s) still waiting for input")
        if unfinished:
            parts.append(f"{unfinished} not finished")
        _note(
            f"batch {batch_id}: {', '.join(parts)} "
            f"(trellis runs --status waiting{store_args(store.url)})"
        )
        return
    output = meta.output if meta.output not in (None, "-") else None
    destination = Path(output) if output is not None else None
    if counts["done"] == len(children):
        job = BatchJob(
            title=meta.target,
            output=destination,
            concurrency=meta.concurrency or 8,
            display=Display(quiet=True, progress=False, to_stderr=as_json or quiet),
            batch_id=batch_id,
            note=f"batch {batch_id}: every item is done now ({len(children)} items)",
        )
        run_batch(flow, settings, job)
        return
    failed = len(children) - counts["done"]
    written = ""
    if destination is not None:
        plan = flow.compile()
        results: list[RunResult | None] = [
            load_result(store, child.run_id, plan) for child in children
        ]
        items = recorded_items(store, batch_id)
        lines = write_results(destination, result_lines(items, results))
        written = f"; {lines} line(s) rewritten to {destination}"
    _note(
        f"batch {batch_id}: no item waits for input any more: {counts['done']} done, "
        f"{failed} failed{written} (`trellis resume {batch_id}{store_args(store.url)}` "
        "retries the failed ones)"
    )
