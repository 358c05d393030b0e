"""The Anthropic Messages dialect of the mock server: shapes, event streams, tools, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from trellis.mockserver import MockServer

from . import USER, anthropic_events, post

HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}


class Ticket(BaseModel):
    title: str
    priority: Literal["low", "medium", "high"]
    tags: list[str]


class Lookup(BaseModel):
    customer_id: str
    include_history: bool


TOOLS = [
    {
        "name": "create_ticket",
        "description": "Open a support ticket",
        "input_schema": Ticket.model_json_schema(),
    },
    {"name": "lookup", "input_schema": Lookup.model_json_schema()},
]
VALIDATORS: dict[str, type[BaseModel]] = {"create_ticket": Ticket, "lookup": Lookup}


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(seed=11) as s:
        yield s


async def messages(server: MockServer, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "claude-sonnet-4-5")
    body.setdefault("max_tokens", 512)
    body.setdefault("messages", USER)
    response = await post(f"{server.anthropic_base_url}/v1/messages", body, HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["request-id"].startswith("req_")
    data: dict[str, Any] = response.json()
    return data


async def stream(server: MockServer, **body: Any) -> list[tuple[str, dict[str, Any]]]:
    body.setdefault("model", "claude-sonnet-4-5")
    body.setdefault("max_tokens", 512)
    body.setdefault("messages", USER)
    body["stream"] = True
    response = await post(f"{server.anthropic_base_url}/v1/messages", body, HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return anthropic_events(response.text)


def check_usage(usage: dict[str, Any]) -> None:
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0


async def test_message_has_the_documented_shape(server: MockServer) -> None:
    data = await messages(server)
    fields = {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert set(data) == fields
    assert data["id"].startswith("msg_")
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == "claude-sonnet-4-5"
    [block] = data["content"]
    assert block["type"] == "text" and block["text"]
    assert data["stop_reason"] == "end_turn"
    assert data["stop_sequence"] is None
    check_usage(data["usage"])


async def test_system_and_content_blocks_are_accepted(server: MockServer) -> None:
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Describe the Lumen Docs plan"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Which part?"}]},
        {"role": "user", "content": "The pricing"},
    ]
    data = await messages(
        server,
        system=[{"type": "text", "text": "You are terse."}],
        messages=conversation,
        temperature=0.2,
    )
    assert data["content"][0]["text"]


async def test_forced_tool_returns_schema_valid_input(server: MockServer) -> None:
    for i in range(4):
        data = await messages(
            server,
            messages=[{"role": "user", "content": f"Ticket {i}: the app crashes on login"}],
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "create_ticket"},
        )
        assert data["stop_reason"] == "tool_use"
        [block] = data["content"]
        assert block["type"] == "tool_use"
        assert block["id"].startswith("toolu_")
        assert block["name"] == "create_ticket"
        Ticket.model_validate(block["input"])


async def test_auto_tools_call_then_answer_after_the_tool_results(server: MockServer) -> None:
    """The model calls tools (one, or two in parallel) for one to three rounds, each call
    with valid arguments, then answers in text."""
    reply = await messages(server, tools=TOOLS)
    assert reply["stop_reason"] == "tool_use"
    conversation = list(USER)
    for _ in range(3):
        if reply["stop_reason"] != "tool_use":
            break
        uses = [b for b in reply["content"] if b["type"] == "tool_use"]
        assert 1 <= len(uses) <= 2
        for use in uses:
            VALIDATORS[use["name"]].model_validate(use["input"])
        results = [
            {"type": "tool_result", "tool_use_id": use["id"], "content": "done"} for use in uses
        ]
        conversation += [
            {"role": "assistant", "content": reply["content"]},
            {"role": "user", "content": results},
        ]
        reply = await messages(server, tools=TOOLS, messages=conversation)
    assert reply["stop_reason"] == "end_turn"
    assert [b["type"] for b in reply["content"]] == ["text"]


async def test_tool_choice_any_and_none(server: MockServer) -> None:
    anyone = await messages(server, tools=TOOLS, tool_choice={"type": "any"})
    assert anyone["stop_reason"] == "tool_use"
    nothing = await messages(server, tools=TOOLS, tool_choice={"type": "none"})
    assert nothing["stop_reason"] == "end_turn"


async def test_text_stream_event_sequence(server: MockServer) -> None:
    events = await stream(server)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert all(d["index"] == 0 for n, d in events if n.startswith("content_block"))
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0
    async with MockServer(seed=11) as fresh:
        assert text == (await messages(fresh))["content"][0]["text"]


async def test_tool_use_stream_input_json_adds_up(server: MockServer) -> None:
    events = await stream(server, tools=TOOLS, tool_choice={"type": "tool", "name": "lookup"})
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["tool_use"]
    head = starts[0]["content_block"]
    assert head["name"] == "lookup" and head["input"] == {}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    Lookup.model_validate_json("".join(d["partial_json"] for d in deltas))
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-1][0] == "message_stop"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "m", "messages": USER}, "max_tokens: Field required"),
        ({"max_tokens": 10, "messages": USER}, "model: Field required"),
        ({"model": "m", "max_tokens": 10}, "messages: Field required"),
        ({"model": "m", "max_tokens": 10, "messages": USER, "temperature": 1.5}, "temperature"),
        (
            {"model": "m", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
            "role",
        ),
        (
            {"model": "m", "max_tokens": 10, "messages": USER, "tools": [{"name": "t"}]},
            "input_schema",
        ),
        (
            {
                "model": "m",
                "max_tokens": 10,
                "messages": USER,
                "tools": TOOLS,
                "tool_choice": {"type": "tool", "name": "nope"},
            },
            "nope",
        ),
    ],
)
async def test_bad_requests_get_anthropic_error_bodies(
    server: MockServer, body: dict[str, Any], fragment: str
) -> None:
    response = await post(f"{server.anthropic_base_url}/v1/messages", body, HEADERS)
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"]


async def test_x_api_key_is_checked_when_required() -> None:
    async with MockServer(api_key="k-123") as s:
        url = f"{s.anthropic_base_url}/v1/messages"
        body = {"model": "m", "max_tokens": 50, "messages": USER}
        bad = await post(url, body, {"x-api-key": "nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["type"] == "authentication_error"
        good = await post(url, body, {"x-api-key": "k-123"})
        assert good.status_code == 200
        assert json.loads(good.text)["type"] == "message"


# -- the official anthropic SDK as a client (when installed; not part of the test extra) --


def test_anthropic_sdk_messages_tools_and_streams() -> None:
    anthropic = pytest.importorskip("anthropic")
    from trellis.mockserver import MockServerThread

    with (
        MockServerThread(seed=5) as server,
        anthropic.Anthropic(
            base_url=server.anthropic_base_url, api_key="test", max_retries=0
        ) as client,
    ):
        message = client.messages.create(model="claude-x", max_tokens=300, messages=USER)
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text" and message.content[0].text
        assert message.usage.output_tokens > 0

        forced = client.messages.create(
            model="claude-x",
            max_tokens=300,
            messages=USER,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "create_ticket"},
        )
        [use] = forced.content
        assert use.type == "tool_use"
        Ticket.model_validate(use.input)

        with client.messages.stream(
            model="claude-x", max_tokens=300, messages=USER, tools=TOOLS
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"
        streamed_uses = [b for b in final.content if b.type == "tool_use"]
        assert streamed_uses  # one call, or two in parallel
        for streamed_use in streamed_uses:
            VALIDATORS[streamed_use.name].model_validate(streamed_use.input)

        with client.messages.stream(model="claude-x", max_tokens=300, messages=USER) as stream:
            text = "".join(stream.text_stream)
        assert text


def test_anthropic_sdk_errors() -> None:
    anthropic = pytest.importorskip("anthropic")
    from trellis.mockserver import MockServerThread

    script = [
        {"fault": "rate_limit", "retry_after": 2},
        {"fault": "overloaded"},
        {"fault": "context_length"},
        {"fault": "stream_error"},
    ]
    with (
        MockServerThread(script=script) as server,
        anthropic.Anthropic(
            base_url=server.anthropic_base_url, api_key="test", max_retries=0
        ) as client,
    ):
        body: dict[str, Any] = {"model": "claude-x", "max_tokens": 100, "messages": USER}
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(**body)
        assert limited.value.response.headers["retry-after"] == "2"
        with pytest.raises(anthropic.InternalServerError) as overloaded:
            client.messages.create(**body)
        assert overloaded.value.status_code == 529
        with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
            client.messages.create(**body)
        with (
            pytest.raises(anthropic.APIStatusError, match="Overloaded"),
            client.messages.stream(**body) as stream,
        ):
            stream.get_final_message()
        assert server.stats.requests == 4
