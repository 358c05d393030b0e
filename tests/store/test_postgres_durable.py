"""Durable runs on the Postgres store, through ``tl.Engine(store="postgresql://...")`` and
the CLI's ``--store`` / ``TRELLIS_STORE``: completed steps and LLM calls are never repeated,
batches resume, and a password in the URL is never recorded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

import trellis as tl
from cli.helpers import FLOWS, calls_in, invoke, isolate, sim, write_items
from trellis.errors import LeaseLostError
from trellis.store import StepRow
from trellis.store.postgres import PostgresStore

CHAIN = f"{FLOWS / 'chain.py'}:flow"


class Facts(BaseModel):
    topic: str
    points: list[str]


def facts_flow(executed: list[str], crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("facts", inputs={"topic": str})

    @flow.step
    async def gather(topic: str, llm: tl.LLM) -> Facts:
        executed.append("gather")
        return await llm.generate(f"Facts about {topic}", output=Facts, model="m")

    @flow.step
    def publish(gather: Facts) -> dict[str, Any]:
        executed.append("publish")
        if crash.get("publish"):
            raise RuntimeError("crashed")
        return {"topic": gather.topic, "n": len(gather.points)}

    return flow


async def test_a_failed_run_resumes_from_another_engine_without_repeating_work(
    postgres_url: str,
) -> None:
    model = tl.FunctionModel(lambda request: {"topic": "tea", "points": ["a", "b"]})
    executed: list[str] = []
    crash = {"publish": True}
    flow = facts_flow(executed, crash)
    async with tl.Engine(store=postgres_url, models={"m": model}) as engine:
        assert isinstance(engine.store, PostgresStore)
        first = await engine.run(flow, {"topic": "tea"}, run_id="r1")
        assert not first.ok
    assert executed == ["gather", "publish"] and len(model.calls) == 1

    crash["publish"] = False
    async with tl.Engine(store=postgres_url, models={"m": model}) as engine:
        again = await engine.run(flow, None, run_id="r1")
        assert again.ok, again.error
        assert again["publish"] == {"topic": "tea", "n": 2}
        loaded = engine.load("r1", flow)
        assert isinstance(loaded["gather"], Facts)  # typed from jsonb
    assert executed == ["gather", "publish", "publish"], "gather was restored, not re-run"
    assert len(model.calls) == 1, "the LLM call was not paid for again"


async def test_a_batch_on_postgres_resumes_only_unfinished_items(postgres_url: str) -> None:
    flow = tl.Flow("double", inputs={"x": int})
    executed: list[int] = []
    failing = {3}

    @flow.step
    def double(x: int) -> int:
        executed.append(x)
        if x in failing:
            raise ValueError("not now")
        return 2 * x

    items = [{"x": i} for i in range(6)]
    async with tl.Engine(store=postgres_url) as engine:
        first = dict([pair async for pair in engine.run_many(flow, items, batch_id="b")])
        assert [first[i].ok for i in range(6)] == [True, True, True, False, True, True]
    failing.clear()
    async with tl.Engine(store=postgres_url) as engine:
        again = dict([pair async for pair in engine.run_many(flow, None, batch_id="b")])
    assert [again[i]["double"] for i in range(6)] == [0, 2, 4, 6, 8, 10]
    assert sorted(executed) == [0, 1, 2, 3, 3, 4, 5]


# -- fencing through the engine ---------------------------------------------------------------


def gated_flow(executed: list[str], gate: asyncio.Event, started: asyncio.Event) -> tl.Flow:
    flow = tl.Flow("fenced", inputs={"text": str})

    @flow.step
    async def before(text: str) -> str:
        executed.append("before")
        started.set()
        await gate.wait()
        return "stale"

    @flow.step
    def after(before: str) -> str:
        executed.append("after")
        return before

    return flow


def successor_takes_over(url: str, run_id: str) -> tuple[Any, ...]:
    """Another machine claims the run after the lease expired and finishes it; returns
    what it recorded."""
    with PostgresStore(url) as store:
        claim = store.claim_lease(run_id, "successor", time.time() + 120, 60.0)
        assert claim.granted, claim
        store.save_step(
            StepRow(
                run_id=run_id, step="before", status="done", definition="x", output='"successor"'
            ),
            epoch=2,
        )
        store.update_run(run_id, status="done", finished_at=time.time(), epoch=claim.epoch)
        return records(store, run_id)


def records(store: PostgresStore, run_id: str) -> tuple[Any, ...]:
    row = store.get_run(run_id)
    assert row is not None
    steps = sorted((s.step, s.status, s.output) for s in store.load_steps(run_id))
    return row.status, row.error, row.lease_owner, row.lease_epoch, steps


@pytest.mark.parametrize("ttl", [60.0, 0.3], ids=["refused-write", "heartbeat"])
async def test_an_engine_that_lost_its_lease_on_postgres_writes_nothing(
    postgres_url: str, ttl: float
) -> None:
    """A stalled engine wakes after another machine took its run over: its write (or its
    heartbeat, with a short TTL) is refused, it raises LeaseLostError and stops."""
    executed: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()
    async with tl.Engine(store=postgres_url, lease_ttl=ttl) as engine:
        running = asyncio.create_task(
            engine.run(gated_flow(executed, gate, started), {"text": "x"}, run_id="r")
        )
        await asyncio.wait_for(started.wait(), 10)
        recorded = await asyncio.to_thread(successor_takes_over, postgres_url, "r")
        if ttl == 60.0:
            gate.set()  # the stalled step completes and tries to record it
        with pytest.raises(LeaseLostError) as info:
            await asyncio.wait_for(running, 10)
        gate.set()
    assert (info.value.run_id, info.value.epoch, info.value.owner) == ("r", 1, "successor")
    assert executed == ["before"], "nothing ran after the lease was lost"
    assert recorded == ("done", None, "successor", 2, [("before", "done", '"successor"')])
    with PostgresStore(postgres_url) as store:
        assert records(store, "r") == recorded


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CLI tests' own autouse fixture does (``tests/cli/conftest.py``)."""
    isolate(tmp_path, monkeypatch)


def test_cli_store_option_records_and_replays_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    secret = "pa55-w0rd"
    url = postgres_url.replace("trellis@", f"trellis:{secret}@")
    log = tmp_path / "calls.log"
    args = ["run", CHAIN, "--input", '{"item": "pears"}', "--run-id", "r1", "--store", url]
    first = invoke(*args, *sim(log), "--json")
    assert first.exit_code == 0, first.stderr
    assert calls_in(log) == 2
    assert not (tmp_path / ".trellis").exists(), "nothing went to the default SQLite store"
    second = invoke(*args, *sim(log), "--json")
    assert second.exit_code == 0, second.stderr
    assert "run r1 already completed" in second.stderr
    assert calls_in(log) == 2
    assert json.loads(second.stdout)["outputs"] == json.loads(first.stdout)["outputs"]

    listed = invoke("runs", "--json", env={"TRELLIS_STORE": postgres_url})
    assert [r["run_id"] for r in json.loads(listed.stdout)["runs"]] == ["r1"]
    shown = invoke("show", "r1", "--store", postgres_url)
    assert shown.exit_code == 0 and "publish" in shown.stdout

    for output in (first.stdout, first.stderr, second.stdout, second.stderr, shown.stdout):
        assert secret not in output
    with psycopg.connect(postgres_url) as conn:
        for table in ("runs", "steps", "calls", "cache"):
            dump = conn.execute(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {table} t")
            assert secret not in dump.fetchone()[0]  # type: ignore[index]


def test_cli_batch_resume_through_trellis_store(postgres_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    items = write_items(tmp_path / "items.jsonl", [{"item": f"i{n}"} for n in range(3)])
    env = {"TRELLIS_STORE": postgres_url}
    first = invoke("run", CHAIN, "-f", str(items), "--run-id", "b1", *sim(log), "-q", env=env)
    assert first.exit_code == 0, first.stderr
    assert calls_in(log) == 6
    again = invoke("resume", "b1", "--json", env=env)
    assert again.exit_code == 0, again.stderr
    assert calls_in(log) == 6, "every item was replayed from Postgres"
