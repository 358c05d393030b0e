"""OpenTelemetry spans from the engine's events (the SDK's in-memory exporter)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="needs trellis-flows[otel]")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402


class Verdict(BaseModel):
    label: str
    score: int


async def _no_sleep(_: float) -> None:
    return None


def _tracer() -> tuple[object, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def _flow() -> tl.Flow:
    flow = tl.Flow("traced", inputs={"text": str}, model="small")

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(  # type: ignore[no-any-return]
            f"classify {text}", output=Verdict, temperature=0.2, max_tokens=200
        )

    @flow.step(when=lambda classify: classify.score > 1000)
    def escalate(classify: Verdict) -> str:
        return classify.label

    return flow


async def test_run_step_and_attempt_spans_nest_with_genai_attributes() -> None:
    tracer, exporter = _tracer()
    models = {"small": "sim:small?rate_limit=0.6&seed=3"}
    async with tl.Engine(models=models, tracing=tracer, sleep=_no_sleep, seed=1) as engine:
        parent_tracer = tracer
        with parent_tracer.start_as_current_span("web request") as request_span:  # type: ignore[attr-defined]
            result = await engine.run(_flow(), {"text": "ok"})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    run = spans[f"run {result.run_id}"]
    assert run.parent is not None and run.parent.span_id == request_span.get_span_context().span_id
    step = spans["step classify"]
    assert step.parent is not None and step.parent.span_id == run.context.span_id
    attempts = [s for s in exporter.get_finished_spans() if s.name == "chat small"]
    assert len(attempts) == len(result.calls) > 1
    for span, call in zip(attempts, result.calls, strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == step.context.span_id
        attrs = span.attributes or {}
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "sim"
        assert attrs["gen_ai.request.model"] == "small"
        assert attrs["gen_ai.request.temperature"] == 0.2
        assert attrs["gen_ai.request.max_tokens"] == 200
        assert attrs["trellis.attempt"] == call.attempt
        assert attrs["trellis.run.id"] == result.run_id
        assert attrs["gen_ai.usage.output_tokens"] == call.output_tokens
        if call.outcome != "ok":
            assert attrs["error.type"] == attrs["trellis.failure_mode"] == "rate_limit"
            assert "gen_ai.response.model" not in attrs  # no reply came
        else:
            assert attrs["gen_ai.response.model"] == "small"
            assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    waits = [e for e in step.events if e.name == "trellis.retry_wait"]
    assert len(waits) == len(result.calls) - 1
    skipped = spans["step escalate"].attributes or {}
    assert skipped["trellis.decision.outcome"] == "skip"
    assert "classify" in str(skipped["trellis.decision.values"])


async def test_no_content_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    tracer, exporter = _tracer()
    async with tl.Engine(models={"small": "sim:small"}, tracing=tracer) as engine:
        await engine.run(_flow(), {"text": "secret prompt text"})
    for span in exporter.get_finished_spans():
        assert "secret prompt text" not in str(dict(span.attributes or {}))


async def test_a_failed_step_span_has_the_error_type() -> None:
    tracer, exporter = _tracer()
    flow = tl.Flow("fails", inputs={"n": int})

    @flow.step
    def divide(n: int) -> float:
        return 1 / n

    async with tl.Engine(tracing=tracer) as engine:
        await engine.run(flow, {"n": 0})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert (spans["step divide"].attributes or {})["error.type"] == "StepError"
    assert not spans["step divide"].status.is_ok


def test_tracing_without_opentelemetry_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(tl.ConfigurationError, match=r"pip install 'trellis-flows\[otel\]'"):
        tl.Engine(tracing=True)
    tl.Engine()  # without tracing= nothing needs it


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("provider", "model", "id_prefix", "finish"),
    [
        ("openai", "gpt-5-mini", "chatcmpl-", "stop"),
        ("anthropic", "claude-opus-5", "msg_01", "tool_use"),
    ],
)
async def test_an_attempt_span_has_the_reply_id_model_and_finish_over_http(
    provider: str, model: str, id_prefix: str, finish: str, stream: bool
) -> None:
    """Against the mock server (real HTTP), plain and streamed: the span carries what the
    provider said of its reply (gen_ai.response.id / model / finish_reasons)."""
    from trellis.mockserver import MockServer

    tracer, exporter = _tracer()
    async with MockServer(seed=5) as server:
        base = server.openai_base_url if provider == "openai" else server.anthropic_base_url
        binding = {"model": f"{provider}:{model}", "base_url": base, "stream": stream}
        async with tl.Engine(models={"small": binding}, tracing=tracer, seed=1) as engine:
            result = await engine.run(_flow(), {"text": "ok"})
    assert result.ok, result.error
    (span,) = [s for s in exporter.get_finished_spans() if s.name == f"chat {model}"]
    attrs = span.attributes or {}
    assert str(attrs["gen_ai.response.id"]).startswith(id_prefix)
    assert str(attrs["gen_ai.response.model"]).startswith(model)
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == (finish,)  # type: ignore[arg-type]


async def _traced_reask(first_reply: str, text: str) -> InMemorySpanExporter:
    """A run whose one structured call gets ``first_reply`` (rejected), then a valid one."""
    replies = iter([first_reply, '{"label": "ok", "score": 3}'])
    model = tl.FunctionModel(lambda request: next(replies), name="fn")
    flow = tl.Flow("reasked", inputs={"text": str}, model="fn")

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(f"classify {text}", output=Verdict)  # type: ignore[no-any-return]

    tracer, exporter = _tracer()
    async with tl.Engine(models={"fn": model}, tracing=tracer) as engine:
        result = await engine.run(flow, {"text": text})
    assert result.ok, result.error
    return exporter


async def test_a_reask_is_an_event_on_the_step_span_without_the_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    exporter = await _traced_reask('{"label": "SECRET-REPLY"}', "ok")
    step = next(s for s in exporter.get_finished_spans() if s.name == "step classify")
    (reask,) = [e for e in step.events if e.name == "trellis.reask"]
    attrs = dict(reask.attributes or {})
    assert attrs == {
        "trellis.attempt": 1,
        "trellis.reask": 1,
        "trellis.failure_mode": "invalid",
        "gen_ai.request.model": "fn",
    }
    assert "SECRET-REPLY" not in str(
        [(s.attributes, s.events) for s in exporter.get_finished_spans()]
    )


async def test_content_is_recorded_when_the_conventions_switch_opts_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    exporter = await _traced_reask('{"label": "first"}', "the shared prompt")
    first, second = [s for s in exporter.get_finished_spans() if s.name == "chat fn"]
    sent = json.loads(str((first.attributes or {})["gen_ai.input.messages"]))
    assert sent[-1]["role"] == "user"
    assert "the shared prompt" in sent[-1]["parts"][0]["content"]
    (reply,) = json.loads(str((first.attributes or {})["gen_ai.output.messages"]))
    assert reply["role"] == "assistant" and reply["finish_reason"] == "stop"
    assert reply["parts"] == [{"type": "text", "content": '{"label": "first"}'}]
    # the re-ask's conversation: the rejected reply, then what the model is told of it
    resent = json.loads(str((second.attributes or {})["gen_ai.input.messages"]))
    assert [m["role"] for m in resent[-3:]] == ["user", "assistant", "user"]
    assert resent[-2]["parts"][0]["content"] == '{"label": "first"}'


async def test_an_explicit_capture_content_false_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trellis.engine.tracing import TracingObserver

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    tracer, exporter = _tracer()
    observer = TracingObserver(tracer, capture_content=False)
    async with tl.Engine(models={"small": "sim:small"}, tracing=observer) as engine:
        await engine.run(_flow(), {"text": "secret prompt text"})
    for span in exporter.get_finished_spans():
        assert "secret prompt text" not in str(dict(span.attributes or {}))


async def test_a_taken_branch_span_has_the_decision_and_the_values_it_read() -> None:
    flow = tl.Flow("router", inputs={"question": str})

    @flow.step
    def route(question: str) -> str:
        return "research" if "?" in question else "direct"

    @flow.step(when=tl.branch("route", "direct"))
    def direct(question: str) -> str:
        return "answer"

    @flow.step(when=tl.branch("route", "research"))
    def research(question: str) -> str:
        return "researched"

    @flow.step
    def answer(direct: str | None, research: str | None) -> str:
        return direct or research or "nothing"

    tracer, exporter = _tracer()
    async with tl.Engine(tracing=tracer) as engine:
        result = await engine.run(flow, {"question": "what?"})
    assert result.ok, result.error
    spans = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    taken = spans["step research"]
    assert taken["trellis.decision.outcome"] == "run"
    assert json.loads(str(taken["trellis.decision.values"])) == {"route": "research"}
    assert "research" in str(taken["trellis.reason"])
    assert spans["step direct"]["trellis.decision.outcome"] == "skip"
    assert "trellis.decision.outcome" not in spans["step route"]  # no condition, no decision


async def test_mapped_elements_and_loop_rounds_are_spans_holding_their_attempts() -> None:
    flow = tl.Flow("parts", inputs={"texts": list[str]}, model="small")

    @flow.step(map_over="texts", on_error="collect")
    async def classify(texts: str, llm: tl.LLM) -> Verdict:
        if texts == "bad":
            raise ValueError("no verdict for bad")
        return await llm.generate(f"classify {texts}", output=Verdict)  # type: ignore[no-any-return]

    @flow.step(max_rounds=2)
    async def polish(classify: list[Any], llm: tl.LLM, round: tl.Round[Any]) -> str:
        return await llm.generate(f"polish round {round.number}")  # type: ignore[no-any-return]

    tracer, exporter = _tracer()
    async with tl.Engine(models={"small": "sim:small"}, tracing=tracer) as engine:
        result = await engine.run(flow, {"texts": ["a", "bad", "c"]})
    assert result.ok, result.error
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    step = by_name["step classify"]
    for n in range(3):
        element = by_name[f"step classify[{n}]"]
        assert element.parent is not None and element.parent.span_id == step.context.span_id
        assert (element.attributes or {})["trellis.element"] == n
    failed = by_name["step classify[1]"]
    assert (failed.attributes or {})["trellis.step.status"] == "failed"
    assert (failed.attributes or {})["error.type"] == "ValueError"
    assert failed.status.status_code.name == "ERROR"
    attempts = [s for s in spans if s.name == "chat small"]
    parents = {by_name[f"step classify[{n}]"].context.span_id for n in (0, 2)}
    parents |= {by_name[f"step polish round {r}"].context.span_id for r in (1, 2)}
    assert len(attempts) == 4
    assert {a.parent.span_id for a in attempts if a.parent is not None} == parents
    loop = by_name["step polish"]
    for r in (1, 2):
        round_span = by_name[f"step polish round {r}"]
        assert round_span.parent is not None and round_span.parent.span_id == loop.context.span_id
        assert (round_span.attributes or {})["trellis.step.status"] == "done"
