"""OpenTelemetry traces of runs: one more observer of the engine's events.

``tl.Engine(tracing=True)`` (the global tracer provider) or ``tracing=<Tracer>`` adds a
:class:`TracingObserver`: a span per run, per step (a skipped step is a zero-length span
with its decision), per mapped element and loop round (under its step), and per LLM
attempt (under its element or round, else its step), a CLIENT span named
``"{gen_ai.operation.name} {gen_ai.request.model}"`` with the GenAI semantic-convention
attributes the attempt knows (provider, request model, temperature, max tokens, input and
output tokens, error type; when a reply came, the response's model, id and finish
reasons) and Trellis's own (``trellis.run.id``, ``trellis.step``, ``trellis.attempt``,
``trellis.failure_mode``, ``trellis.cost.usd``, ``trellis.source``).
A retry wait and a re-ask are events on the step's span. A run's span is started under
the context current when the run started, so a run inside a traced request nests under it.

Content (prompts, replies) is recorded only when opted in, by the conventions' switch
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (or
``TracingObserver(tracer, capture_content=True)``): then ``gen_ai.input.messages`` and
``gen_ai.output.messages``. API keys never reach an event. The module needs
``opentelemetry-api`` (the ``[otel]`` extra): without it ``tracing=`` is a
configuration error, and without ``tracing=`` nothing here is imported or run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from trellis.engine.events import (
    AttemptFinished,
    AttemptReasked,
    AttemptRetried,
    AttemptStarted,
    Event,
    RunFinished,
    StepFailed,
    StepFinished,
    StepPartFinished,
    StepPartStarted,
    StepSkipped,
    StepStarted,
)
from trellis.engine.results import Decision
from trellis.errors import ConfigurationError
from trellis.models.base import ModelResponse
from trellis.models.parts import message_parts, reply_parts
from trellis.types import Message

__all__ = ["TracingObserver", "tracing_observer"]

_TRACER_NAME = "trellis"


def tracing_observer(tracing: Any) -> TracingObserver:
    """The observer for ``Engine(tracing=...)``: True (the global tracer provider), a
    ``Tracer``, or a ready :class:`TracingObserver`."""
    if isinstance(tracing, TracingObserver):
        return tracing
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ConfigurationError(
            "tracing= needs OpenTelemetry: pip install 'trellis-flows[otel]'"
        ) from exc
    tracer = trace.get_tracer(_TRACER_NAME) if tracing is True else tracing
    return TracingObserver(tracer)


#: The GenAI semantic conventions' opt-in for prompt and reply content in telemetry.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def capture_content_from_env() -> bool:
    """Whether ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in (``true``)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def _input_messages(messages: tuple[Message, ...]) -> str:
    """``gen_ai.input.messages``: the conversation as the conventions' JSON parts."""
    return json.dumps(message_parts(messages), ensure_ascii=False, default=str)


def _output_messages(response: ModelResponse) -> str:
    """``gen_ai.output.messages``: the reply (text and tool calls) with its finish reason."""
    return json.dumps(reply_parts(response), ensure_ascii=False, default=str)


def _decision_attributes(attributes: dict[str, Any], decision: Decision) -> None:
    """A step's routing decision: its kind, outcome and the values it read (JSON)."""
    attributes["trellis.decision.kind"] = decision.kind
    attributes["trellis.decision.outcome"] = decision.outcome
    attributes["trellis.decision.values"] = json.dumps(
        decision.values, default=repr, sort_keys=True
    )


class TracingObserver:
    """Turns a run's events into spans on ``tracer``. With ``capture_content`` (default:
    ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), an attempt's span also
    has the messages sent (``gen_ai.input.messages``) and the reply
    (``gen_ai.output.messages``); without it, no prompt or reply content is recorded."""

    wants_parts = True  # a span per mapped element and loop round (see Emitter)

    def __init__(self, tracer: Any, *, capture_content: bool | None = None) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        self.tracer = tracer
        self.capture_content = (
            capture_content_from_env() if capture_content is None else capture_content
        )
        self._runs: dict[str, Any] = {}
        self._steps: dict[tuple[str, str], Any] = {}
        self._attempts: dict[tuple[str, str, int, int], Any] = {}
        #: Open spans of mapped elements and loop rounds: (run, step, index, round).
        self._parts: dict[tuple[str, str, int | None, int | None], Any] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self._finish_run(event)
            return
        run = self._run_span(event.run_id)
        if isinstance(event, StepStarted):
            started: dict[str, Any] = {"trellis.run.id": event.run_id, "trellis.step": event.step}
            if event.decision is not None:  # the route taken, and why
                started["trellis.reason"] = event.decision.reason
                _decision_attributes(started, event.decision)
            self._steps[(event.run_id, event.step)] = self._start(
                f"step {event.step}", run, started
            )
        elif isinstance(event, StepPartStarted):
            step_span = self._steps.get((event.run_id, event.step), run)
            where = f"[{event.index}]" if event.index is not None else f" round {event.round}"
            part: dict[str, Any] = {"trellis.run.id": event.run_id, "trellis.step": event.step}
            if event.index is not None:
                part["trellis.element"] = event.index
            if event.round is not None:
                part["trellis.round"] = event.round
            key = (event.run_id, event.step, event.index, event.round)
            self._parts[key] = self._start(f"step {event.step}{where}", step_span, part)
        elif isinstance(event, StepPartFinished):
            span = self._parts.pop((event.run_id, event.step, event.index, event.round), None)
            if span is not None:
                span.set_attribute("trellis.step.status", event.status)
                if event.status == "failed":
                    span.set_attribute("error.type", (event.error or "").partition(":")[0])
                    span.set_status(
                        self._trace.Status(self._trace.StatusCode.ERROR, event.error or "failed")
                    )
                span.end()
        elif isinstance(event, StepFinished):
            span = self._steps.pop((event.run_id, event.step), None)
            if span is not None:
                span.set_attribute("trellis.cost.usd", event.cost_usd)
                span.set_attribute("trellis.attempts", event.attempts)
                span.end()
        elif isinstance(event, StepFailed):
            span = self._steps.pop((event.run_id, event.step), None)
            if span is None:  # a condition raised before the step started
                span = self._start(f"step {event.step}", run, {"trellis.step": event.step})
            span.set_attribute("error.type", event.error.type)
            if event.error.mode:
                span.set_attribute("trellis.failure_mode", event.error.mode)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error.message))
            span.end()
        elif isinstance(event, StepSkipped):
            attributes: dict[str, Any] = {
                "trellis.run.id": event.run_id,
                "trellis.step": event.step,
                "trellis.step.status": event.status,
                "trellis.reason": event.reason,
            }
            if event.decision is not None:
                _decision_attributes(attributes, event.decision)
            self._start(f"step {event.step}", run, attributes).end()
        elif isinstance(event, AttemptStarted):
            self._start_attempt(event, run)
        elif isinstance(event, AttemptFinished):
            self._finish_attempt(event)
        elif isinstance(event, AttemptRetried):
            span = self._steps.get((event.run_id, event.step))
            if span is not None:
                span.add_event(
                    "trellis.retry_wait",
                    {
                        "trellis.attempt": event.attempt,
                        "trellis.failure_mode": event.mode,
                        "trellis.wait_s": event.wait_s,
                        "gen_ai.request.model": event.model,
                    },
                )
        elif isinstance(event, AttemptReasked):
            span = self._steps.get((event.run_id, event.step))
            if span is not None:  # the error is not recorded: it may quote the reply
                span.add_event(
                    "trellis.reask",
                    {
                        "trellis.attempt": event.attempt,
                        "trellis.reask": event.reask,
                        "trellis.failure_mode": event.mode,
                        "gen_ai.request.model": event.model,
                    },
                )

    # -- spans ----------------------------------------------------------------------------

    def _run_span(self, run_id: str) -> Any:
        span = self._runs.get(run_id)
        if span is None:  # the first event of a run: under the caller's current context
            span = self.tracer.start_span(f"run {run_id}", attributes={"trellis.run.id": run_id})
            self._runs[run_id] = span
        return span

    def _parent(
        self, run_id: str, step: str, index: int | None, round_: int | None, run: Any
    ) -> Any:
        """An attempt's parent: its element's or round's span, else its step's, else the
        run's."""
        if index is not None or round_ is not None:
            part = self._parts.get((run_id, step, index, round_))
            if part is not None:
                return part
        return self._steps.get((run_id, step), run)

    def _start(self, name: str, parent: Any, attributes: dict[str, Any]) -> Any:
        ctx = self._trace.set_span_in_context(parent)
        return self.tracer.start_span(name, context=ctx, attributes=attributes)

    def _start_attempt(self, event: AttemptStarted, run: Any) -> None:
        parent = self._parent(event.run_id, event.step, event.index, event.round, run)
        provider, _, model = event.model.partition(":")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model or provider,
            "trellis.run.id": event.run_id,
            "trellis.step": event.step,
            "trellis.attempt": event.attempt,
        }
        if event.temperature is not None:
            attributes["gen_ai.request.temperature"] = event.temperature
        if event.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = event.max_tokens
        if event.index is not None:
            attributes["trellis.element"] = event.index
        if event.round is not None:
            attributes["trellis.round"] = event.round
        if self.capture_content and event.messages:
            attributes["gen_ai.input.messages"] = _input_messages(event.messages)
        ctx = self._trace.set_span_in_context(parent)
        span = self.tracer.start_span(
            f"chat {model or provider}",
            context=ctx,
            kind=self._trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        self._attempts[(event.run_id, event.step, event.call, event.attempt)] = span

    def _finish_attempt(self, event: AttemptFinished) -> None:
        record = event.record
        key = (event.run_id, record.step, record.call, record.attempt)
        span = self._attempts.pop(key, None)
        if span is None:  # a cache hit: no request was sent, a span of its own
            run = self._run_span(event.run_id)
            parent = self._parent(event.run_id, record.step, record.index, record.round, run)
            provider, _, model = record.model.partition(":")
            span = self._start(
                f"chat {model or provider}",
                parent,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model or provider,
                    "trellis.run.id": event.run_id,
                    "trellis.step": record.step,
                    "trellis.attempt": record.attempt,
                },
            )
        response = event.response
        if response is not None:  # what the provider says of its reply
            if response.model:  # as the request model is named: without "provider:"
                provider = record.model.partition(":")[0]
                answered = response.model.removeprefix(f"{provider}:")
                span.set_attribute("gen_ai.response.model", answered)
            if response.response_id:
                span.set_attribute("gen_ai.response.id", response.response_id)
            finish = response.raw_finish_reason or response.finish_reason
            span.set_attribute("gen_ai.response.finish_reasons", [finish])
            if self.capture_content:
                span.set_attribute("gen_ai.output.messages", _output_messages(response))
        span.set_attribute("gen_ai.usage.input_tokens", record.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.output_tokens)
        span.set_attribute("trellis.source", record.source)
        if record.cost_usd is not None:
            span.set_attribute("trellis.cost.usd", record.cost_usd)
        if record.outcome != "ok":
            span.set_attribute("error.type", record.outcome)
            span.set_attribute("trellis.failure_mode", record.outcome)
            span.set_status(
                self._trace.Status(self._trace.StatusCode.ERROR, record.error or record.outcome)
            )
        span.end()

    def _finish_run(self, event: RunFinished) -> None:
        span = self._run_span(event.run_id)
        del self._runs[event.run_id]
        result = event.result
        span.set_attribute("trellis.flow", result.flow)
        span.set_attribute("trellis.run.status", result.status)
        span.set_attribute("trellis.cost.usd", result.usage.cost_usd)
        if result.error is not None:
            span.set_attribute("error.type", result.error.type)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, result.error.message))
        span.end()
