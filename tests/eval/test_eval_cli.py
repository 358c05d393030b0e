"""``trellis eval`` end to end over replayed answers: table, --json, sweep, selection, plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import Result

from cli import helpers
from trellis.store import open_store

from .conftest import FLOW, N_ITEMS


def invoke(*args: str) -> Result:
    return helpers.invoke(*args, columns=220)  # the sweep table is wide


def base_args(toy: dict[str, Path]) -> list[str]:
    rec = toy["recorded"]
    return [
        "eval",
        FLOW,
        "--dataset",
        str(toy["dataset"]),
        "--label",
        "gold",
        "--score",
        "number",
        "-c",
        str(toy["config"]),
        "--store",
        f"sqlite:///{toy['store']}",
        "--variant",
        "cascade=",
        "--variant",
        f"small-only=large=replay:small?file={rec}",
        "--variant",
        f"large-only=small=replay:large?file={rec}",
        "--reference",
        "large-only",
    ]


def test_eval_prints_a_table_and_the_relative_line(toy: dict[str, Path]) -> None:
    result = invoke(*base_args(toy), "--eval-id", "ev-cli")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cascade" in out and "large-only (ref)" in out
    assert "0.750 [" in out, "score with its interval"
    assert "cascade: 75.0% of large-only's score at 35.0% of its cost" in out
    assert "replay:small 80%" in out, "share of calls per model"
    assert "recorded as ev-cli" in out
    store = open_store(f"sqlite:///{toy['store']}")
    row = store.get_run("ev-cli")
    assert row is not None and row.meta is not None
    assert len(json.loads(row.meta)["eval"]["variants"]["cascade"]["scores"]) == N_ITEMS
    store.close()
    again = invoke(*base_args(toy), "--eval-id", "ev-cli")
    assert again.exit_code == 2 and "'ev-cli' already exists" in again.output


def test_eval_json_has_the_documented_shape(toy: dict[str, Path]) -> None:
    result = invoke(*base_args(toy), "--json", "--no-store")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["variants"]) == {"cascade", "small-only", "large-only"}
    cascade = report["variants"]["cascade"]
    assert cascade["items"] == N_ITEMS
    assert cascade["score"] == pytest.approx(0.75)
    assert len(cascade["score_ci"]) == 2
    assert cascade["cost_usd"] == pytest.approx(0.14)
    assert cascade["cost_per_item"] == pytest.approx(0.14 / N_ITEMS)
    assert cascade["calls_by_model"] == {"replay:large": 10, "replay:small": 40}
    assert cascade["escalated_items"] == 10
    assert report["ignored_fields"] == ["id"]


def test_sweep_with_split_target_and_repeats(toy: dict[str, Path], tmp_path: Path) -> None:
    chart = tmp_path / "chart.svg"
    result = invoke(
        *base_args(toy),
        "--json",
        "--no-store",
        "--sweep",
        "min_confidence=0:0.8:0.4",
        "--split",
        "train=0.5",
        "--seed",
        "7",
        "--target",
        "score>=0.95*ref",
        "--repeats",
        "3",
        "--plot",
        str(chart),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "cascade@min_confidence=0.8" in report["variants"]
    assert "large-only" in report["variants"], "the reference is not swept"
    selection = report["selection"]
    assert selection["repeats"] == 3
    assert selection["chosen"] == {"cascade@min_confidence=0.8": 3}
    assert [s["seed"] for s in selection["splits"]] == [7, 8, 9]
    assert selection["splits"][0]["test"]["items"] == N_ITEMS // 2
    assert selection["score_share_mean"] == pytest.approx(1.0)
    assert chart.read_text().startswith("<?xml")


def test_sweep_must_name_a_declared_param(toy: dict[str, Path]) -> None:
    result = invoke(*base_args(toy), "--no-store", "--sweep", "threshold=0:1:0.5")
    assert result.exit_code == 2
    assert "has no parameter 'threshold'" in result.output
    assert "min_confidence" in result.output


def test_a_replay_miss_fails_items_with_the_prompt_quoted(toy: dict[str, Path]) -> None:
    toy["dataset"].write_text('{"question": "Never recorded?", "gold": 1}\n')
    result = invoke(*base_args(toy), "--no-store")
    assert result.exit_code == 1
    assert "'Never recorded?'" in result.output
    assert "failed and scored 0" in result.output


def test_usage_errors(toy: dict[str, Path]) -> None:
    result = invoke(*base_args(toy), "--no-store", "--target", "score>=2*ref", "--reference", "x")
    assert result.exit_code == 2 and "not a --variant" in result.output
    result = invoke(*base_args(toy), "--no-store", "--split", "train=0.5")
    assert result.exit_code == 2 and "give --target" in result.output
    result = invoke(*base_args(toy), "--no-store", "--plot", "chart.pdf")
    assert result.exit_code == 2 and ".png or .svg" in result.output
