"""``trellis resume RUN``: finish an interrupted run or batch from where it stopped.

The run's recorded ``meta`` (see :class:`~trellis.cli.run_meta.RunMeta`) says how it was
started: the flow target (re-imported), configuration file, ``--model`` overrides, budgets,
concurrency and output file. A batch runs only its unfinished items (failed ones are
retried; completed steps and journaled LLM calls of interrupted items are replayed, not
redone) and then writes the complete output file; a single run prints its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trellis.cli.errors import command
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

__all__ = ["resume"]


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
    from trellis.cli.jobs import Display
    from trellis.cli.resuming import BudgetOverrides, resume_recorded

    return resume_recorded(
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
