"""An eval's report: the ``--json`` object and the tables ``trellis eval`` prints."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from trellis.eval.runner import EvalRun
from trellis.eval.selection import Selection
from trellis.eval.summary import VariantSummary, relative, summarize
from trellis.formats import fmt_cost

__all__ = ["eval_report", "render_eval", "summaries"]


def summaries(result: EvalRun) -> dict[str, VariantSummary]:
    return {run.variant.name: summarize(run) for run in result.variants}


def eval_report(
    result: EvalRun,
    *,
    reference: str | None = None,
    selection: Selection | None = None,
    figures: dict[str, VariantSummary] | None = None,
) -> dict[str, Any]:
    """The eval as one JSON-ready object: ``variants`` maps each variant name (``NAME``
    or ``NAME@PARAM=value``) to its figures, with ``relative`` to the reference.
    ``figures``: the :func:`summaries`, when already computed."""
    figures = figures if figures is not None else summaries(result)
    ref = figures.get(reference) if reference else None
    variants: dict[str, Any] = {}
    for name, summary in figures.items():
        entry = summary.to_dict()
        entry["relative"] = relative(summary, ref).to_dict() if ref is not None else None
        variants[name] = entry
    return {
        "eval_id": result.eval_id,
        "flow": result.flow,
        "dataset": result.dataset.source,
        "label": result.dataset.label_field,
        "ignored_fields": list(result.dataset.ignored_fields),
        "scorer": result.scorer,
        "items": len(result.dataset),
        "reference": reference,
        "seconds": round(result.seconds, 3),
        "variants": variants,
        "selection": selection.to_dict() if selection is not None else None,
    }




def _share(summary: VariantSummary) -> str:
    return ", ".join(f"{m} {s:.0%}" for m, s in summary.call_shares().items()) or "no calls"


def _routes(summary: VariantSummary) -> str:
    return ", ".join(f"{route} {n}" for route, n in summary.items_by_route.items())


def render_eval(
    console: Console,
    result: EvalRun,
    *,
    reference: str | None = None,
    selection: Selection | None = None,
    figures: dict[str, VariantSummary] | None = None,
) -> None:
    figures = figures if figures is not None else summaries(result)
    ignored = result.dataset.ignored_fields
    console.print(
        f"[bold]eval {result.eval_id}[/]: flow {result.flow}, {len(result.dataset)} items "
        f"from {result.dataset.source} (label {result.dataset.label_field!r}"
        + (f"; ignored fields: {', '.join(ignored)}" if ignored else "")
        + f"), scorer {result.scorer}",
        highlight=False,
    )
    table = Table(show_edge=False, pad_edge=False)
    for column in (
        "variant",
        "items",
        "score [95% CI]",
        "cost",
        "cost/item",
        "calls by model",
        "items by route",
        "tokens in/out",
        "p50/p95 s",
    ):
        wraps = column in ("variant", "calls by model", "items by route")
        table.add_column(column, overflow="fold", no_wrap=not wraps)
    for name, s in figures.items():
        marker = " (ref)" if name == reference else ""
        failed = f" ({s.failed} failed)" if s.failed else ""
        table.add_row(
            name + marker,
            f"{s.items}{failed}",
            f"{s.score:.3f} [{s.score_ci[0]:.3f}, {s.score_ci[1]:.3f}]",
            fmt_cost(s.cost_usd_known_part, s.unpriced_attempts),
            fmt_cost(s.cost_per_item),
            _share(s),
            _routes(s),
            f"{s.input_tokens}/{s.output_tokens}",
            f"{s.latency_p50_s:.3f}/{s.latency_p95_s:.3f}",
        )
    console.print(table)
    ref = figures.get(reference) if reference else None
    if ref is not None:
        for name, s in figures.items():
            if name != reference:
                console.print(f"  {name}: {relative(s, ref).sentence(reference or '')}")
    if selection is not None:
        _render_selection(console, selection, reference)


def _render_selection(console: Console, selection: Selection, reference: str | None) -> None:
    repeats = len(selection.splits)
    console.print(
        f"\n[bold]selection[/]: cheapest setting with {selection.target.text} on a "
        f"{selection.train_share:.0%} train split, reported on the held-out test split"
        + (f" ({repeats} random splits)" if repeats > 1 else ""),
        highlight=False,
    )
    for split in selection.splits if repeats <= 5 else ():
        if split.chosen is None or split.test is None:
            console.print(f"  seed {split.seed}: no setting met the target on train")
            continue
        rel = ""
        if split.score_share is not None and split.cost_share is not None:
            rel = (
                f" = {split.score_share:.1%} of {reference}'s test score at "
                f"{split.cost_share:.1%} of its cost"
            )
        train = split.train.score if split.train is not None else float("nan")
        console.print(
            f"  seed {split.seed}: chose {split.chosen} (train score {train:.3f}); "
            f"test score {split.test.score:.3f}{rel}",
            highlight=False,
        )
    if repeats > 1:
        score, score_sd = selection.test_score()
        share, share_sd = selection.score_share()
        cost, cost_sd = selection.cost_share()
        chosen = ", ".join(f"{n} ×{k}" for n, k in selection.chosen_counts().items())
        console.print(
            f"  over {repeats} splits: test score {score:.3f} ± {score_sd:.3f}; "
            f"{share:.1%} ± {share_sd:.1%} of the reference's score at "
            f"{cost:.1%} ± {cost_sd:.1%} of its cost; chosen: {chosen}",
            highlight=False,
        )
