"""Cluster-wide rate limits and batch budgets on Ray (real Ray workers, see conftest)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import trellis as tl
from distributed.flows import budgeted, limited
from trellis.cluster import RayExecutor
from trellis.mockserver import MockServer

#: The server's limit, the window it enforces it over (a bucket of RATE * BURST_S requests)
#: and the batch: two workers that each sent at the limit would see 429s within a second.
RPM = 600
SERVER_BURST_S = 2.0
ITEMS = 40


async def test_a_model_s_rpm_holds_across_two_workers(ray_session: Any) -> None:
    async with MockServer(rpm=RPM, burst_s=SERVER_BURST_S, seed=0) as server:
        binding = f"openai:mock-model?base_url={server.openai_base_url}&rpm={RPM}"
        executor = RayExecutor(workers=2)
        async with tl.Engine(models={"default": binding}, executor=executor) as engine:
            executor.start(engine.recipe)  # Ray's start-up is not the batch's time
            t0 = time.monotonic()
            results = {
                i: r
                async for i, r in engine.run_many(
                    limited, [{"x": i} for i in range(ITEMS)], concurrency=16
                )
            }
            elapsed = time.monotonic() - t0
        stats = server.stats.copy()
    assert [results[i].status for i in range(ITEMS)] == ["done"] * ITEMS
    assert stats.responses_429 == 0, stats.to_dict()
    assert stats.requests == ITEMS
    # Paced at the limit: never faster than the client's half-second burst plus the rate.
    rate = RPM / 60.0
    assert elapsed >= 0.9 * (ITEMS - rate * 0.5 - 1) / rate, elapsed


def _calls(log: Path) -> Counter[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[1] for line in lines if line.startswith("call "))


def _reply(request: tl.ModelRequest) -> str:
    from distributed.flows import paid_reply

    return paid_reply(request)


async def test_a_batch_budget_of_calls_stops_the_batch_across_workers(
    ray_session: Any, tmp_path: Path
) -> None:
    log = tmp_path / "calls.txt"
    n, max_calls = 24, 9
    engine = tl.Engine(
        executor=RayExecutor(workers=2),
        budget=tl.Budget(max_calls=max_calls),
        models={"default": tl.FunctionModel(_reply)},
    )
    async with engine:
        items = [{"x": i, "log_path": str(log)} for i in range(n)]
        results = {i: r async for i, r in engine.run_many(budgeted, items, concurrency=8)}
        guard = engine.guard
    calls = _calls(log)
    done = [r for r in results.values() if r.status == "done"]
    failed = [r for r in results.values() if r.status == "failed"]
    # Exactly the budget: never one call more across the workers, and none given up early.
    assert sum(calls.values()) == max_calls, calls
    assert all(count == 1 for count in calls.values()), calls
    assert len(done) == max_calls and len(failed) == n - max_calls
    assert all(r.error is not None and r.error.type == "BudgetExceededError" for r in failed)
    assert "max_calls=9" in (failed[0].error.message if failed[0].error else "")
    assert len({r["spend"]["pid"] for r in done}) == 2  # both workers spent from it
    # The driver's batch guard counts what the workers spent, exactly.
    assert guard is not None and guard.calls == max_calls
    assert guard.spent_tokens == sum(r.usage.input_tokens + r.usage.output_tokens for r in done)
    assert guard.exhausted is not None


async def test_a_batch_token_budget_holds_across_workers(ray_session: Any, tmp_path: Path) -> None:
    log = tmp_path / "calls.txt"
    n = 30
    # Each call reserves its prompt estimate plus 40 output tokens, and uses less.
    budget = tl.Budget(max_tokens=600, reserve_output_tokens=40)
    engine = tl.Engine(
        executor=RayExecutor(workers=2),
        budget=budget,
        models={"default": tl.FunctionModel(_reply)},
    )
    async with engine:
        items = [{"x": i, "log_path": str(log)} for i in range(n)]
        results = {i: r async for i, r in engine.run_many(budgeted, items, concurrency=8)}
        guard = engine.guard
    done = [r for r in results.values() if r.status == "done"]
    failed = [r for r in results.values() if r.status == "failed"]
    spent = sum(r.usage.input_tokens + r.usage.output_tokens for r in done)
    assert done and failed, [r.status for r in results.values()]
    assert spent <= 600, spent  # estimates above real usage: no overshoot at all
    assert sum(_calls(log).values()) == len(done)
    assert all(r.error is not None and "max_tokens" in r.error.message for r in failed)
    assert guard is not None and guard.spent_tokens == spent


async def test_a_batch_usd_budget_holds_across_workers(ray_session: Any, tmp_path: Path) -> None:
    """A batch's ``max_usd`` is shared by the workers: each call reserves its estimated
    cost (priced at 1 $ / 1k input and 2 $ / 1k output tokens here) before it is sent."""
    log = tmp_path / "calls.txt"
    n, max_usd = 60, 2.0
    engine = tl.Engine(
        executor=RayExecutor(workers=2),
        budget=tl.Budget(max_usd=max_usd, reserve_output_tokens=40),
        models={"default": tl.FunctionModel(_reply)},
        config=tl.Config(prices={"function:test": {"input": 1000.0, "output": 2000.0}}),
    )
    async with engine:
        items = [{"x": i, "log_path": str(log)} for i in range(n)]
        results = {i: r async for i, r in engine.run_many(budgeted, items, concurrency=8)}
        guard = engine.guard
    done = [r for r in results.values() if r.status == "done"]
    failed = [r for r in results.values() if r.status == "failed"]
    spent = sum(r.usage.cost_usd for r in done)
    assert done and failed, [r.status for r in results.values()]
    assert 0 < spent <= max_usd, spent  # estimates above real cost: no overshoot at all
    assert sum(_calls(log).values()) == len(done)  # every paid call is an item that is done
    assert all(r.error is not None and "max_usd" in r.error.message for r in failed)
    assert len({r["spend"]["pid"] for r in done}) == 2  # both workers spent from it
    assert guard is not None and abs(guard.spent_usd - spent) < 1e-9
