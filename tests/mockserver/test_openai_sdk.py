"""The official ``openai`` SDK as a client of the mock server: protocol fidelity checked by
software nobody here wrote. ``max_retries=0``: the SDK must never retry behind our back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel

from trellis.mockserver import MockServer, MockServerThread
from trellis.providers._schema import to_strict

MESSAGES: Any = [{"role": "user", "content": "I love the new dashboard, but export is slow"}]


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float
    topics: list[str]


class OrderLookup(BaseModel):
    order_id: str
    include_items: bool


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order",
            "parameters": OrderLookup.model_json_schema(),
        },
    }
]


@pytest.fixture(scope="module")
def server() -> Iterator[MockServerThread]:
    with MockServerThread(seed=4) as s:
        yield s


@pytest.fixture
def client(server: MockServerThread) -> Iterator[openai.OpenAI]:
    server.reset()
    with openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0) as c:
        yield c


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.model == "gpt-4o-mini"


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Sentiment
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Sentiment)


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "Sentiment",
                "schema": to_strict(Sentiment.model_json_schema()),  # closed, as strict needs
                "strict": True,
            },
        },
    )
    Sentiment.model_validate_json(completion.choices[0].message.content or "")


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        pieces.append(delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces)
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_stream_helper_accumulates_a_parsed_reply(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Sentiment
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Sentiment)


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup_order"
    OrderLookup.model_validate_json(call.function.arguments)
    # The model calls tools for one to three rounds, then answers.
    conversation: Any = [*MESSAGES]
    final = first
    for _ in range(3):
        choice = final.choices[0]
        if choice.finish_reason != "tool_calls":
            break
        conversation.append(choice.message.model_dump(exclude_none=True))
        for call in choice.message.tool_calls or ():
            result = json.dumps({"status": "shipped"})
            conversation.append({"role": "tool", "tool_call_id": call.id, "content": result})
        final = client.chat.completions.create(
            model="gpt-4o-mini", messages=conversation, tools=TOOLS
        )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini",
        messages=MESSAGES,
        tools=[openai.pydantic_function_tool(OrderLookup, name="lookup_order")],
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    tool_calls = final.choices[0].message.tool_calls
    assert tool_calls
    assert isinstance(tool_calls[0].function.parsed_arguments, OrderLookup)


def test_rate_limit_surfaces_as_rate_limit_error(
    server: MockServerThread, client: openai.OpenAI
) -> None:
    server.load_script([{"fault": "rate_limit", "retry_after": 0.5}])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    error = info.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after-ms"] == "500"
    assert error.response.headers["retry-after"] == "0.5"
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert server.stats.requests == 1  # max_retries=0: exactly one attempt


def test_server_rate_limits_surface_with_their_headers() -> None:
    with (
        MockServerThread(rpm=60) as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0) as client,
    ):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        assert raw.headers["x-ratelimit-remaining-requests"] == "59"
        assert raw.parse().choices[0].message.content
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=MESSAGES)
        headers = info.value.response.headers
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert 0 < int(headers["retry-after-ms"]) <= 1000
        assert info.value.type == "requests"


@pytest.mark.parametrize(
    ("fault", "error_type", "code"),
    [
        ("quota", openai.RateLimitError, "insufficient_quota"),
        ("auth", openai.AuthenticationError, "invalid_api_key"),
        ("overloaded", openai.InternalServerError, None),
        ("server_error", openai.InternalServerError, None),
        ("context_length", openai.BadRequestError, "context_length_exceeded"),
    ],
)
def test_error_faults_map_to_sdk_errors(
    server: MockServerThread,
    client: openai.OpenAI,
    fault: str,
    error_type: type[openai.APIStatusError],
    code: str | None,
) -> None:
    server.load_script([{"fault": fault}])
    with pytest.raises(error_type) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.code == code


def test_error_event_mid_stream_raises(server: MockServerThread, client: openai.OpenAI) -> None:
    server.load_script([{"fault": "stream_error"}])
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="error while processing"):
        for chunk in stream:
            received.append(chunk)
    assert received, "the error came after some content"


def test_refusal_is_reported_by_the_parse_helper(
    server: MockServerThread, client: openai.OpenAI
) -> None:
    server.load_script([{"fault": "refusal"}])
    completion = client.chat.completions.parse(
        model="gpt-4o-mini", messages=MESSAGES, response_format=Sentiment
    )
    message = completion.choices[0].message
    assert message.refusal and message.parsed is None


def test_truncation_is_detected_by_the_parse_helper(
    server: MockServerThread, client: openai.OpenAI
) -> None:
    server.load_script([{"fault": "truncation"}])
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="gpt-4o-mini", messages=MESSAGES, response_format=Sentiment
        )


async def test_async_client_on_the_same_loop() -> None:
    async with (
        MockServer(seed=2) as server,
        openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test", max_retries=0
        ) as client,
    ):
        completion = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert completion.choices[0].message.content
        models = await client.models.list()
        assert [m.id for m in models.data] == ["sim-small", "sim-medium", "sim-large"]
