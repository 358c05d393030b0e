"""What ``trellis resume`` (and ``fork``, ``approve``, ``reply``) do with a recorded run:
rebuild its flow and settings from its ``meta``, then run what did not finish (see
:mod:`trellis.cli.resume` for the command).

Imported when a command resumes, not at the start of every command.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import typer

from trellis.cli.commands import DURABLE_ERRORS, run_batch, run_once
from trellis.cli.errors import CliError
from trellis.cli.jobs import BatchJob, Display, OneRun
from trellis.cli.run_meta import RunMeta, meta_of
from trellis.cli.settings import Settings, make_settings
from trellis.cli.stores import find_run, store_of_run
from trellis.cli.target import load_flow
from trellis.flow.flow import Flow
from trellis.flow.policy import Cache
from trellis.store.base import RunRow, Store

__all__ = ["BudgetOverrides", "load_recorded_flow", "recorded_settings", "resume_recorded"]


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
    settings = dataclasses.replace(settings, record_prompts=meta.record_prompts)
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


def resume_recorded(
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
