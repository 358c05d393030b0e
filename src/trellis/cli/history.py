"""``trellis fork`` and ``trellis diff``: re-run a recorded run from a step with other
bindings or changed code, and compare two recorded runs. Thin: the work is
:mod:`trellis.history`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trellis.cli.errors import EXIT_OK, CliError, command
from trellis.cli.formats import fmt_usd
from trellis.cli.options import (
    LeaseTtlOption,
    QuietOption,
    StoreOption,
    json_flag,
    model_option,
)

if TYPE_CHECKING:
    from rich.console import Console

    from trellis.history import RunDiff

__all__ = ["diff", "fork"]


@command
def fork(
    run: Annotated[str, typer.Argument(help="The recorded run or batch.", show_default=False)],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="STEP",
            help="Re-run this step and everything downstream of it; the steps upstream come "
            "from the record (not paid for again). Default: re-run every step.",
            show_default=False,
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        model_option("Bind a role differently from the recorded run; repeatable."),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", metavar="ID", help="The fork's id (default: a new one).", show_default=False
        ),
    ] = None,
    store: StoreOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-n", min=1, help="For a batch: items at once.", show_default=False
        ),
    ] = None,
    lease_ttl: LeaseTtlOption = None,
    quiet: QuietOption = False,
    as_json: Annotated[bool, json_flag("Print the fork's result as JSON.")] = False,
) -> int:
    """Re-run a recorded run or batch (`trellis run`) with other bindings or changed code.

    Steps upstream of `--from` are copied from the record, so only what changed is paid
    for; a copied step whose code changed since it was recorded runs again, with its
    downstream. The flow file and configuration are the recorded ones. The fork is a new
    run (`--run-id`); compare it with `trellis diff RUN FORK`.

    Example: `trellis fork 20250101-120000-1a2b3c4d --from large_answer --model
    large=openai:gpt-4o`
    """
    return _fork(
        run, from_step, models or [], run_id, store, concurrency, lease_ttl, quiet, as_json
    )


def _fork(
    run: str,
    from_step: str | None,
    models: list[str],
    run_id: str | None,
    store: str | None,
    concurrency: int | None,
    lease_ttl: float | None,
    quiet: bool,
    as_json: bool,
) -> int:
    # What a fork runs is imported here, not at start-up of every command.
    from trellis.cli.commands import DURABLE_ERRORS, run_batch, run_once
    from trellis.cli.jobs import BatchJob, Display, OneRun
    from trellis.cli.resuming import recorded_settings
    from trellis.cli.run_meta import redact_model_overrides
    from trellis.cli.stores import find_run, store_of_run
    from trellis.engine.engine import new_run_id
    from trellis.history import prepare_fork

    with store_of_run(store, run) as opened:
        try:
            row = find_run(opened, run)
            meta, flow, settings = recorded_settings(
                opened, row, models=models, lease_ttl=lease_ttl, quiet=quiet
            )
            safe, redacted = redact_model_overrides(models)
            record: dict[str, Any] = meta.to_dict()
            record["models"] = [*meta.models, *safe]
            record["redacted"] = [*meta.redacted, *redacted]
            record.pop("batch", None)
            plan = prepare_fork(
                opened, flow, run, new_id=run_id or new_run_id(), from_step=from_step, meta=record
            )
            reused = ", ".join(plan.reused) or "nothing"
            note = (
                f"fork {plan.run_id} of {run}: re-running {', '.join(plan.rerun)}; "
                f"from the record: {reused}"
            )
            display = Display(quiet=quiet, as_json=as_json, progress=not (quiet or as_json))
            if plan.is_batch:
                job = BatchJob(
                    title=f"{meta.target} (fork of {run})",
                    concurrency=concurrency or meta.concurrency or 8,
                    display=display,
                    batch_id=plan.run_id,
                    rerun_changed=True,
                    note=note,
                )
                return run_batch(flow, settings, job)
            if not quiet:
                typer.echo(note, err=True)
            one = OneRun(display=display, run_id=plan.run_id, rerun_changed=True)
            return run_once(flow, settings, one)
        except DURABLE_ERRORS as exc:
            raise CliError(str(exc)) from None


@command
def diff(
    run_a: Annotated[str, typer.Argument(help="A recorded run or batch.", show_default=False)],
    run_b: Annotated[str, typer.Argument(help="Another one (e.g. its fork).", show_default=False)],
    store: StoreOption = None,
    as_json: Annotated[bool, json_flag("Print the diff as JSON.")] = False,
) -> int:
    """Show per step (per item for batches) what differs between two recorded runs: the
    route (a step's status), its output, cost and latency. Exit code 0."""
    from rich.console import Console

    from trellis.cli.commands import DURABLE_ERRORS  # not at start-up of every command
    from trellis.cli.stores import store_of_run
    from trellis.history import diff_runs

    with store_of_run(store, run_a) as opened:
        try:
            result = diff_runs(opened, run_a, run_b)
        except DURABLE_ERRORS as exc:
            raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str, ensure_ascii=False))
    else:
        render_diff(Console(), result)
    return EXIT_OK


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(value: float | None) -> str:
    return "-" if value is None else fmt_usd(value)


def render_diff(console: Console, result: RunDiff) -> None:
    from rich.table import Table

    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if result.items:
        changed = [(i, d) for i, d in result.items if d.changed]
        console.print(
            f"{result.a} vs {result.b}: {len(changed)} of {len(result.items)} items differ; "
            f"cost {_money(result.cost_a)} vs {_money(result.cost_b)}",
            highlight=False,
        )
        per_step = result.to_dict()["per_step"]
        table = Table("step", "route changed", "output changed", show_edge=False)
        for step, counts in per_step.items():
            table.add_row(step, str(counts["route_changed"]), str(counts["output_changed"]))
        console.print(table)
        for index, d in changed[:20]:
            steps = ", ".join(s.step for s in d.steps if s.changed)
            console.print(f"  item {index}: {steps}", highlight=False)
        if len(changed) > 20:
            console.print(f"  ... and {len(changed) - 20} more (--json has them all)")
        return
    console.print(
        f"{result.a} ({result.status_a}, {_money(result.cost_a)}) vs {result.b} "
        f"({result.status_b}, {_money(result.cost_b)})",
        highlight=False,
    )
    table = Table(
        "step", "route", "output a", "output b", "cost a → b", "latency a → b", show_edge=False
    )
    for s in result.steps:
        mark = "" if not s.changed else " *"
        table.add_row(
            s.step + mark,
            f"{s.status_a} → {s.status_b}" if s.route_changed else str(s.status_a),
            _short(s.output_a),
            "same" if not s.output_changed else _short(s.output_b),
            f"{_money(s.cost_a)} → {_money(s.cost_b)}",
            f"{s.latency_a or 0:.3f}s → {s.latency_b or 0:.3f}s",
        )
    console.print(table)
