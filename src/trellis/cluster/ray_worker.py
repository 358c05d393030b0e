"""The body of one Ray worker (an async actor): an engine built once from the driver's
recipe, running the items it is handed as local runs journaled into the shared store."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from trellis.engine.engine import Engine, failed_result
from trellis.engine.executor import BatchItem, EngineRecipe
from trellis.engine.results import RunResult
from trellis.errors import InputError, RunLockedError
from trellis.flow.flow import Flow
from trellis.flow.policy import Budget

__all__ = ["LOCK_POLL_S", "ItemWorker"]

#: How often a worker retries an item whose run is still leased by a dead worker.
LOCK_POLL_S = 0.25


class ItemWorker:
    """Runs items of the batches its driver starts (``begin``), ``run_chunk`` at a time."""

    def __init__(self, recipe: EngineRecipe) -> None:
        self.engine = Engine.from_recipe(recipe)
        self.lease_ttl = recipe.lease_ttl
        self._batches: dict[str, tuple[Flow, Budget | None, bool, asyncio.Semaphore]] = {}

    def pid(self) -> int:
        """This worker's process id (the fault tests kill it)."""
        return os.getpid()

    def begin(
        self, key: str, flow: Flow, budget: Budget | None, rerun_changed: bool, concurrency: int
    ) -> None:
        """Remember batch ``key``'s flow and settings; at most ``concurrency`` of its items
        run at once on this worker."""
        self._batches[key] = (flow, budget, rerun_changed, asyncio.Semaphore(concurrency))

    def end(self, key: str) -> None:
        """Forget batch ``key``."""
        self._batches.pop(key, None)

    async def run_chunk(self, key: str, items: Sequence[BatchItem]) -> list[tuple[int, RunResult]]:
        """Run ``items`` of batch ``key`` concurrently (within the batch's bound)."""
        flow, budget, rerun_changed, slots = self._batches[key]

        async def one(item: BatchItem) -> tuple[int, RunResult]:
            async with slots:
                return item.index, await self._run_item(flow, item, budget, rerun_changed)

        return list(await asyncio.gather(*(one(item) for item in items)))

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
