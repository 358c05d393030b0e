"""Where a batch's items run: the :class:`Executor` interface ``Engine.run_many`` delegates to.

Without an executor (``tl.Engine(executor=None)``, the default) items run as asyncio tasks
in the engine's own process, as they always have. An executor runs them elsewhere (e.g.
:class:`trellis.cluster.RayExecutor`: Ray workers on one machine or many). The driver (the
engine that called ``run_many``) keeps the batch's parent record and lease, and yields each
item's result as it arrives, so progress and summaries are those of a local batch.

What crosses to the workers is a :class:`BatchWork`: the flow, the items with their run
ids, and an :class:`EngineRecipe` (the driver engine's configuration, without its open
store or clients) from which each worker builds its own engine once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from trellis.config import Config
from trellis.engine.breaker import BreakerSettings
from trellis.engine.budget import BudgetGuard
from trellis.engine.results import RunResult
from trellis.flow.flow import Flow
from trellis.flow.policy import Budget, Cache
from trellis.models.base import Model
from trellis.models.registry import ProviderFactory
from trellis.store import Store

__all__ = ["BatchItem", "BatchWork", "EngineRecipe", "Executor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineRecipe:
    """What a worker needs to build an engine like the driver's: everything but the open
    store (a worker opens ``store_url`` itself) and the model clients (built per worker).
    ``Engine.from_recipe`` builds one. The engine's ``clock`` and ``sleep`` are not in it
    (a test's fake clock, copied to another process, would no longer be the driver's):
    a worker uses the real clock and ``asyncio.sleep``."""

    config: Config
    instances: Mapping[str, Model]
    providers: Mapping[str, ProviderFactory] | None
    breaker: BreakerSettings | None
    cache: Cache | bool | None
    lease_ttl: float
    store_url: str | None
    seed: int | None
    record_prompts: bool = False


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item of a batch: its position, its run id (None: a batch without a store) and
    its inputs."""

    index: int
    run_id: str | None
    inputs: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchWork:
    """The items of one ``run_many`` still to run, and how to run each one.
    ``batch_guard``: the driver engine's batch budget guard (what the batch spent so far;
    an executor that shares the budget across processes keeps it up to date)."""

    flow: Flow
    items: Sequence[BatchItem]
    concurrency: int
    budget: Budget | None
    batch_budget: Budget | None
    rerun_changed: bool
    recipe: EngineRecipe
    batch_guard: BudgetGuard | None = None


@runtime_checkable
class Executor(Protocol):
    """Runs a batch's items somewhere and yields ``(index, result)`` as each one finishes
    (an exception instead of a result stops the batch: an engine or executor fault)."""

    def check_store(self, store: Store | None) -> None:
        """Raise :class:`ConfigurationError` if this executor cannot share ``store`` with
        its workers (called when the engine is created)."""

    def run(self, work: BatchWork) -> AsyncIterator[tuple[int, RunResult | BaseException]]:
        """Run ``work``'s items; yield each one's outcome as it arrives."""

    async def aclose(self) -> None:
        """Release the workers (called by the engine's ``aclose``)."""
