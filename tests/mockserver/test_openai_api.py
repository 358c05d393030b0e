"""The OpenAI Chat Completions dialect of the mock server: shapes, streams, tools, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from trellis.mockserver import MockServer
from trellis.providers._schema import to_strict

from . import USER, openai_chunks, post


class Topic(BaseModel):
    name: str
    weight: float


class Analysis(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float
    topics: list[Topic]


class Weather(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


class Search(BaseModel):
    query: str
    limit: int


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": Weather.model_json_schema(),
        },
    },
    {
        "type": "function",
        "function": {"name": "search", "parameters": Search.model_json_schema()},
    },
]
VALIDATORS: dict[str, type[BaseModel]] = {"get_weather": Weather, "search": Search}


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(seed=7) as s:
        yield s


def chat_url(server: MockServer) -> str:
    return f"{server.openai_base_url}/chat/completions"


async def chat(server: MockServer, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o-mini")
    body.setdefault("messages", USER)
    response = await post(chat_url(server), body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    return data


def schema_format(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": model.__name__,
            "schema": to_strict(model.model_json_schema()),  # closed, as strict mode needs
            "strict": True,
        },
    }


async def test_completion_has_the_documented_shape(server: MockServer) -> None:
    response = await post(chat_url(server), {"model": "gpt-4o-mini", "messages": USER})
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    data = response.json()
    assert set(data) >= {"id", "object", "created", "model", "choices", "usage"}
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-4o-mini"
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    message = choice["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str) and message["content"]
    assert message["refusal"] is None
    assert "tool_calls" not in message
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    ChatCompletion.model_validate(data)  # the SDK's own types accept it


async def test_replies_are_deterministic_per_seed() -> None:
    texts = []
    for seed in (1, 1, 2):
        async with MockServer(seed=seed) as s:
            texts.append((await chat(s))["choices"][0]["message"]["content"])
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


async def test_json_schema_response_is_schema_valid(server: MockServer) -> None:
    for i in range(5):
        messages = [{"role": "user", "content": f"Analyse feedback number {i}: great app"}]
        data = await chat(server, messages=messages, response_format=schema_format(Analysis))
        content = data["choices"][0]["message"]["content"]
        Analysis.model_validate_json(content)
        assert data["choices"][0]["finish_reason"] == "stop"


async def test_json_object_mode_returns_a_json_object(server: MockServer) -> None:
    data = await chat(server, response_format={"type": "json_object"})
    value = json.loads(data["choices"][0]["message"]["content"])
    assert isinstance(value, dict) and value


async def test_small_max_tokens_truncates_structured_output(server: MockServer) -> None:
    data = await chat(server, response_format=schema_format(Analysis), max_completion_tokens=3)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) <= 12


async def test_stream_with_usage_chunk_sequence(server: MockServer) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await post(chat_url(server), body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, done = openai_chunks(response.text)
    assert done, "the stream ends with data: [DONE]"
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["object"] == "chat.completion.chunk"
        assert c["id"] == chunks[0]["id"]
        assert "usage" in c
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *content_chunks, finish, usage_chunk = chunks
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["delta"] == {}
    assert all(c["usage"] is None for c in [*content_chunks, finish])
    assert all(c["choices"][0]["finish_reason"] is None for c in content_chunks)
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content_chunks)
    assert len(content_chunks) > 2
    async with MockServer(seed=7) as fresh:  # the same first reply, not streamed
        assert text == (await chat(fresh))["choices"][0]["message"]["content"]


async def test_stream_without_include_usage_has_no_usage(server: MockServer) -> None:
    body = {"model": "m", "messages": USER, "stream": True}
    chunks, done = openai_chunks((await post(chat_url(server), body)).text)
    assert done
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_auto_tools_get_a_schema_valid_tool_call(server: MockServer) -> None:
    data = await chat(server, tools=TOOLS, tool_choice="auto")
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    VALIDATORS[call["function"]["name"]].model_validate_json(call["function"]["arguments"])
    ChatCompletion.model_validate(data)
    again = await chat(server, tools=TOOLS)  # the tool choice is deterministic
    assert (
        again["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
        == (call["function"]["name"])
    )


async def test_tool_result_gets_a_final_answer(server: MockServer) -> None:
    first = await chat(server, tools=TOOLS)
    call = first["choices"][0]["message"]["tool_calls"][0]
    messages = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees"},
    ]
    data = await chat(server, messages=messages, tools=TOOLS)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"]
    assert "tool_calls" not in choice["message"]
    structured = await chat(
        server, messages=messages, tools=TOOLS, response_format=schema_format(Analysis)
    )
    Analysis.model_validate_json(structured["choices"][0]["message"]["content"])


async def test_named_and_required_tool_choice(server: MockServer) -> None:
    named = {"type": "function", "function": {"name": "search"}}
    data = await chat(server, tools=TOOLS, tool_choice=named)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"  # OpenAI's answer to a named tool_choice
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "search"
    Search.model_validate_json(call["function"]["arguments"])
    required = await chat(server, tools=TOOLS, tool_choice="required")
    assert required["choices"][0]["finish_reason"] == "tool_calls"
    none = await chat(server, tools=TOOLS, tool_choice="none")
    assert none["choices"][0]["message"]["content"]


async def test_streamed_tool_call_arguments_add_up(server: MockServer) -> None:
    body = {"model": "m", "messages": USER, "tools": TOOLS, "stream": True}
    chunks, done = openai_chunks((await post(chat_url(server), body)).text)
    assert done
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    head = deltas[1]["tool_calls"][0]
    assert head["index"] == 0 and head["id"].startswith("call_") and head["type"] == "function"
    arguments = "".join(
        d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d
    )
    VALIDATORS[head["function"]["name"]].model_validate_json(arguments)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": USER}, "model", "model"),
        ({"model": "m"}, "messages", "messages"),
        ({"model": "m", "messages": []}, "messages", "non-empty"),
        ({"model": "m", "messages": USER, "tool_choice": "auto"}, "tool_choice", "tools"),
        ({"model": "m", "messages": USER, "stream_options": {}}, "stream_options", "stream"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "robot",
        ),
        (
            {"model": "m", "messages": USER, "response_format": {"type": "json_schema"}},
            "response_format.json_schema.name",
            "name",
        ),
        (
            {
                "model": "m",
                "messages": USER,
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "tool_choice",
            "nope",
        ),
    ],
)
async def test_bad_requests_get_openai_error_bodies(
    server: MockServer, body: dict[str, Any], param: str, fragment: str
) -> None:
    response = await post(chat_url(server), body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


async def test_unparseable_body_is_a_400(server: MockServer) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.post(
            chat_url(server), content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "could not parse the JSON body" in response.json()["error"]["message"]


async def test_models_lists_in_each_dialect(server: MockServer) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        openai = (await client.get(f"{server.openai_base_url}/models")).json()
        anthropic = (
            await client.get(
                f"{server.anthropic_base_url}/v1/models",
                headers={"anthropic-version": "2023-06-01"},
            )
        ).json()
    assert openai["object"] == "list"
    assert {m["id"] for m in openai["data"]} == {"sim-small", "sim-medium", "sim-large"}
    assert all(m["object"] == "model" and "owned_by" in m for m in openai["data"])
    assert anthropic["has_more"] is False
    assert all(m["type"] == "model" and m["created_at"].endswith("Z") for m in anthropic["data"])


async def test_api_key_is_enforced_when_set() -> None:
    async with MockServer(api_key="secret-key") as s:
        body = {"model": "m", "messages": USER}
        bad = await post(chat_url(s), body, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        error = bad.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert "wrong" not in error["message"] and "secret" not in error["message"]
        ok = await post(chat_url(s), body, headers={"Authorization": "Bearer secret-key"})
        assert ok.status_code == 200
        assert s.stats.by_status[401] == 1


async def test_stats_count_requests_tokens_and_statuses(server: MockServer) -> None:
    await chat(server)
    await post(chat_url(server), {"model": "m"})
    stats = server.stats.to_dict()
    assert stats["requests"] == 2
    assert stats["by_endpoint"] == {"POST /v1/chat/completions": 2}
    assert stats["by_status"] == {"200": 1, "400": 1}
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert stats["in_flight"] == 0 and stats["peak_in_flight"] == 1
