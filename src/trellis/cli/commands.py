"""What ``trellis run`` does once its options are parsed: one run, or a batch.

Both return the exit code; a usage or configuration problem is raised as :class:`CliError`.
With a store (the default) runs are durable: a run id that completed returns its recorded
result, an incomplete one resumes, and a batch is a parent run whose items are child runs.
A locked run, a changed step or an unusable store is one ``error:`` line (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trellis.cli.batch import BatchRun, check_output_path, write_results
from trellis.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError, configuration_error
from trellis.cli.inputs import Item, parse_input, read_items
from trellis.cli.jsonout import json_text
from trellis.cli.render import (
    answer_commands,
    fmt_seconds,
    fmt_usd,
    render_result,
    render_summary,
)
from trellis.cli.settings import Settings, make_settings
from trellis.cli.store_options import (
    DEFAULT_LEASE_TTL,
    build_meta,
    is_batch,
    open_cli_store,
    store_url,
    wait_for_dead_leases,
)
from trellis.cli.summary import BatchSummary, WaitingStep, summarize
from trellis.cli.target import load_flow
from trellis.engine.durable import open_batch
from trellis.engine.engine import new_run_id
from trellis.engine.results import RunResult
from trellis.errors import InputError, RunLockedError, StepChangedError, StoreError
from trellis.flow.flow import Flow
from trellis.flow.policy import Cache
from trellis.store.base import RunRow, Store
from trellis.store.codec import decode, encode

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

#: A run (or an item of a batch, none failed) waits for a person: `trellis approve` /
#: `trellis reply` answer it. (Next to the other exit codes in trellis.cli.errors.)
EXIT_WAITING = 3


def exit_code(result: RunResult) -> int:
    """0 done, 3 waiting for input, 1 failed."""
    if result.ok:
        return EXIT_OK
    return EXIT_WAITING if result.status == "waiting" else EXIT_FAILED


def _note(text: str) -> None:
    typer.echo(text, err=True)


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
) -> RunResult:
    async with settings.engine() as engine:
        try:
            return await engine.run(
                flow,
                inputs,
                budget=settings.run_budget,
                run_id=run_id,
                rerun_changed=rerun_changed,
                meta=meta,
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


def run_once(
    flow: Flow,
    input_json: str | None,
    settings: Settings,
    *,
    quiet: bool,
    as_json: bool,
    run_id: str | None = None,
    rerun_changed: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> int:
    """One run. With a store and the id of a recorded run: a completed run prints its
    recorded result (nothing runs), an incomplete one resumes (``--input`` may be left out)."""
    store = settings.store
    existing = store.get_run(run_id) if store is not None and run_id is not None else None
    if existing is not None and store is not None and is_batch(store, existing):
        raise CliError(
            f"run {run_id} is a batch: resume it with `trellis resume {run_id}` (or give "
            "--input-file with the same items)"
        )
    inputs: dict[str, Any] | None
    if input_json is None:
        required = _required_inputs(flow)
        if required and existing is None:
            example = json.dumps(dict.fromkeys(required, "..."))
            raise CliError(
                f"flow {flow.name!r} needs inputs ({', '.join(required)}): give "
                f"--input '{example}' or --input-file items.jsonl"
            )
        inputs = None if existing is not None else {}
    else:
        inputs = parse_input(flow, input_json)
    note = None  # said once the run is over, so that an error stays one line
    if existing is not None and store is not None:
        _check_recorded(flow, existing, inputs)
        if existing.status == "done":
            note = f"run {run_id} already completed: its recorded result (nothing was run)"
        else:
            wait_for_dead_leases(store, [existing], echo=_note)
            recorded = sum(s.status == "done" for s in store.load_steps(existing.run_id))
            note = f"resuming run {run_id} ({recorded} step(s) done before)"
    result = asyncio.run(_one(flow, inputs, settings, run_id, rerun_changed, meta))
    message = configuration_error([result])
    if message is not None:
        raise CliError(message)
    if note is not None and not quiet:
        _note(note)
    print_result(result, store.url if store is not None else None, quiet=quiet, as_json=as_json)
    return exit_code(result)


def print_result(result: RunResult, store: str | None, *, quiet: bool, as_json: bool) -> None:
    """A run's result: JSON, one line (``--quiet``), or the table with, for a waiting run,
    its questions and the commands that answer them."""
    if as_json:
        sys.stdout.write(json_text(result.to_dict(), indent=2) + "\n")
    elif quiet:
        if result.ok:
            typer.echo(f"done in {fmt_seconds(result.duration_s)}")
        elif result.status == "waiting":
            for w in WaitingStep.of(result):
                command = answer_commands(w.run_id, w.step, w.question, store)[0]
                typer.echo(f"waiting: step {w.step!r} asks {w.question.get('type')}: {command}")
        else:
            err = result.error
            typer.echo(f"failed: {err.type}: {err.message}" if err else "failed", err=True)
    else:
        render_result(Console(), result, store)


def recorded_items(store: Store, batch_id: str) -> list[Item]:
    """A recorded batch's items, in input order, from its child runs."""
    return [
        Item(decode(child.inputs, Any, f"the inputs of {child.run_id}"), child.run_id)
        for child in store.list_runs(parent_id=batch_id)
    ]


def _open_durable_batch(
    flow: Flow,
    store: Store,
    batch_id: str,
    items: Sequence[Item] | None,
    meta: Mapping[str, Any] | None,
) -> tuple[list[Item], RunRow | None]:
    """Record a new batch (parent and items) before anything runs, or check a recorded
    one; returns the items (a recorded batch's own) and the recorded parent row, if any."""
    existing = store.get_run(batch_id)
    if existing is None:
        if items is None:
            raise CliError(f"no run {batch_id!r} in {store.url}")
        try:
            open_batch(store, flow.compile(), [item.inputs for item in items], batch_id, meta)
        except DURABLE_ERRORS as exc:
            raise CliError(str(exc)) from None
        return list(items), None
    if not is_batch(store, existing):
        raise CliError(
            f"run {batch_id} is a single run, not a batch: resume it with --input (or "
            f"`trellis resume {batch_id}`), or pick another --run-id"
        )
    if existing.flow != flow.name:
        raise CliError(f"batch {batch_id!r} belongs to flow {existing.flow!r}, not {flow.name!r}")
    recorded = recorded_items(store, batch_id)
    if items is not None:
        if len(items) != len(recorded):
            raise CliError(
                f"batch {batch_id!r} was recorded with {len(recorded)} items, the input file "
                f"has {len(items)}; resume it with `trellis resume {batch_id}`, or use another "
                "--run-id"
            )
        for item, old in zip(items, recorded, strict=True):
            if json.dumps(item.inputs, sort_keys=True) != json.dumps(old.inputs, sort_keys=True):
                raise CliError(
                    f"{item.where}: batch {batch_id!r} was recorded with other inputs for this "
                    f"item; resume it with `trellis resume {batch_id}`, or use another --run-id"
                )
    return recorded, existing


def run_batch(
    flow: Flow,
    title: str,
    input_file: Path | None,
    output: Path | None,
    settings: Settings,
    *,
    concurrency: int,
    quiet: bool,
    as_json: bool,
    progress: bool,
    batch_id: str | None = None,
    rerun_changed: bool = False,
    meta: Mapping[str, Any] | None = None,
    note: str | None = None,
    to_stderr: bool = False,
    recorded_input: Path | None = None,
) -> int:
    """A batch over ``input_file`` (None: resume the recorded batch ``batch_id``). With a
    store, the batch is recorded (parent run ``batch_id``, generated when not given) before
    anything runs; a recorded batch id resumes: only unfinished items run, and the output
    file gets every item, in input order, exactly once. ``note`` replaces what is said on
    stderr about a recorded batch; ``to_stderr`` prints the summary there (stdout is
    someone else's); ``recorded_input`` is the input file a resumed batch was started with
    (``--output`` may not name it)."""
    check_output_path(output, input_file or recorded_input)
    items = read_items(flow, input_file) if input_file is not None else None
    store = settings.store
    announcement: str | None = None
    if store is not None:
        batch_id = batch_id or new_run_id()
        items, existing = _open_durable_batch(flow, store, batch_id, items, meta)
        if existing is None:
            announcement = f"batch {batch_id}: {_items(len(items))} recorded in {store.url}"
            if sys.stderr.isatty():
                announcement += f" (resume: {resume_hint(batch_id, store)})"
        else:
            children = store.list_runs(parent_id=batch_id)
            done = sum(c.status == "done" for c in children)
            rows = [existing, *(c for c in children if c.status != "done")]
            wait_for_dead_leases(store, rows, echo=_note)
            if note is not None:
                announcement = note
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
    console = Console(stderr=to_stdout or to_stderr)
    batch = BatchRun(
        flow,
        items,
        settings,
        concurrency=concurrency,
        progress=Console(stderr=True) if progress else None,
        batch_id=batch_id if store is not None else None,
        rerun_changed=rerun_changed,
        echo=_note,
    )
    interrupted = False
    try:
        asyncio.run(batch.execute())
    except KeyboardInterrupt:
        interrupted = True
    except DURABLE_ERRORS as exc:
        raise CliError(str(exc)) from None
    if batch.config_error is not None:
        raise CliError(batch.config_error)
    if announcement is not None and store is not None and batch_id is not None:
        if all(r is not None and r.status in ("done", "waiting") for r in batch.results):
            _note(f"{announcement} (trellis show {batch_id})")
        else:
            _note(f"{announcement} (resume: {resume_hint(batch_id, store)})")
    written = write_results(output, items, batch.results) if output is not None else None
    summary = summarize(batch.finished, prices=batch.prices, wall_s=batch.wall_s)
    url = store.url if store is not None else None
    if as_json:
        data = summary.to_dict()
        if store is not None:
            data["batch_id"] = batch_id
        for entry, question in zip(data["questions"], summary.questions, strict=True):
            entry["commands"] = answer_commands(
                question.run_id, question.step, question.question, url
            )
        sys.stdout.write(json_text(data, indent=2) + "\n")
    elif quiet:
        console.print(_one_line(summary), highlight=False, soft_wrap=True)
    else:
        render_summary(console, summary, f"{flow.name} ({title})", url)
    if written is not None and not to_stdout and not as_json:
        console.print(f"results: {written} line(s) written to {output}", highlight=False)
    elif output is None and not quiet and not as_json:
        console.print("[dim]per-item results not saved (add --output results.jsonl)[/]")
    if interrupted:
        unfinished = len(items) - len(batch.finished)
        resume = f"; resume: {resume_hint(batch_id, store)}" if store and batch_id else ""
        typer.echo(f"interrupted: {unfinished} item(s) did not finish{resume}", err=True)
        return EXIT_INTERRUPTED
    if summary.failed:
        return EXIT_FAILED
    return EXIT_WAITING if summary.waiting else EXIT_OK


def _items(n: int) -> str:
    return f"{n} item{'s' if n != 1 else ''}"


def _one_line(summary: BatchSummary) -> str:
    cost = fmt_usd(summary.cost_usd)
    if not summary.cost_known:
        cost = f"≥ {cost}"
    waiting = ""
    if summary.waiting:
        waiting = f", {summary.waiting} waiting for input (trellis runs --status waiting)"
    return (
        f"{summary.total} items: {summary.done} done, {summary.failed} failed{waiting} · "
        f"{summary.attempts} attempts · {cost}"
    )


def execute_run(
    target: str,
    *,
    input_json: str | None,
    input_file: Path | None,
    output: Path | None,
    models: Sequence[str],
    config: Path | None,
    concurrency: int,
    budget_usd: float | None,
    budget_tokens: int | None,
    budget_calls: int | None,
    max_seconds: float | None,
    quiet: bool,
    as_json: bool,
    no_progress: bool,
    store: str | None,
    no_store: bool,
    run_id: str | None,
    rerun_changed: bool,
    cache: bool,
    cache_ttl: float | None,
    lease_ttl: float | None,
) -> int:
    """``trellis run`` once its options are parsed; returns the exit code."""
    flow, parsed = load_flow(target)
    if input_json is not None and input_file is not None:
        raise CliError("give either --input (one run) or --input-file (a batch), not both")
    if output is not None and input_file is None:
        raise CliError("--output needs --input-file (with --input, use --json)")
    check_output_path(output, input_file)
    if as_json and output is not None and str(output) == "-":
        raise CliError("--json and --output - would both write to stdout; pick one")
    if no_store and store is not None:
        raise CliError("give either --store or --no-store, not both")
    if no_store and run_id is not None:
        raise CliError("--run-id needs a store (runs are only recorded without --no-store)")
    if run_id is not None and not run_id.strip():
        raise CliError("--run-id is empty")
    if cache_ttl is not None and cache_ttl <= 0:
        raise CliError("--cache-ttl must be positive (seconds)")
    response_cache = Cache(ttl=cache_ttl) if (cache or cache_ttl is not None) else None
    opened = None if no_store else open_cli_store(store)
    try:
        settings = make_settings(
            flow,
            config_path=config,
            models=models,
            budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            budget_calls=budget_calls,
            max_seconds=max_seconds,
            store=opened,
            cache=response_cache,
            lease_ttl=lease_ttl if lease_ttl is not None else DEFAULT_LEASE_TTL,
        )
        meta = None
        if opened is not None:
            meta = build_meta(
                kind="batch" if input_file is not None else "run",
                target_text=target,
                target=parsed,
                flow=flow,
                settings=settings,
                models=models,
                concurrency=concurrency if input_file is not None else None,
                budget_usd=budget_usd,
                budget_tokens=budget_tokens,
                budget_calls=budget_calls,
                max_seconds=max_seconds,
                output=output,
                input_file=input_file,
            ).to_dict()
        if input_file is not None:
            return run_batch(
                flow,
                str(parsed),
                input_file,
                output,
                settings,
                concurrency=concurrency,
                quiet=quiet,
                as_json=as_json,
                progress=not (quiet or no_progress or as_json),
                batch_id=run_id,
                rerun_changed=rerun_changed,
                meta=meta,
            )
        return run_once(
            flow,
            input_json,
            settings,
            quiet=quiet,
            as_json=as_json,
            run_id=run_id,
            rerun_changed=rerun_changed,
            meta=meta,
        )
    except DURABLE_ERRORS as exc:  # e.g. a corrupt record read before anything ran
        raise CliError(str(exc)) from None
    finally:
        if opened is not None:
            opened.close()
