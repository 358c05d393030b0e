"""``trellis eval``: score a flow's variants over a labelled JSONL dataset.

Thin: options are parsed here, the work is :mod:`trellis.eval` (dataset, scorers,
variants, runner, selection, report) and :mod:`trellis.eval.plot`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from trellis.cli.errors import EXIT_FAILED, EXIT_OK, CliError, command
from trellis.cli.options import ConfigOption, ModelOption, StoreOption, json_flag
from trellis.errors import ConfigurationError, InputError, StoreError

if TYPE_CHECKING:
    from trellis.eval import Selection

__all__ = ["eval_command"]


def _train_share(text: str) -> float:
    name, sep, value = text.partition("=")
    if not sep or name.strip() != "train":
        raise CliError(f"--split {text!r} must be train=SHARE, e.g. --split train=0.5")
    try:
        return float(value)
    except ValueError:
        raise CliError(f"--split {text!r}: {value!r} is not a number") from None


@command
def eval_command(
    target: Annotated[
        str,
        typer.Argument(
            help="The flow: `path/to/file.py:flow` or `package.module:flow`.",
            metavar="TARGET",
            show_default=False,
        ),
    ],
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            "-d",
            metavar="FILE.jsonl",
            help="One JSON object per line: the flow's inputs plus the label field.",
            show_default=False,
        ),
    ],
    label: Annotated[
        str,
        typer.Option(
            "--label",
            metavar="FIELD",
            help="The field holding the expected answer; taken out of the inputs: no step "
            "ever sees it. Other fields the flow does not read are left out too.",
            show_default=False,
        ),
    ],
    score: Annotated[
        str,
        typer.Option(
            "--score",
            metavar="SCORER",
            help="exact, number, json-field:PATH, module:function or path.py:function "
            "(called as score(outputs, label) -> float | bool).",
        ),
    ] = "exact",
    answer: Annotated[
        str | None,
        typer.Option(
            "--answer",
            metavar="STEP",
            help="The step whose output exact/number compare (default: the last step, in "
            "run order, that completed).",
            show_default=False,
        ),
    ] = None,
    variants: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            "-V",
            metavar='NAME="ROLE=binding,..."',
            help="A named configuration: roles bound to models, e.g. "
            'cascade="small=sim:small,large=sim:large"; repeatable. Default: one variant, '
            "'default', with the configured bindings.",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            "-r",
            metavar="NAME",
            help="The variant the others are compared with (% of its score at % of its cost).",
            show_default=False,
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            "--sweep",
            metavar="PARAM=LOW:HIGH:STEP",
            help="Try these values of a tl.Param of the flow (or PARAM=v1,v2,...), for every "
            "variant but the reference; each setting is NAME@PARAM=value.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            metavar="train=SHARE",
            help="With --target: choose on this random share of the items, report on the rest.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random split.")] = 0,
    target_text: Annotated[
        str | None,
        typer.Option(
            "--target",
            metavar="'score>=X[*ref]'",
            help="Choose the cheapest setting whose train score meets this, e.g. "
            "'score>=0.95*ref'; it is reported on the test split.",
            show_default=False,
        ),
    ] = None,
    repeats: Annotated[
        int,
        typer.Option("--repeats", min=1, help="Repeat the random split K times: mean ± sd."),
    ] = 1,
    models: ModelOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-n", min=1, help="Items at once, per variant.")
    ] = 8,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Use only the first N items.", show_default=False),
    ] = None,
    as_json: Annotated[bool, json_flag("Print the report as JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png|.svg",
            help="Write the cost-quality chart (needs the 'eval' extra: matplotlib).",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Record nothing: the eval lives in memory.")
    ] = False,
    eval_id: Annotated[
        str | None,
        typer.Option(
            "--eval-id",
            metavar="ID",
            help="The eval's id (default: a new one).",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Score a flow's variants over labelled data: score with a bootstrap 95% interval,
    cost, calls per model, routes, tokens and latency per variant, relative to a
    reference; optionally a parameter sweep chosen on a train split and reported on the
    test split. Every item is recorded in the store as a run of its variant's batch, and
    the eval itself (with every item's score) as the run ``EVAL_ID``.

    Example: `trellis eval examples/gsm8k_cascade.py:flow --dataset
    examples/data/gsm8k/items.jsonl --label gold --score json-field:final.answer -c
    examples/data/gsm8k/trellis.toml --variant cascade="small=small,large=large" --variant
    large-only="small=large,large=large,strictness=0" --reference large-only --no-store`

    Exit code 0; 1 when some item failed (it scores 0; the table says how many); 2 for a
    usage or configuration problem.
    """
    return _execute(
        target,
        dataset,
        label,
        score,
        answer,
        variants or [],
        reference,
        sweep,
        split,
        seed,
        target_text,
        repeats,
        models or [],
        config,
        concurrency,
        limit,
        as_json,
        plot,
        store,
        no_store,
        eval_id,
    )


def _execute(
    target: str,
    dataset_path: Path,
    label: str,
    score: str,
    answer: str | None,
    variant_specs: list[str],
    reference: str | None,
    sweep_spec: str | None,
    split: str | None,
    seed: int,
    target_text: str | None,
    repeats: int,
    models: list[str],
    config_path: Path | None,
    concurrency: int,
    limit: int | None,
    as_json: bool,
    plot: Path | None,
    store_spec: str | None,
    no_store: bool,
    eval_id: str | None,
) -> int:
    # trellis.eval and the engine are imported here, not at module level: `trellis --help`
    # and every other command start without them.
    from trellis.cli.settings import apply_model_overrides, load_config
    from trellis.cli.stores import open_cli_store
    from trellis.cli.target import load_flow
    from trellis.eval import (
        Variant,
        eval_report,
        expand,
        load_dataset,
        load_scorer,
        parse_sweep,
        parse_target,
        parse_variant,
        render_eval,
        resolve_bindings,
        run_eval,
        select,
    )
    from trellis.eval.report import summaries

    flow, _ = load_flow(target)
    config, _ = load_config(config_path)
    config = apply_model_overrides(config, models)
    if plot is not None:
        from trellis.eval.plot import check_plot_path

        try:
            check_plot_path(plot)
        except ConfigurationError as exc:
            raise CliError(str(exc)) from None
    try:
        data = load_dataset(
            dataset_path, label, flow_inputs=list(flow.compile().inputs), limit=limit
        )
        scorer = load_scorer(score, answer_step=answer)
        variants = [parse_variant(v, flow.params) for v in variant_specs] or [Variant("default")]
        for variant in variants:
            resolve_bindings(variant, config)
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise InputError(f"--variant names must be distinct: {', '.join(names)}")
        if reference is not None and reference not in names:
            raise InputError(f"--reference {reference!r} is not a --variant ({', '.join(names)})")
        sweep = parse_sweep(sweep_spec, flow) if sweep_spec else None
        goal = parse_target(target_text) if target_text else None
        if goal is not None and goal.of_reference and reference is None:
            raise InputError(f"--target {goal.text!r} needs --reference")
        if (split is not None or repeats > 1) and goal is None:
            raise InputError("--split and --repeats choose a setting: give --target too")
        if answer is not None and answer not in flow.compile().index:
            raise InputError(f"--answer {answer!r} is not a step of flow {flow.name!r}")
    except (InputError, ConfigurationError) as exc:
        raise CliError(str(exc)) from None
    settings = expand(variants, sweep, reference=reference)
    store = None if no_store else open_cli_store(store_spec)
    total = len(settings) * len(data)
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # a progress bar on a terminal only
    )
    try:
        with progress:
            task = progress.add_task("eval", total=total)
            result = asyncio.run(
                run_eval(
                    flow,
                    data,
                    settings,
                    scorer,
                    config=config,
                    store=store,
                    concurrency=concurrency,
                    eval_id=eval_id,
                    on_item=lambda _: progress.advance(task),
                )
            )
    except (InputError, ConfigurationError, StoreError) as exc:
        raise CliError(str(exc)) from None
    finally:
        if store is not None:
            store.close()
    selection: Selection | None = None
    if goal is not None:
        try:
            selection = select(
                result.variants,
                target=goal,
                reference=reference,
                train_share=_train_share(split) if split else 0.5,
                seed=seed,
                repeats=repeats,
            )
        except InputError as exc:
            raise CliError(str(exc)) from None
    figures = summaries(result)
    report = eval_report(result, reference=reference, selection=selection, figures=figures)
    if plot is not None:
        from trellis.eval.plot import write_plot

        write_plot(report, plot)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        console = Console()
        render_eval(console, result, reference=reference, selection=selection, figures=figures)
        if plot is not None:
            console.print(f"chart written to {plot}")
        if store is not None:
            console.print(f"recorded as {result.eval_id} (variants: batches {result.eval_id}/NAME)")
    failed = [i for run in result.variants for i in run.items if i.status != "done"]
    if failed:
        first = next((i.error for i in failed if i.error), None)
        typer.echo(
            f"warning: {len(failed)} item run(s) failed and scored 0"
            + (f"; first error: {first}" if first else ""),
            err=True,
        )
        return EXIT_FAILED
    return EXIT_OK
