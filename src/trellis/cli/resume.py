"""``trellis resume RUN``: finish an interrupted run or batch from where it stopped.

The run's recorded ``meta`` (see :class:`~trellis.cli.run_meta.RunMeta`) says how it was
started: the flow target (re-imported), configuration file, ``--model`` overrides, budgets,
concurrency and output file. A batch runs only its unfinished items (failed ones are
retried; completed steps and journaled LLM calls of interrupted items are replayed, not
redone) and then writes the complete output file; a single run prints its result.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from trellis.cli.commands import DURABLE_ERRORS, run_batch, run_once
from trellis.cli.errors import CliError, command
from trellis.cli.jobs import BatchJob, Display, OneRun
from trellis.cli.options import (
    BudgetCallsOption,
    BudgetTokensOption,
    BudgetUsdOption,
    ExecutorOption,
    LeaseTtlOption,
    NoProgressOption,
    QuietOption,
    RerunChangedOption,
    StoreOption,
    json_flag,
    model_option,
)
from trellis.cli.run_meta import RunMeta, meta_of
from trellis.cli.settings import Settings, make_settings
from trellis.cli.stores import find_run, store_of_run
from trellis.cli.target import load_flow
from trellis.flow.flow import Flow
from trellis.flow.policy import Cache
from trellis.store.base import RunRow, Store

__all__ = ["BudgetOverrides", "load_recorded_flow", "recorded_settings", "resume"]


def load_recorded_flow(meta: RunMeta) -> Flow:
    """Import the flow a run was started with (its file by absolute path; a module from
    the directory the run was started in)."""
    if meta.target_file is not None:
        text = meta.target_file
        if meta.target_attribute:
            text += f":{meta.target_attribute}"
    else:
        if meta.cwd not in sys.path:
            sys.path.insert(0, meta.cwd)
        text = meta.target
    flow, _ = load_flow(text)
    return flow


def recorded_settings(
    store: Store,
    row: RunRow,
    *,
    models: list[str],
    lease_ttl: float | None,
    quiet: bool,
    budgets: BudgetOverrides | None = None,
) -> tuple[RunMeta, Flow, Settings]:
    """How ``row`` was started, its flow (re-imported) and the settings to continue it
    with: the recorded configuration, bindings (plus ``models``), budgets (each one
    replaced by ``budgets``' when given) and cache."""
    budgets = budgets or BudgetOverrides()
    meta = meta_of(
        store, row, answer=f"resume it from Python: engine.run(flow, run_id={row.run_id!r})"
    )
    flow = load_recorded_flow(meta)
    if flow.name != row.flow:
        raise CliError(
            f"run {row.run_id} is of flow {row.flow!r}, but {meta.target} now defines {flow.name!r}"
        )
    if meta.redacted and not quiet:
        typer.echo(
            f"note: {', '.join(meta.redacted)} were not recorded (secrets never are); "
            "give them again with --model or the provider's environment variable",
            err=True,
        )
    settings = make_settings(
        flow,
        config_path=Path(meta.config) if meta.config else None,
        models=[*meta.models, *models],
        budget_usd=_given(budgets.usd, meta.budget_usd),
        budget_tokens=_given(budgets.tokens, meta.budget_tokens),
        budget_calls=_given(budgets.calls, meta.budget_calls),
        max_seconds=meta.max_seconds,
        store=store,
        cache=Cache(ttl=meta.cache_ttl) if meta.cache else None,
        lease_ttl=lease_ttl if lease_ttl is not None else meta.lease_ttl,
        default_config=False,
    )
    return meta, flow, settings


@dataclass(frozen=True, slots=True)
class BudgetOverrides:
    """``trellis resume --budget-usd/--budget-tokens/--budget-calls`` (None: as recorded)."""

    usd: float | None = None
    tokens: int | None = None
    calls: int | None = None


_T = TypeVar("_T")


def _given(override: _T | None, recorded: _T | None) -> _T | None:
    return override if override is not None else recorded


@command
def resume(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="The run or batch id (as printed by `trellis run` and listed by `trellis runs`).",
            show_default=False,
        ),
    ],
    store: StoreOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE.jsonl",
            help=(
                "For a batch: write the complete results here (every item, in input order) "
                "instead of the --output the batch was started with. '-' writes to stdout."
            ),
            show_default=False,
        ),
    ] = None,
    rerun_changed: RerunChangedOption = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-n",
            min=1,
            help="For a batch: how many items run at once (default: as when it was started).",
            show_default=False,
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        model_option(
            "Bind a model role on top of the recorded bindings; repeatable. Use it to give "
            "again an option that was not recorded (keys and tokens never are)."
        ),
    ] = None,
    lease_ttl: LeaseTtlOption = None,
    executor: ExecutorOption = None,
    budget_usd: BudgetUsdOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_calls: BudgetCallsOption = None,
    quiet: QuietOption = False,
    as_json: Annotated[
        bool,
        json_flag("Print JSON: the run result (a single run) or the batch summary (a batch)."),
    ] = False,
    no_progress: NoProgressOption = False,
) -> int:
    """Resume an interrupted run or batch recorded by `trellis run`.

    A batch runs only the items that did not finish (completed steps and LLM calls of an
    interrupted item are replayed from the store, not redone), then writes the complete
    output file — every item, in input order, exactly once — and prints the summary. A
    single run prints its result. A run that already completed prints its recorded result.

    The flow file, configuration and model bindings are the recorded ones; a process that
    was killed leaves a lease that must expire first (this waits for it when that process
    is gone). A run waiting for a person waits again (answer it with `trellis approve` /
    `trellis reply`). Exit codes as for `trellis run` (0 done, 1 failed, 3 waiting for
    input); an unknown run id is exit code 2.

    A batch's budgets (`--budget-*`, default: those it was started with) cover the whole
    batch: what its earlier runs spent, killed ones included, counts against them.

    Example: `trellis resume 20250101-120000-1a2b3c4d --output results.jsonl`
    """
    return _resume(
        run,
        store,
        output,
        rerun_changed=rerun_changed,
        concurrency=concurrency,
        models=models or [],
        lease_ttl=lease_ttl,
        display=Display(quiet=quiet, as_json=as_json, progress=not no_progress),
        budgets=BudgetOverrides(budget_usd, budget_tokens, budget_calls),
        executor=executor,
    )


def _resume(
    run: str,
    store: str | None,
    output: Path | None,
    *,
    rerun_changed: bool,
    concurrency: int | None,
    models: list[str],
    lease_ttl: float | None,
    display: Display,
    budgets: BudgetOverrides,
    executor: str | None = None,
) -> int:
    with store_of_run(store, run) as opened:
        try:
            row = find_run(opened, run)
            meta, flow, settings = recorded_settings(
                opened,
                row,
                models=models,
                lease_ttl=lease_ttl,
                quiet=display.quiet,
                budgets=budgets,
            )
            settings = dataclasses.replace(settings, executor=executor)
            if meta.kind == "batch":
                destination = output
                if destination is None and meta.output is not None:
                    destination = Path(meta.output)
                if display.as_json and destination is not None and str(destination) == "-":
                    raise CliError("--json and --output - would both write to stdout; pick one")
                job = BatchJob(
                    title=meta.target,
                    output=destination,
                    concurrency=concurrency or meta.concurrency or 8,
                    display=display,
                    batch_id=run,
                    rerun_changed=rerun_changed,
                    recorded_input=Path(meta.input_file) if meta.input_file else None,
                )
                code = run_batch(flow, settings, job)
            else:
                if output is not None:
                    raise CliError(
                        f"run {run} is a single run: --output is for batches (use --json)"
                    )
                one = OneRun(display=display, run_id=run, rerun_changed=rerun_changed)
                code = run_once(flow, settings, one)
        except DURABLE_ERRORS as exc:  # e.g. a corrupt record
            raise CliError(str(exc)) from None
    return code
