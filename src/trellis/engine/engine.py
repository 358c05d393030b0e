"""``Engine``: what runs flows. Holds configuration, model instances and the batch budget.

One engine serves many runs (and many flows); model clients are created once per binding
and shared by every run, so connection pools and rate limits are shared too. There is no
global engine: create one where your program starts, or let ``flow.run`` make a one-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any

from trellis.config import Config, ModelBinding, RoleBinding
from trellis.engine.breaker import BreakerSettings, CircuitBreaker
from trellis.engine.budget import BudgetGuard
from trellis.engine.clock import SYSTEM_CLOCK, Clock
from trellis.engine.durable import (
    BatchItems,
    DurableRun,
    finish_batch,
    load_result,
    open_batch,
)
from trellis.engine.events import Emitter, Observer, RunFinished, emitter
from trellis.engine.executor import BatchItem, BatchWork, EngineRecipe, Executor
from trellis.engine.gcpause import managed_gc
from trellis.engine.human import REPLY, find_question, leaf_questions
from trellis.engine.journal import run_time_before
from trellis.engine.lease import Lease, check_lease_ttl, process_owner
from trellis.engine.results import ErrorInfo, RunResult, StepRecord
from trellis.engine.runner import Run, current_step
from trellis.engine.services import ModelChains, ResponseCache, Services
from trellis.engine.stream import DEFAULT_LIMIT, EventStream
from trellis.engine.tasks import cancel_and_wait
from trellis.engine.tracing import tracing_observer
from trellis.errors import (
    ConfigurationError,
    InputError,
    LeaseLostError,
    NestedRunError,
    SerializationError,
    StoreError,
)
from trellis.flow.flow import Flow
from trellis.flow.graph import CompiledFlow
from trellis.flow.policy import Budget, Cache
from trellis.models.base import Model
from trellis.models.registry import ProviderFactory, ProviderRegistry
from trellis.store import CallRow, RunRow, Store, open_store
from trellis.store.codec import encode

__all__ = ["Engine", "failed_result", "new_run_id"]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(4)


class Engine:
    """Runs flows.

    - ``config``: model roles and prices (see :class:`tl.Config`, ``Config.from_toml``).
    - ``models``: role bindings added on top of ``config``: ``{"small": "sim:small"}``,
      or a :class:`tl.Model` instance (e.g. a ``FunctionModel`` in tests).
    - ``providers``: extra provider factories by name.
    - ``budget``: a budget over *everything* this engine runs (a batch's total), on top of
      each run's own budget.
    - ``store``: where runs are recorded (a :class:`Store` or a URL such as
      ``"sqlite:///.trellis/trellis.db"``). With a store every run is durable: completed
      steps and LLM calls are journaled as they finish, a completed run id returns its
      recorded result, and an incomplete one resumes. Without one, runs live in memory.
    - ``cache``: a response cache for every step (``tl.Cache(ttl=...)`` or ``True``); steps
      and flows can set their own. It lives in the store, or in memory without one.
    - ``lease_ttl``: seconds before a dead (or stalled) process's claim on a run expires;
      finite and above 0. A process that stalls longer is taken over, and its writes are
      refused (:class:`LeaseLostError`) when it wakes.
    - ``seed``: seeds the backoff jitter, for reproducible tests.
    - ``clock``: where runs read the time (:class:`trellis.engine.clock.Clock`: ``now()``
      for timestamps and cache expiry, ``monotonic()`` for deadlines, ``perf()`` for
      durations and latencies); None: the real clock. With ``sleep`` (how backoff and
      retry-after waits are slept, ``asyncio.sleep`` by default) a test drives time
      itself: latencies, durations and retry deadlines follow its clock, with no real
      waiting. Neither travels to an ``executor``'s workers: they use the real ones.
    - ``breaker``: how each model's circuit breaker behaves (:class:`BreakerSettings`). One
      breaker per model binding is shared by every run of the engine: while a model fails
      with overloads it lets one probe through at a time, and after an authentication or
      quota failure it lets nothing through for the engine's lifetime.
    - ``executor``: where :meth:`run_many` runs a batch's items (:class:`Executor`, e.g.
      ``trellis.cluster.RayExecutor()``); None: as asyncio tasks in this process. An
      executor whose workers are other processes needs a store they share (PostgreSQL).
    - ``observers``: callables given every event of every run (:mod:`trellis.engine.events`);
      a run can add its own (``run(..., observers=...)``), and :meth:`stream` is one.
    - ``tracing``: OpenTelemetry spans of every run (``True``: the global tracer provider,
      or a ``Tracer``); needs the ``[otel]`` extra (:mod:`trellis.engine.tracing`).
    - ``manage_gc``: while a run or batch is active, the heap that existed before it is
      frozen (``gc.freeze()``) and the collector's young-generation threshold is raised,
      restored when the last active run ends (:mod:`trellis.engine.gcpause`); big
      fan-outs otherwise spend most of their time in the collector. ``False``: leave the
      collector alone.
    - ``record_prompts``: every LLM attempt keeps the messages it sent and the reply it
      got (``CallRecord.prompt`` / ``.output``, recorded with the run: ``trellis show
      --prompts`` and the web UI show them). Off by default: the store then holds only
      step inputs and outputs, and replies that failed to validate.
    """

    def __init__(
        self,
        *,
        config: Config | None = None,
        models: Mapping[str, Any] | None = None,
        providers: Mapping[str, ProviderFactory] | None = None,
        budget: Budget | None = None,
        store: Store | str | None = None,
        cache: Cache | bool | None = None,
        lease_ttl: float = 30.0,
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock | None = None,
        breaker: BreakerSettings | None = None,
        executor: Executor | None = None,
        observers: Sequence[Observer] = (),
        tracing: Any = None,
        manage_gc: bool = True,
        record_prompts: bool = False,
    ) -> None:
        self.config = config or Config()
        self.manage_gc = manage_gc
        self.observers = list(observers)
        if tracing is not None and tracing is not False:
            self.observers.append(tracing_observer(tracing))
        self.store: Store | None = open_store(store) if isinstance(store, str) else store
        self._owns_store = isinstance(store, str)  # opened here from a URL: closed here
        self.cache = cache
        self.lease_ttl = check_lease_ttl(lease_ttl)
        self.owner = process_owner()
        instances: dict[str, Model] = {}
        if models:
            bound: dict[str, Any] = {}
            for role, value in models.items():
                if isinstance(value, Model):
                    binding = ModelBinding("@instance", role)
                    instances[str(binding)] = value
                    bound[role] = RoleBinding(binding=binding)
                else:
                    bound[role] = value
            self.config = self.config.with_models(bound)
        self.registry = ProviderRegistry(providers, specs=self.config.providers)
        clock = clock if clock is not None else SYSTEM_CLOCK
        self.guard = (
            BudgetGuard(budget, label="batch", clock=clock.monotonic)
            if budget is not None
            else None
        )
        if executor is not None:
            executor.check_store(self.store)
        self.executor = executor
        #: How a worker of ``executor`` builds an engine like this one (without ``clock``
        #: and ``sleep``: a worker uses the real ones).
        self.recipe = EngineRecipe(
            config=self.config,
            instances=instances,
            providers=providers,
            breaker=breaker,
            cache=cache,
            lease_ttl=self.lease_ttl,
            store_url=self.store.url if self.store is not None else None,
            seed=seed,
            record_prompts=record_prompts,
        )
        #: What runs borrow from this engine (they never hold the engine itself).
        self.services = Services(
            models=ModelChains(self.config, self.registry, instances, breaker or BreakerSettings()),
            prices=self.config.prices,
            cache=ResponseCache(self.store, clock),
            default_cache=cache,
            clock=clock,
            sleep=sleep,
            rng=random.Random(seed),
            record_prompts=record_prompts,
        )

    @classmethod
    def from_recipe(cls, recipe: EngineRecipe) -> Engine:
        """An engine like the one ``recipe`` was taken from (an executor's worker builds
        one): same configuration, models and policies, its own clients and store."""
        engine = cls(
            config=recipe.config,  # its roles already name the instances' bindings
            providers=recipe.providers,
            store=recipe.store_url,
            cache=recipe.cache,
            lease_ttl=recipe.lease_ttl,
            seed=recipe.seed,
            breaker=recipe.breaker,
            record_prompts=recipe.record_prompts,
        )
        engine.services.models.models.update(recipe.instances)
        engine.recipe = recipe
        return engine

    # -- models ---------------------------------------------------------------------------

    def model(self, binding: ModelBinding) -> Model:
        """The one instance of ``binding``'s model, shared by every run of this engine."""
        return self.services.models.model(binding)

    def breaker(self, model: Model) -> CircuitBreaker:
        """``model``'s circuit breaker, shared by every run of this engine."""
        return self.services.models.breaker(model)

    def model_chain(self, role: str, fallbacks: Sequence[str] | None = None) -> list[Model]:
        """The model for ``role`` followed by its fallbacks (deduplicated)."""
        return self.services.models.chain(role, fallbacks)

    # -- running --------------------------------------------------------------------------

    async def run(
        self,
        flow: Flow,
        inputs: Mapping[str, Any] | None = None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        rerun_changed: bool = False,
        meta: Mapping[str, Any] | None = None,
        observers: Sequence[Observer] = (),
    ) -> RunResult:
        """Run ``flow`` once. Raises :class:`InputError` for bad inputs; a failing step does
        not raise: the result's ``status`` is ``"failed"`` and ``error`` says why (call
        ``result.raise_for_status()`` to raise instead).

        With a store: ``run_id`` of a completed run returns the recorded result without
        executing anything; of an incomplete run, resumes it (``inputs`` may be omitted).
        A step whose code changed since it was recorded raises :class:`StepChangedError`
        unless ``rerun_changed``, which re-runs it and everything downstream. ``meta`` is
        recorded with a new run (the CLI keeps what it needs to resume there).

        Raises :class:`RunLockedError` if another process is executing the run, and
        :class:`LeaseLostError` if another process took it over while this one ran (it
        stalled past ``lease_ttl``): nothing more is written by this process then.

        ``observers`` get this run's events (after the engine's own observers); the last
        one is :class:`RunFinished` with the result. A recorded run, only read back, emits
        just that; a resume emits only what runs after the interruption."""
        emit = emitter(self.observers, observers)
        with managed_gc(self.manage_gc):
            result = await self._execute(
                flow,
                inputs,
                budget=budget,
                run_id=run_id,
                rerun_changed=rerun_changed,
                meta=meta,
                emit=emit,
            )
        if emit is not None:
            emit(RunFinished(run_id=result.run_id, result=result))
        return result

    def stream(
        self,
        flow: Flow,
        inputs: Mapping[str, Any] | None = None,
        *,
        buffer: int = DEFAULT_LIMIT,
        **options: Any,
    ) -> EventStream:
        """``async for event in engine.stream(flow, inputs)``: the run's events as they
        happen, :class:`RunFinished` (with the result) last; ``stream.result`` afterwards.
        ``options`` are :meth:`run`'s. A slow consumer never holds the run up: events
        wait in a buffer where, past ``buffer`` unread events, token deltas are merged
        (nothing else is dropped). Leaving the loop early cancels the run."""
        extra = list(options.pop("observers", ()))

        async def work(observer: Observer) -> RunResult:
            return await self.run(flow, inputs, observers=[*extra, observer], **options)

        return EventStream(work, limit=buffer)

    def stream_many(
        self,
        flow: Flow,
        items: Iterable[Mapping[str, Any]] | None = None,
        *,
        buffer: int = DEFAULT_LIMIT,
        **options: Any,
    ) -> EventStream:
        """:meth:`stream` over a batch (:meth:`run_many`'s ``options``): every item's
        events, each run's ending with its :class:`RunFinished`; ``stream.results``
        (by item index) afterwards."""

        async def work(observer: Observer) -> list[RunResult]:
            results: dict[int, RunResult] = {}
            async for index, result in self.run_many(flow, items, observers=[observer], **options):
                results[index] = result
            return [results[i] for i in sorted(results)]

        return EventStream(work, limit=buffer)

    async def _execute(
        self,
        flow: Flow,
        inputs: Mapping[str, Any] | None,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
        rerun_changed: bool = False,
        meta: Mapping[str, Any] | None = None,
        under_lease: Callable[[Store, int | None], None] | None = None,
        emit: Emitter | None = None,
        unstarted: RunRow | None = None,
    ) -> RunResult:
        """What :meth:`run` does; ``under_lease(store, epoch)`` is called once the run's
        lease is held and before its journal is read (how :meth:`reply` writes an answer
        so that exactly one of two concurrent answers wins). ``unstarted``: the record of
        the batch item ``run_id`` as read with others, when no process had started it
        (:meth:`BatchItems.starts`): it is not read again."""
        step = current_step()
        if step is not None:
            raise NestedRunError(
                f"step {step!r} started a run of flow {flow.name!r} from inside its code: that "
                "run's calls would be neither journaled nor counted in this run's cost and "
                f"budget. Make it a sub-flow instead: parent.subflow({flow.name}, name=..., "
                "inputs={...})"
            )
        plan = flow.compile()
        guard = BudgetGuard(
            budget or flow.budget, parent=self.guard, clock=self.services.clock.monotonic
        )
        if self.store is None:
            values = plan.validate_inputs(inputs)
            run_ = Run(self.services, flow, plan, values, run_id or new_run_id(), guard, None, emit)
            return await run_.execute()
        owner = process_owner()  # one owner per run: a second run of it is refused
        if unstarted is not None:
            item = DurableRun.unstarted_item(
                self.store, plan, unstarted, owner=owner, lease_ttl=self.lease_ttl
            )
            try:
                return await self._durable(item, flow, plan, guard, rerun_changed, None, emit)
            except LeaseLostError as exc:
                if not item.start_refused(exc):
                    raise
            # Started by another process since its record was read (with its chunk): nothing
            # of it ran here; the general way reads what that process recorded.
            run_id = item.run_id
        durable = DurableRun.open(
            self.store,
            plan,
            inputs,
            run_id or new_run_id(),
            owner=owner,
            lease_ttl=self.lease_ttl,
            meta=meta,
        )
        return await self._durable(durable, flow, plan, guard, rerun_changed, under_lease, emit)

    async def _durable(
        self,
        durable: DurableRun,
        flow: Flow,
        plan: CompiledFlow,
        guard: BudgetGuard,
        rerun_changed: bool,
        under_lease: Callable[[Store, int | None], None] | None,
        emit: Emitter | None,
    ) -> RunResult:
        """:meth:`_execute` of a durable run, once it is opened."""
        store = durable.store
        if durable.recorded is not None:
            return durable.recorded
        running: list[Run] = []

        def lease_lost(exc: StoreError) -> None:
            # The lease was lost, or the store refused a queued write (the same, found at
            # commit time) or failed it: the run writes nothing more.
            for run_ in running:
                run_.abort(exc)

        with store.grouped(durable.run_id, lease_lost), durable.lease(on_lost=lease_lost):
            if under_lease is not None:
                under_lease(store, durable.epoch)
            journal = durable.start(rerun_changed=rerun_changed)  # read under the lease
            run = Run(
                self.services, flow, plan, durable.values, durable.run_id, guard, journal, emit
            )
            running.append(run)
            result = await run.execute()
            if durable.lost is not None:
                raise durable.lost  # another process owns the run now: its record stands
            fatal = run.fatal
            if isinstance(fatal, StoreError) and not isinstance(fatal, SerializationError):
                raise fatal  # the store cannot be trusted: nothing more is written
            await durable.finish(result)
        return result

    async def reply(
        self,
        flow: Flow,
        run_id: str,
        step: str,
        answer: Any,
        *,
        budget: Budget | None = None,
    ) -> RunResult:
        """Answer the question step ``step`` of waiting run ``run_id`` asked, and resume it.

        A question inside a sub-flow is addressed by its step path from the run
        (``"reviews[2]/approve"``: the sub-flow step, the element, the child's step), or by
        the child run's id (``f"{run_id}/reviews[2]"``) and its step; either way ``flow``
        is the top-level run's flow, which is what resumes. The answer is validated
        against the type the step asked for; an invalid one raises :class:`InputError` and
        the run keeps waiting. Returns the resumed run's result (which may be waiting
        again, on another question)."""
        if self.store is None:
            raise ConfigurationError("this engine has no store: waiting runs live in a store")
        asked = find_question(self.store, run_id, step)
        run_id, path, owner = asked.run_id, asked.path, asked.owner
        key = asked.question.get("key")
        if not isinstance(key, str):
            raise StoreError(f"run {run_id!r}: step {path!r} is waiting without a question")
        encoded = encode(answer, "the answer")

        def record_answer(store: Store, epoch: int | None) -> None:
            current = {s.step: s.status for s in store.load_steps(owner)}
            if current.get(asked.step) != "waiting":  # answered meanwhile by another process
                raise InputError(f"step {path!r} of run {run_id!r} is no longer waiting")
            # A child's journal carries no epoch: the parent's lease, held now, fences it.
            fence = epoch if owner == run_id else None
            store.save_call(
                CallRow(run_id=owner, key=key, request=REPLY, result=encoded, attempts="[]"),
                epoch=fence,
            )

        with managed_gc(self.manage_gc):
            result = await self._execute(
                flow, None, run_id=run_id, budget=budget, under_lease=record_answer
            )
        first = path.split("/", 1)[0].partition("[")[0]
        after = result.steps.get(first)
        if after is not None and after.status == "waiting":
            for where, question in leaf_questions(first, after.question):
                error = question.get("error")
                if where == path and error and question.get("key") == key:
                    raise InputError(f"step {path!r}: {error}; the run is still waiting")
        return result

    def load(self, run_id: str, flow: Flow | None = None) -> RunResult:
        """A recorded run from the store (outputs typed when ``flow`` is given)."""
        if self.store is None:
            raise ConfigurationError("this engine has no store: pass store= to record runs")
        return load_result(self.store, run_id, flow.compile() if flow else None)

    def run_many(
        self,
        flow: Flow,
        items: Iterable[Mapping[str, Any]] | BatchItems | None = None,
        *,
        concurrency: int = 8,
        budget: Budget | None = None,
        batch_id: str | None = None,
        rerun_changed: bool = False,
        meta: Mapping[str, Any] | None = None,
        observers: Sequence[Observer] = (),
    ) -> AsyncGenerator[tuple[int, RunResult], None]:
        """Run ``flow`` once per item, ``concurrency`` at a time; yield ``(index, result)``
        as runs finish. An item with bad inputs yields a failed result, it does not stop the
        batch. Once the engine's batch budget is exhausted, items not yet started are
        yielded as failed with the budget error, without running.

        With a store and a ``batch_id``, the batch is one parent run whose items are child
        runs (``<batch_id>.<index>``), all recorded before the first one starts. Running
        the same ``batch_id`` again (``items`` may be omitted) yields the recorded results
        of finished items without running them, and resumes the others. ``items`` may be
        the batch as :func:`~trellis.engine.durable.open_batch` opened it already (then
        ``batch_id`` may be left out): it is not opened again.

        Items are read as they start, not all at once: a batch holds the inputs of the
        items in flight only (a batch with a store: not even those, its items run from
        their records).

        Bad arguments are refused when it is called, before anything is iterated: a
        ``concurrency`` below 1, a ``batch_id`` without a store, no items and no batch."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InputError(f"concurrency must be a whole number >= 1, not {concurrency!r}")
        if isinstance(items, BatchItems):
            if batch_id is not None and batch_id != items.batch_id:
                raise InputError(
                    f"batch_id={batch_id!r} is not the batch the items are of ({items.batch_id!r})"
                )
            batch_id = items.batch_id
        if batch_id is not None and self.store is None:
            raise ConfigurationError("batch_id= needs an engine with a store")
        if batch_id is None and items is None:
            raise InputError("run_many needs items (or the batch_id of a recorded batch)")
        plan = flow.compile()
        return self._run_many(
            flow,
            plan,
            items,
            concurrency=concurrency,
            budget=budget,
            batch_id=batch_id,
            rerun_changed=rerun_changed,
            meta=meta,
            observers=observers,
        )

    async def _run_many(
        self,
        flow: Flow,
        plan: CompiledFlow,
        items: Iterable[Mapping[str, Any]] | BatchItems | None,
        *,
        concurrency: int,
        budget: Budget | None,
        batch_id: str | None,
        rerun_changed: bool,
        meta: Mapping[str, Any] | None,
        observers: Sequence[Observer],
    ) -> AsyncGenerator[tuple[int, RunResult], None]:
        resumed, earlier_s = time.time(), 0.0  # this execution's start; earlier ones' time
        work: BatchItems | None = None
        if batch_id is not None:
            assert self.store is not None
            if isinstance(items, BatchItems) and items.fresh:
                work, completed = items, False  # just recorded: nothing ran before
            else:
                recorded = self.store.get_run(batch_id)
                # A batch that completed is only read back: its recorded end (and so its
                # duration) stays as it was, however long after it is run again.
                completed = recorded is not None and recorded.status == "done"
                if recorded is not None and not completed:
                    earlier_s = run_time_before(self.store, recorded)
                if isinstance(items, BatchItems):
                    work = items
                else:
                    work = open_batch(self.store, plan, items, batch_id, meta)
            parent = Lease(self.store, batch_id, self.owner, self.lease_ttl)
            batch_lease: contextlib.AbstractAsyncContextManager[object] = parent.hold(
                on_lost=lambda exc: queue.put_nowait((-1, exc))  # stop: another process has it
            )
            # Its items run from their records, read a chunk at a time as they are reached
            # (an item another process started is read again, alone, when it starts).
            source: Iterator[tuple[int, Mapping[str, Any] | None, RunRow | None]] = (
                (index, None, row) for index, row in work.starts(max(concurrency, 256))
            )
        else:
            assert items is not None and not isinstance(items, BatchItems)
            source = ((index, item, None) for index, item in enumerate(items))  # as they start
            parent = None
            completed = False
            batch_lease = contextlib.nullcontext()
        queue: asyncio.Queue[tuple[int, RunResult | BaseException]] = asyncio.Queue()
        iterator = source
        active = 0
        failures = waiting = 0

        def inputs_of(index: int, item: Mapping[str, Any] | None) -> Mapping[str, Any]:
            if item is not None or work is None:
                return item or {}
            inputs: Mapping[str, Any] = work.inputs(index)
            return inputs

        async def one(index: int, item: Mapping[str, Any] | None, row: RunRow | None) -> None:
            outcome: RunResult | BaseException
            ran: RunResult | None = None  # what ran (RunFinished emitted already)
            run_id = work.run_id(index) if work is not None else None
            try:
                if self.guard is not None and self.guard.exhausted is not None:
                    exhausted = self.guard.exhausted
                    outcome = failed_result(plan, inputs_of(index, item), exhausted, run_id=run_id)
                else:
                    # As run() does (the batch holds the collector's tuning already).
                    emit = emitter(self.observers, observers)
                    outcome = await self._execute(
                        flow,
                        None if run_id is not None else item,
                        budget=budget,
                        run_id=run_id,
                        rerun_changed=rerun_changed,
                        emit=emit,
                        unstarted=row,
                    )
                    if emit is not None:
                        emit(RunFinished(run_id=outcome.run_id, result=outcome))
                    ran = outcome
            except InputError as exc:
                try:
                    outcome = failed_result(plan, inputs_of(index, item), exc, run_id=run_id)
                except Exception as unreadable:  # its record cannot be read back
                    outcome = unreadable
            except Exception as exc:  # an engine bug: surface it to the consumer, don't hang
                outcome = exc
            if isinstance(outcome, RunResult) and outcome is not ran:
                emit = emitter(self.observers, observers)  # an item that never started
                if emit is not None:
                    emit(RunFinished(run_id=outcome.run_id, result=outcome))
            await queue.put((index, outcome))

        tasks: set[asyncio.Task[None]] = set()

        def start_next() -> bool:
            nonlocal active
            try:
                index, item, row = next(iterator)
            except StopIteration:
                return False
            task = asyncio.get_running_loop().create_task(one(index, item, row))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            active += 1
            return True

        async def elsewhere(executor: Executor, pending: list[BatchItem]) -> None:
            work = BatchWork(
                flow=flow,
                items=pending,
                concurrency=concurrency,
                budget=budget,
                batch_budget=self.guard.budget if self.guard is not None else None,
                rerun_changed=rerun_changed,
                recipe=self.recipe,
                batch_guard=self.guard,
            )
            async for index, outcome in executor.run(work):
                await queue.put((index, outcome))

        gc_hold = managed_gc(self.manage_gc)  # the whole batch, not item by item
        gc_hold.__enter__()
        try:
            async with batch_lease:  # one process works on a batch at a time
                if (
                    batch_id is not None
                    and self.store is not None
                    and parent is not None
                    and not completed
                ):
                    self.store.update_run(
                        batch_id, status="running", epoch=parent.epoch, resumed_at=resumed
                    )
                if self.executor is None:
                    while active < concurrency and start_next():
                        pass
                else:
                    # An executor takes the whole batch at once (with every item's inputs).
                    if work is not None:
                        pending = [
                            BatchItem(index, run_id, inputs)
                            for index, (run_id, inputs) in enumerate(work)
                        ]
                    else:
                        pending = [
                            BatchItem(index, None, inputs_of(index, item))
                            for index, item, _ in source
                        ]
                    if pending:
                        feeder = asyncio.get_running_loop().create_task(
                            elsewhere(self.executor, pending)
                        )
                        tasks.add(feeder)
                        feeder.add_done_callback(lambda t: report_fault(t, queue))
                        active = len(pending)
                while active:
                    index, outcome = await queue.get()
                    if isinstance(outcome, BaseException):
                        raise outcome  # an engine bug, or the batch's lease was lost
                    active -= 1
                    failures += outcome.status == "failed"
                    waiting += outcome.status == "waiting"
                    if self.executor is None:
                        start_next()
                    yield index, outcome
                if (
                    batch_id is not None
                    and self.store is not None
                    and parent is not None
                    and not (completed and not failures and not waiting)
                ):
                    finish_batch(
                        self.store,
                        batch_id,
                        status="failed" if failures else "waiting" if waiting else "done",
                        epoch=parent.epoch,
                        run_s=earlier_s + (time.time() - resumed),
                    )
        finally:
            try:
                await cancel_and_wait(tasks)
            finally:
                gc_hold.__exit__(None, None, None)

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close model clients, and the store if it was opened from a URL (a store passed
        in stays open: its owner closes it)."""
        for model in self.services.models.models.values():
            await model.aclose()
        if self.executor is not None:
            await self.executor.aclose()
        if self._owns_store and self.store is not None:
            self.store.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def report_fault(
    task: asyncio.Task[None], queue: asyncio.Queue[tuple[int, RunResult | BaseException]]
) -> None:
    """An executor's feeder that stopped with an error stops the batch with it."""
    if not task.cancelled() and task.exception() is not None:
        queue.put_nowait((-1, task.exception() or RuntimeError("executor failed")))


def failed_result(
    plan: CompiledFlow,
    inputs: Mapping[str, Any],
    exc: BaseException,
    *,
    run_id: str | None = None,
) -> RunResult:
    """A result for a run that could not start (bad inputs, exhausted batch budget)."""
    records = {s.name: StepRecord(s.name, status="cancelled", reason=str(exc)) for s in plan.steps}
    return RunResult(
        run_id=run_id or new_run_id(),
        flow=plan.name,
        inputs=dict(inputs),
        steps=records,
        status="failed",
        error=ErrorInfo.from_exception(exc),
        exception=exc,
        started_at=time.time(),
    )
