"""``trellis eval``: score a flow's variants over a labelled JSONL dataset.

Thin: options are parsed here, the work is :mod:`trellis.eval` (dataset, scorers,
variants, runner, selection, report) and :mod:`trellis.eval.plot`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trellis.cli.errors import EXIT_FAILED, EXIT_OK, CliError, command
from trellis.cli.options import ConfigOption, ModelOption, StoreOption, json_flag
from trellis.errors import ConfigurationError, InputError, StoreError

if TYPE_CHECKING:
    from trellis.eval import Selection, Target

__all__ = ["EvalOptions", "eval_command"]


def _train_share(text: str) -> float:
    name, sep, value = text.partition("=")
    if not sep or name.strip() != "train":
        raise CliError(f"--split {text!r} must be train=SHARE, e.g. --split train=0.5")
    try:
        return float(value)
    except ValueError:
        raise CliError(f"--split {text!r}: {value!r} is not a number") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalOptions:
    """``trellis eval``'s options (its TARGET, the flow, apart)."""

    dataset: Path
    label: str
    score: str = "exact"
    answer: str | None = None
    variants: Sequence[str] = ()  # --variant specs; none: one variant, 'default'
    reference: str | None = None
    sweep: str | None = None
    split: str | None = None  # train=SHARE
    seed: int = 0
    target_text: str | None = None  # --target 'score>=X[*ref]'
    repeats: int = 1
    models: Sequence[str] = ()
    config: Path | None = None
    concurrency: int = 8
    limit: int | None = None
    as_json: bool = False
    plot: Path | None = None
    store: str | None = None
    no_store: bool = False
    eval_id: str | None = None

    @property
    def goal(self) -> Target | None:
        """``--target`` parsed (None without it); an InputError when it is malformed."""
        from trellis.eval import parse_target

        return parse_target(self.target_text) if self.target_text else None

    def check(self) -> None:
        """The rules between options; a :class:`CliError` for the first one broken."""
        try:
            goal = self.goal
        except InputError as exc:
            raise CliError(str(exc)) from None
        if goal is not None and goal.of_reference and self.reference is None:
            raise CliError(f"--target {goal.text!r} needs --reference")
        if (self.split is not None or self.repeats > 1) and goal is None:
            raise CliError("--split and --repeats choose a setting: give --target too")


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
    options = EvalOptions(
        dataset=dataset,
        label=label,
        score=score,
        answer=answer,
        variants=tuple(variants or ()),
        reference=reference,
        sweep=sweep,
        split=split,
        seed=seed,
        target_text=target_text,
        repeats=repeats,
        models=tuple(models or ()),
        config=config,
        concurrency=concurrency,
        limit=limit,
        as_json=as_json,
        plot=plot,
        store=store,
        no_store=no_store,
        eval_id=eval_id,
    )
    return _execute(target, options)


def _execute(target: str, options: EvalOptions) -> int:
    """``trellis eval`` once its options are parsed; returns the exit code."""
    # trellis.eval and the engine are imported here, not at module level: `trellis --help`
    # and every other command start without them.
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
        parse_variant,
        render_eval,
        resolve_bindings,
        run_eval,
        select,
    )
    from trellis.eval.report import summaries

    flow, _ = load_flow(target)
    options.check()
    goal = options.goal  # well-formed: check() said so
    reference, plot = options.reference, options.plot
    config, _ = load_config(options.config)
    config = apply_model_overrides(config, options.models)
    if plot is not None:
        from trellis.eval.plot import check_plot_path

        try:
            check_plot_path(plot)
        except ConfigurationError as exc:
            raise CliError(str(exc)) from None
    try:
        data = load_dataset(
            options.dataset,
            options.label,
            flow_inputs=list(flow.compile().inputs),
            limit=options.limit,
        )
        scorer = load_scorer(options.score, answer_step=options.answer)
        variants = [parse_variant(v, flow.params) for v in options.variants] or [Variant("default")]
        for variant in variants:
            resolve_bindings(variant, config)
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise InputError(f"--variant names must be distinct: {', '.join(names)}")
        if reference is not None and reference not in names:
            raise InputError(f"--reference {reference!r} is not a --variant ({', '.join(names)})")
        sweep = parse_sweep(options.sweep, flow) if options.sweep else None
        answer = options.answer
        if answer is not None and answer not in flow.compile().index:
            raise InputError(f"--answer {answer!r} is not a step of flow {flow.name!r}")
    except (InputError, ConfigurationError) as exc:
        raise CliError(str(exc)) from None
    settings = expand(variants, sweep, reference=reference)
    store = None if options.no_store else open_cli_store(options.store)
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
                    concurrency=options.concurrency,
                    eval_id=options.eval_id,
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
                train_share=_train_share(options.split) if options.split else 0.5,
                seed=options.seed,
                repeats=options.repeats,
            )
        except InputError as exc:
            raise CliError(str(exc)) from None
    figures = summaries(result)
    report = eval_report(result, reference=reference, selection=selection, figures=figures)
    if plot is not None:
        from trellis.eval.plot import write_plot

        write_plot(report, plot)
    if options.as_json:
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
