"""trellis.eval as a library: datasets and label isolation, scorers, statistics, variants,
sweeps, recorded baselines and train/test selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.eval import (
    Variant,
    eval_report,
    expand,
    load_dataset,
    load_scorer,
    parse_sweep,
    parse_target,
    parse_variant,
    run_eval,
    select,
    summarize,
)
from trellis.eval.selection import split_indices
from trellis.eval.stats import bootstrap_ci, mean_sd, percentile
from trellis.store import open_store

from .conftest import N_ITEMS


def cascade_flow() -> tl.Flow:
    from .flows import cascade

    cascade.SEEN.clear()
    return cascade.flow


def toy_config(toy: dict[str, Path]) -> tl.Config:
    return tl.Config.from_toml(toy["config"])


VARIANTS = [
    Variant("cascade", {}),
    Variant("small-only", {"large": "replay:small?file={rec}"}),
    Variant("large-only", {"small": "replay:large?file={rec}"}),
]


def variants(toy: dict[str, Path]) -> list[Variant]:
    rec = toy["recorded"]
    return [
        Variant(v.name, {k: b.format(rec=rec) for k, b in v.bindings.items()}) for v in VARIANTS
    ]


# -- dataset ---------------------------------------------------------------------------------


def test_the_label_is_taken_out_of_the_inputs(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q", "gold": 1, "id": 7}\n\n{"question": "r", "gold": 2}\n')
    data = load_dataset(path, "gold", flow_inputs=["question"])
    assert [i.inputs for i in data.items] == [{"question": "q"}, {"question": "r"}]
    assert [i.label for i in data.items] == [1, 2]
    assert data.ignored_fields == ("id",)


def test_a_line_without_the_label_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q", "gold": 1}\n{"question": "r"}\n')
    with pytest.raises(tl.InputError, match=r"d.jsonl:2 has no label field 'gold'"):
        load_dataset(path, "gold")


async def test_the_label_never_reaches_a_step_or_a_model(toy: dict[str, Path]) -> None:
    flow = cascade_flow()
    from .flows import cascade

    data = load_dataset(toy["dataset"], "gold", flow_inputs=list(flow.compile().inputs))
    prompts: list[str] = []

    def model(request: tl.ModelRequest) -> str:
        prompts.append(request.prompt_text())
        return "1 confidence 0.9"

    models = {"small": tl.FunctionModel(model), "large": "sim:large"}
    result = await run_eval(flow, data, [Variant("v")], load_scorer("number"), models=models)
    assert len(result.variants[0].items) == N_ITEMS
    assert all(set(seen) == {"question"} for seen in cascade.SEEN)
    assert result.variants[0].items[0].status == "done"
    assert sorted(prompts) == sorted(item.inputs["question"] for item in data.items)


# -- scorers ---------------------------------------------------------------------------------


class Answer(BaseModel):
    value: float
    unit: str


def test_builtin_scorers() -> None:
    exact = load_scorer("exact")
    assert exact({"a": "x", "b": " yes "}, "yes") == 1.0, "the last step's output, stripped"
    assert exact({"b": "no"}, "yes") == 0.0
    number = load_scorer("number")
    assert number({"b": "so the total is $1,234.0."}, "1234") == 1.0
    assert number({"b": 72}, 72.0) == 1.0
    assert number({"b": "72 or 73"}, 72) == 0.0, "the last number counts"
    assert number({"b": "no number"}, 1) == 0.0
    pinned = load_scorer("number", answer_step="a")
    assert pinned({"a": "3", "b": "4"}, 3) == 1.0
    field = load_scorer("json-field:final.value")
    assert field({"final": Answer(value=2.50, unit="kg")}, "2.5") == 1.0
    assert field({"final": {"value": 3}}, 2) == 0.0
    assert field({"other": 1}, 1) == 0.0, "a missing path scores 0"
    unit = load_scorer("json-field:final.unit")
    assert unit({"final": Answer(value=1, unit="kg")}, "kg") == 1.0


def test_user_scorers_from_a_file_and_a_module(tmp_path: Path) -> None:
    file = tmp_path / "my_scores.py"
    file.write_text("def half(outputs, label):\n    return 0.5 if outputs else 0.0\n")
    assert load_scorer(f"{file}:half")({"x": 1}, None) == 0.5
    assert load_scorer("json:loads")  # any importable callable loads
    bad = tmp_path / "bad.py"
    bad.write_text("def text(outputs, label):\n    return 'yes'\n")
    with pytest.raises(tl.ConfigurationError, match="returns a float or a bool"):
        load_scorer(f"{bad}:text")({}, None)
    with pytest.raises(tl.ConfigurationError, match="unknown scorer"):
        load_scorer("fuzzy")
    with pytest.raises(tl.ConfigurationError, match="cannot load scorer"):
        load_scorer(f"{file}:nope")


# -- statistics ------------------------------------------------------------------------------


def test_bootstrap_interval_contains_the_mean_and_is_deterministic() -> None:
    values = [1.0] * 30 + [0.0] * 10
    low, high = bootstrap_ci(values, seed=3)
    assert low < 0.75 < high
    assert (low, high) == bootstrap_ci(values, seed=3)
    assert low > 0.55 and high < 0.9
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(1.4142, rel=1e-3))


# -- variants and sweeps ---------------------------------------------------------------------


def test_parse_variant_and_sweep() -> None:
    v = parse_variant("cascade=small=sim:small, large=sim:large?latency_ms=5")
    assert v.bindings == {"small": "sim:small", "large": "sim:large?latency_ms=5"}
    with pytest.raises(tl.InputError, match="ROLE=provider:model"):
        parse_variant("x=small")
    flow = cascade_flow()
    sweep = parse_sweep("min_confidence=0.2:0.8:0.3", flow)
    assert sweep.values == (0.2, 0.5, 0.8)
    assert parse_sweep("min_confidence=0.1,0.9", flow).values == (0.1, 0.9)
    with pytest.raises(tl.InputError, match=r"no parameter 'escalate'.*min_confidence"):
        parse_sweep("escalate=0:1:0.5", flow)
    with pytest.raises(tl.InputError, match="above high=1"):
        parse_sweep("min_confidence=0:2:1", flow)
    names = [s.name for s in expand([Variant("a"), Variant("ref")], sweep, reference="ref")]
    assert names == ["a@min_confidence=0.2", "a@min_confidence=0.5", "a@min_confidence=0.8", "ref"]


def test_secrets_in_bindings_are_never_recorded() -> None:
    v = parse_variant("x=large=openai:gpt-4o?api_key=sk-secret&base_url=http://h")
    assert "sk-secret" not in json.dumps(v.safe_bindings())


# -- running -----------------------------------------------------------------------------------


async def test_baselines_are_measured_from_their_own_calls(toy: dict[str, Path]) -> None:
    flow = cascade_flow()
    data = load_dataset(toy["dataset"], "gold", flow_inputs=list(flow.compile().inputs))
    store = open_store(f"sqlite:///{toy['store']}")
    result = await run_eval(
        flow,
        data,
        variants(toy),
        load_scorer("number"),
        config=toy_config(toy),
        store=store,
        eval_id="ev1",
    )
    figures = {run.variant.name: summarize(run) for run in result.variants}
    cascade, small, large = figures["cascade"], figures["small-only"], figures["large-only"]
    # Small right on even i (20); wrong with confidence 0.3 on i%4==1 (10, escalated and
    # fixed by large), wrong with 0.7 on i%4==3 (10, not escalated).
    assert cascade.score == pytest.approx(30 / 40)
    assert cascade.escalated_items == 10
    assert cascade.items_by_route == {"-": 30, "large": 10}
    assert cascade.cost_usd == pytest.approx(40 * 0.001 + 10 * 0.01)
    assert cascade.calls_by_model == {"replay:large": 10, "replay:small": 40}
    assert small.score == pytest.approx(0.5)
    assert large.score == 1.0
    # The all-large baseline is measured: its own recorded calls (large answers every
    # question with confidence 0.99, so nothing escalates), not the cascade's 50 calls
    # re-priced at the large price (which would say $0.50).
    assert large.cost_usd == pytest.approx(40 * 0.01)
    assert large.calls_by_model == {"replay:large": 40}
    assert large.escalated_items == 0
    report = eval_report(result, reference="large-only")
    entry = report["variants"]["cascade"]
    for key in (
        "items",
        "score",
        "score_ci",
        "cost_usd",
        "cost_per_item",
        "calls_by_model",
        "escalated_items",
    ):
        assert key in entry
    assert entry["relative"]["score_share"] == pytest.approx(0.75)
    assert entry["relative"]["cost_share"] == pytest.approx(0.14 / 0.4)
    # Recorded: one batch per variant, items as child runs, the eval row with every score.
    row = store.get_run("ev1")
    assert row is not None and row.meta is not None
    meta = json.loads(row.meta)
    assert meta["kind"] == "eval"
    scores = meta["eval"]["variants"]["cascade"]["scores"]
    assert len(scores) == N_ITEMS and scores["ev1/cascade.0"] == 1.0
    assert scores["ev1/cascade.3"] == 0.0
    assert len(store.list_runs(parent_id="ev1/large-only")) == N_ITEMS
    batch = store.get_run("ev1/cascade")
    assert batch is not None and batch.meta is not None
    assert json.loads(batch.meta)["eval"]["variant"] == "cascade"
    store.close()


async def test_sweep_and_selection_on_train_reported_on_test(toy: dict[str, Path]) -> None:
    flow = cascade_flow()
    data = load_dataset(toy["dataset"], "gold", flow_inputs=list(flow.compile().inputs))
    sweep = parse_sweep("min_confidence=0.0,0.5,0.8", flow)
    settings = expand(variants(toy)[:1] + variants(toy)[2:], sweep, reference="large-only")
    result = await run_eval(flow, data, settings, load_scorer("number"), config=toy_config(toy))
    by_name = {r.variant.name: summarize(r) for r in result.variants}
    assert by_name["cascade@min_confidence=0"].escalated_items == 0
    assert by_name["cascade@min_confidence=0.5"].escalated_items == 10
    assert by_name["cascade@min_confidence=0.8"].escalated_items == 20
    assert by_name["cascade@min_confidence=0.8"].score == 1.0
    exact = select(
        result.variants, target=parse_target("score>=1*ref"), reference="large-only", seed=1
    )
    [split] = exact.splits
    assert split.chosen == "cascade@min_confidence=0.8", "the cheapest meeting the target"
    assert split.test is not None and split.test.items == N_ITEMS // 2
    train, test = split_indices(N_ITEMS, 0.5, 1)
    assert split.train is not None
    assert split.train.score == summarize(result.variants[2], train).score
    assert not set(train) & set(test)
    loose = select(
        result.variants, target=parse_target("score>=0.3"), reference="large-only", repeats=4
    )
    assert len(loose.splits) == 4
    assert {s.chosen for s in loose.splits} == {"cascade@min_confidence=0"}
    assert [s.seed for s in loose.splits] == [0, 1, 2, 3]
    mean, sd = loose.score_share()
    assert 0.3 < mean < 0.7 and sd >= 0
    impossible = select(
        result.variants, target=parse_target("score>=1.1*ref"), reference="large-only"
    )
    assert impossible.splits[0].chosen is None


def test_targets() -> None:
    assert parse_target("score>=0.95*ref").bar(0.8) == pytest.approx(0.76)
    assert parse_target("score >= 0.7").bar(None) == 0.7
    with pytest.raises(tl.InputError, match="needs --reference"):
        parse_target("score>=0.9*ref").bar(None)
    with pytest.raises(tl.InputError, match="must be"):
        parse_target("cost<=0.5")


def test_an_items_cost_counts_every_priced_call_even_after_an_unpriced_one() -> None:
    """The known part of a partly unpriced item is every priced call's cost (it used to
    stop counting at the first unpriced call), and the report says it as everywhere."""
    from trellis.eval import Variant
    from trellis.eval.runner import VariantRun, _outcome
    from trellis.eval.summary import summarize as summarize_variant
    from trellis.formats import fmt_cost

    def call(step: str, cost: float | None) -> tl.CallRecord:
        return tl.CallRecord(
            step=step, call=1, attempt=1, model="m", role="r", outcome="ok",
            input_tokens=1, output_tokens=1, cost_usd=cost, latency_s=0.0,
        )  # fmt: skip

    result = tl.RunResult(
        run_id="r", flow="f", inputs={}, steps={}, status="done",
        calls=[call("a", None), call("b", 0.25), call("c", 0.5)],
    )  # fmt: skip
    item = _outcome(0, result, [], 1.0, None)
    assert item.cost_usd is None
    assert item.cost_usd_known_part == pytest.approx(0.75) and item.unpriced_attempts == 1
    run = VariantRun(variant=Variant("v"), batch_id=None, items=[item, item])
    summary = summarize_variant(run, ci=False)
    assert summary.cost_usd is None and summary.unpriced_attempts == 2
    assert fmt_cost(summary.cost_usd_known_part, summary.unpriced_attempts) == (
        "≥ $1.5000 (2 calls unpriced)"
    )
