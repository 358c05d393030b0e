"""The LLM handle a step receives: one call = resolve role -> attempts -> validate -> account.

Per model in the chain (the role's model, then its fallbacks)::

    model's circuit breaker -> reserve budget -> send (per-attempt deadline) -> record -> classify
      rate limit, timeout, connection  -> wait retry-after / backoff, same request
      overloaded                       -> backoff, same request; with a fallback left,
                                          the next model after `overloaded_attempts`
      refusal, truncated, overflow     -> the next model (never the identical request)
      bad request                      -> raise at once
      auth, quota                      -> raise at once; the model is stopped for good
      malformed / invalid output       -> re-ask with the error, bounded by `reasks`

Transient failures are retried until the call's ``RetryPolicy.retry_deadline`` (failed
attempts' latency plus waits) is used up, or ``max_attempts`` when one is set. The breaker
(:mod:`trellis.engine.breaker`) is asked before the budget is reserved, so a call waiting
on a failing model holds no reservation.

Every attempt becomes a :class:`CallRecord`, so retries and re-asks are counted, not hidden.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trellis.engine.agent import AgentReply, run_agent
from trellis.engine.breaker import BreakerWaitExpired, CircuitBreaker, Outcome, Ticket
from trellis.engine.events import (
    AttemptFinished,
    AttemptReasked,
    AttemptRetried,
    AttemptStarted,
    Emitter,
    PartialOutput,
)
from trellis.engine.journal import request_hash
from trellis.engine.partial import PartialParser
from trellis.engine.results import CallRecord
from trellis.engine.scope import StepScope
from trellis.engine.structured import OutputSpec, ParseFailure, output_spec, reask_message
from trellis.errors import (
    ConfigurationError,
    FailureMode,
    ModelError,
    ModelTimeoutError,
    OutputValidationError,
    OverloadedError,
    RefusalError,
    ReplyAttempt,
    TruncatedError,
)
from trellis.flow.inject import LLM, Prompt
from trellis.flow.tools import Tool, as_tool
from trellis.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolSpec,
    Usage,
    new_request,
)
from trellis.models.parts import message_parts, reply_parts

__all__ = ["AgentReply", "EngineLLM"]


class EngineLLM(LLM):
    __slots__ = ("_scope",)

    def __init__(self, scope: StepScope) -> None:
        self._scope = scope

    def generate(
        self,
        prompt: Prompt,
        *,
        output: Any = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasks: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> Coroutine[Any, Any, Any]:
        # A plain method returning the call's coroutine, awaited exactly like an ``async
        # def``: one coroutine frame less per call in flight. (So a malformed prompt raises
        # its ConfigurationError where ``generate`` is called, not where it is awaited.)
        return self.complete_turn(
            _messages(prompt, system),
            output=output,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            reasks=reasks,
            fallbacks=fallbacks,
            timeout=timeout,
            seed=seed,
        )

    async def agent(
        self,
        prompt: Prompt,
        *,
        tools: Sequence[Tool | Callable[..., Any]],
        output: Any = None,
        model: str | None = None,
        system: str | None = None,
        max_turns: int = 10,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await run_agent(
            self,
            _messages(prompt, system),
            tools=[as_tool(t) for t in tools],
            output=output,
            model=model,
            max_turns=max_turns,
            temperature=temperature,
            max_tokens=max_tokens,
            fallbacks=fallbacks,
            timeout=timeout,
        )

    @property
    def scope(self) -> StepScope:
        return self._scope

    async def complete_turn(
        self,
        messages: list[Message],
        *,
        output: Any = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasks: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        seed: int | None = None,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str | None = None,
    ) -> Any:
        """One model call, in stages: replay (the journal), cache, attempts across the
        model chain, record (journal and cache).

        Returns the validated output (or text); with ``tools``, an :class:`AgentReply`
        carrying the tool calls, or the final reply's text when there are none.
        """
        scope = self._scope
        run = scope.run
        call_no = scope.next_call()  # numbered first: a call refused below still counts
        role = model or scope.default_model or "default"
        chain = run.services.models.chain(role, fallbacks)
        spec = output_spec(output) if output is not None else None
        policy = scope.policy
        call = _Call(
            scope,
            call_no,
            role,
            spec,
            temperature,
            max_tokens,
            seed,
            policy.reasks if reasks is None else reasks,
            policy.timeout if timeout is None else timeout,
            tuple(tools) if tools else (),
            tool_choice,
        )
        if run.journal is None and scope.cache is None:  # nothing to replay or record
            if len(chain) == 1:
                value = await call.on_model(chain[0], messages)
            else:
                value = await self._attempts(call, chain, messages)
            return self._returned(value)
        value_type: Any = AgentReply if tools else output
        where = self._locate(call, chain[0], messages)
        found, value = self._replay(where, value_type)
        if found:
            return self._returned(value)
        found, value = self._cached(where, call, chain[0], value_type)
        if not found:
            value = await self._attempts(call, chain, messages)
        self._record(where, call, value, cached=found)
        journal = run.journal
        if journal is not None and not found:
            # A paid reply is durable before the step sees it: code that follows without
            # yielding (CPU work, blocking I/O) cannot delay its record (group commit).
            await journal.recorded()
        return self._returned(value)

    # -- the stages of a durable call: replay -> cache -> attempts -> record -----------------

    def _locate(self, call: _Call, first: Model, messages: list[Message]) -> _Where:
        """The call's journal key and request digests (only what the run will use)."""
        scope = self._scope
        journal = scope.run.journal
        if journal is None and scope.cache is None:
            return _NOWHERE
        request = call.request(first, messages)
        digest = request_hash(first.name, request)
        cache_digest = None
        if scope.cache is not None:
            identity = scope.run.services.models.identity(first)
            cache_digest = request_hash(identity, request)
        key = scope.journal_key() if journal is not None else None
        return _Where(key, digest, cache_digest)

    def _replay(self, where: _Where, value_type: Any) -> tuple[bool, Any]:
        """Replay: a call this run made before (a resume) returns its recorded value, and
        its recorded attempts are counted again, without a request."""
        journal = self._scope.run.journal
        if journal is None or where.key is None or where.digest is None:
            return False, None
        replay = journal.lookup(where.key, where.digest, value_type)
        if replay is None:
            return False, None
        scope = self._scope
        for record in replay.attempts:
            scope.add_call(record)
            scope.run.guard.charge(record.total_tokens, record.cost_usd or 0.0)
        return True, replay.value

    def _cached(
        self, where: _Where, call: _Call, first: Model, value_type: Any
    ) -> tuple[bool, Any]:
        """Cache: the same request to the same model binding answered before (recorded as
        a free attempt with ``source="cache"``)."""
        if where.cache_digest is None:
            return False, None
        found, hit = self._scope.run.services.cache.lookup(where.cache_digest, value_type)
        if found:
            call.record_cache_hit(first)
        return found, hit

    async def _attempts(self, call: _Call, chain: list[Model], messages: list[Message]) -> Any:
        """Attempts: each model of the chain in turn, until one gives a valid reply."""
        last: ModelError | None = None
        for position, target in enumerate(chain):
            try:
                return await call.on_model(target, messages, last=position + 1 == len(chain))
            except ModelError as exc:
                last = exc
                more = position + 1 < len(chain)
                if more and (exc.mode.wants_other_model or isinstance(exc, OutputValidationError)):
                    continue
                raise
        assert last is not None
        raise last

    def _record(self, where: _Where, call: _Call, value: Any, *, cached: bool) -> None:
        """Record: the value and its attempts go to the journal; a live reply also goes to
        the response cache."""
        scope = self._scope
        journal = scope.run.journal
        if journal is not None and where.key is not None and where.digest is not None:
            journal.save_call(where.key, where.digest, value, call.records)
        if not cached and where.cache_digest is not None and scope.cache is not None:
            scope.run.services.cache.put(where.cache_digest, value, scope.cache)

    def _returned(self, value: Any) -> Any:
        scope = self._scope
        scope.record.usage.calls += 1
        scope.run.result.usage.calls += 1
        return value


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a call is recorded: its journal key and the digests of its first request
    (for the journal, and for the response cache by the model binding's identity)."""

    key: str | None
    digest: str | None
    cache_digest: str | None


_NOWHERE = _Where(None, None, None)


class _Call:
    """One ``generate`` call's attempts across the model chain."""

    __slots__ = (
        "adjusted",
        "attempt",
        "call_no",
        "max_tokens",
        "reasks",
        "records",
        "retry_spent",
        "role",
        "scope",
        "seed",
        "sent",
        "spec",
        "temperature",
        "timeout",
        "tool_choice",
        "tools",
        "waited",
    )

    def __init__(
        self,
        scope: StepScope,
        call_no: int,
        role: str,
        spec: OutputSpec | None,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        reasks: int,
        timeout: float | None,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: str | None = None,
    ) -> None:
        self.scope = scope
        self.tools = tools
        self.tool_choice = tool_choice
        self.call_no = call_no
        self.role = role
        self.spec = spec
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.reasks = reasks
        self.timeout = timeout
        self.attempt = 0
        self.records: list[CallRecord] = []  # every attempt of this call
        self.waited = 0.0  # the backoff / retry-after slept before the current attempt
        self.adjusted: tuple[str, ...] = ()  # how the provider changed the current attempt
        self.sent: tuple[Message, ...] = ()  # the current attempt's messages
        self.retry_spent = 0.0  # failed attempts' latency + waits: against retry_deadline

    def request(
        self,
        model: Model,
        messages: Sequence[Message],
        on_text: Callable[[str], None] | None = None,
        sent_as: str | None = None,
    ) -> ModelRequest:
        """The request of an attempt on ``model``; ``sent_as``: the provider's name of the
        model (the binding's name without the provider prefix), when known."""
        spec = self.spec
        if sent_as is None:
            sent_as = _sent_as(model)
        return new_request(
            tuple(messages),
            sent_as,
            spec.schema if spec is not None else None,
            spec.name if spec is not None else None,
            self.temperature,
            self.max_tokens,
            self.seed,
            self.tools,
            self.tool_choice,
            on_text,
        )

    async def on_model(
        self, model: Model, messages: Sequence[Message], *, last: bool = True
    ) -> Any:
        """The attempts on one model; ``last``: no fallback model follows it."""
        scope = self.scope
        run = scope.run
        policy = scope.policy
        services = run.services
        perf = services.clock.perf  # bound once: read twice per attempt
        breaker = services.models.breaker(model)
        sent_as = _sent_as(model)
        spec = self.spec
        timeout = self.timeout
        convo = messages  # copied when a re-ask adds to it
        transient = overloaded = reasked = 0
        bad: list[ReplyAttempt] | None = None  # the invalid replies (made at the first one)
        wait = 0.0
        error: ModelError | None = None
        while True:
            if not last and breaker.failing:
                raise error or OverloadedError(
                    f"not sent to {model.name}: its circuit breaker is open after repeated "
                    "overload failures; trying the fallback model",
                    model=model.name,
                )
            got = breaker.admit_now()  # the common case: let through at once, no wait
            if got is None:
                got = await self._wait_for(breaker, model, error)
            if isinstance(got, ModelError):
                raise _not_sent(got, model)
            ticket = got
            if ticket.waited:
                self.retry_spent += ticket.waited
                wait += ticket.waited
            emit = run.emit
            request = self.request(
                model, convo, None if emit is None else self._text_hook(emit), sent_as
            )
            self.sent = request.messages
            reservation = run.reserve_free()
            if reservation is None:
                try:
                    reservation = await run.reserve(model.name, request)
                except BaseException:
                    ticket.settle(Outcome.NEUTRAL)
                    raise
            self.attempt += 1
            self.waited, wait = wait, 0.0
            if emit is not None:
                emit(
                    AttemptStarted(
                        run_id=run.result.run_id,
                        step=scope.record.name,
                        call=self.call_no,
                        attempt=self.attempt,
                        model=model.name,
                        index=scope.index,
                        round=scope.round,
                        temperature=self.temperature,
                        max_tokens=self.max_tokens,
                        messages=request.messages,
                    )
                )
            started = perf()
            response: ModelResponse | None = None
            error = None
            try:
                if timeout is None or not timeout < math.inf:  # none, or never (inf, NaN)
                    response = await model.complete(request)
                else:
                    # The attempt's deadline, on a timer shared with the run's other calls
                    # (see _Deadlines): no timer, task lookup or context per attempt.
                    loop = asyncio.get_running_loop()
                    deadlines = run.deadlines
                    if deadlines is None or deadlines.loop is not loop:
                        deadlines = run.deadlines = _deadlines_for(loop)
                    task, prior, bucket = deadlines.arm(timeout)
                    try:
                        response = await model.complete(request)
                    except BaseException as exc:
                        if bucket.release(task, prior, exc):
                            raise TimeoutError from exc
                        raise
                    bucket.release(task, prior, None)
            except TimeoutError:
                error = ModelTimeoutError(
                    f"{model.name} did not answer within {timeout:g}s", model=model.name
                )
            except ModelError as exc:
                error = exc
            except asyncio.CancelledError:  # the run stopped: the request may still be billed
                ticket.settle(Outcome.NEUTRAL)
                latency = perf() - started
                self._record(model, Usage(), reservation, latency, "cancelled", "cancelled")
                raise
            except Exception as exc:  # a provider bug: never retried blindly
                ticket.settle(Outcome.NEUTRAL)
                run.settle(reservation, model.name, Usage())
                raise ConfigurationError(
                    f"model provider {model.name} raised {type(exc).__name__}: {exc}"
                ) from exc
            latency = perf() - started
            answered = error if error is not None else response  # every other path raised
            assert answered is not None
            self.adjusted = answered.adjustments
            ticket.settle(Outcome.OK if error is None else _breaker_outcome(error), error)

            if error is not None:
                usage = error.usage or Usage()
                self._record(model, usage, reservation, latency, error.mode, str(error))
                mode = error.mode
                if not mode.is_transient:
                    raise error
                self.retry_spent += latency
                if mode is FailureMode.OVERLOADED and not last:
                    overloaded += 1
                    if overloaded >= policy.overloaded_attempts:
                        raise error
                transient += 1
                if policy.max_attempts is not None and transient >= policy.max_attempts:
                    raise error
                retry_after = getattr(error, "retry_after", None)
                if mode is FailureMode.RATE_LIMIT and retry_after is not None:
                    wait = min(float(retry_after), policy.max_retry_after)
                else:
                    wait = policy.backoff(transient, services.rng)
                wait = self._bounded_wait(wait, error)
                if emit is not None:
                    emit(
                        AttemptRetried(
                            run_id=scope.run.result.run_id,
                            step=scope.record.name,
                            call=self.call_no,
                            attempt=self.attempt,
                            model=model.name,
                            mode=str(mode),
                            wait_s=wait,
                        )
                    )
                await scope.run.sleep(wait)
                self.retry_spent += wait
                continue

            assert response is not None
            usage = response.usage
            billed = response.cost_usd  # a recorded cost, when the provider knows it
            if response.finish_reason == "length":
                msg = f"{model.name} stopped at max_tokens ({self.max_tokens}); reply truncated"
                self._record(
                    model,
                    usage,
                    reservation,
                    latency,
                    FailureMode.TRUNCATED,
                    msg,
                    cost=billed,
                    response=response,
                )
                raise TruncatedError(msg, model=model.name, usage=usage)
            if response.finish_reason in ("refusal", "content_filter") or response.refusal:
                msg = f"{model.name} refused: {response.refusal or response.finish_reason}"
                self._record(
                    model,
                    usage,
                    reservation,
                    latency,
                    FailureMode.REFUSAL,
                    msg,
                    cost=billed,
                    response=response,
                )
                raise RefusalError(msg, model=model.name, usage=usage)
            if self.tools and response.tool_calls:
                self._record(
                    model, usage, reservation, latency, None, None, cost=billed, response=response
                )
                return AgentReply(text=response.text, tool_calls=list(response.tool_calls))
            if spec is None:
                self._record(
                    model, usage, reservation, latency, None, None, cost=billed, response=response
                )
                return AgentReply(text=response.text) if self.tools else response.text
            parsed = spec.parse(response.text)
            if not isinstance(parsed, ParseFailure):
                self._record(
                    model, usage, reservation, latency, None, None, cost=billed, response=response
                )
                return AgentReply(text=response.text) if self.tools else parsed
            self._record(
                model,
                usage,
                reservation,
                latency,
                parsed.mode,
                parsed.error,
                response.text,
                cost=billed,
                response=response,
            )
            if bad is None:
                bad = []
            bad.append(
                ReplyAttempt(
                    model=model.name,
                    text=response.text,
                    error=parsed.error,
                    mode=parsed.mode,
                    usage=usage,
                )
            )
            if reasked >= self.reasks:
                raise OutputValidationError(
                    f"{model.name} gave no valid {spec.name} after {reasked} re-ask(s): "
                    f"{_one_line(parsed.error)}",
                    attempts=bad,
                    model=model.name,
                )
            reasked += 1
            if emit is not None:
                emit(
                    AttemptReasked(
                        run_id=scope.run.result.run_id,
                        step=scope.record.name,
                        call=self.call_no,
                        attempt=self.attempt,
                        model=model.name,
                        mode=str(parsed.mode),
                        error=parsed.error,
                        reask=reasked,
                    )
                )
            convo = [
                *convo,
                Message("assistant", response.text),
                Message("user", reask_message(parsed, spec)),
            ]

    def _text_hook(self, emit: Emitter) -> Callable[[str], None]:
        """What a streaming provider calls with each piece of an attempt's reply: a token
        delta to the run's observers (and a partial output, for a structured call)."""
        scope = self.scope
        run_id = scope.run.result.run_id
        step = scope.record.name
        part = (scope.index, scope.round, self.call_no, self.attempt + 1)  # the one about to start
        parser = PartialParser(self.spec.tp) if self.spec is not None else None
        if parser is not None and not parser.enabled:
            parser = None

        def on_text(piece: str) -> None:
            emit.delta(run_id, step, piece, part)
            if parser is not None:
                value = parser.feed(piece)
                if value is not None:
                    emit(PartialOutput(run_id=run_id, step=step, value=value))

        return on_text

    async def _wait_for(
        self, breaker: CircuitBreaker, model: Model, error: ModelError | None
    ) -> Ticket | ModelError:
        """Wait on the breaker, within the call's retry deadline and the run's."""
        policy = self.scope.policy
        guard = self.scope.run.guard
        timeout = None
        if policy.retry_deadline is not None:
            timeout = policy.retry_deadline - self.retry_spent
        deadline = None if self.scope.run.unbudgeted else guard.deadline()
        monotonic = self.scope.run.services.clock.monotonic
        if deadline is not None:
            run_left = deadline - monotonic()
            timeout = run_left if timeout is None else min(timeout, run_left)
        try:
            return await breaker.acquire(timeout=timeout)
        except BreakerWaitExpired:
            if deadline is not None and monotonic() >= deadline:
                raise guard.time_exceeded() from None
            raise error or OverloadedError(
                f"{model.name} stayed unavailable: its circuit breaker was still open when "
                f"the call's retry deadline ({policy.retry_deadline:g}s) passed",
                model=model.name,
            ) from None

    def _bounded_wait(self, wait: float, error: ModelError) -> float:
        """``wait`` cut to what is left of the retry deadline and of the run's deadline;
        ``error`` is raised when the retry deadline is used up."""
        policy = self.scope.policy
        if policy.retry_deadline is not None:
            left = policy.retry_deadline - self.retry_spent
            if left <= 0:
                raise error
            wait = min(wait, left)
        run = self.scope.run
        deadline = run.guard.deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - run.services.clock.monotonic()))
        return wait

    def _record(
        self,
        model: Model,
        usage: Usage,
        reservation: Any,
        latency: float,
        mode: FailureMode | str | None,
        error: str | None,
        reply: str | None = None,
        cost: float | None = None,
        response: ModelResponse | None = None,
    ) -> None:
        cost = self.scope.run.settle(reservation, model.name, usage, cost)
        outcome = "ok" if mode is None else str(mode)
        self._add(model, usage, cost, latency, outcome, error=error, reply=reply, response=response)

    def record_cache_hit(self, model: Model) -> None:
        """A reply served from the response cache: recorded, costs nothing."""
        self.attempt += 1
        self._add(model, Usage(), 0.0, 0.0, "ok", source="cache")

    def _add(
        self,
        model: Model,
        usage: Usage,
        cost: float | None,
        latency: float,
        outcome: str,
        *,
        error: str | None = None,
        reply: str | None = None,
        source: str = "live",
        response: ModelResponse | None = None,
    ) -> None:
        scope = self.scope
        prompt = output = None
        if source == "live" and scope.run.services.record_prompts:
            prompt = message_parts(self.sent)
            output = reply_parts(response) if response is not None else None
        record = CallRecord(
            step=scope.record.name,
            call=self.call_no,
            attempt=self.attempt,
            model=model.name,
            role=self.role,
            outcome=outcome,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
            latency_s=latency,
            wait_s=self.waited,
            index=scope.index,
            round=scope.round,
            error=error,
            reply=reply,
            source=source,
            adjustments=list(self.adjusted) if source == "live" else [],
            prompt=prompt,
            output=output,
        )
        self.records.append(record)
        scope.add_call(record)
        emit = scope.run.emit
        if emit is not None:
            emit(AttemptFinished(run_id=scope.run.result.run_id, record=record, response=response))


#: Each event loop's deadlines, shared by every run on it (held by their scopes and by the
#: pending timers, not by this table): a run's own would keep its newest timer, and with
#: it the run's memory, until the timeout ran out.
_BY_LOOP: weakref.WeakValueDictionary[int, _Deadlines] = weakref.WeakValueDictionary()


def _deadlines_for(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    deadlines = _BY_LOOP.get(id(loop))
    if deadlines is None or deadlines.loop is not loop:  # none yet, or a dead loop's id
        deadlines = _BY_LOOP[id(loop)] = _Deadlines(loop)
    return deadlines


class _Deadlines:
    """The per-attempt deadlines (``RetryPolicy.timeout``) of the calls on one event loop.

    ``asyncio.timeout`` costs, per attempt, a timer (a heap entry and its handle with a
    copied context), two running-loop lookups and a ``Timeout`` object: with 10 000 calls
    in flight that is a good part of the makespan. Here deadlines that fall in the same
    millisecond share one timer, a :class:`_Bucket` of the tasks waiting on it, rounded up:
    an attempt is never cut short, and is stopped at most a millisecond after its deadline.
    When the timer fires, every task still in its bucket is cancelled, and the attempt
    turns that cancellation into ``TimeoutError`` exactly as ``asyncio.timeout`` does (only
    when no other cancellation was requested meanwhile). A bucket emptied before it fires
    cancels its timer, except the newest one, kept for the attempts that follow in the same
    millisecond (so attempts answered at once cost no timer each); it is cancelled when a
    newer bucket replaces it empty, or fires having nothing to do. Every run on an event
    loop shares its deadlines (:func:`_deadlines_for`), so at most that one idle timer is
    left behind however many runs end. A timeout that is not finite is no deadline.
    """

    __slots__ = ("__weakref__", "buckets", "context", "loop", "newest")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buckets: dict[int, _Bucket] = {}
        self.newest: _Bucket | None = None
        #: What the timers run in: their own empty context, not a copy of the arming
        #: task's (kept alive until the timer fires).
        self.context = contextvars.Context()

    def arm(self, timeout: float) -> tuple[asyncio.Task[Any], int, _Bucket]:
        """Start the current task's deadline, ``timeout`` seconds from now: the task, its
        pending cancellations (``Task.cancelling``) and the bucket to release it from."""
        loop = self.loop
        task = asyncio.current_task(loop)
        assert task is not None  # an attempt always runs in a task
        key = int((loop.time() + timeout) * 1000.0) + 1  # the next millisecond: never early
        bucket = self.newest
        if bucket is None or bucket.key != key:
            bucket = self.buckets.get(key) or self._new(key)
        bucket.tasks.add(task)
        return task, task.cancelling(), bucket

    def _new(self, key: int) -> _Bucket:
        bucket = _Bucket(self, key)
        self.buckets[key] = bucket
        old, self.newest = self.newest, bucket
        if old is not None and not old.tasks and not old.fired:
            old.drop()
        return bucket


class _Bucket:
    """The tasks whose attempt deadlines fall in one millisecond, and their one timer."""

    __slots__ = ("fired", "handle", "key", "owner", "tasks")

    def __init__(self, owner: _Deadlines, key: int) -> None:
        self.owner = owner
        self.key = key
        self.fired = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handle = owner.loop.call_at(key / 1000.0, self.fire, context=owner.context)

    def fire(self) -> None:
        """The deadline passed: cancel every attempt still waiting in the bucket."""
        self.fired = True
        owner = self.owner
        owner.buckets.pop(self.key, None)
        if owner.newest is self:
            owner.newest = None
        for task in self.tasks:
            task.cancel()

    def drop(self) -> None:
        self.handle.cancel()
        self.owner.buckets.pop(self.key, None)

    def release(self, task: asyncio.Task[Any], prior: int, exc: BaseException | None) -> bool:
        """End ``task``'s deadline, its attempt ended with ``exc`` (None: it returned);
        True when that is the cancellation the deadline caused (then a timeout)."""
        tasks = self.tasks
        tasks.discard(task)
        if self.fired:  # the task was in the bucket when it fired: it was cancelled
            return task.uncancel() <= prior and type(exc) is asyncio.CancelledError
        if not tasks and self.owner.newest is not self:
            self.drop()
        return False


def _sent_as(model: Model) -> str:
    """The provider's name of ``model``: its binding name without the provider prefix."""
    return model.name.partition(":")[2] or model.name


def _breaker_outcome(error: ModelError | None) -> Outcome:
    """What an attempt tells the model's circuit breaker about the server."""
    if error is None:
        return Outcome.OK
    mode = error.mode
    if mode in (FailureMode.AUTH, FailureMode.QUOTA):
        return Outcome.STOP
    if mode in (FailureMode.OVERLOADED, FailureMode.CONNECTION):
        return Outcome.FAILURE
    if mode is FailureMode.TIMEOUT:
        return Outcome.NEUTRAL
    return Outcome.OK  # a 429, a 400, a refusal: the server is serving


def _not_sent(stopped: ModelError, model: Model) -> ModelError:
    """The error for a request not sent because ``model`` failed with auth / quota before:
    the same class, naming the earlier failure."""
    message = (
        f"not sent to {model.name}: an earlier request to it failed with "
        f"{stopped.mode.value} ({_one_line(str(stopped))}); no further request goes to it"
    )
    return type(stopped)(message, model=model.name, status_code=stopped.status_code)


def _one_line(error: str) -> str:
    """A multi-line validation report as one line: 'header: - a: msg; - b: msg'."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else error
    return f"{lines[0]} {'; '.join(lines[1:4])}" + ("; ..." if len(lines) > 4 else "")


def _messages(prompt: Prompt, system: str | None) -> list[Message]:
    out: list[Message] = [Message("system", system)] if system else []
    if isinstance(prompt, str):
        out.append(Message("user", prompt))
        return out
    for item in prompt:
        if isinstance(item, Message):
            out.append(item)
        elif isinstance(item, Mapping) and item.get("role") in ("system", "user", "assistant"):
            out.append(Message(item["role"], str(item.get("content", ""))))  # type: ignore[arg-type]
        else:
            raise ConfigurationError(
                f"a prompt message must be tl.Message or {{'role': 'user'|'assistant'|'system', "
                f"'content': str}}, got {item!r}"
            )
    if not out:
        raise ConfigurationError("the prompt is empty")
    return out
