"""The library's read model of recorded runs (:mod:`trellis.engine.records`), as the CLI
uses it: what ``--output`` wrote is what the store gives back, batches are a column."""

from __future__ import annotations

import json
from pathlib import Path

from trellis.cli.target import load_flow
from trellis.engine.records import (
    StepOrder,
    batch_items,
    list_entries,
    recorded_result,
    recorded_result_lines,
)
from trellis.store import SQLiteStore

from .helpers import FLOWS, SIM, invoke, write_items

CHAIN = f"{FLOWS / 'chain.py'}:flow"
DB = Path(".trellis/trellis.db")


def test_output_lines_and_recorded_results_share_one_codec(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", [{"item": f"i{n}"} for n in range(3)])
    out = tmp_path / "out.jsonl"
    result = invoke("run", CHAIN, "-f", str(items), *SIM, "--run-id", "b", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    flow, _ = load_flow(CHAIN)
    with SQLiteStore(DB) as store:
        recorded = recorded_result_lines(store, "b", flow.compile())
    for line in (*written, *recorded):
        line.pop("duration_s")  # live vs recorded clock: the only difference allowed
    assert recorded == written


def test_listing_and_reading_runs_from_the_library(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}, {"item": "b"}])
    assert invoke("run", CHAIN, "-f", str(items), *SIM, "--run-id", "b", "-q").exit_code == 0
    assert invoke("run", CHAIN, "-i", '{"item": "x"}', *SIM, "--run-id", "one", "-q").exit_code == 0
    with SQLiteStore(DB) as store:
        listed = {row.run_id: entry for row, entry in list_entries(store)}
        assert set(listed) == {"b", "one"}
        assert (listed["b"]["kind"], listed["one"]["kind"]) == ("batch", "run")
        assert listed["b"]["items"]["done"] == 2
        assert [r.run_id for r in store.list_runs(batches=True)] == ["b"]
        assert [r.run_id for r in batch_items(store, "b")] == ["b.0", "b.1"]
        assert len(list_entries(store, include_items=True)) == 4
        row = store.get_run("one")
        assert row is not None
        result = recorded_result(store, row, StepOrder(store).of(row))
    assert list(result.steps) == ["draft", "review", "publish"]
    assert result.status == "done" and result.usage.attempts == len(result.calls) == 2
