"""``RayExecutor``: a batch's items run on Ray workers (async actors), one engine each.

The driver (the engine calling ``run_many``) keeps the batch record and its lease. It
splits the items into small chunks and keeps a few chunks in flight on every worker; a
worker runs a chunk's items as ordinary local runs (bounded by its share of the batch's
``concurrency``), journaled into the shared store, and returns their results, which the
driver yields as they arrive.

**The store must be shared.** Workers are other processes (on other machines with a
cluster address), so the engine's store must be PostgreSQL, or none at all (results then
live only in the driver). A SQLite or in-memory store is refused with a
:class:`ConfigurationError`, for a local Ray too: a SQLite file is one machine's and one
writer's at a time. A password is never sent to workers (a store's URL omits it): give it
to every node through ``PGPASSWORD`` or ``~/.pgpass``.

**A worker that dies** (its process killed, its node lost) fails the chunk it was running:
the driver starts a replacement worker and hands it the chunk again. Items that completed
are recorded, so they are read back, not re-run; an item that was mid-run is resumed from
its journal once the dead worker's lease on it expires (``lease_ttl``), so no completed
step runs again and no journaled call is paid again.

**Limits hold for the whole batch.** When the batch has a budget (the engine's
``budget=``) or a model binding sets ``rpm`` / ``tpm``, the driver starts one limits actor
for the batch (:mod:`trellis.cluster.limits`) that every worker leases blocks of permits
and budget from; the driver's batch guard follows what it counts (the CLI's durable tally
of a batch's spending with it), and a dead worker's allowance is reclaimed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from trellis.cluster.limits import LimitsActor, actor_name
from trellis.cluster.ray_worker import ItemWorker, SharedLimits
from trellis.engine.budget import BudgetGuard
from trellis.engine.executor import BatchItem, BatchWork, EngineRecipe
from trellis.engine.results import RunResult
from trellis.errors import ConfigurationError, WorkerLostError
from trellis.loading import FILE_MODULE_MARK
from trellis.store import Store

__all__ = ["RayExecutor", "executor_from_spec"]

#: Chunks kept in flight on each worker, so it never waits for the driver between chunks.
CHUNKS_IN_FLIGHT = 3
#: How often one chunk is handed to a replacement worker before the batch stops.
MAX_CHUNK_RETRIES = 3
#: How often (seconds) the driver's batch guard is brought up to date from the limits actor.
SYNC_S = 0.5


def rate_limited(recipe: EngineRecipe) -> bool:
    """Whether a model binding of ``recipe`` configures ``rpm`` or ``tpm`` (its workers
    then share them)."""
    for role in recipe.config.roles.values():
        specs = [role.binding.options]
        for name in role.fallbacks:
            with contextlib.suppress(ConfigurationError):
                specs.append(recipe.config.resolve(name).binding.options)
        if any("rpm" in options or "tpm" in options for options in specs):
            return True
    return False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError(
            "the Ray executor needs Ray: pip install 'trellis-flows[ray]'"
        ) from exc
    return ray


class RayExecutor:
    """Runs batch items on ``workers`` Ray actors.

    - ``address``: None starts a local Ray for this process (unless one is already
      initialized); ``"auto"`` joins the cluster this machine belongs to;
      ``"ray://HOST:PORT"`` connects to a remote cluster through Ray Client.
    - ``workers``: how many worker actors (each one process with its own engine).
    - ``num_cpus``: the CPUs Ray reserves for each worker.
    """

    def __init__(
        self, address: str | None = None, *, workers: int = 2, num_cpus: float = 1.0
    ) -> None:
        if workers < 1:
            raise ConfigurationError("RayExecutor needs at least one worker")
        if address is not None and address != "auto" and not address.startswith("ray://"):
            raise ConfigurationError(
                f"Ray address {address!r}: expected None, 'auto' or 'ray://HOST:PORT'"
            )
        self.address = address
        self.workers = workers
        self.num_cpus = num_cpus
        self._started_ray = False
        self._actors: list[Any] = []
        self._recipe: EngineRecipe | None = None
        self._keys = itertools.count()
        self._ids: dict[int, str] = {}  # a worker's id (slot -> what its limits know it by)
        #: The limits actor of the batch running now.
        self.limits: Any = None
        #: A limits actor started ahead of the next batch (its key, its handle): starting
        #: an actor takes a process, which a rate-limited batch should not wait for.
        self._spare: tuple[str, Any] | None = None
        #: The last batch's rate-limit leases per binding (LimitsActor.rate_stats).
        self.rate_stats: dict[str, tuple[int, int, int]] = {}

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.workers})"

    def check_store(self, store: Store | None) -> None:
        if store is None or store.url.startswith(("postgresql://", "postgres://")):
            return
        raise ConfigurationError(
            f"the Ray executor's workers are separate processes that journal into one shared "
            f"store, and {store.url!r} is not shareable: use a PostgreSQL store "
            f"(--store postgresql://USER@HOST:PORT/DB), or no store"
        )

    # -- workers ------------------------------------------------------------------------

    def _ray(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = max(2, math.ceil(self.workers * self.num_cpus))
            else:
                kwargs["address"] = self.address
            ray.init(**kwargs)
            self._started_ray = True
        return ray

    def _new_actor(self, ray: Any, recipe: EngineRecipe) -> Any:
        remote = ray.remote(num_cpus=self.num_cpus)(ItemWorker)
        return remote.remote(recipe)

    def start(self, recipe: EngineRecipe) -> None:
        """Start the workers for engines built from ``recipe`` (run_many does it when
        first called; call it earlier to keep Ray's start-up out of a batch's time)."""
        ray = self._ray()
        if self._recipe is not recipe:
            self._kill_all(ray)
            self._recipe = recipe
        while len(self._actors) < self.workers:
            self._actors.append(self._new_actor(ray, recipe))
        if self._spare is None and rate_limited(recipe):
            self._spare = self._new_limits(ray)
        ray.get([actor.pid.remote() for actor in self._actors])  # constructed and ready

    def _new_limits(self, ray: Any) -> tuple[str, Any]:
        key = f"{next(self._keys)}-{secrets.token_hex(3)}"
        actor = ray.remote(num_cpus=0)(LimitsActor).options(name=actor_name(key)).remote()
        return key, actor

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers."""
        ray = self._ray()
        return [int(pid) for pid in ray.get([a.pid.remote() for a in self._actors])]

    def _kill_all(self, ray: Any) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    # -- running ------------------------------------------------------------------------

    async def _start_limits(self, ray: Any, work: BatchWork) -> tuple[str, SharedLimits | None]:
        """The batch's key, and its limits actor when it has limits to share."""
        guard = work.batch_guard
        budget = work.batch_budget
        if budget is None and not rate_limited(work.recipe):
            return f"{next(self._keys)}-{secrets.token_hex(3)}", None
        spent = (
            (float(guard.calls), float(guard.spent_tokens), guard.spent_usd)
            if guard is not None
            else (0.0, 0.0, 0.0)
        )
        key, actor = self._spare or self._new_limits(ray)
        self._spare = None
        await actor.configure.remote(budget, spent, len(self._actors))
        self.limits = actor
        elapsed = guard.clock() - guard.started if guard is not None else 0.0
        preloaded = guard.preloaded if guard is not None else False
        return key, SharedLimits(actor, budget, preloaded, elapsed)

    async def _sync(self, guard: BudgetGuard | None) -> None:
        """Bring the driver's batch guard up to what the limits actor counted."""
        if guard is None or self.limits is None:
            return
        calls, tokens, usd, refusal = await self.limits.totals.remote()
        guard.calls, guard.spent_tokens, guard.spent_usd = int(calls), int(tokens), usd
        if refusal is not None and guard.exhausted is None:
            guard.refuse(refusal)
        if guard.on_change is not None:
            guard.on_change(guard)

    async def run(self, work: BatchWork) -> AsyncIterator[tuple[int, RunResult | BaseException]]:
        self.start(work.recipe)
        ray = self._ray()
        per_worker = max(1, math.ceil(work.concurrency / len(self._actors)))
        size = max(1, math.ceil(per_worker / 2))
        chunks: deque[tuple[Sequence[BatchItem], int]] = deque(
            (work.items[i : i + size], 0) for i in range(0, len(work.items), size)
        )
        key, limits = await self._start_limits(ray, work)
        send_file_modules_by_value(ray)
        flow_ref = ray.put(work.flow)
        guard = work.batch_guard if limits is not None and limits.budget is not None else None

        async def begin(slot: int, actor: Any) -> None:
            self._ids[slot] = await actor.begin.remote(
                key, flow_ref, work.budget, work.rerun_changed, per_worker, limits
            )

        await asyncio.gather(*(begin(i, a) for i, a in enumerate(self._actors)))
        running: dict[asyncio.Future[Any], tuple[int, Any, Sequence[BatchItem], int]] = {}
        load = [0] * len(self._actors)
        synced = time.monotonic()

        def submit(slot: int) -> None:
            while chunks and load[slot] < CHUNKS_IN_FLIGHT:
                chunk, tries = chunks.popleft()
                actor = self._actors[slot]
                ref = actor.run_chunk.remote(key, chunk)
                running[asyncio.wrap_future(ref.future())] = (slot, actor, chunk, tries)
                load[slot] += 1

        for slot in range(len(self._actors)):
            submit(slot)
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    slot, actor, chunk, tries = running.pop(future)
                    load[slot] -= 1
                    try:
                        results = future.result()
                    except ray.exceptions.RayActorError as exc:
                        if tries >= MAX_CHUNK_RETRIES:
                            yield (
                                -1,
                                WorkerLostError(
                                    f"Ray workers died {tries + 1} times running items "
                                    f"{[i.index for i in chunk]}: {exc}"
                                ),
                            )
                            return
                        chunks.appendleft((chunk, tries + 1))
                        if self._actors[slot] is actor:  # not replaced yet (its other chunks)
                            await self._replace(ray, slot, key, flow_ref, work, per_worker, limits)
                    except ray.exceptions.RayTaskError as exc:
                        yield -1, exc.as_instanceof_cause()
                        return
                    else:
                        last = not running and not chunks  # the consumer stops after it
                        if guard is not None and (last or time.monotonic() - synced >= SYNC_S):
                            await self._sync(guard)
                            synced = time.monotonic()
                        if last and limits is not None:
                            self.rate_stats = await limits.actor.rate_stats.remote()
                        for index, result in results:
                            yield index, result
                    submit(slot)
        finally:
            for future in running:
                future.cancel()
            for actor in self._actors:
                actor.end.remote(key)
            if limits is not None:
                # Every chunk's spending was reported before its results came back (and
                # the guard synced before the last one): the actor is no longer needed.
                ray.kill(limits.actor)
                self.limits = None
                if self._spare is None and self._recipe is not None:
                    self._spare = self._new_limits(ray)  # for the next batch

    async def _replace(
        self,
        ray: Any,
        slot: int,
        key: str,
        flow_ref: Any,
        work: BatchWork,
        per_worker: int,
        limits: SharedLimits | None,
    ) -> None:
        """A new worker in ``slot`` (its predecessor died), ready for batch ``key``."""
        ray.kill(self._actors[slot])  # dead already, or on a lost node: its CPU is freed
        if limits is not None and slot in self._ids:
            limits.actor.reclaim.remote(self._ids[slot])  # its allowance: free, or spent
        if self._recipe is None:
            raise ConfigurationError("the Ray executor was not started")
        fresh = self._new_actor(ray, self._recipe)
        self._actors[slot] = fresh
        self._ids[slot] = await fresh.begin.remote(
            key, flow_ref, work.budget, work.rerun_changed, per_worker, limits
        )
        # Chunks still queued on the dead worker fail too, and are handed on as they do.

    async def aclose(self) -> None:
        """Stop the workers, and the local Ray if this executor started it."""
        if not self._actors and not self._started_ray:
            return
        ray = _import_ray()
        if ray.is_initialized():
            closing = [actor.aclose.remote() for actor in self._actors]
            if closing:
                await asyncio.gather(*closing, return_exceptions=True)
            self._kill_all(ray)
            if self._spare is not None:
                ray.kill(self._spare[1])
                self._spare = None
            if self._started_ray:
                ray.shutdown()
        self._started_ray = False
        self._recipe = None


def executor_from_spec(spec: str, *, workers: int = 2) -> RayExecutor | None:
    """``--executor``'s value: ``local`` (None), ``ray`` (a local Ray), ``ray:auto`` (the
    cluster this machine belongs to) or ``ray://HOST:PORT``."""
    if spec == "local":
        return None
    if spec == "ray":
        return RayExecutor(workers=workers)
    if spec == "ray:auto":
        return RayExecutor("auto", workers=workers)
    if spec.startswith("ray://"):
        return RayExecutor(spec, workers=workers)
    raise ConfigurationError(
        f"--executor {spec!r}: expected local, ray, ray:auto or ray://HOST:PORT"
    )


def send_file_modules_by_value(ray: Any) -> None:
    """Have the flow modules loaded from a file path (``trellis run path/flow.py:flow``)
    sent to the workers by value: a worker is another process, maybe on another machine,
    where that module cannot be imported by its name (without this the workers fail with
    ``ModuleNotFoundError`` unless they happen to run in the file's folder)."""
    for module in list(sys.modules.values()):
        if getattr(module, FILE_MODULE_MARK, None) is not None:
            ray.cloudpickle.register_pickle_by_value(module)
