"""The body of one Ray worker (an async actor): an engine built once from the driver's
recipe, running the items it is handed as local runs journaled into the shared store.

When the driver gives a batch a limits actor (:mod:`trellis.cluster.limits`), the worker
takes its models' ``rpm`` / ``tpm`` permits and the batch budget from it for that batch:
its engine's batch guard is then a shared one, and its HTTP models' pacers share their
configured limits.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trellis.cluster.limits import ClusterLimits, rate_key, shares_rate
from trellis.engine.budget import BudgetGuard
from trellis.engine.engine import Engine, failed_result
from trellis.engine.executor import BatchItem, EngineRecipe
from trellis.engine.results import RunResult
from trellis.errors import InputError, RunLockedError
from trellis.flow.flow import Flow
from trellis.flow.policy import Budget

__all__ = ["LOCK_POLL_S", "ItemWorker", "SharedLimits"]

#: How often a worker retries an item whose run is still leased by a dead worker.
LOCK_POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class SharedLimits:
    """What the driver hands a worker for a batch with shared limits: the limits actor,
    the batch budget (None: rate limits only), whether earlier spending is preloaded (so
    journal replays are not charged again) and the seconds the batch has run."""

    actor: Any
    budget: Budget | None
    preloaded: bool
    elapsed_s: float


class ItemWorker:
    """Runs items of the batches its driver starts (``begin``), ``run_chunk`` at a time."""

    def __init__(self, recipe: EngineRecipe) -> None:
        self.engine = Engine.from_recipe(recipe)
        self.lease_ttl = recipe.lease_ttl
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._batches: dict[str, tuple[Flow, Budget | None, bool, asyncio.Semaphore]] = {}
        self._limits: dict[str, ClusterLimits] = {}
        self._limited: str | None = None  # the batch whose limits the engine uses now

    def pid(self) -> int:
        """This worker's process id (the fault tests kill it)."""
        return os.getpid()

    async def begin(
        self,
        key: str,
        flow: Flow,
        budget: Budget | None,
        rerun_changed: bool,
        concurrency: int,
        limits: SharedLimits | None = None,
    ) -> str:
        """Remember batch ``key``'s flow and settings; at most ``concurrency`` of its items
        run at once on this worker. Returns the worker's id (the limits actor knows it by
        it)."""
        self._batches[key] = (flow, budget, rerun_changed, asyncio.Semaphore(concurrency))
        if limits is not None:
            self._use_limits(key, limits)
        return self.id

    def _use_limits(self, key: str, limits: SharedLimits) -> None:
        shared = self._limits[key] = ClusterLimits(limits.actor, self.id, limits.budget)
        shared.start()
        self._limited = key
        if limits.budget is not None and shared.allowance is not None:
            guard = BudgetGuard(limits.budget, label="batch")
            guard.started = time.monotonic() - limits.elapsed_s
            guard.preloaded = limits.preloaded
            guard.shared = shared.allowance
            self.engine.guard = guard
        chains = self.engine.services.models

        def share(model: Any) -> None:
            pacer = shares_rate(model)
            if pacer is not None:
                pacer.share(shared.pool(rate_key(model), pacer.rpm, pacer.tpm))

        for model in list(chains.models.values()):
            share(model)
        chains.on_create = share

    async def end(self, key: str) -> None:
        """Forget batch ``key`` (and hand its limits' unused allowance back)."""
        self._batches.pop(key, None)
        shared = self._limits.pop(key, None)
        if shared is None:
            return
        if self._limited == key:
            self._limited = None
            self.engine.guard = None
            chains = self.engine.services.models
            chains.on_create = None
            for model in list(chains.models.values()):
                pacer = shares_rate(model)
                if pacer is not None:
                    pacer.share(None)
        await shared.close()

    async def run_chunk(self, key: str, items: Sequence[BatchItem]) -> list[tuple[int, RunResult]]:
        """Run ``items`` of batch ``key`` concurrently (within the batch's bound)."""
        flow, budget, rerun_changed, slots = self._batches[key]

        async def one(item: BatchItem) -> tuple[int, RunResult]:
            async with slots:
                refused = self._refused()
                if refused is not None:  # the batch budget is spent: the item never starts
                    return item.index, failed_result(
                        flow.compile(), item.inputs, refused, run_id=item.run_id
                    )
                return item.index, await self._run_item(flow, item, budget, rerun_changed)

        results = list(await asyncio.gather(*(one(item) for item in items)))
        shared = self._limits.get(key)
        if shared is not None and shared.allowance is not None:
            await shared.allowance.flush()  # the driver's tally sees this chunk's spending
        return results

    def _refused(self) -> BaseException | None:
        guard = self.engine.guard
        if guard is None:
            return None
        if guard.exhausted is not None:
            return guard.exhausted
        shared = self._limits.get(self._limited or "")
        allowance = shared.allowance if shared is not None else None
        if allowance is not None and allowance.refusal is not None:
            return guard.refuse(allowance.refusal)
        return None

    async def _run_item(
        self, flow: Flow, item: BatchItem, budget: Budget | None, rerun_changed: bool
    ) -> RunResult:
        # A run still leased by a worker that died is taken over once its lease expires.
        deadline = time.monotonic() + 2 * self.lease_ttl + 5.0
        inputs: Any = None if item.run_id is not None else item.inputs
        while True:
            try:
                return await self.engine.run(
                    flow, inputs, budget=budget, run_id=item.run_id, rerun_changed=rerun_changed
                )
            except InputError as exc:
                return failed_result(flow.compile(), item.inputs, exc, run_id=item.run_id)
            except RunLockedError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(LOCK_POLL_S)

    async def aclose(self) -> None:
        """Close the worker's engine (its clients and store)."""
        await self.engine.aclose()
