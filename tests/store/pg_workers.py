"""Worker processes for the Postgres store's multi-process tests (spawned, so importable).

Each function runs in its own process with its own :class:`PostgresStore` (its own pool
and connections), as separate machines sharing one database would.
"""

from __future__ import annotations

from typing import Any

from trellis.errors import LeaseLostError
from trellis.store import CallRow, RunRow, StepRow
from trellis.store.postgres import PostgresStore


def _run(run_id: str, **kw: Any) -> RunRow:
    return RunRow(
        run_id=run_id, flow="f", status="pending", inputs='{"x": 1}', started_at=1.0, **kw
    )


def race_for_leases(url: str, worker: int, rounds: int, barrier: Any, out: Any) -> None:
    """Claim run ``race{r}`` at the same moment as every other worker, ``rounds`` times."""
    with PostgresStore(url) as store:
        for r in range(rounds):
            barrier.wait(timeout=60)
            claim = store.claim_lease(f"race{r}", f"w{worker}", now=200.0, ttl=1000.0)
            out.put((r, worker, claim.granted, claim.epoch, claim.holder))


def write_concurrently(url: str, worker: int, steps: int, barrier: Any, out: Any) -> None:
    """Create a few runs, take a lease on one, write steps and calls, race to create one id."""
    with PostgresStore(url) as store:
        barrier.wait(timeout=60)
        mine = f"own{worker}"
        store.create_runs([_run(mine)] + [_run(f"w{worker}.{i}") for i in range(20)])
        epoch = store.claim_lease(mine, f"w{worker}", now=1.0, ttl=1000.0).epoch
        for i in range(steps):
            store.save_done_step(
                mine, f"s{i}", "d", f'{{"w": {worker}, "i": {i}}}', 1.0, 0.1, epoch=epoch
            )
            store.save_call(
                CallRow(
                    run_id=mine, key=f"k{i}", request="req", result=f'"{worker}-{i}"', attempts="[]"
                ),
                epoch=epoch,
            )
            store.save_step(
                StepRow(
                    run_id="shared",
                    step=f"w{worker}.s{i}",
                    status="done",
                    definition="d",
                    output=str(i),
                )
            )
        store.update_run(mine, status="done", epoch=epoch)
        try:
            store.create_run(_run("contested", lease_owner=f"w{worker}"))
            won = True
        except Exception:
            won = False
        out.put((worker, won))


def stale_owner(url: str, ready: Any, resume: Any, out: Any) -> None:
    """Hold the lease of run ``fenced`` (epoch 1), stall until told, then try to write."""
    with PostgresStore(url) as store:
        epoch = store.claim_lease("fenced", "stale", now=100.0, ttl=10.0).epoch
        store.save_done_step("fenced", "before", "d", '"mine"', 1.0, 0.1, epoch=epoch)
        ready.set()
        resume.wait(timeout=60)
        results: dict[str, object] = {"epoch": epoch}
        writes = {
            "update_run": lambda: store.update_run("fenced", status="failed", epoch=epoch),
            "save_done_step": lambda: store.save_done_step(
                "fenced", "s", "d", '"stale"', 1.0, 0.1, epoch=epoch
            ),
            "save_step": lambda: store.save_step(
                StepRow(run_id="fenced", step="t", status="failed", definition="d"), epoch=epoch
            ),
            "save_call": lambda: store.save_call(
                CallRow(run_id="fenced", key="k", request="req", result='"stale"', attempts="[]"),
                epoch=epoch,
            ),
        }
        for name, write in writes.items():
            try:
                write()
                results[name] = "written"
            except LeaseLostError as exc:
                results[name] = ("refused", exc.epoch, exc.current, exc.owner)
        results["renew"] = store.renew_lease("fenced", "stale", now=250.0, ttl=10.0, epoch=epoch)
        store.release_lease("fenced", "stale", epoch=epoch)
        out.put(results)
