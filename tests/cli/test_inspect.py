"""``trellis runs`` and ``trellis show``: tables, trees, and their documented JSON shapes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import Result

from trellis.engine.results import RunResult
from trellis.store import SQLiteStore
from trellis.store.base import RunRow

from .helpers import assert_one_error_line, invoke, runs_json

FLOWS = Path(__file__).parent / "flows"
CHAIN = f"{FLOWS / 'chain.py'}:flow"
ROUTED = f"{FLOWS / 'routed.py'}:flow"
# seed 3: the triage call is rate-limited twice and re-asked twice (invalid JSON) first.
FAULTY = "small=sim:small?malformed_json=0.3&invalid_json=0.2&rate_limit=0.3&retry_after_s=0&seed=3"
SIM = ["--model", "small=sim:small"]

RUN_KEYS = {
    "run_id",
    "flow",
    "status",
    "interrupted",
    "kind",
    "parent_id",
    "item_index",
    "started_at",
    "finished_at",
    "duration_s",
    "queued_s",
    "steps",
    "items",
    "calls",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_usd_known_part",
    "unpriced_attempts",
    "error",
}
RESULT_KEYS = set(
    RunResult(run_id="x", flow="f", inputs={}, steps={}).to_dict()  # the documented shape
)


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code in (0, 1), (result.stdout, result.stderr)
    return result


def failing_copy(tmp_path: Path) -> str:
    path = tmp_path / "editable_flow.py"
    shutil.copy(FLOWS / "editable.py", path)
    return f"{path}:flow"


@pytest.fixture
def recorded(tmp_path: Path) -> dict[str, str]:
    """A store with: a done single run, a failed run, a routed run, a 3-item batch."""
    ok("run", CHAIN, "-i", '{"item": "one"}', "--run-id", "single", *SIM)
    time.sleep(0.01)
    target = failing_copy(tmp_path)
    Path("fail-second").touch()
    ok("run", target, "-i", '{"text": "t"}', "--run-id", "broken", *SIM)
    Path("fail-second").unlink()
    time.sleep(0.01)
    routed = ok(
        "run",
        ROUTED,
        "-i",
        '{"text": "the app crashes on start"}',
        "--run-id",
        "routed",
        "-m",
        FAULTY,
        "--json",
    )
    time.sleep(0.01)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(3)))
    ok("run", CHAIN, "-f", str(items), "--run-id", "batch", *SIM)
    return {"routed": routed.stdout}


# -- trellis runs ------------------------------------------------------------------------------


def test_runs_json_shape_and_filters(recorded: dict[str, str]) -> None:
    runs = runs_json()
    assert [r["run_id"] for r in runs] == ["batch", "routed", "broken", "single"]  # newest first
    for r in runs:
        assert set(r) == RUN_KEYS
        assert set(r["steps"]) == {"done", "total"}
    by_id = {r["run_id"]: r for r in runs}

    single = by_id["single"]
    assert single["kind"] == "run" and single["status"] == "done" and not single["interrupted"]
    assert single["steps"] == {"done": 3, "total": 3}
    assert single["calls"] == 2 and single["attempts"] == 2
    assert single["input_tokens"] > 0 and single["output_tokens"] > 0
    assert single["cost_usd"] > 0 and single["error"] is None
    assert single["duration_s"] >= 0 and single["finished_at"] >= single["started_at"]
    assert single["parent_id"] is None and single["item_index"] is None and single["items"] is None

    broken = by_id["broken"]
    assert broken["status"] == "failed" and broken["steps"] == {"done": 1, "total": 2}
    assert broken["error"]["type"] == "StepError" and broken["error"]["step"] == "second"

    routed = by_id["routed"]
    assert routed["calls"] == 1 and routed["attempts"] == 5  # 4 failed attempts, then ok
    assert routed["steps"] == {"done": 5, "total": 5}  # skipped steps are finished too

    batch = by_id["batch"]
    assert batch["kind"] == "batch"
    assert batch["items"] == {"total": 3, "done": 3, "failed": 0, "running": 0, "pending": 0}
    assert batch["steps"] == {"done": 9, "total": 9}
    assert batch["calls"] == 6

    everything = runs_json("--all")
    items = [r for r in everything if r["kind"] == "item"]
    assert sorted((r["run_id"], r["parent_id"], r["item_index"]) for r in items) == [
        (f"batch.{i}", "batch", i) for i in range(3)
    ]
    assert sum(r["calls"] for r in items) == batch["calls"]
    assert [r["run_id"] for r in runs_json("--flow", "routed")] == ["routed"]
    assert [r["run_id"] for r in runs_json("--status", "failed")] == ["broken"]
    assert [r["run_id"] for r in runs_json("--flow", "chain", "--limit", "1")] == ["batch"]
    assert runs_json("--flow", "nope") == []


def test_runs_table(recorded: dict[str, str]) -> None:
    result = invoke("runs")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "Runs in sqlite:///.trellis/trellis.db" in text
    for word in ("id", "flow", "status", "started", "duration", "steps", "calls", "tokens", "cost"):
        assert word in text
    assert "3/3 items" in text and "1/2" in text and "failed" in text
    assert "batch.0" not in text and "batch.0" in invoke("runs", "--all").stdout
    assert "no runs matching the filters" in invoke("runs", "--flow", "nope").stdout
    assert invoke("runs", "--status", "weird").exit_code == 2  # a usage error (typer's)


def test_runs_without_a_store_and_unknown_cost(tmp_path: Path) -> None:
    assert invoke("runs").stdout.startswith("no runs in sqlite:///.trellis/trellis.db")
    assert runs_json() == []
    assert not (tmp_path / ".trellis").exists()
    (tmp_path / "trellis.toml").write_text('[models]\nsmall = "sim:unpriced"\n')
    ok("run", CHAIN, "-i", '{"item": "x"}', "--run-id", "u")
    [entry] = runs_json()
    assert entry["cost_usd"] is None and entry["attempts"] == 2
    assert "unknown" in invoke("runs").stdout


def test_interrupted_run_is_shown_as_such(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / ".trellis" / "trellis.db") as store:
        store.create_run(
            RunRow(
                run_id="dead",
                flow="chain",
                status="running",
                inputs='{"item": "x"}',
                started_at=time.time(),
            )
        )
        store.create_run(
            RunRow(
                run_id="alive",
                flow="chain",
                status="running",
                inputs='{"item": "y"}',
                started_at=time.time(),
            )
        )
        assert store.acquire_lease("alive", "h:1:x", time.time(), 60) is None
    by_id = {r["run_id"]: r for r in runs_json()}
    assert by_id["dead"]["interrupted"] and not by_id["alive"]["interrupted"]
    assert by_id["dead"]["duration_s"] is None and by_id["dead"]["cost_usd"] == 0.0
    assert "interrupted" in invoke("runs").stdout
    shown = invoke("show", "dead")
    assert "interrupted" in shown.stdout and "trellis resume dead" in shown.stdout


# -- trellis show ------------------------------------------------------------------------------


def test_show_tree_has_decisions_with_values_and_failures_by_mode(
    recorded: dict[str, str],
) -> None:
    result = invoke("show", "routed")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    lines = text.splitlines()
    order = ["triage", "route", "file_bug", "answer", "escalate"]
    positions = [next(i for i, line in enumerate(lines) if f" {name}  " in line) for name in order]
    assert positions == sorted(positions)  # steps in execution order
    assert "routed  run routed" in text and "done" in text
    assert "sim:small · 1 call, 5 attempts" in text
    assert "failed attempts by mode: invalid 2, rate_limit 2" in text
    assert "branch → run: route == 'bug' is true  (on route=\"bug\")" in text
    assert "branch → skip: route == 'question' is false  (on route=\"bug\")" in text
    assert "when → skip:" in text and '(on triage={"label": "bug", "confidence":' in text
    assert '→ "BUG: the app crashes on start"' in text
    assert "answer  skipped" in text and "escalate  skipped" in text


def test_show_json_is_the_run_result_shape(recorded: dict[str, str]) -> None:
    result = invoke("show", "routed", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    live = json.loads(recorded["routed"])  # what `trellis run --json` printed for it
    assert set(shown) == RESULT_KEYS == set(live)
    assert list(shown["steps"]) == list(live["steps"])
    for key in ("run_id", "flow", "status", "inputs", "outputs", "calls", "usage", "error"):
        assert shown[key] == live[key], key
    # Recorded per step: listed in step order (the live result lists them as made).
    rank = {name: i for i, name in enumerate(live["steps"])}
    assert shown["decisions"] == sorted(live["decisions"], key=lambda d: rank[d["step"]])
    for name, step in shown["steps"].items():
        assert set(step) == set(live["steps"][name])
        for key in ("status", "output", "reason", "error", "usage", "attempts", "rounds"):
            assert step[key] == live["steps"][name][key], (name, key)
    assert [c["outcome"] for c in shown["calls"]] == [
        "rate_limit",
        "invalid",
        "invalid",
        "rate_limit",
        "ok",
    ]


def test_show_failed_run_and_batch(recorded: dict[str, str]) -> None:
    failed = invoke("show", "broken")
    assert failed.exit_code == 0, failed.stderr
    assert "StepError: step 'second' raised RuntimeError: asked to fail" in failed.stdout
    assert "trellis resume broken" in failed.stdout
    data = json.loads(invoke("show", "broken", "--json").stdout)
    assert data["status"] == "failed" and data["error"]["step"] == "second"
    assert data["steps"]["second"]["status"] == "failed"

    batch = invoke("show", "batch")
    assert batch.exit_code == 0, batch.stderr
    assert "batch batch" in batch.stdout and "3 items: 3 done" in batch.stdout
    assert all(f"batch.{i}" in batch.stdout for i in range(3))
    data = json.loads(invoke("show", "batch", "--json").stdout)
    assert set(data) == RESULT_KEYS | {"batch"}
    assert data["batch"]["total"] == 3 and data["batch"]["by_status"] == {"done": 3}
    assert [i["run_id"] for i in data["batch"]["items"]] == ["batch.0", "batch.1", "batch.2"]
    assert all(set(i) == RUN_KEYS for i in data["batch"]["items"])
    assert data["usage"]["calls"] == 6

    item = invoke("show", "batch.1")
    assert item.exit_code == 0 and "item 1 of batch batch" in item.stdout
    assert json.loads(invoke("show", "batch.1", "--json").stdout)["inputs"] == {"item": "i1"}


def test_show_unknown_id_is_one_error_line(tmp_path: Path) -> None:
    assert_one_error_line(invoke("show", "nope"), "no run 'nope' in sqlite:///.trellis/trellis.db")
    assert not (tmp_path / ".trellis").exists()
    ok("run", CHAIN, "-i", '{"item": "x"}', *SIM)
    assert_one_error_line(invoke("show", "nope", "--json"), "no run 'nope'")
    assert_one_error_line(invoke("show", "nope", "--store", "memory:"), "no run 'nope' in memory:")


def test_runs_recorded_by_the_python_api_are_shown_too(tmp_path: Path) -> None:
    import asyncio

    import trellis as tl

    flow = tl.Flow("api", inputs={"x": int})

    @flow.step
    async def double(x: int) -> int:
        await asyncio.sleep(0.002)
        return 2 * x

    @flow.step
    def add_one(double: int) -> int:
        return double + 1

    async def record(store: SQLiteStore) -> None:
        async with tl.Engine(store=store) as engine:
            await engine.run(flow, {"x": 2}, run_id="api1")

    with SQLiteStore(tmp_path / ".trellis" / "trellis.db") as store:
        asyncio.run(record(store))
    [entry] = runs_json()
    assert entry["run_id"] == "api1" and entry["steps"] == {"done": 2, "total": 2}
    shown = invoke("show", "api1")
    assert shown.exit_code == 0, shown.stderr
    # No step order recorded (no CLI meta): the order the steps started in.
    assert shown.stdout.index("double") < shown.stdout.index("add_one")
    data = json.loads(invoke("show", "api1", "--json").stdout)
    assert list(data["steps"]) == ["double", "add_one"] and data["outputs"]["add_one"] == 5


NESTED = f"{FLOWS / 'nested.py'}:flow"


def test_show_nests_subflow_runs_collapsed_unless_expanded() -> None:
    ok("run", NESTED, "-i", '{"items": ["a", "b"]}', "--run-id", "nest", *SIM)
    collapsed = invoke("show", "nest")
    assert collapsed.exit_code == 0, collapsed.stderr
    text = collapsed.stdout
    assert "↳ sub-flow titled  run nest/per_item[0]  ✓ done" in text
    assert "nest/per_item[1]" in text and "2/2 steps done" in text
    assert "--expand to open" in text
    assert " title  " not in text, "collapsed: the child's steps are not listed"
    expanded = invoke("show", "nest", "--expand")
    assert expanded.exit_code == 0, expanded.stderr
    assert expanded.stdout.count(" title  ") == 2 and "--expand to open" not in expanded.stdout
    shown = json.loads(invoke("show", "nest", "--json").stdout)
    children = shown["steps"]["per_item"]["children"]
    assert [c["run_id"] for c in children] == ["nest/per_item[0]", "nest/per_item[1]"]
    assert list(children[0]["steps"]) == ["title", "size"]
    assert shown["steps"]["per_item"]["usage"]["attempts"] == 2
    assert shown["usage"]["attempts"] == 2
    child = invoke("show", "nest/per_item[1]")
    assert child.exit_code == 0, child.stderr
    assert "sub-flow 'per_item' of run nest" in child.stdout
    listed = {r["run_id"] for r in runs_json()}
    assert "nest" in listed and "nest/per_item[0]" not in listed
