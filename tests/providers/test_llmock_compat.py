"""Wire compatibility with an independent implementation of both APIs: the clients against
LLMock (a third-party mock of the OpenAI and Anthropic HTTP APIs, from the test extra),
for plain, structured, tool and streamed replies and for its injected faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from trellis.errors import (
    AuthenticationError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)
from trellis.models.base import Message, ModelRequest, ToolSpec
from trellis.providers._base import HTTPModel
from trellis.providers.anthropic import AnthropicModel
from trellis.providers.openai import OpenAIModel

llmock_testing = pytest.importorskip("llmock.testing")
scenarios = pytest.importorskip("llmock.scenarios")

SCHEMA = {
    "title": "Verdict",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["yes", "no"]},
        "score": {"type": "integer"},
    },
    "required": ["label", "score"],
}
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
PROVIDERS = [(OpenAIModel, "openai", "gpt-4o-mini"), (AnthropicModel, "anthropic", "claude-x")]


@pytest.fixture(scope="module")
def llmock() -> Iterator[Any]:
    with llmock_testing.LLMockServer() as server:
        yield server


@pytest.fixture
def mock(llmock: Any) -> Iterator[Any]:
    llmock.state.scenarios.clear()
    yield llmock
    llmock.state.scenarios.clear()


def _model(mock: Any, cls: type[HTTPModel], provider: str, name: str, **opts: Any) -> Any:
    options = {"base_url": mock.base_url(provider), "api_key": "test-key-0000", **opts}
    return cls(name, options)


def _request(model: HTTPModel, **kw: Any) -> ModelRequest:
    return ModelRequest(messages=(Message("user", "Is it raining?"),), model=model.model, **kw)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("cls", "provider", "name"), PROVIDERS)
async def test_plain_structured_and_tool_replies(
    mock: Any, cls: type[HTTPModel], provider: str, name: str, stream: bool
) -> None:
    model = _model(mock, cls, provider, name, stream=stream)
    try:
        plain = await model.complete(_request(model, max_tokens=64))
        structured = await model.complete(
            _request(model, output_schema=SCHEMA, schema_name="Verdict")
        )
        tooled = await model.complete(_request(model, tools=(WEATHER,), tool_choice="required"))
    finally:
        await model.aclose()
    assert plain.text and plain.finish_reason == "stop"
    assert plain.usage.output_tokens > 0
    verdict = json.loads(structured.text)
    assert verdict["label"] in ("yes", "no") and isinstance(verdict["score"], int)
    assert structured.finish_reason == "stop"
    assert tooled.finish_reason == "tool_calls"
    assert tooled.tool_calls[0].name == "get_weather"
    assert "city" in json.loads(tooled.tool_calls[0].arguments)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (lambda: scenarios.Fail(429, retry_after=2.5), RateLimitError),
        (lambda: scenarios.Fail(529), OverloadedError),
        (lambda: scenarios.Fail(500), OverloadedError),
        (lambda: scenarios.Fail(401), AuthenticationError),
        (
            lambda: scenarios.Fail(
                429, code="insufficient_quota", message="You exceeded your current quota"
            ),
            QuotaExceededError,
        ),
        (
            lambda: scenarios.Fail(
                400, code="context_length_exceeded", message="prompt is too long: 9 > 8 maximum"
            ),
            ContextOverflowError,
        ),
    ],
)
@pytest.mark.parametrize(("cls", "provider", "name"), PROVIDERS)
async def test_http_faults(
    mock: Any,
    cls: type[HTTPModel],
    provider: str,
    name: str,
    fault: Any,
    expected: type[ModelError],
) -> None:
    mock.state.scenarios.add(fault())
    model = _model(mock, cls, provider, name)
    try:
        with pytest.raises(expected) as info:
            await model.complete(_request(model))
    finally:
        await model.aclose()
    if isinstance(info.value, RateLimitError):
        assert info.value.retry_after == 2.5


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncate", OverloadedError),
        ("disconnect", OverloadedError),
        ("malformed", OverloadedError),
        ("stall", ModelTimeoutError),
    ],
)
@pytest.mark.parametrize(("cls", "provider", "name"), PROVIDERS)
async def test_stream_faults(
    mock: Any, cls: type[HTTPModel], provider: str, name: str, kind: str, expected: type
) -> None:
    mock.state.scenarios.add(scenarios.StreamFault(kind, after_chunks=1, stall_seconds=1.0))
    model = _model(mock, cls, provider, name, stream=True, stream_idle_timeout=0.2)
    try:
        with pytest.raises(expected, match=r"partial reply discarded|RemoteProtocolError|JSON"):
            await model.complete(_request(model))
    finally:
        await model.aclose()
