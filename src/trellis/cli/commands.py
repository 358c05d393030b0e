"""What ``trellis run`` does once its options are parsed: one run, or a batch.

Both return the exit code; a usage or configuration problem is raised as :class:`CliError`.
With a store (the default) runs are durable: a run id that completed returns its recorded
result, an incomplete one resumes, and a batch is a parent run whose items are child runs.
A locked run, a changed step or an unusable store is one ``error:`` line (exit 2).

What only a batch, a table or a resume needs (the progress bar, the summary, rich's
tables, the read model) is imported where it is used: a quiet single run loads none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import json
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from trellis.cli.echo import echo
from trellis.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WAITING,
    CliError,
    configuration_error,
)
from trellis.cli.files import check_output_path
from trellis.cli.formats import fmt_cost, fmt_seconds
from trellis.cli.inputs import Item, ItemFile, LazyItems, parse_input
from trellis.cli.jobs import BatchJob, OneRun, RunOptions
from trellis.cli.jsonout import json_text
from trellis.cli.leases import DEFAULT_LEASE_TTL, wait_for_dead_leases
from trellis.cli.otel import otlp_tracer
from trellis.cli.run_meta import build_meta
from trellis.cli.settings import Settings, make_settings
from trellis.cli.stores import open_cli_store, store_url
from trellis.cli.target import load_flow
from trellis.engine.engine import new_run_id
from trellis.engine.results import RunResult, Stats
from trellis.errors import InputError, RunLockedError, StepChangedError, StoreError
from trellis.flow.flow import Flow
from trellis.store.base import RunRow, Store
from trellis.store.codec import decode, encode

if TYPE_CHECKING:
    from trellis.engine.durable import BatchItems
    from trellis.engine.summary import BatchSummary

__all__ = [
    "DURABLE_ERRORS",
    "EXIT_WAITING",
    "execute_run",
    "exit_code",
    "print_result",
    "recorded_items",
    "resume_hint",
    "run_batch",
    "run_once",
]

#: Raised by a durable run or batch; reported as one ``error:`` line, exit code 2.
DURABLE_ERRORS = (RunLockedError, StepChangedError, StoreError, InputError)


def exit_code(result: RunResult) -> int:
    """0 done, 3 waiting for input, 1 failed."""
    if result.ok:
        return EXIT_OK
    return EXIT_WAITING if result.status == "waiting" else EXIT_FAILED


def _note(text: str) -> None:
    echo(text, err=True)


def resume_hint(run_id: str, store: Store) -> str:
    """The command that resumes ``run_id`` (naming the store unless it is the default)."""
    if store.url.startswith("memory:"):
        return "an in-memory store: it cannot be resumed by another process"
    command = f"trellis resume {shlex.quote(run_id)}"
    if store.url != store_url(None):
        command += f" --store {shlex.quote(store.url)}"
    return command


def _required_inputs(flow: Flow) -> list[str]:
    return [name for name, spec in flow.compile().inputs.items() if spec.required]


async def _one(
    flow: Flow,
    inputs: dict[str, Any] | None,
    settings: Settings,
    run_id: str | None,
    rerun_changed: bool,
    meta: Mapping[str, Any] | None,
    stream_step: str | None = None,
) -> RunResult:
    observers = []
    if stream_step is not None:
        from trellis.cli.tokens import TokenPrinter

        observers.append(TokenPrinter(stream_step))
    async with settings.engine() as engine:
        try:
            return await engine.run(
                flow,
                inputs,
                budget=settings.run_budget,
                run_id=run_id,
                rerun_changed=rerun_changed,
                meta=meta,
                observers=observers,
            )
        except DURABLE_ERRORS as exc:
            raise CliError(str(exc)) from None


def _check_recorded(flow: Flow, row: RunRow, inputs: Mapping[str, Any] | None) -> None:
    """The recorded run is of this flow and, when inputs are given again, of these inputs."""
    if row.flow != flow.name:
        raise CliError(
            f"run {row.run_id!r} belongs to flow {row.flow!r}, not {flow.name!r}; use another "
            "--run-id"
        )
    if inputs is None:
        return
    try:
        plan = flow.compile()
        recorded = plan.validate_inputs(decode(row.inputs, Any, f"the inputs of {row.run_id}"))
        same = encode(plan.validate_inputs(inputs)) == encode(recorded)
    except (InputError, StoreError):
        same = False
    if not same:
        raise CliError(
            f"run {row.run_id!r} was started with other inputs; leave out --input to resume "
            "it, or use another --run-id"
        )


def run_once(flow: Flow, settings: Settings, job: OneRun) -> int:
    """One run. With a store and the id of a recorded run: a completed run prints its
    recorded result (nothing runs), an incomplete one resumes (``--input`` may be left out).
    Ctrl-C stops it and says how to resume it (exit 130)."""
    store = settings.store
    run_id = job.run_id
    display = job.display
    existing = store.get_run(run_id) if store is not None and run_id is not None else None
    if existing is not None and existing.is_batch:
        raise CliError(
            f"run {run_id} is a batch: resume it with `trellis resume {run_id}` (or give "
            "--input-file with the same items)"
        )
    inputs: dict[str, Any] | None
    if job.input_json is None:
        required = _required_inputs(flow)
        if required and existing is None:
            example = json.dumps(dict.fromkeys(required, "..."))
            raise CliError(
                f"flow {flow.name!r} needs inputs ({', '.join(required)}): give "
                f"--input '{example}' or --input-file items.jsonl"
            )
        inputs = None if existing is not None else {}
    else:
        inputs = parse_input(flow, job.input_json)
    note = None  # said once the run is over, so that an error stays one line
    if existing is not None and store is not None:
        _check_recorded(flow, existing, inputs)
        if existing.status == "done":
            note = f"run {run_id} already completed: its recorded result (nothing was run)"
        else:
            wait_for_dead_leases(store, [existing], echo=_note)
            from trellis.engine.records import step_statuses

            statuses = step_statuses(store, existing.run_id).values()
            recorded = sum(status == "done" for status in statuses)
            note = f"resuming run {run_id} ({recorded} step(s) done before)"
    if store is not None and run_id is None:
        run_id = new_run_id()  # known before it starts: an interrupted run can be resumed
    try:
        result = asyncio.run(
            _one(flow, inputs, settings, run_id, job.rerun_changed, job.meta, job.stream_step)
        )
    except KeyboardInterrupt:
        if store is not None and run_id is not None and store.get_run(run_id) is not None:
            _note(f"interrupted: run {run_id} did not finish; resume: {resume_hint(run_id, store)}")
        else:
            _note("interrupted: the run did not finish (nothing was recorded)")
        return EXIT_INTERRUPTED
    message = configuration_error([result])
    if message is not None:
        raise CliError(message)
    if note is not None and not display.quiet:
        _note(note)
    url = store.url if store is not None else None
    print_result(result, url, quiet=display.quiet, as_json=display.as_json)
    return exit_code(result)


def print_result(result: RunResult, store: str | None, *, quiet: bool, as_json: bool) -> None:
    """A run's result: JSON, one line (``--quiet``), or the table with, for a waiting run,
    its questions and the commands that answer them."""
    if as_json:
        sys.stdout.write(json_text(result.to_dict(), indent=2) + "\n")
    elif quiet:
        if result.ok:
            echo(f"done in {fmt_seconds(result.duration_s)}")
        elif result.status == "waiting":
            from trellis.cli.render import answer_commands
            from trellis.engine.summary import WaitingStep

            for w in WaitingStep.of(result):
                command = answer_commands(w.run_id, w.step, w.question, store)[0]
                echo(f"waiting: step {w.step!r} asks {w.question.get('type')}: {command}")
        else:
            err = result.error
            echo(f"failed: {err.type}: {err.message}" if err else "failed", err=True)
    else:
        from rich.console import Console

        from trellis.cli.render import render_result

        render_result(Console(), result, store)


def recorded_items(store: Store, batch_id: str) -> list[Item]:
    """A recorded batch's items, in input order, from its child runs."""
    from trellis.engine.durable import recorded_batch_inputs

    return [Item(inputs, run_id) for run_id, inputs in recorded_batch_inputs(store, batch_id)]


class _RecordedItems(LazyItems):
    """A recorded batch's items (their ``where``: the item's run id), read from the store
    as they are used."""

    def __init__(self, batch: BatchItems) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(self.batch)

    def _item(self, index: int) -> Item:
        return Item(self.batch.inputs(index), self.batch.run_id(index))

    def __iter__(self) -> Iterator[Item]:
        return (Item(inputs, run_id) for run_id, inputs in self.batch)


def _open_durable_batch(
    flow: Flow,
    store: Store,
    batch_id: str,
    items: ItemFile | None,
    meta: Mapping[str, Any] | None,
) -> tuple[Sequence[Item], RunRow | None, BatchItems]:
    """Record a new batch (parent and items) before anything runs, or check a recorded
    one; returns the items (a recorded batch's own), the recorded parent row, if any, and
    the batch as recorded. The items are read from the file as they are recorded, and
    compared with a recorded batch's one by one: never all held at once."""
    from trellis.engine.durable import first_changed_item, open_batch

    existing = store.get_run(batch_id)
    if existing is None:
        if items is None:
            raise CliError(f"no run {batch_id!r} in {store.url}")
        inputs = (item.inputs for item in items)
        try:
            batch = open_batch(store, flow.compile(), inputs, batch_id, meta, count=len(items))
        except DURABLE_ERRORS as exc:
            raise CliError(str(exc)) from None
        return items, None, batch
    if not existing.is_batch:
        raise CliError(
            f"run {batch_id} is a single run, not a batch: resume it with --input (or "
            f"`trellis resume {batch_id}`), or pick another --run-id"
        )
    if existing.flow != flow.name:
        raise CliError(f"batch {batch_id!r} belongs to flow {existing.flow!r}, not {flow.name!r}")
    batch = open_batch(store, flow.compile(), None, batch_id, meta)
    if items is not None:
        if len(items) != len(batch):
            raise CliError(
                f"batch {batch_id!r} was recorded with {len(batch)} items, the input file "
                f"has {len(items)}; resume it with `trellis resume {batch_id}`, or use another "
                "--run-id"
            )
        recorded = (inputs for _, inputs in batch)
        changed = first_changed_item(recorded, (item.inputs for item in items))
        if changed is not None:
            raise CliError(
                f"{items.where(changed)}: batch {batch_id!r} was recorded with other inputs "
                f"for this item; resume it with `trellis resume {batch_id}`, or use another "
                "--run-id"
            )
    return _RecordedItems(batch), existing, batch


def run_batch(flow: Flow, settings: Settings, job: BatchJob) -> int:
    """A batch over ``job.input_file`` (None: resume the recorded batch ``job.batch_id``).
    With a store, the batch is recorded (parent run ``batch_id``, generated when not given)
    before anything runs; a recorded batch id resumes: only unfinished items run, and the
    output file gets every item, in input order, exactly once. A configuration error
    stops the batch (every item would fail alike) and says how to resume it once fixed;
    Ctrl-C stops it, prints what was spent and how to resume it (exit 130).
    The input file is checked whole before anything runs, then read again as its items
    are recorded and written out (:class:`~trellis.cli.inputs.ItemFile`), not held."""

    check_output_path(job.output, job.input_file or job.recorded_input)
    item_file = ItemFile.open(flow, job.input_file) if job.input_file is not None else None
    try:
        return _run_batch(flow, settings, job, item_file)
    finally:
        if item_file is not None:
            item_file.close()


def _run_batch(flow: Flow, settings: Settings, job: BatchJob, item_file: ItemFile | None) -> int:
    from rich.console import Console

    from trellis.cli.batch import BatchRun, write_results
    from trellis.cli.render import answer_commands, render_summary
    from trellis.engine.records import batch_items

    output, display = job.output, job.display
    items: Sequence[Item] | None = item_file
    recorded: BatchItems | None = None
    store = settings.store
    batch_id = job.batch_id
    announcement: str | None = None
    if store is not None:
        batch_id = batch_id or new_run_id()
        items, existing, recorded = _open_durable_batch(flow, store, batch_id, item_file, job.meta)
        if existing is None:
            announcement = f"batch {batch_id}: {_items(len(items))} recorded in {store.url}"
            if sys.stderr.isatty():
                announcement += f" (resume: {resume_hint(batch_id, store)})"
        else:
            children = batch_items(store, batch_id)
            done = sum(c.status == "done" for c in children)
            rows = [existing, *(c for c in children if c.status != "done")]
            wait_for_dead_leases(store, rows, echo=_note)
            if job.note is not None:
                announcement = job.note
            elif done == len(children):
                announcement = (
                    f"batch {batch_id} already completed: its recorded results (nothing ran)"
                )
            else:
                announcement = (
                    f"resuming batch {batch_id}: {done} of {_items(len(children))} were done before"
                )
        # On a terminal, say it now (an interrupted batch can then be resumed); in a log or
        # a pipe, once the batch is over, so that an error stays one line.
        if announcement is not None and sys.stderr.isatty():
            _note(announcement)
            announcement = None
    elif items is None:
        raise CliError("resuming a batch needs a store")
    to_stdout = output is not None and str(output) == "-"
    console = Console(stderr=to_stdout or display.to_stderr)
    batch = BatchRun(
        flow,
        items,
        settings,
        concurrency=job.concurrency,
        progress=Console(stderr=True) if display.bar else None,
        batch_id=batch_id if store is not None else None,
        rerun_changed=job.rerun_changed,
        echo=_note,
        keep_lines=output is not None,
        batch=recorded,
    )
    interrupted = False
    try:
        asyncio.run(batch.execute())
    except KeyboardInterrupt:
        interrupted = True
    except DURABLE_ERRORS as exc:
        raise CliError(str(exc)) from None
    if batch.config_error is not None:
        if store is not None and batch_id is not None:
            raise CliError(
                f"{batch.config_error} (batch {batch_id} stopped; once that is fixed: "
                f"{resume_hint(batch_id, store)})"
            )
        raise CliError(batch.config_error)
    if announcement is not None and store is not None and batch_id is not None:
        if all(status in ("done", "waiting") for status in batch.statuses):
            _note(f"{announcement} (trellis show {batch_id})")
        else:
            _note(f"{announcement} (resume: {resume_hint(batch_id, store)})")
    written = None
    if batch.lines is not None:
        assert output is not None
        try:
            written = write_results(output, batch.lines)
        finally:
            batch.lines.close()
    summary = batch.tally.summary(prices=batch.prices, wall_s=batch.wall_s)
    if interrupted and store is not None and batch_id is not None:
        summary = _with_unfinished_spend(summary, store, batch_id, batch.statuses)
    url = store.url if store is not None else None
    if display.as_json:
        data = summary.to_dict()
        if store is not None:
            data["batch_id"] = batch_id
        for entry, question in zip(data["questions"], summary.questions, strict=True):
            entry["commands"] = answer_commands(
                question.run_id, question.step, question.question, url
            )
        sys.stdout.write(json_text(data, indent=2) + "\n")
    elif display.quiet:
        console.print(_one_line(summary), highlight=False, soft_wrap=True)
    else:
        render_summary(console, summary, f"{flow.name} ({job.title})", url)
    if written is not None and not to_stdout and not display.as_json:
        console.print(f"results: {written} line(s) written to {output}", highlight=False)
    elif output is None and not display.quiet and not display.as_json:
        console.print("[dim]per-item results not saved (add --output results.jsonl)[/]")
    if interrupted:
        unfinished = len(items) - batch.finished
        resume = f"; resume: {resume_hint(batch_id, store)}" if store and batch_id else ""
        echo(f"interrupted: {unfinished} item(s) did not finish{resume}", err=True)
        return EXIT_INTERRUPTED
    if summary.failed:
        return EXIT_FAILED
    return EXIT_WAITING if summary.waiting else EXIT_OK


def _with_unfinished_spend(
    summary: BatchSummary, store: Store, batch_id: str, statuses: Sequence[str | None]
) -> BatchSummary:
    """After Ctrl-C: the summary counts what the items that did not finish spent too (as
    their journals recorded it), so that it shows what was spent, not only what finished."""
    from trellis.engine.records import batch_items, recorded_usage

    spent = Stats()
    for index, row in enumerate(batch_items(store, batch_id)):
        if index < len(statuses) and statuses[index] is None and row.status != "done":
            spent.merge(recorded_usage(store, row))
    if not spent.attempts:
        return summary
    return dataclasses.replace(
        summary,
        calls=summary.calls + spent.calls,
        attempts=summary.attempts + spent.attempts,
        input_tokens=summary.input_tokens + spent.input_tokens,
        output_tokens=summary.output_tokens + spent.output_tokens,
        cost_usd=summary.cost_usd + spent.cost_usd,
        unpriced_attempts=summary.unpriced_attempts + spent.unpriced_attempts,
    )


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def _one_line(summary: BatchSummary) -> str:
    cost = fmt_cost(summary.cost_usd, summary.unpriced_attempts)
    waiting = ""
    if summary.waiting:
        waiting = f", {summary.waiting} waiting for input (trellis runs --status waiting)"
    return (
        f"{summary.total} items: {summary.done} done, {summary.failed} failed{waiting} · "
        f"{summary.attempts} attempts · {cost}"
    )


def _check_stream_step(flow: Flow, path: str) -> None:
    """``--stream``'s step: a step of ``flow``, or a step inside a sub-flow step by its
    path (``categorise/label``: step ``label`` of sub-flow step ``categorise``)."""
    names = path.split("/")
    current = flow
    for depth, name in enumerate(names):
        steps = {s.name: s for s in current.compile().steps}
        if name not in steps:
            near = difflib.get_close_matches(name, list(steps), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; its steps: {', '.join(steps)}"
            raise CliError(f"--stream {path}: flow {current.name!r} has no step {name!r}{hint}")
        if depth == len(names) - 1:
            return
        spec = steps[name].subflow
        if spec is None:
            raise CliError(
                f"--stream {path}: step {name!r} of flow {current.name!r} is not a sub-flow "
                "step; a path names a step inside sub-flows (SUBFLOW_STEP/STEP)"
            )
        current = spec.flow


def execute_run(target: str, options: RunOptions) -> int:
    """``trellis run`` once its options are parsed; returns the exit code."""
    flow, parsed = load_flow(target)
    options.check()
    if options.stream_step is not None:
        _check_stream_step(flow, options.stream_step)
    check_output_path(options.output, options.input_file)
    opened = None if options.no_store else open_cli_store(options.store)
    batch = options.input_file is not None
    traced = otlp_tracer() if options.otel else contextlib.nullcontext()
    try:
        with traced as tracer:
            return _execute_run(flow, parsed, target, options, opened, batch, tracer)
    finally:
        if opened is not None:
            opened.close()


def _execute_run(
    flow: Flow,
    parsed: Any,
    target: str,
    options: RunOptions,
    opened: Store | None,
    batch: bool,
    tracer: Any,
) -> int:
    try:
        settings = make_settings(
            flow,
            config_path=options.config,
            models=options.models,
            budget_usd=options.budget_usd,
            budget_tokens=options.budget_tokens,
            budget_calls=options.budget_calls,
            max_seconds=options.max_seconds,
            store=opened,
            cache=options.response_cache,
            lease_ttl=options.lease_ttl if options.lease_ttl is not None else DEFAULT_LEASE_TTL,
        )
        settings = dataclasses.replace(
            settings, executor=options.executor, record_prompts=options.record_prompts
        )
        if tracer is not None:
            settings = dataclasses.replace(settings, tracing=tracer)
        meta = None
        if opened is not None:
            meta = build_meta(
                kind="batch" if batch else "run",
                target_text=target,
                target=parsed,
                settings=settings,
                options=options,
            ).to_dict()
        if batch:
            job = BatchJob(
                title=str(parsed),
                input_file=options.input_file,
                output=options.output,
                concurrency=options.concurrency,
                display=options.display,
                batch_id=options.run_id,
                rerun_changed=options.rerun_changed,
                meta=meta,
            )
            return run_batch(flow, settings, job)
        one = OneRun(
            input_json=options.input_json,
            display=options.display,
            run_id=options.run_id,
            rerun_changed=options.rerun_changed,
            meta=meta,
            stream_step=options.stream_step,
        )
        return run_once(flow, settings, one)
    except DURABLE_ERRORS as exc:  # e.g. a corrupt record read before anything ran
        raise CliError(str(exc)) from None
