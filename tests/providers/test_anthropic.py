"""``anthropic:`` over real HTTP against the local scripted server: payloads, forced-tool
structured output, tools, stop reasons, streaming events, every fault mapping, keys, and a
whole flow through the engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.config import ModelBinding
from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)
from trellis.models.base import Message, ModelRequest, ToolCall, ToolSpec
from trellis.models.registry import ProviderRegistry
from trellis.providers.anthropic import AnthropicModel, AnthropicOptions

from .conftest import Reply, ScriptedServer, anthropic_error, message, named_sse, request

SECRET = "sk-ant-api03-SECRET-abcdef0123456789"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z

MakeModel = Callable[..., AnthropicModel]


@pytest.fixture
async def make(server: ScriptedServer) -> AsyncIterator[MakeModel]:
    models: list[AnthropicModel] = []

    def factory(**options: Any) -> AnthropicModel:
        model = AnthropicModel("claude-test", {"base_url": server.url, **options}, now=lambda: NOW)
        models.append(model)
        return model

    yield factory
    for model in models:
        await model.aclose()


class Topics(BaseModel):
    topics: list[str]


TOPICS_SCHEMA = Topics.model_json_schema()


def tool_use(name: str, input_: Any, id_: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


# -- plain requests -------------------------------------------------------------------------


async def test_plain_round_trip(
    server: ScriptedServer, make: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    server.add(Reply(json=message([{"type": "text", "text": "Hi!"}], usage=(20, 4))))
    model = make()
    req = ModelRequest(
        messages=(
            Message("system", "Be brief."),
            Message("user", "Hello"),
            Message("assistant", "Hi, how can I help?"),
            Message("system", "Answer in English."),
            Message("user", "Say hi"),
        ),
        model="claude-test",
        temperature=0.5,
        seed=3,  # not supported by the API: dropped
    )
    reply = await model.complete(req)
    assert reply.text == "Hi!"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (20, 4)
    assert reply.finish_reason == "stop"
    assert reply.model == "claude-test"
    sent = server.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == SECRET
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "claude-test",
        "max_tokens": 4096,
        "system": "Be brief.\n\nAnswer in English.",
        "temperature": 0.5,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi, how can I help?"}]},
            {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
        ],
    }
    assert SECRET not in repr(model)


async def test_max_tokens_option_version_and_v1_base_url(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(json=message()), Reply(json=message()))
    model = make(base_url=f"{server.url}/v1", max_tokens="1000", anthropic_version="2024-01-01")
    await model.complete(request())
    await model.complete(request(max_tokens=12))
    assert server.requests[0].path == "/v1/messages"
    assert server.requests[0].body["max_tokens"] == 1000
    assert server.requests[1].body["max_tokens"] == 12
    assert server.requests[0].headers["anthropic-version"] == "2024-01-01"
    assert "x-api-key" not in server.requests[0].headers


async def test_cached_input_tokens_count_as_input(server: ScriptedServer, make: MakeModel) -> None:
    body = message()
    body["usage"] = {
        "input_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 50,
        "output_tokens": 9,
    }
    server.add(Reply(json=body))
    reply = await make().complete(request())
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (155, 9)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "other"),
        ("a_future_reason", "other"),
        (None, "other"),
    ],
)
async def test_stop_reasons(
    server: ScriptedServer, make: MakeModel, stop: str | None, expected: str
) -> None:
    server.add(Reply(json=message(stop=stop)))
    reply = await make().complete(request())
    assert reply.finish_reason == expected
    assert reply.raw_finish_reason == stop


async def test_refusal(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=message([], stop="refusal")))
    reply = await make().complete(request())
    assert reply.finish_reason == "refusal"
    assert reply.refusal == "the model refused (stop_reason: refusal)"


# -- structured output ----------------------------------------------------------------------


async def test_structured_output_is_a_forced_tool_call(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(json=message([tool_use("Topics", {"topics": ["price", "ux"]})], stop="tool_use"))
    )
    reply = await make().complete(request(schema=TOPICS_SCHEMA, schema_name="Topics"))
    assert json.loads(reply.text) == {"topics": ["price", "ux"]}
    assert reply.finish_reason == "stop"  # the forced tool call is the answer
    assert reply.raw_finish_reason == "tool_use"
    assert reply.tool_calls == ()
    body = server.requests[0].body
    assert body["tools"] == [
        {
            "name": "Topics",
            "description": body["tools"][0]["description"],
            "input_schema": TOPICS_SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "Topics"}


async def test_structured_non_object_root_is_wrapped(
    server: ScriptedServer, make: MakeModel
) -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    server.add(Reply(json=message([tool_use("output", {"value": ["a", "b"]})], stop="tool_use")))
    reply = await make().complete(request(schema=schema))
    assert json.loads(reply.text) == ["a", "b"]
    sent = server.requests[0].body["tools"][0]["input_schema"]
    assert sent["type"] == "object"
    assert sent["properties"]["value"] == schema


async def test_structured_output_truncated_at_max_tokens(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(json=message([tool_use("Topics", {"topics": ["a"]})], stop="max_tokens")))
    reply = await make().complete(request(schema=TOPICS_SCHEMA, schema_name="Topics"))
    assert reply.finish_reason == "length"


# -- tools ----------------------------------------------------------------------------------


async def test_tool_round_trip(server: ScriptedServer, make: MakeModel) -> None:
    server.add(
        Reply(
            json=message(
                [
                    {"type": "text", "text": "Let me look."},
                    tool_use("lookup", {"q": "trellis", "n": 2}, "toolu_9"),
                ],
                stop="tool_use",
            )
        )
    )
    spec = ToolSpec("lookup", "Search", {"type": "object", "properties": {"q": {"type": "string"}}})
    req = ModelRequest(
        messages=(
            Message("user", "Find two things"),
            Message(
                "assistant",
                "Searching.",
                tool_calls=(
                    ToolCall("toolu_1", "lookup", '{"q": "a"}'),
                    ToolCall("toolu_2", "lookup", "not json"),
                ),
            ),
            Message("tool", "result a", tool_call_id="toolu_1"),
            Message("tool", "result b", tool_call_id="toolu_2"),
        ),
        model="claude-test",
        tools=(spec,),
        tool_choice="required",
    )
    reply = await make().complete(req)
    assert reply.finish_reason == "tool_calls"
    assert reply.text == "Let me look."
    assert reply.tool_calls == (ToolCall("toolu_9", "lookup", '{"q": "trellis", "n": 2}'),)
    body = server.requests[0].body
    assert body["tools"] == [
        {"name": "lookup", "description": "Search", "input_schema": spec.parameters}
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Find two things"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "lookup",
                    "input": {"arguments": "not json"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "result a"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "result b"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("lookup", {"type": "tool", "name": "lookup"}),
    ],
)
async def test_tool_choice(
    server: ScriptedServer, make: MakeModel, choice: str, sent: dict[str, Any]
) -> None:
    server.add(Reply(json=message()))
    spec = ToolSpec("lookup", "Search", {"type": "object", "properties": {}})
    await make().complete(request(tools=(spec,), tool_choice=choice))
    assert server.requests[0].body["tool_choice"] == sent


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected", "retry_after", "provider_text"),
    [
        (
            Reply(529, json=anthropic_error("overloaded_error", "Overloaded")),
            OverloadedError,
            None,
            "Overloaded",
        ),
        (
            Reply(500, json=anthropic_error("api_error", "Internal server error")),
            OverloadedError,
            None,
            "Internal server error",
        ),
        (
            Reply(
                429,
                json=anthropic_error("rate_limit_error", "Number of requests has exceeded"),
                headers={"retry-after": "12"},
            ),
            RateLimitError,
            12.0,
            "Number of requests has exceeded",
        ),
        (
            Reply(
                429,
                json=anthropic_error("rate_limit_error", "Output tokens per minute exceeded"),
                headers={
                    "anthropic-ratelimit-requests-remaining": "40",
                    "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
                    "anthropic-ratelimit-output-tokens-remaining": "0",
                    "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:26.5Z",
                },
            ),
            RateLimitError,
            6.5,
            "Output tokens per minute exceeded",
        ),
        (
            Reply(
                400,
                json=anthropic_error(
                    "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
                ),
            ),
            ContextOverflowError,
            None,
            "prompt is too long",
        ),
        (
            Reply(
                400,
                json=anthropic_error(
                    "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API.",
                ),
            ),
            QuotaExceededError,
            None,
            "credit balance is too low",
        ),
        (
            Reply(402, json=anthropic_error("billing_error", "Billing issue")),
            QuotaExceededError,
            None,
            "Billing issue",
        ),
        (
            Reply(401, json=anthropic_error("authentication_error", "invalid x-api-key")),
            AuthenticationError,
            None,
            "invalid x-api-key",
        ),
        (
            Reply(403, json=anthropic_error("permission_error", "Not allowed")),
            AuthenticationError,
            None,
            "Not allowed",
        ),
        (
            Reply(404, json=anthropic_error("not_found_error", "model: claude-nope")),
            BadRequestError,
            None,
            "model: claude-nope",
        ),
        (
            Reply(413, json=anthropic_error("request_too_large", "Request exceeds the maximum")),
            BadRequestError,
            None,
            "Request exceeds the maximum",
        ),
        (
            Reply(
                413,
                body="<html><head><title>413 Payload Too Large</title></head></html>",
                content_type="text/html",
            ),
            BadRequestError,
            None,
            "413 Payload Too Large",
        ),
        (
            Reply(400, json=anthropic_error("invalid_request_error", "messages: field required")),
            BadRequestError,
            None,
            "messages: field required",
        ),
        (
            Reply(504, json=anthropic_error("timeout_error", "Request timed out")),
            OverloadedError,
            None,
            "Request timed out",
        ),
        (Reply(408, body="Request Timeout"), ModelTimeoutError, None, "Request Timeout"),
    ],
)
async def test_http_faults_map_to_the_error_tree(
    server: ScriptedServer,
    make: MakeModel,
    reply: Reply,
    expected: type[ModelError],
    retry_after: float | None,
    provider_text: str,
) -> None:
    server.add(reply)
    with pytest.raises(ModelError) as info:
        await make().complete(request())
    error = info.value
    assert type(error) is expected
    assert error.status_code == reply.status
    assert provider_text in str(error)
    if isinstance(error, RateLimitError):
        assert error.retry_after == (pytest.approx(retry_after) if retry_after else None)


async def test_error_messages_never_contain_the_key(
    server: ScriptedServer, make: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    server.add(Reply(401, json=anthropic_error("authentication_error", f"bad key {SECRET}")))
    model = make()
    with pytest.raises(AuthenticationError) as info:
        await model.complete(request())
    assert SECRET not in str(info.value)
    assert "bad key [REDACTED]" in str(info.value)


def test_missing_key_for_the_official_api_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        ProviderRegistry().create(ModelBinding.parse("anthropic:claude-sonnet-4-0"))


async def test_base_url_from_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    server.add(Reply(json=message([{"type": "text", "text": "env"}])))
    model = ProviderRegistry().create(ModelBinding.parse("anthropic:claude-test?max_tokens=64"))
    try:
        reply = await model.complete(request())
    finally:
        await model.aclose()
    assert reply.text == "env"
    assert server.requests[0].body["max_tokens"] == 64


def test_options_and_registry() -> None:
    opts = AnthropicOptions.parse({"stream": "1", "max_tokens": "2048", "tpm": "40000"})
    assert (opts.stream, opts.max_tokens, opts.tpm) == (True, 2048, 40000.0)
    with pytest.raises(ConfigurationError, match="did you mean 'max_tokens'"):
        AnthropicOptions.parse({"max_token": "5"})
    with pytest.raises(ConfigurationError, match="invalid anthropic option max_tokens='0'"):
        AnthropicOptions.parse({"max_tokens": "0"})
    model = ProviderRegistry().create(
        ModelBinding.parse("anthropic:claude-test?base_url=http://127.0.0.1:1&rpm=50")
    )
    assert isinstance(model, AnthropicModel)
    assert model.limiter.rpm == 50.0
    assert model.endpoint == "http://127.0.0.1:1/v1/messages"


# -- streaming ------------------------------------------------------------------------------


def _stream(*blocks: tuple[str, dict[str, Any]], stop: str = "end_turn", end: bool = True) -> Any:
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-test",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ("ping", {"type": "ping"}),
        *blocks,
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        ),
    ]
    if end:
        events.append(("message_stop", {"type": "message_stop"}))
    return named_sse(events)


def _text_block(index: int, *parts: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        *[
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in parts
        ],
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def _tool_block(index: int, name: str, *parts: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": f"toolu_{index}",
                    "name": name,
                    "input": {},
                },
            },
        ),
        *[
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                },
            )
            for p in parts
        ],
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


async def test_streaming_text_with_usage(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(chunks=_stream(*_text_block(0, "Hello", ", world"))))
    reply = await make(stream=True).complete(request())
    assert reply.text == "Hello, world"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (25, 15)
    assert reply.finish_reason == "stop"
    assert server.requests[0].body["stream"] is True


async def test_streaming_structured_output_and_tool_calls(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(
            chunks=_stream(
                *_tool_block(0, "Topics", '{"topics": ', '["a", ', '"b"]}'),
                stop="tool_use",
            )
        ),
        Reply(
            chunks=_stream(
                *_text_block(0, "Checking."),
                *_tool_block(1, "lookup", '{"q": "x"}'),
                stop="tool_use",
            )
        ),
    )
    model = make(stream=True)
    structured = await model.complete(request(schema=TOPICS_SCHEMA, schema_name="Topics"))
    assert json.loads(structured.text) == {"topics": ["a", "b"]}
    assert structured.finish_reason == "stop"
    spec = ToolSpec("lookup", "Search", {"type": "object", "properties": {}})
    tooled = await model.complete(request(tools=(spec,)))
    assert tooled.text == "Checking."
    assert tooled.finish_reason == "tool_calls"
    assert tooled.tool_calls == (ToolCall("toolu_1", "lookup", '{"q": "x"}'),)


async def test_error_event_mid_stream(server: ScriptedServer, make: MakeModel) -> None:
    chunks = _stream(*_text_block(0, "Partial"), end=False)[:4] + named_sse(
        [("error", anthropic_error("overloaded_error", "Overloaded"))]
    )
    server.add(Reply(chunks=chunks))
    with pytest.raises(OverloadedError, match=r"mid-stream.*Overloaded"):
        await make(stream=True).complete(request())


async def test_stream_ending_without_message_stop_fails(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(chunks=_stream(*_text_block(0, "Partial"), end=False)))
    with pytest.raises(OverloadedError, match="before message_stop"):
        await make(stream=True).complete(request())


async def test_stalled_stream_hits_the_idle_timeout(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(chunks=_stream(*_text_block(0, "Partial"), end=False)[:3], stall=True))
    with pytest.raises(ModelTimeoutError, match="stalled"):
        await make(stream=True, stream_idle_timeout="0.1").complete(request())


async def test_streaming_http_error_before_the_stream(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(529, json=anthropic_error("overloaded_error", "Overloaded")))
    with pytest.raises(OverloadedError):
        await make(stream=True).complete(request())


# -- end to end -----------------------------------------------------------------------------


async def test_flow_end_to_end_overloaded_then_success(server: ScriptedServer, sleeps: Any) -> None:
    flow = tl.Flow("topics", inputs={"text": str})

    @flow.step
    async def topics(text: str, llm: tl.LLM) -> Topics:
        return await llm.generate(f"Topics of: {text}", output=Topics, model="large")

    server.add(
        Reply(529, json=anthropic_error("overloaded_error", "Overloaded")),
        Reply(
            json=message(
                [tool_use("Topics", {"topics": ["shipping"]})], stop="tool_use", usage=(30, 8)
            )
        ),
    )
    binding = {"model": "anthropic:claude-test", "base_url": server.url, "max_tokens": 300}
    async with tl.Engine(models={"large": binding}, sleep=sleeps, seed=0) as engine:
        result = await engine.run(flow, {"text": "Shipping was slow"})
    assert result.ok, result.error
    assert result["topics"] == Topics(topics=["shipping"])
    assert [c.outcome for c in result.calls] == ["overloaded", "ok"]
    assert len(sleeps.waits) == 1
    assert result.calls[1].wait_s == sleeps.waits[0]
    assert server.requests[1].body["tool_choice"] == {"type": "tool", "name": "Topics"}
    assert server.requests[1].body["max_tokens"] == 300


async def test_streamed_text_and_the_output_tools_json_reach_the_text_hook(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(chunks=_stream(*_text_block(0, "Hel", "lo"))),
        Reply(chunks=_stream(*_tool_block(0, "Topics", '{"topics": ', '["a"]}'), stop="tool_use")),
        Reply(
            chunks=_stream(
                *_text_block(0, "Checking."),
                *_tool_block(1, "lookup", '{"q": "x"}'),
                stop="tool_use",
            )
        ),
    )
    model = make(stream=True)
    pieces: list[str] = []
    await model.complete(request(on_text=pieces.append))
    assert pieces == ["Hel", "lo"]
    pieces.clear()
    await model.complete(request(schema=TOPICS_SCHEMA, schema_name="Topics", on_text=pieces.append))
    assert "".join(pieces) == '{"topics": ["a"]}'
    pieces.clear()
    spec = ToolSpec("lookup", "Search", {"type": "object", "properties": {}})
    await model.complete(request(tools=(spec,), on_text=pieces.append))
    assert pieces == ["Checking."]  # an agent tool's arguments are not reply text
