"""``openai:`` over real HTTP against the local scripted server (and a few MockTransport
cases for transport failures): payloads, replies, streaming, structured output, tools,
every fault mapping, keys, and a whole flow through the engine."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.config import ModelBinding
from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectionFailedError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)
from trellis.models.base import Message, ModelRequest, ToolCall, ToolSpec
from trellis.models.registry import ProviderRegistry
from trellis.providers.openai import OpenAIModel, OpenAIOptions
from trellis.providers.ratelimit import Permit, RequestPacer

from .conftest import (
    Reply,
    ScriptedServer,
    chunk,
    completion,
    openai_error,
    request,
    sse,
)

SECRET = "sk-test-SECRET-0123456789abcdef"

MakeModel = Callable[..., OpenAIModel]


@pytest.fixture
async def make(server: ScriptedServer) -> AsyncIterator[MakeModel]:
    models: list[OpenAIModel] = []

    def factory(**options: Any) -> OpenAIModel:
        transport = options.pop("transport", None)
        opts = {"base_url": f"{server.url}/v1", **options}
        model = OpenAIModel("test-model", opts, transport=transport)
        models.append(model)
        return model

    yield factory
    for model in models:
        await model.aclose()


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float
    note: str | None = None


SENTIMENT_SCHEMA = Sentiment.model_json_schema()


# -- plain requests -------------------------------------------------------------------------


async def test_plain_completion_round_trip(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion("Hi there", usage=(12, 3))))
    model = make()
    req = ModelRequest(
        messages=(Message("system", "Be brief."), Message("user", "Say hi")),
        model="test-model",
        temperature=0.2,
        max_tokens=50,
        seed=7,
    )
    reply = await model.complete(req)
    assert reply.text == "Hi there"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (12, 3)
    assert reply.finish_reason == "stop"
    assert reply.raw_finish_reason == "stop"
    assert reply.model == "test-model-2024"
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.body == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 7,
    }
    assert "authorization" not in sent.headers  # a local server needs no key


async def test_max_completion_tokens_param(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion()))
    await make(max_tokens_param="max_completion_tokens").complete(request(max_tokens=9))
    assert server.requests[0].body["max_completion_tokens"] == 9
    assert "max_tokens" not in server.requests[0].body


async def test_missing_usage_is_estimated(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion("four words right here", usage=None)))
    reply = await make().complete(request("hello"))
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens == 6  # ceil(21 / 4)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("brand_new_reason", "other"),
        (None, "other"),
    ],
)
async def test_finish_reasons(
    server: ScriptedServer, make: MakeModel, raw: str | None, expected: str
) -> None:
    server.add(Reply(json=completion("partial", finish=raw)))
    reply = await make().complete(request())
    assert reply.finish_reason == expected
    assert reply.raw_finish_reason == raw


async def test_refusal(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion(None, refusal="I can't help with that.")))
    reply = await make().complete(request(schema=SENTIMENT_SCHEMA, schema_name="Sentiment"))
    assert reply.finish_reason == "refusal"
    assert reply.refusal == "I can't help with that."
    assert reply.text == ""


# -- keys -----------------------------------------------------------------------------------


async def test_key_from_env_is_sent_and_never_shown(
    server: ScriptedServer, make: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.add(
        Reply(
            401,
            json=openai_error(
                f"Incorrect API key provided: {SECRET}. You can find your API key at ...",
                code="invalid_api_key",
            ),
        )
    )
    model = make(organization="org-1", project="proj-1")
    with pytest.raises(AuthenticationError) as info:
        await model.complete(request())
    headers = server.requests[0].headers
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"
    for text in (str(info.value), repr(info.value), repr(model), repr(model.options)):
        assert SECRET not in text
    assert "Incorrect API key provided" in str(info.value)
    assert info.value.__cause__ is None  # httpx's request (holding the key) is not chained


async def test_key_from_a_named_env_var_or_option(
    server: ScriptedServer, make: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_GATEWAY_KEY", "gw-key-123456")
    server.add(Reply(json=completion()), Reply(json=completion()))
    await make(api_key_env="MY_GATEWAY_KEY").complete(request())
    explicit = make(api_key="opt-key-987654")
    await explicit.complete(request())
    assert server.requests[0].headers["authorization"] == "Bearer gw-key-123456"
    assert server.requests[1].headers["authorization"] == "Bearer opt-key-987654"
    assert "opt-key-987654" not in repr(explicit) + repr(explicit.options)


def test_missing_key_for_the_official_api_is_a_configuration_error() -> None:
    registry = ProviderRegistry()
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        registry.create(ModelBinding.parse("openai:gpt-4o-mini"))
    with pytest.raises(ConfigurationError, match="TEAM_KEY"):
        registry.create(ModelBinding.parse("openai:gpt-4o-mini?api_key_env=TEAM_KEY"))


async def test_base_url_from_env(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1/")
    server.add(Reply(json=completion("from env")))
    model = ProviderRegistry().create(ModelBinding.parse("openai:test-model"))
    try:
        reply = await model.complete(request())
    finally:
        await model.aclose()
    assert reply.text == "from env"
    assert server.requests[0].path == "/v1/chat/completions"


async def test_transport_errors_never_carry_the_key() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"boom with header Bearer {SECRET}", request=req)

    model = OpenAIModel(
        "m",
        {"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET},
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(ConnectionFailedError) as info:
        await model.complete(request())
    assert SECRET not in str(info.value)
    assert "could not connect to 127.0.0.1:9" in str(info.value)


# -- options --------------------------------------------------------------------------------


def test_options_accept_strings() -> None:
    opts = OpenAIOptions.parse(
        {
            "base-url": "http://localhost:8000/v1/",
            "stream": "true",
            "rpm": "60",
            "tpm": "90000",
            "timeout": "30",
            "stream_idle_timeout": "none",
            "structured": "prompt",
        }
    )
    assert opts.base_url == "http://localhost:8000/v1"
    assert opts.stream is True
    assert (opts.rpm, opts.tpm, opts.timeout) == (60.0, 90000.0, 30.0)
    assert opts.stream_idle_timeout is None
    assert opts.structured == "prompt"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"bse_url": "http://x"},
            "unknown openai option 'bse_url' \\(did you mean 'base_url'\\?\\)",
        ),
        ({"rpm": "-1"}, "invalid openai option rpm='-1'"),
        ({"structured": "magic"}, "invalid openai option structured='magic'"),
        ({"base_url": "localhost:8000"}, "must start with http"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        OpenAIOptions.parse(options)


def test_invalid_api_key_option_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        OpenAIOptions.parse({"api_key": ["not", "a", "string", SECRET]})
    assert SECRET not in str(info.value)
    assert "[REDACTED]" in str(info.value)


def test_registry_builds_openai_models_from_bindings() -> None:
    model = ProviderRegistry().create(
        ModelBinding.parse("openai:qwen2.5?base_url=http://127.0.0.1:1/v1&rpm=120&tpm=1000")
    )
    assert isinstance(model, OpenAIModel)
    assert model.name == "openai:qwen2.5"
    assert (model.limiter.rpm, model.limiter.tpm) == (120.0, 1000.0)
    assert repr(model) == "OpenAIModel('openai:qwen2.5', base_url='http://127.0.0.1:1/v1')"
    with pytest.raises(ConfigurationError, match="did you mean 'timeout'"):
        ProviderRegistry().create(ModelBinding.parse("openai:x?base_url=http://h/v1&timout=3"))


# -- faults ---------------------------------------------------------------------------------

DATE = "Tue, 14 Nov 2023 22:13:20 GMT"


@pytest.mark.parametrize(
    ("reply", "expected", "retry_after", "provider_text"),
    [
        (
            Reply(
                429,
                json=openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                headers={"retry-after-ms": "40"},
            ),
            RateLimitError,
            0.04,
            "Rate limit reached",
        ),
        (
            Reply(429, json=openai_error("Slow down", "tokens"), headers={"retry-after": "2"}),
            RateLimitError,
            2.0,
            "Slow down",
        ),
        (
            Reply(
                429,
                json=openai_error("Slow down", "tokens"),
                headers={"retry-after": "Tue, 14 Nov 2023 22:13:27 GMT", "Date": DATE},
            ),
            RateLimitError,
            7.0,
            "Slow down",
        ),
        (
            Reply(
                429,
                json=openai_error("Limit on tokens", "tokens"),
                headers={
                    "x-ratelimit-remaining-requests": "10",
                    "x-ratelimit-reset-requests": "20ms",
                    "x-ratelimit-remaining-tokens": "0",
                    "x-ratelimit-reset-tokens": "6m0s",
                },
            ),
            RateLimitError,
            360.0,
            "Limit on tokens",
        ),
        (
            Reply(
                429,
                json=openai_error("Limit on requests", "requests"),
                headers={
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "1.5s",
                },
            ),
            RateLimitError,
            1.5,
            "Limit on requests",
        ),
        (Reply(429, json=openai_error("Too many", "requests")), RateLimitError, None, "Too many"),
        (
            Reply(
                429,
                json=openai_error(
                    "You exceeded your current quota, please check your plan",
                    "insufficient_quota",
                    "insufficient_quota",
                ),
            ),
            QuotaExceededError,
            None,
            "exceeded your current quota",
        ),
        (
            Reply(402, json={"error": {"message": "Insufficient credits", "code": 402}}),
            QuotaExceededError,
            None,
            "Insufficient credits",
        ),
        (
            Reply(500, json=openai_error("The server had an error", "server_error")),
            OverloadedError,
            None,
            "The server had an error",
        ),
        (
            Reply(
                502,
                body="<html><head><title>502 Bad Gateway</title></head></html>",
                content_type="text/html",
            ),
            OverloadedError,
            None,
            "502 Bad Gateway",
        ),
        (Reply(503, body="Service Unavailable"), OverloadedError, None, "Service Unavailable"),
        (
            Reply(
                504,
                body="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                content_type="text/html",
            ),
            OverloadedError,
            None,
            "504 Gateway Time-out",
        ),
        (
            Reply(529, json={"error": {"message": "Overloaded", "type": "overloaded_error"}}),
            OverloadedError,
            None,
            "Overloaded",
        ),
        (Reply(408, body="Request Timeout"), ModelTimeoutError, None, "Request Timeout"),
        (
            Reply(400, json=openai_error("Invalid value for 'temperature'", param="temperature")),
            BadRequestError,
            None,
            "Invalid value for 'temperature'",
        ),
        (
            Reply(401, json=openai_error("No auth", code="invalid_api_key")),
            AuthenticationError,
            None,
            "No auth",
        ),
        (
            Reply(
                403,
                json=openai_error(
                    "Country, region, or territory not supported",
                    code="unsupported_country_region_territory",
                ),
            ),
            AuthenticationError,
            None,
            "Country, region",
        ),
        (
            Reply(
                404, json=openai_error("The model `nope` does not exist", code="model_not_found")
            ),
            BadRequestError,
            None,
            "does not exist",
        ),
        (
            Reply(
                413,
                body="<html><head><title>413 Request Entity Too Large</title></head>"
                "<body><center><h1>413 Request Entity Too Large</h1></center></body></html>",
                content_type="text/html",
            ),
            BadRequestError,
            None,
            "413 Request Entity Too Large",
        ),
        (
            Reply(422, json={"detail": [{"loc": ["body", "messages"], "msg": "Field required"}]}),
            BadRequestError,
            None,
            "body.messages: Field required",
        ),
        (
            Reply(
                400,
                json=openai_error(
                    "This model's maximum context length is 128000 tokens. However, your messages "
                    "resulted in 130000 tokens.",
                    code="context_length_exceeded",
                    param="messages",
                ),
            ),
            ContextOverflowError,
            None,
            "maximum context length is 128000",
        ),
        (
            Reply(
                400,
                json={
                    "object": "error",
                    "message": "This model's maximum context length is "
                    "4096 tokens. However, you requested 5000 tokens (4000 in the messages, "
                    "1000 in the completion).",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
            ),
            ContextOverflowError,
            None,
            "maximum context length is 4096 tokens",
        ),
    ],
)
async def test_http_faults_map_to_the_error_tree(
    server: ScriptedServer,
    reply: Reply,
    expected: type[ModelError],
    retry_after: float | None,
    provider_text: str,
) -> None:
    server.add(reply)
    model = OpenAIModel("test-model", {"base_url": f"{server.url}/v1"}, now=lambda: 1_700_000_000.0)
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(request())
    finally:
        await model.aclose()
    error = info.value
    assert type(error) is expected
    assert error.status_code == reply.status
    assert error.model == "openai:test-model"
    assert provider_text in str(error)
    if expected is RateLimitError:
        assert isinstance(error, RateLimitError)
        assert error.retry_after == (pytest.approx(retry_after) if retry_after else None)


async def test_200_with_an_error_body(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json={"error": {"message": "model overloaded", "type": "server_error"}}))
    with pytest.raises(OverloadedError, match="model overloaded"):
        await make().complete(request())


async def test_html_instead_of_json_points_at_base_url(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(body="<!doctype html><html><title>My Web UI</title></html>", content_type="text/html")
    )
    with pytest.raises(BadRequestError, match=r"HTML page \(My Web UI\); check base_url"):
        await make().complete(request())


async def test_read_timeout(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion(), delay=2.0))
    with pytest.raises(ModelTimeoutError, match="ReadTimeout"):
        await make(timeout=0.1).complete(request())


async def test_connection_refused_is_a_connection_failure() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    model = OpenAIModel("m", {"base_url": f"http://127.0.0.1:{port}/v1"})
    with pytest.raises(ConnectionFailedError, match=f"could not connect to 127.0.0.1:{port}$"):
        await model.complete(request())
    await model.aclose()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadTimeout("timed out"), ModelTimeoutError),
        (httpx.ConnectTimeout("timed out"), ModelTimeoutError),
        (httpx.RemoteProtocolError("peer closed connection"), OverloadedError),
        (httpx.ReadError("connection reset"), OverloadedError),
    ],
)
async def test_transport_exceptions(exc: Exception, expected: type[ModelError]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    model = OpenAIModel(
        "m", {"base_url": "http://127.0.0.1:9/v1"}, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(expected):
        await model.complete(request())


# -- streaming ------------------------------------------------------------------------------


async def test_streaming_assembles_text_and_usage(server: ScriptedServer, make: MakeModel) -> None:
    server.add(
        Reply(
            chunks=[
                ": OPENROUTER PROCESSING\n\n",
                *sse(
                    [
                        chunk({"role": "assistant", "content": ""}),
                        chunk({"content": "Hel"}),
                        chunk({"content": "lo!"}),
                        chunk({}, finish="stop"),
                        chunk(usage={"prompt_tokens": 9, "completion_tokens": 2}),
                    ]
                ),
            ]
        )
    )
    reply = await make(stream=True).complete(request())
    assert reply.text == "Hello!"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (9, 2)
    assert reply.finish_reason == "stop"
    body = server.requests[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_streaming_tool_call_deltas(server: ScriptedServer, make: MakeModel) -> None:
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk({"role": "assistant", "tool_calls": [first]}),
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 1,
                                    "id": "call_2",
                                    "function": {"name": "now", "arguments": "{}"},
                                }
                            ]
                        }
                    ),
                    chunk({}, finish="tool_calls"),
                ]
            )
        )
    )
    reply = await make(stream=True).complete(request())
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "now", "{}"),
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
            },
            OverloadedError,
        ),
        (
            {
                "message": "Rate limit reached for tokens",
                "type": "tokens",
                "code": "rate_limit_exceeded",
            },
            RateLimitError,
        ),
        ({"message": "upstream died"}, OverloadedError),
    ],
)
async def test_error_event_mid_stream(
    server: ScriptedServer, make: MakeModel, error: dict[str, Any], expected: type[ModelError]
) -> None:
    server.add(Reply(chunks=sse([chunk({"content": "Partial"}), {"error": error}], done=False)))
    with pytest.raises(expected, match="mid-stream") as info:
        await make(stream=True).complete(request())
    assert error["message"] in str(info.value)


async def test_stream_ending_without_done_or_finish_fails(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(chunks=sse([chunk({"content": "Partial"})], done=False)))
    with pytest.raises(OverloadedError, match=r"before \[DONE\] and without a finish_reason"):
        await make(stream=True).complete(request())


async def test_stalled_stream_hits_the_idle_timeout(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(Reply(chunks=sse([chunk({"content": "Partial"})], done=False), stall=True))
    with pytest.raises(ModelTimeoutError, match="stalled"):
        await make(stream=True, stream_idle_timeout=0.1).complete(request())


async def test_stream_request_rejected_with_http_error(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(429, json=openai_error("Rate limited", "requests"), headers={"retry-after-ms": "5"})
    )
    with pytest.raises(RateLimitError) as info:
        await make(stream=True).complete(request())
    assert info.value.retry_after == pytest.approx(0.005)


async def test_server_that_ignores_stream_true(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion("not streamed")))
    reply = await make(stream=True).complete(request())
    assert reply.text == "not streamed"


# -- structured output ----------------------------------------------------------------------


async def test_native_structured_output_is_strict(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion('{"label": "positive", "confidence": 0.9, "note": null}')))
    reply = await make().complete(request(schema=SENTIMENT_SCHEMA, schema_name="Sentiment"))
    assert json.loads(reply.text)["label"] == "positive"
    fmt = server.requests[0].body["response_format"]
    assert fmt["type"] == "json_schema"
    spec = fmt["json_schema"]
    assert spec["name"] == "Sentiment"
    assert spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False
    assert spec["schema"]["required"] == ["label", "confidence", "note"]
    assert "default" not in json.dumps(spec["schema"])


async def test_non_object_root_is_wrapped_and_unwrapped(
    server: ScriptedServer, make: MakeModel
) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    server.add(Reply(json=completion('{"value": [1, 2, 3]}')))
    reply = await make().complete(request(schema=schema))
    assert json.loads(reply.text) == [1, 2, 3]
    sent = server.requests[0].body["response_format"]["json_schema"]
    assert sent["name"] == "output"
    assert sent["schema"]["properties"]["value"] == schema
    assert sent["strict"] is True


async def test_schema_that_cannot_be_strict_is_sent_loose(
    server: ScriptedServer, make: MakeModel
) -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    server.add(Reply(json=completion('{"a": 1}')))
    reply = await make().complete(request(schema=schema, schema_name="Counts"))
    assert reply.text == '{"a": 1}'
    sent = server.requests[0].body["response_format"]["json_schema"]
    assert sent["strict"] is False
    assert sent["schema"] == schema


async def test_auto_falls_back_to_prompted_json_and_remembers(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(
            400,
            json={
                "object": "error",
                "type": "BadRequestError",
                "code": 400,
                "message": "response_format type 'json_schema' is not supported",
            },
        ),
        Reply(json=completion('{"label": "neutral", "confidence": 0.5}')),
        Reply(json=completion('{"label": "negative", "confidence": 0.7}')),
    )
    model = make()
    req = ModelRequest(
        messages=(Message("system", "You classify."), Message("user", "meh")),
        model="test-model",
        output_schema=SENTIMENT_SCHEMA,
        schema_name="Sentiment",
    )
    first = await model.complete(req)
    assert json.loads(first.text)["label"] == "neutral"
    assert model.structured_mode == "prompt"
    await model.complete(req)
    assert len(server.requests) == 3
    retried = server.requests[1].body
    assert "response_format" not in retried
    system = retried["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You classify.\n\nReply with only a JSON value")
    assert '"confidence"' in system["content"]
    assert len(retried["messages"]) == 2
    assert "response_format" not in server.requests[2].body  # remembered


async def test_prompted_mode_adds_a_system_message(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion('{"label": "neutral", "confidence": 0.5}')))
    await make(structured="prompt").complete(request(schema=SENTIMENT_SCHEMA))
    messages = server.requests[0].body["messages"]
    assert messages[0]["role"] == "system"
    assert "JSON schema" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "Say hi"}


async def test_native_mode_never_falls_back(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(400, json=openai_error("Unknown parameter: 'response_format'.")))
    with pytest.raises(BadRequestError, match="response_format"):
        await make(structured="native").complete(request(schema=SENTIMENT_SCHEMA))
    assert len(server.requests) == 1


async def test_unrelated_400_is_not_retried(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(400, json=openai_error("Invalid 'messages[0].content'")))
    model = make()
    with pytest.raises(BadRequestError):
        await model.complete(request(schema=SENTIMENT_SCHEMA))
    assert len(server.requests) == 1
    assert model.structured_mode == "native"


async def test_invalid_strict_schema_is_resent_loose_for_that_schema(
    server: ScriptedServer, make: MakeModel
) -> None:
    server.add(
        Reply(
            400,
            json=openai_error(
                "Invalid schema for response_format 'Sentiment': In context=('properties', "
                "'label'), 'enum' is not permitted.",
                param="response_format",
            ),
        ),
        Reply(json=completion('{"label": "neutral", "confidence": 0.5}')),
        Reply(json=completion('{"label": "neutral", "confidence": 0.5}')),
    )
    model = make()
    await model.complete(request(schema=SENTIMENT_SCHEMA, schema_name="Sentiment"))
    await model.complete(request(schema=SENTIMENT_SCHEMA, schema_name="Sentiment"))
    strict_flags = [r.body["response_format"]["json_schema"]["strict"] for r in server.requests]
    assert strict_flags == [True, False, False]
    assert model.structured_mode == "native"


# -- tools ----------------------------------------------------------------------------------


async def test_tool_call_round_trip(server: ScriptedServer, make: MakeModel) -> None:
    tool_call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "trellis"'},
    }  # invalid JSON
    server.add(Reply(json=completion(None, finish="tool_calls", tool_calls=[tool_call])))
    spec = ToolSpec(
        "lookup", "Search the docs", {"type": "object", "properties": {"q": {"type": "string"}}}
    )
    req = ModelRequest(
        messages=(
            Message("user", "Find it"),
            Message("assistant", "", tool_calls=(ToolCall("call_1", "lookup", '{"q": "x"}'),)),
            Message("tool", "result text", tool_call_id="call_1"),
        ),
        model="test-model",
        tools=(spec,),
        tool_choice="lookup",
    )
    reply = await make().complete(req)
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (ToolCall("call_9", "lookup", '{"q": "trellis"'),)  # raw
    body = server.requests[0].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Search the docs",
                "parameters": spec.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "result text",
    }


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_tool_choice_keywords(server: ScriptedServer, make: MakeModel, choice: str) -> None:
    server.add(Reply(json=completion()))
    spec = ToolSpec("t", "d", {"type": "object", "properties": {}})
    await make().complete(request(tools=(spec,), tool_choice=choice))
    assert server.requests[0].body["tool_choice"] == choice


# -- rate limiting and lifecycle ------------------------------------------------------------


async def test_headers_tighten_the_limiter(server: ScriptedServer, make: MakeModel) -> None:
    server.add(
        Reply(
            json=completion(),
            headers={
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "1000",
                "x-ratelimit-reset-tokens": "1s",
            },
        )
    )
    model = make()
    await model.complete(request())
    assert 1.0 < model.limiter.paused_for <= 1.5


async def test_429_retry_after_pauses_the_limiter(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(429, json=openai_error("slow", "requests"), headers={"retry-after": "3"}))
    model = make()
    with pytest.raises(RateLimitError):
        await model.complete(request())
    assert 2.5 < model.limiter.paused_for <= 3.0


async def test_usage_settles_the_token_estimate(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion(usage=(10, 5))))
    limiter = RequestPacer(tpm=600_000, clock=lambda: 0.0)  # a bucket of 10,000, time frozen
    model = OpenAIModel("test-model", {"base_url": f"{server.url}/v1"}, limiter=limiter)
    seen: list[int] = []
    acquire = limiter.acquire

    async def spy(tokens: int = 0) -> Permit:
        seen.append(tokens)
        return await acquire(tokens)

    limiter.acquire = spy  # type: ignore[method-assign]
    await model.complete(request(max_tokens=4000))
    await model.aclose()
    assert seen[0] > 4000  # the prompt estimate plus max_tokens
    tokens = limiter.available()[1]
    assert tokens is not None and tokens == pytest.approx(10_000 - 15, abs=1)


async def test_client_is_lazy_and_closed(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(json=completion()), Reply(json=completion()))
    model = make()
    assert model._client is None
    await model.complete(request())
    client = model._client
    assert client is not None
    await model.aclose()
    assert client.is_closed and model._client is None
    await model.complete(request())  # a fresh client
    assert model._client is not None and model._client is not client


# -- end to end -----------------------------------------------------------------------------


async def test_flow_end_to_end_with_rate_limit_then_success(
    server: ScriptedServer, sleeps: Any
) -> None:
    flow = tl.Flow("e2e", inputs={"feedback": str})

    @flow.step
    async def sentiment(feedback: str, llm: tl.LLM) -> Sentiment:
        return await llm.generate(f"Classify: {feedback}", output=Sentiment, model="small")

    server.add(
        Reply(
            429,
            json=openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            headers={"retry-after-ms": "30"},
        ),
        Reply(
            json=completion(
                '{"label": "positive", "confidence": 0.93, "note": null}', usage=(40, 12)
            )
        ),
    )
    binding = f"openai:test-model?base_url={server.url}/v1"
    async with tl.Engine(models={"small": binding}, sleep=sleeps) as engine:
        result = await engine.run(flow, {"feedback": "Love it"})
    assert result.ok, result.error
    assert result["sentiment"] == Sentiment(label="positive", confidence=0.93)
    assert [c.outcome for c in result.calls] == ["rate_limit", "ok"]
    limited, ok = result.calls
    assert limited.model == ok.model == "openai:test-model"
    assert "Rate limit reached for requests" in (limited.error or "")
    assert sleeps.waits == [0.03]
    assert ok.wait_s == 0.03
    assert (ok.input_tokens, ok.output_tokens) == (40, 12)
    assert result.usage.failures["rate_limit"] == 1
    spec = server.requests[1].body["response_format"]["json_schema"]
    assert spec["name"] == "Sentiment" and spec["strict"] is True
    assert server.requests[1].body["messages"] == [{"role": "user", "content": "Classify: Love it"}]


async def test_concurrent_calls_share_the_model_limiter(
    server: ScriptedServer, sleeps: Any
) -> None:
    clock = [0.0]

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds

    limiter = RequestPacer(rpm=60, clock=lambda: clock[0], sleep=fake_sleep)
    model = OpenAIModel("test-model", {"base_url": f"{server.url}/v1"}, limiter=limiter)
    server.add(*[Reply(json=completion(str(i))) for i in range(5)])
    flow = tl.Flow("fan", inputs={"n": int})

    @flow.step
    async def call(n: int, llm: tl.LLM) -> str:
        return str(await llm.generate(f"item {n}", model="small"))

    async with tl.Engine(models={"small": model}, sleep=sleeps) as engine:
        results = [r async for _, r in engine.run_many(flow, [{"n": i} for i in range(5)])]
    assert all(r.ok for r in results)
    assert len(server.requests) == 5
    assert clock[0] == pytest.approx(4.0)  # one request a second, shared by all five runs
    assert sleeps.waits == []  # the engine itself never had to back off


async def test_event_error_without_an_error_key(server: ScriptedServer, make: MakeModel) -> None:
    server.add(Reply(chunks=["event: error\ndata: upstream exploded\n\n"]))
    with pytest.raises(OverloadedError, match="upstream exploded"):
        await make(stream=True).complete(request())


async def test_native_mode_still_resends_a_rejected_strict_schema_loose(
    server: ScriptedServer, make: MakeModel
) -> None:
    rejected = openai_error(
        "Invalid schema for response_format 'Sentiment': 'minimum' is not permitted.",
        param="response_format",
    )
    server.add(Reply(400, json=rejected), Reply(400, json=rejected))
    model = make(structured="native")
    with pytest.raises(BadRequestError):
        await model.complete(request(schema=SENTIMENT_SCHEMA, schema_name="Sentiment"))
    sent = [r.body.get("response_format", {}).get("json_schema", {}) for r in server.requests]
    assert [s.get("strict") for s in sent] == [True, False]  # never prompted JSON


async def test_streamed_content_reaches_the_requests_text_hook(
    server: ScriptedServer, make: MakeModel
) -> None:
    pieces: list[str] = []
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk({"role": "assistant", "content": ""}),
                    chunk({"content": "Hel"}),
                    chunk({"content": "lo!"}),
                    chunk({}, finish="stop"),
                ]
            )
        )
    )
    reply = await make(stream=True).complete(request(on_text=pieces.append))
    assert pieces == ["Hel", "lo!"] and reply.text == "Hello!"  # empty deltas are not passed
