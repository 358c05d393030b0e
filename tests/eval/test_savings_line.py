"""The run summary's savings line: an estimate that states its method and never counts the
calls an all-large run would not make (a cascade's escalations)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

import trellis as tl
from trellis.cli.render import render_summary
from trellis.engine.summary import summarize
from trellis.eval import Variant, load_dataset, load_scorer, run_eval

from .conftest import N_ITEMS

PRICES = {
    "replay:small": {"input": 1.0, "output": 2.0},
    "replay:large": {"input": 10.0, "output": 20.0},
}


def unpriced_records(toy: dict[str, Path]) -> None:
    """Drop the recorded costs: the price table prices the recorded usage."""
    text = toy["recorded"].read_text()
    toy["recorded"].write_text(
        text.replace(', "cost_usd": 0.001', "").replace(', "cost_usd": 0.01', "")
    )


async def test_escalated_items_are_counted_once(toy: dict[str, Path]) -> None:
    from .flows import cascade

    unpriced_records(toy)
    config = tl.Config.from_toml(toy["config"]).with_prices(PRICES)
    items = [{"question": f"What is {i}+{i}?"} for i in range(N_ITEMS)]
    async with tl.Engine(config=config) as engine:
        results = [r async for _, r in engine.run_many(cascade.flow, items)]
    summary = summarize(results, prices=config.prices, wall_s=1.0)
    cf = summary.counterfactual
    assert cf is not None and cf.model == "replay:large"
    small_call = (10 * 1.0 + 5 * 2.0) / 1e6
    large_call = (10 * 10.0 + 20 * 20.0) / 1e6
    assert cf.actual_usd == pytest.approx(40 * small_call + 10 * large_call)
    # The 40 first answers re-priced at the large price; the 10 escalations are left out
    # (the old line added them too, counting every escalated item twice: 13000e-6).
    assert cf.cost_usd == pytest.approx(40 * (10 * 10.0 + 5 * 20.0) / 1e6)
    assert cf.left_out_attempts == 10
    out = io.StringIO()
    render_summary(Console(file=out, width=200), summary, "cascade")
    text = " ".join(out.getvalue().split())
    assert "estimated cost if every call had gone to replay:large" in text
    assert "10 attempt(s) of when=/branch steps left out, so an escalated item counts once" in text
    assert "a measured baseline: trellis eval" in text

    # The measured baseline (an all-large variant replayed) is what an eval reports.
    rec = toy["recorded"]
    data = load_dataset(toy["dataset"], "gold", flow_inputs=["question"])
    measured = await run_eval(
        cascade.flow,
        data,
        [Variant("large-only", {"small": f"replay:large?file={rec}"})],
        load_scorer("number"),
        config=config,
    )
    all_large = sum(i.cost_usd or 0.0 for i in measured.variants[0].items)
    assert all_large == pytest.approx(40 * large_call)
