"""One run of a compiled flow: dependency counting, concurrency, skip / fail propagation.

Scheduling is event-driven, never a rescan: each step keeps a count of unfinished steps
it reads; when a step settles, its dependents' counts drop and those reaching zero join a
ready queue. A plain synchronous step runs inline (no task), so a chain of cheap steps
costs microseconds per step; async steps, mapped elements and loops run as tasks. Work per
completion is O(dependents), independent of how wide the flow or a fan-out is.

Under a wall-time limit (``max_seconds``) a synchronous step function runs instead in a
daemon thread awaited by a task (:mod:`trellis.engine.threads`), so that the deadline fires
even while the step blocks; the run then ends with ``BudgetExceededError`` at once.

A failing step cancels what depends on it; independent branches run on. A run-fatal error
(budget, configuration, quota, authentication) cancels everything still running.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trellis.engine.budget import BudgetGuard
from trellis.engine.events import (
    Emitter,
    StepFailed,
    StepFinished,
    StepPartFinished,
    StepPartStarted,
    StepSkipped,
    StepStarted,
    WaitingForPerson,
)
from trellis.engine.human import EngineHuman, WaitingForInput, subflow_question
from trellis.engine.journal import Journal, call_record_from_dict
from trellis.engine.llm import EngineLLM
from trellis.engine.results import (
    CallRecord,
    Decision,
    ErrorInfo,
    RunResult,
    StepRecord,
    StepStatus,
)
from trellis.engine.scope import RunScope, StepScope
from trellis.engine.services import Services
from trellis.engine.tasks import cancel_and_wait, gather_or_cancel
from trellis.engine.threads import call_in_daemon_thread
from trellis.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    OutputTypeError,
    QuotaExceededError,
    RunLockedError,
    SerializationError,
    StepError,
    StoreError,
    SubflowError,
    TrellisError,
)
from trellis.flow.inject import ElementFailure, Round, RunContext
from trellis.flow.policy import RetryPolicy, resolve_cache
from trellis.flow.types import describe
from trellis.store.base import Store
from trellis.store.codec import decode

if TYPE_CHECKING:
    from trellis.flow.flow import Flow
    from trellis.flow.graph import CompiledFlow
    from trellis.flow.step import StepSpec

__all__ = ["Run", "child_run_id", "current_step", "recorded_subflow_calls"]

# Order matters: >= FAILED means the step's dependents cannot run.
PENDING, RUNNING, DONE, SKIPPED, WAITING, BLOCKED, FAILED, CANCELLED = range(8)
_MISSING = object()
_NONE: list[Decision] = []  # shared, never mutated: "no decisions"
_UNRUN_STATUS: dict[int, StepStatus] = {
    SKIPPED: "skipped",
    CANCELLED: "cancelled",
    WAITING: "waiting",
    BLOCKED: "pending",
}
_CURRENT_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trellis_current_step", default=None
)
_RUN_FATAL = (
    BudgetExceededError,
    ConfigurationError,
    QuotaExceededError,
    AuthenticationError,
    StoreError,
    RunLockedError,
)


class Run:
    def __init__(
        self,
        services: Services,
        flow: Flow,
        plan: CompiledFlow,
        inputs: dict[str, Any],
        run_id: str,
        guard: BudgetGuard,
        journal: Journal | None = None,
        emit: Emitter | None = None,
        *,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.services = services
        # The run's clock, its functions bound once (read per step on the hot path).
        clock = services.clock
        self.now = clock.now
        self.perf = clock.perf
        self.emit = emit  # None: nobody observes the run, no event is built
        self.journal = journal
        self.flow = flow
        self.plan = plan
        self.guard = guard
        n = len(plan.steps)
        self.records = [StepRecord(s.name) for s in plan.steps]
        self.result = RunResult(
            run_id=run_id,
            flow=plan.name,
            inputs=inputs,
            steps={r.name: r for r in self.records},
            started_at=self.now(),
        )
        self.shared = RunScope(services, guard, journal, self.result, emit)
        self.values: dict[str, Any] = dict(inputs)
        self.state = [PENDING] * n
        self.waiting = [len(d) for d in plan.deps]
        self.finished = 0
        self.ready: deque[int] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.fatal: BaseException | None = None
        # A sub-flow's run shares its parent's concurrency limit (``slots``), if any.
        if slots is None and flow.concurrency:
            slots = asyncio.Semaphore(flow.concurrency)
        self.slots = slots
        self.step_decisions: dict[str, list[Decision]] = {}
        self._draining = False
        #: Ready steps wait for the run's queued writes to be committed (group commit):
        #: "waiting", then "resume" (for :meth:`execute` to start them), or "stopped" once
        #: the run was cancelled (nothing more starts).
        self._held: str | None = None
        self._done: asyncio.Future[None] | None = None
        # With a deadline a blocking sync step must not hold the event loop: it runs in a
        # thread (without one, the inline fast path).
        self.threaded = guard.deadline() is not None

    # -- driving the run --------------------------------------------------------------------

    async def execute(self) -> RunResult:
        started = self.perf()
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self.ready.extend(i for i, w in enumerate(self.waiting) if w == 0)
        self._drain()
        deadline = self.guard.deadline()
        while self.finished < len(self.records):
            try:
                if deadline is None:
                    await self._done  # settled only by this run (_settle, _recorded)
                else:
                    remaining = max(0.0, deadline - self.services.clock.monotonic())
                    await asyncio.wait_for(asyncio.shield(self._done), remaining)
            except TimeoutError:
                self._abort(self.guard.time_exceeded())
                deadline = None  # what is left settles now, with no deadline to wait for
                continue
            except asyncio.CancelledError:
                self._held = "stopped"
                self._cancel_tasks()
                raise
            if self._held == "resume":  # woken to start the steps that waited (_recorded)
                self._held = None
                self._done = loop.create_future()
                self._drain()
        result = self.result
        result.duration_s = self.perf() - started
        if any(s >= FAILED for s in self.state):
            result.status = "failed"
        elif any(s in (WAITING, BLOCKED) for s in self.state):
            result.status = "waiting"
        else:
            result.status = "done"
        if result.status == "failed" and result.error is None:
            result.error = ErrorInfo(type="Cancelled", message="the run was cancelled")
        return result

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            ready = self.ready
            journal = self.journal
            while ready:
                if self._held is not None:
                    return
                if journal is not None and journal.when_recorded(self._recorded):
                    self._held = "waiting"  # ready steps start once what they depend on is
                    return  # recorded
                i = ready.popleft()
                try:
                    self._start(i)
                except Exception as exc:  # a safety net: a step must always settle
                    if self.state[i] in (PENDING, RUNNING):
                        self._fail(i, _store_error(exc))
                    else:
                        raise
        finally:
            self._draining = False

    def _recorded(self) -> None:
        """The run's queued writes are committed: the ready steps may start, in the run's
        own task (:meth:`execute`: its context, and what a step raises reaches the caller)."""
        if self._held == "waiting":
            self._held = "resume"
            done = self._done
            if done is not None and not done.done():
                done.set_result(None)

    def _settle(self, i: int, state: int) -> None:
        self.state[i] = state
        self.finished += 1
        waiting = self.waiting
        for j in self.plan.dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                self.ready.append(j)
        if self.finished == len(self.records):
            done = self._done
            if done is not None and not done.done():
                done.set_result(None)
        else:
            self._drain()

    # -- starting a step ------------------------------------------------------------------

    def _start(self, i: int) -> None:
        plan = self.plan
        spec = plan.steps[i]
        record = self.records[i]
        state = self.state
        if self.fatal is not None:
            self._finish_unrun(i, CANCELLED, f"the run stopped: {type(self.fatal).__name__}")
            return
        for d in plan.deps[i]:
            if state[d] >= FAILED:
                what = "failed" if state[d] == FAILED else "was cancelled"
                self._finish_unrun(i, CANCELLED, f"upstream step {plan.steps[d].name!r} {what}")
                return
        for d in plan.deps[i]:
            if state[d] in (WAITING, BLOCKED):
                self._finish_unrun(i, BLOCKED, f"waits for step {plan.steps[d].name!r}")
                return
        if self.journal is not None:
            try:
                restored = self.journal.restore(i, record)
            except Exception as exc:  # a corrupt record: a clear error, the run stops
                self._fail(i, _store_error(exc))
                return
            if restored is not None:
                self.result.decisions.extend(restored.decisions)
                self.result.calls.extend(restored.calls)
                if spec.subflow is not None:  # its children's calls, under their paths
                    try:
                        self.result.calls.extend(
                            recorded_subflow_calls(
                                self.journal.store, self.result.run_id, step=spec.name
                            )
                        )
                    except Exception as exc:
                        self._fail(i, _store_error(exc))
                        return
                self.result.usage.merge(record.usage)
                usage = record.usage
                self.guard.charge(usage.total_tokens, usage.cost_usd, usage.attempts)
                self.values[spec.name] = record.output
                self._settle(i, DONE)
                return
        values = self.values
        kwargs: dict[str, Any] = {}
        for param, source in plan.sources[i]:
            if source >= 0 and state[source] == SKIPPED:
                if not param.optional:
                    reason = f"its input {param.name!r} was skipped"
                    self._decide(spec.name, "skip", "skip", reason, {})
                    self._finish_unrun(i, SKIPPED, reason)
                    return
                kwargs[param.name] = param.fallback
            else:
                value = values.get(param.name, _MISSING)
                kwargs[param.name] = param.fallback if value is _MISSING else value
        if spec.when is not None:
            if not self._check_when(i, spec):
                return
            if self.journal is not None:
                try:
                    self.journal.step_started(i, record, self.step_decisions.get(spec.name, []))
                except Exception as exc:
                    self._fail(i, _store_error(exc))
                    return
        record.started_at = self.now()
        if self.emit is not None:
            taken = self.step_decisions.get(spec.name)
            self.emit(
                StepStarted(
                    run_id=self.result.run_id, step=spec.name, decision=taken[-1] if taken else None
                )
            )
        if (
            spec.is_async
            or spec.map_over
            or spec.max_rounds
            or spec.injected
            or (spec.retry or self.flow.retry).retry_on
            or self.threaded
            or spec.subflow is not None
        ):
            state[i] = RUNNING
            task = asyncio.get_running_loop().create_task(self._run_async(i, kwargs))
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, i))
            return
        # A plain synchronous step: run inline, no task, no await.
        state[i] = RUNNING
        t0 = self.perf()
        record.attempts = 1
        try:
            output = spec.fn(**kwargs)
            validator = plan.validators[i]
            if validator is not None:
                output = self._validated(spec, validator, output)
        except Exception as exc:
            record.duration_s = self.perf() - t0
            self._fail(i, exc)
            return
        self._complete(i, output, t0)

    def _check_when(self, i: int, spec: StepSpec) -> bool:
        when = spec.when
        assert when is not None
        values = {}
        for name in when.reads:
            source = self.plan.index.get(name)
            if source is not None and self.state[source] == SKIPPED:
                reason = f"its condition reads {name!r}, which was skipped"
                self._decide(spec.name, "skip", "skip", reason, {})
                self._finish_unrun(i, SKIPPED, reason)
                return False
            values[name] = self.values.get(name)
        kind = "branch" if when.router else "when"
        try:
            ok = when(values)
        except Exception as exc:
            err = StepError(
                f"step {spec.name!r}: its when= condition raised {type(exc).__name__}: {exc}",
                step=spec.name,
            )
            err.__cause__ = exc
            self._fail(i, err)
            return False
        outcome = "run" if ok else "skip"
        reason = f"{when.description} is {'true' if ok else 'false'}"
        self._decide(spec.name, kind, outcome, reason, values)
        if not ok:
            self._finish_unrun(i, SKIPPED, reason)
        return ok

    def _decide(
        self, step: str, kind: str, outcome: str, reason: str, values: dict[str, Any]
    ) -> None:
        decision = Decision(step=step, kind=kind, outcome=outcome, reason=reason, values=values)
        self.result.decisions.append(decision)
        if self.journal is not None or self.emit is not None:  # recorded / StepStarted's
            self.step_decisions.setdefault(step, []).append(decision)

    # -- finishing a step -----------------------------------------------------------------

    def _complete(self, i: int, output: Any, t0: float) -> None:
        record = self.records[i]
        record.status = "done"
        record.output = output
        record.duration_s = self.perf() - t0
        self.values[record.name] = output
        if self.journal is not None:
            self._journal_step(i, record)
            if record.status != "done":  # its output could not be recorded
                if self.emit is not None and record.error is not None:
                    self.emit(
                        StepFailed(run_id=self.result.run_id, step=record.name, error=record.error)
                    )
                self._settle(i, FAILED)
                return
        if self.emit is not None:
            self.emit(
                StepFinished(
                    run_id=self.result.run_id,
                    step=record.name,
                    output=output,
                    duration_s=record.duration_s,
                    attempts=record.usage.attempts,
                    cost_usd=record.usage.cost_usd,
                )
            )
        self._settle(i, DONE)

    def _finish_unrun(self, i: int, state: int, reason: str) -> None:
        record = self.records[i]
        record.status = _UNRUN_STATUS[state]
        record.reason = reason
        if self.journal is not None:
            self._journal_step(i, record)
        if self.emit is not None:
            self._emit_unrun(record, reason)
        self._settle(i, state)

    def _emit_unrun(self, record: StepRecord, reason: str) -> None:
        assert self.emit is not None
        run_id = self.result.run_id
        if record.status == "waiting" and record.question is not None:
            self.emit(WaitingForPerson(run_id=run_id, step=record.name, question=record.question))
            return
        decisions = self.result.decisions
        last = decisions[-1] if decisions else None
        decision = last if last is not None and last.step == record.name else None
        self.emit(
            StepSkipped(
                run_id=run_id,
                step=record.name,
                status=record.status,
                reason=reason,
                decision=decision,
            )
        )

    def _fail(self, i: int, exc: BaseException) -> None:
        spec = self.plan.steps[i]
        if not isinstance(exc, TrellisError):
            wrapped = StepError(
                f"step {spec.name!r} raised {type(exc).__name__}: {exc}", step=spec.name
            )
            wrapped.__cause__ = exc
            exc = wrapped
        record = self.records[i]
        record.status = "failed"
        record.error = ErrorInfo.from_exception(exc, step=spec.name)
        record.exception = exc
        record.reason = str(exc)
        if self.result.error is None:
            self.result.error = record.error
            self.result.exception = exc
        if isinstance(exc, _RUN_FATAL) and self.fatal is None:
            self._abort(exc)
        if self.journal is not None:
            self._journal_step(i, record)
        if self.emit is not None and record.error is not None:
            self.emit(StepFailed(run_id=self.result.run_id, step=spec.name, error=record.error))
        self._settle(i, FAILED)

    def _journal_step(self, i: int, record: StepRecord) -> None:
        """Record a settled step. It never raises: an output JSON cannot hold fails the step;
        a store that cannot write stops the run."""
        assert self.journal is not None
        if isinstance(self.fatal, StoreError) and not isinstance(self.fatal, SerializationError):
            return  # the store failed: write nothing more
        try:
            self.journal.step_settled(i, record, self.step_decisions.get(record.name, _NONE))
            return
        except SerializationError as exc:
            if record.status != "done":
                raise AssertionError("only outputs need serialising") from exc
            record.status = "failed"
            record.error = ErrorInfo.from_exception(exc, step=record.name)
            record.reason = str(exc)
            record.exception = exc
            if self.result.error is None:
                self.result.error = record.error
                self.result.exception = exc
            self.values.pop(record.name, None)
            error: TrellisError = exc
        except Exception as exc:
            error = _store_error(exc)
        try:
            self.journal.step_settled(i, record, [])
        except Exception as exc:
            error = _store_error(exc)
        cannot_write = isinstance(error, StoreError) and not isinstance(error, SerializationError)
        if cannot_write and self.fatal is None:
            self._abort(error)

    def abort(self, exc: BaseException) -> None:
        """Stop the run from outside (its lease was lost): cancel what is running."""
        if self.fatal is None:
            self._abort(exc)

    def _abort(self, exc: BaseException) -> None:
        self.fatal = exc
        if self.result.error is None or isinstance(exc, BudgetExceededError):
            self.result.error = ErrorInfo.from_exception(exc)
            self.result.exception = exc
        self._cancel_tasks()

    def _cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def _task_done(self, i: int, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.state[i] == RUNNING:  # cancelled before its coroutine ever ran
            why = type(self.fatal).__name__ if self.fatal else "cancelled"
            self._finish_unrun(i, CANCELLED, f"stopped before it started: {why}")

    # -- executing async steps, maps and loops ----------------------------------------------

    async def _run_async(self, i: int, kwargs: dict[str, Any]) -> None:
        spec = self.plan.steps[i]
        t0 = self.perf()
        _CURRENT_STEP.set(spec.name)  # this task's context: a nested Engine.run refuses
        try:
            if spec.subflow is not None:
                output = await self._run_subflow(i, spec, kwargs)
            elif spec.map_over is not None:
                output = await self._run_map(i, spec, kwargs)
            elif spec.max_rounds is not None:
                output = await self._run_loop(i, spec, kwargs)
            else:
                output = await self._run_once(i, spec, kwargs, None, None)
        except asyncio.CancelledError:
            self.records[i].duration_s = self.perf() - t0
            why = type(self.fatal).__name__ if self.fatal else "cancelled"
            self._finish_unrun(i, CANCELLED, f"stopped while running: {why}")
            return
        except WaitingForInput as waiting:
            record = self.records[i]
            record.duration_s = self.perf() - t0
            record.question = waiting.question
            self._finish_unrun(i, WAITING, f"waiting for input: {waiting.question['prompt']}")
            return
        except Exception as exc:
            self.records[i].duration_s = self.perf() - t0
            self._fail(i, exc)
            return
        self._complete(i, output, t0)

    async def _run_once(
        self,
        i: int,
        spec: StepSpec,
        kwargs: dict[str, Any],
        index: int | None,
        round_: Round[Any] | None,
        *,
        holds_slot: bool = False,
    ) -> Any:
        record = self.records[i]
        policy = spec.retry or self.flow.retry
        attempt = 0
        while True:
            attempt += 1
            record.attempts += 1
            call_kwargs = kwargs
            if spec.injected:
                injected = self._injected(spec, record, policy, index, round_, attempt)
                call_kwargs = {**kwargs, **injected}
            try:
                threaded = self.threaded and not spec.injected
                if self.slots is not None and not holds_slot:
                    async with self.slots:
                        output = await _invoke(spec, call_kwargs, threaded)
                else:
                    output = await _invoke(spec, call_kwargs, threaded)
                validator = self.plan.validators[i]
                return output if validator is None else self._validated(spec, validator, output)
            except policy.retry_on as exc:
                if isinstance(exc, _RUN_FATAL) or attempt >= policy.step_attempts:
                    raise
                await self.shared.sleep(policy.backoff(attempt, self.services.rng))

    def _injected(
        self,
        spec: StepSpec,
        record: StepRecord,
        policy: RetryPolicy,
        index: int | None,
        round_: Round[Any] | None,
        attempt: int,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        number = round_.number if round_ is not None else None
        for name, kind in spec.injected.items():
            if kind in ("llm", "human"):
                model = spec.model or self.flow.model
                cache = resolve_cache(spec.cache, self.flow.cache, self.services.default_cache)
                scope = StepScope(self.shared, record, policy, model, index, number, attempt, cache)
                out[name] = EngineLLM(scope) if kind == "llm" else EngineHuman(scope)
            elif kind == "context":
                out[name] = RunContext(
                    run_id=self.result.run_id,
                    flow=self.plan.name,
                    step=spec.name,
                    index=index,
                    round=number,
                )
            else:
                out[name] = round_
        return out

    async def _run_map(self, i: int, spec: StepSpec, kwargs: dict[str, Any]) -> list[Any]:
        assert spec.map_over is not None
        record = self.records[i]
        items = kwargs[spec.map_over]
        if not isinstance(items, list | tuple):
            try:
                items = list(items)
            except TypeError as exc:
                raise StepError(
                    f"step {spec.name!r} maps over {spec.map_over!r}, which is a "
                    f"{type(items).__name__}, not a list",
                    step=spec.name,
                ) from exc
        record.elements = len(items)
        results: list[Any] = [None] * len(items)
        if not items:
            return results
        collect = spec.on_error == "collect"
        slots = self.slots
        key = spec.map_over
        validator = self.plan.validators[i]
        # The common case (no injection, no step retries) calls the function directly:
        # fewer live coroutines per element keeps wide fan-outs cheap.
        direct = not spec.injected and not (spec.retry or self.flow.retry).retry_on
        # Under a deadline a sync element runs in a thread, as an unmapped step does: a
        # blocking element must not hold the event loop past max_seconds.
        threaded = self.threaded and not spec.is_async
        emit = self.emit if self.emit is not None and self.emit.parts else None
        run_id = self.result.run_id
        perf = self.perf

        async def element(index: int, item: Any) -> None:
            if emit is not None:
                part = _Part(emit, perf, run_id, spec.name, index, None)
            try:
                kw = {**kwargs, key: item}
                if direct:
                    record.attempts += 1
                    if threaded:
                        output = await _invoke(spec, kw, True)
                    else:
                        output = spec.fn(**kw)
                        if spec.is_async:
                            output = await output
                    if validator is not None:
                        output = self._validated(spec, validator, output)
                    results[index] = output
                else:
                    results[index] = await self._run_once(
                        i, spec, kw, index, None, holds_slot=slots is not None
                    )
                if emit is not None:
                    part.end("done")
            except WaitingForInput:
                if emit is not None:
                    part.end("waiting")
                raise
            except Exception as exc:
                if emit is not None:
                    part.end("failed", exc)
                if not collect or isinstance(exc, _RUN_FATAL):
                    raise
                record.element_failures += 1
                results[index] = ElementFailure(
                    index=index, error=type(exc).__name__, message=str(exc)
                )
            finally:
                if emit is not None:
                    part.end("cancelled")  # (no-op once it ended)
                if slots is not None:
                    slots.release()

        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            if slots is None:
                tasks = [loop.create_task(element(n, item)) for n, item in enumerate(items)]
                await asyncio.gather(*tasks)
            else:
                failed: list[BaseException] = []

                def note_failure(task: asyncio.Task[None]) -> None:
                    if not task.cancelled() and task.exception() is not None:
                        failed.append(task.exception())  # type: ignore[arg-type]

                for n, item in enumerate(items):
                    await slots.acquire()
                    if failed:
                        slots.release()
                        break
                    task = loop.create_task(element(n, item))
                    task.add_done_callback(note_failure)
                    tasks.append(task)
                await asyncio.gather(*tasks)
        except BaseException:
            await cancel_and_wait(tasks)
            raise
        return results

    async def _run_loop(self, i: int, spec: StepSpec, kwargs: dict[str, Any]) -> Any:
        assert spec.max_rounds is not None
        record = self.records[i]
        history: list[Any] = []
        output: Any = None
        emit = self.emit if self.emit is not None and self.emit.parts else None
        for number in range(1, spec.max_rounds + 1):
            round_ = Round(number=number, history=tuple(history))
            if emit is None:
                output = await self._run_once(i, spec, kwargs, None, round_)
            else:
                part = _Part(emit, self.perf, self.result.run_id, spec.name, None, number)
                try:
                    output = await self._run_once(i, spec, kwargs, None, round_)
                    part.end("done")
                except WaitingForInput:
                    part.end("waiting")
                    raise
                except Exception as exc:
                    part.end("failed", exc)
                    raise
                finally:
                    part.end("cancelled")
            history.append(output)
            record.rounds = number
            if spec.until is None:
                continue
            try:
                satisfied = bool(spec.until(output))
            except Exception as exc:
                raise StepError(
                    f"step {spec.name!r}: its until= condition raised {type(exc).__name__}: {exc}",
                    step=spec.name,
                ) from exc
            last = number == spec.max_rounds
            if satisfied:
                outcome, reason = "stop", f"round {number}: until() is true"
            elif last:
                outcome, reason = "stop", f"round {number}: max_rounds={spec.max_rounds} reached"
            else:
                outcome, reason = "continue", f"round {number}: until() is false"
            self._decide(spec.name, "loop", outcome, reason, {"round": number, "output": output})
            if satisfied:
                break
        return output

    # -- sub-flows ------------------------------------------------------------------------

    async def _run_subflow(self, i: int, spec: StepSpec, kwargs: dict[str, Any]) -> Any:
        """Run the step's sub-flow (one per element when mapped) as child runs."""
        record = self.records[i]
        record.attempts += 1
        if spec.map_over is None:
            child = await self._child(i, spec, spec.fn(**kwargs), None)
            record.children.append(child)
            if child.status == "waiting":  # a question inside: the step waits with it
                raise WaitingForInput(subflow_question(spec.name, [child]))
            return _child_output(spec, child)
        items = list(kwargs[spec.map_over])
        record.elements = len(items)
        children: list[RunResult | None] = [None] * len(items)
        collect = spec.on_error == "collect"
        key = spec.map_over

        async def element(index: int, item: Any) -> Any:
            try:
                child = await self._child(i, spec, spec.fn(**{**kwargs, key: item}), index)
                children[index] = child
                if child.status == "waiting":
                    return None  # the step waits once every element settled
                return _child_output(spec, child)
            except Exception as exc:
                if not collect or isinstance(exc, _RUN_FATAL):
                    raise
                record.element_failures += 1
                return ElementFailure(index=index, error=type(exc).__name__, message=str(exc))

        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(element(n, item)) for n, item in enumerate(items)]
        try:
            outputs = await gather_or_cancel(tasks)
            waiting = [c for c in children if c is not None and c.status == "waiting"]
            if waiting:
                raise WaitingForInput(subflow_question(spec.name, waiting))
            return outputs
        finally:
            record.children.extend(c for c in children if c is not None)

    async def _child(self, i: int, spec: StepSpec, inputs: Any, index: int | None) -> RunResult:
        """One child run of sub-flow step ``i``: recorded as ``<run>/<step>`` (``[index]``
        per element), on the parent's budget guard and concurrency limit; its usage rolls
        up into the step's and the run's."""
        assert spec.subflow is not None
        flow = spec.subflow.flow
        plan = flow.compile()
        if not isinstance(inputs, dict):
            raise StepError(
                f"sub-flow step {spec.name!r} must return the sub-flow's inputs as a dict, "
                f"got {type(inputs).__name__}",
                step=spec.name,
            )
        values = plan.validate_inputs(inputs)
        run_id = child_run_id(self.result.run_id, spec.name, index)
        journal = None
        if self.journal is not None:
            journal = self.journal.child(run_id, spec.name, plan, values, index)
        child = Run(
            self.services,
            flow,
            plan,
            values,
            run_id,
            self.guard,
            journal,
            self.emit,  # the child's events reach the parent's observers (a stream, traces)
            slots=self.slots,
        )
        result = await child.execute()
        if journal is not None and not isinstance(child.fatal, StoreError):
            journal.finish_child(result)
        self.records[i].usage.merge(result.usage)
        self.result.usage.merge(result.usage)
        # The child's calls are listed in the parent's too, under their step path
        # (``reviews[2]/judge``); the usage above is the roll-up, so totals count each once.
        prefix = run_id[len(self.result.run_id) + 1 :]  # "step" or "step[i]"
        self.result.calls.extend(
            dataclasses.replace(call, step=f"{prefix}/{call.step}") for call in result.calls
        )
        return result

    # -- output validation ----------------------------------------------------------------

    def _validated(self, spec: StepSpec, validator: Callable[[Any], Any], output: Any) -> Any:
        try:
            return validator(output)
        except Exception as exc:
            raise OutputTypeError(
                f"step {spec.name!r} returned {type(output).__name__} but is annotated "
                f"-> {describe(spec.output_type)}: {str(exc).strip().splitlines()[0]}",
                step=spec.name,
            ) from exc


def child_run_id(parent: str, step: str, index: int | None) -> str:
    """The run id of a sub-flow's child run: ``<parent>/<step>``, ``<parent>/<step>[i]``."""
    return f"{parent}/{step}" if index is None else f"{parent}/{step}[{index}]"


def recorded_subflow_calls(
    store: Store, run_id: str, *, step: str | None = None, replayed: bool = True
) -> list[CallRecord]:
    """The recorded calls of ``run_id``'s sub-flow child runs (``step``: of that step's
    only), theirs included, each under its step path from ``run_id``
    (``reviews[2]/judge``), in element order: what a resumed or reloaded parent lists in
    its ``calls`` (its usage has them already, rolled up)."""
    children = [
        row
        for row in store.list_runs(parent_id=run_id)
        if row.run_id.startswith(run_id + "/") and row.meta and '"subflow"' in row.meta
    ]
    children.sort(key=lambda r: (r.run_id[len(run_id) + 1 :].partition("[")[0], r.item_index or 0))
    out: list[CallRecord] = []
    for child in children:
        segment = child.run_id[len(run_id) + 1 :]
        if step is not None and segment.partition("[")[0] != step:
            continue
        calls = [
            call_record_from_dict(a, replayed=replayed)
            for crow in store.load_calls(child.run_id)
            for a in decode(crow.attempts, Any, f"call {crow.key!r} of run {child.run_id!r}")
        ]
        calls.extend(recorded_subflow_calls(store, child.run_id, replayed=replayed))
        out.extend(dataclasses.replace(c, step=f"{segment}/{c.step}") for c in calls)
    return out


def current_step() -> str | None:
    """The step whose code is running in this context (``None`` outside a run's step)."""
    return _CURRENT_STEP.get()


def _child_output(spec: StepSpec, child: RunResult) -> Any:
    """The sub-flow's declared result, or the error that ended it."""
    assert spec.subflow is not None
    if child.status == "done":
        return child.steps[spec.subflow.output].output
    if child.status == "failed" and isinstance(child.exception, _RUN_FATAL):
        raise child.exception
    error = child.error
    if error is not None:
        where = f"step {error.step!r} " if error.step else ""
        why = f"failed: {where}{error.type}: {error.message}"
    else:
        why = f"ended {child.status}"
    raise SubflowError(
        f"sub-flow step {spec.name!r}: flow {child.flow!r} (run {child.run_id}) {why}",
        step=spec.name,
        run_id=child.run_id,
    )


def _store_error(exc: Exception) -> TrellisError:
    """A store's own exception as a StoreError (a Trellis error is kept as it is)."""
    if isinstance(exc, TrellisError):
        return exc
    wrapped = StoreError(f"the store failed: {type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    return wrapped


async def _invoke(spec: StepSpec, kwargs: dict[str, Any], threaded: bool = False) -> Any:
    """Call the step function; ``threaded``: a sync one in a daemon thread (it may block)."""
    if threaded and not spec.is_async:
        return await call_in_daemon_thread(spec.fn, kwargs, f"trellis step {spec.name}")
    result = spec.fn(**kwargs)
    if spec.is_async:
        result = await result
    return result


class _Part:
    """The events of one part of a step (an element or a round): started when made,
    finished once by :meth:`end` (later calls do nothing); ``perf``: the run's
    ``Clock.perf``."""

    __slots__ = ("emit", "index", "perf", "round", "run_id", "started", "step")

    def __init__(
        self,
        emit: Emitter,
        perf: Callable[[], float],
        run_id: str,
        step: str,
        index: int | None,
        round_: int | None,
    ) -> None:
        self.emit: Emitter | None = emit
        self.perf = perf
        self.run_id, self.step, self.index, self.round = run_id, step, index, round_
        self.started = perf()
        emit(StepPartStarted(run_id=run_id, step=step, index=index, round=round_))

    def end(self, status: str, exc: BaseException | None = None) -> None:
        emit, self.emit = self.emit, None
        if emit is None:
            return
        error = None if exc is None else f"{type(exc).__name__}: {exc}"
        emit(
            StepPartFinished(
                run_id=self.run_id,
                step=self.step,
                index=self.index,
                round=self.round,
                status=status,
                duration_s=self.perf() - self.started,
                error=error,
            )
        )
