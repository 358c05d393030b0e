"""Fork a recorded run or batch from a step with other bindings (upstream from the record,
only what changed is paid for), and diff two recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trellis as tl
from cli import helpers
from trellis.history import diff_runs, fork, prepare_fork
from trellis.store import open_store

from .conftest import FLOW, N_ITEMS


def cascade_flow() -> tl.Flow:
    from .flows import cascade

    return cascade.flow


def questions(n: int = N_ITEMS) -> list[dict[str, str]]:
    return [{"question": f"What is {i}+{i}?"} for i in range(n)]


async def test_fork_a_run_from_a_step_reuses_what_is_upstream(toy: dict[str, Path]) -> None:
    rec = toy["recorded"]
    url = f"sqlite:///{toy['store']}"
    wrong_large = {"small": f"replay:small?file={rec}", "large": f"replay:small?file={rec}"}
    async with tl.Engine(models=wrong_large, store=url) as engine:
        first = await engine.run(cascade_flow(), {"question": "What is 1+1?"}, run_id="r1")
    assert first.outputs["answer"] == "3", "small is wrong and 'large' was small again"
    right_large = {**wrong_large, "large": f"replay:large?file={rec}"}
    async with tl.Engine(models=right_large, store=url) as engine:
        plan, [forked] = await fork(engine, cascade_flow(), "r1", new_id="r2", from_step="large")
    assert plan.rerun == ("large", "answer") and plan.reused == ("small", "confidence")
    assert forked.run_id == "r2" and forked.outputs["answer"] == "2"
    assert [c.model for c in forked.calls] == ["replay:large"], "small was not asked again"
    assert sum(c.cost_usd or 0.0 for c in forked.calls) == pytest.approx(0.01), "paid now"
    assert forked.usage.cost_usd == pytest.approx(0.011), "the run's total: reused + new"
    store = open_store(url)  # the engine closed the store it opened from the URL
    diff = diff_runs(store, "r1", "r2")
    changed = {s.step for s in diff.steps if s.changed}
    assert changed == {"large", "answer"}
    report = diff.to_dict()
    assert report["kind"] == "run"
    large = next(s for s in report["steps"] if s["step"] == "large")
    assert large["cost_a"] == pytest.approx(0.001) and large["cost_b"] == pytest.approx(0.01)


async def test_fork_checks_its_arguments(toy: dict[str, Path]) -> None:
    rec = toy["recorded"]
    url = f"sqlite:///{toy['store']}"
    models = {"small": f"replay:small?file={rec}", "large": f"replay:large?file={rec}"}
    async with tl.Engine(models=models, store=url) as engine:
        await engine.run(cascade_flow(), {"question": "What is 1+1?"}, run_id="r1")
        assert engine.store is not None
        with pytest.raises(tl.InputError, match="not a step"):
            prepare_fork(engine.store, cascade_flow(), "r1", from_step="nope")
        with pytest.raises(tl.InputError, match="already exists"):
            prepare_fork(engine.store, cascade_flow(), "r1", new_id="r1")
        with pytest.raises(tl.InputError, match="no run"):
            prepare_fork(engine.store, cascade_flow(), "missing")


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and stdout (or, on an error, everything printed)."""
    result = helpers.invoke(*args)
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_fork_and_diff_a_batch_from_the_cli(toy: dict[str, Path], tmp_path: Path) -> None:
    rec = toy["recorded"]
    store = f"sqlite:///{toy['store']}"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(q) + "\n" for q in questions()))
    code, out = invoke(
        "run",
        FLOW,
        "--input-file",
        str(items),
        "--store",
        store,
        "--run-id",
        "b1",
        "-c",
        str(toy["config"]),
        "--model",
        f"large=replay:small?file={rec}",
        "--json",
    )
    assert code == 0, out
    code, out = invoke(
        "fork",
        "b1",
        "--from",
        "large",
        "--model",
        f"large=replay:large?file={rec}",
        "--run-id",
        "b2",
        "--store",
        store,
        "--json",
    )
    assert code == 0, out
    summary = json.loads(out)
    assert summary["done"] == N_ITEMS
    calls = {m["model"]: m["attempts"] for m in summary["models"]}
    assert calls == {"replay:large": 10}, "only the escalations were paid for again"
    code, out = invoke("diff", "b1", "b2", "--store", store, "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["kind"] == "batch" and report["items"] == N_ITEMS
    assert report["changed_items"] == 10
    assert report["per_step"]["small"] == {"route_changed": 0, "output_changed": 0}
    assert report["per_step"]["answer"]["output_changed"] == 10
    code, out = invoke("diff", "b1", "b2", "--store", store)
    assert code == 0 and "10 of 40 items differ" in out
    code, out = invoke("fork", "b1", "--from", "nope", "--store", store)
    assert code == 2 and "not a step" in out


def _with_subflow() -> tl.Flow:
    inner = tl.Flow("inner", inputs={"x": int})

    @inner.step
    def doubled(x: int) -> int:
        return 2 * x

    outer = tl.Flow("outer", inputs={"x": int})
    outer.subflow(inner, name="child", inputs={"x": "x"})

    @outer.step
    def shown(child: int) -> str:
        return f"got {child}"

    return outer


async def test_diff_of_two_runs_with_subflows_compares_their_steps(tmp_path: Path) -> None:
    """A run with a sub-flow step has child runs in the store; it is still one run, not
    a batch (diff used to take it for one and find nothing changed)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with tl.Engine(store=url) as engine:
        await engine.run(_with_subflow(), {"x": 1}, run_id="one")
        await engine.run(_with_subflow(), {"x": 2}, run_id="two")
        assert engine.store is not None
        diff = diff_runs(engine.store, "one", "two")
    report = diff.to_dict()
    assert report["kind"] == "run" and report["changed"] is True
    shown = next(s for s in report["steps"] if s["step"] == "shown")
    assert (shown["output_a"], shown["output_b"]) == ("got 2", "got 4")
    with pytest.raises(tl.InputError, match="one is a batch, the other a single run"):
        async with tl.Engine(store=url) as engine:
            flow = _with_subflow()
            async for _ in engine.run_many(flow, [{"x": 3}], batch_id="b"):
                pass
            assert engine.store is not None
            diff_runs(engine.store, "one", "b")


async def test_a_fork_is_recorded_with_its_flows_graph(tmp_path: Path) -> None:
    """A fork (of a run or a batch) keeps the flow's graph like any run, so the UI draws
    it as the flow it is, and a batch fork is recorded by the one batch path."""
    from trellis.engine.records import recorded_graph

    url = f"sqlite:///{tmp_path / 's.db'}"
    flow = _with_subflow()
    async with tl.Engine(store=url) as engine:
        await engine.run(flow, {"x": 1}, run_id="one")
        async for _ in engine.run_many(flow, [{"x": 2}, {"x": 3}], batch_id="b"):
            pass
        store = engine.store
        assert store is not None
        expected = flow.compile().shape()["edges"]
        single = prepare_fork(store, flow, "one", new_id="one-fork", from_step="shown")
        batch = prepare_fork(store, flow, "b", new_id="b-fork", from_step="shown")
        assert (single.is_batch, batch.is_batch) == (False, True)
        for run_id in ("one-fork", "b-fork", "b-fork.1"):
            row = store.get_run(run_id)
            assert row is not None and recorded_graph(store, row).edges == expected, run_id
        items = store.list_runs(parent_id="b-fork")
        assert [(r.run_id, r.item_index, r.status) for r in items] == [
            ("b-fork.0", 0, "pending"),
            ("b-fork.1", 1, "pending"),
        ]
        _, results = await fork(engine, flow, "b", new_id="b-fork2", from_step="shown")
    assert [r.outputs["shown"] for r in results] == ["got 4", "got 6"]
