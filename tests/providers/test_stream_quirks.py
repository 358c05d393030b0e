"""Streams and tool calls as compatible servers send them, over real HTTP: Ollama's
index-0 tool calls (its mock profile), deltas without an index, streams that end without
``[DONE]`` (the ``no-done`` profile), empty streamed tool inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trellis.errors import OverloadedError
from trellis.mockserver import MockServer
from trellis.models.base import ToolSpec
from trellis.providers import AnthropicModel, OpenAIModel

from .conftest import Reply, ScriptedServer, chunk, completion, named_sse, request, sse

WEATHER = ToolSpec(
    "get_weather",
    "Current weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec(
    "get_time",
    "Current time",
    {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)
NOTHING = ToolSpec("ping", "No arguments", {"type": "object", "properties": {}})


def call_delta(index: int | None = None, id_: str | None = None, **function: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"function": function}
    if index is not None:
        item["index"] = index
    if id_ is not None:
        item.update(id=id_, type="function")
    return {"tool_calls": [item]}


# -- Ollama: every call at index 0, told apart by id ------------------------------------------


async def test_ollama_index0_tool_calls_are_separate_calls() -> None:
    async with MockServer(profile="ollama", seed=1) as server:
        model = OpenAIModel("qwen3", {"base_url": server.openai_base_url, "stream": True})
        try:
            reply = await model.complete(
                request(model="qwen3", tools=(WEATHER, TIME), tool_choice="auto")
            )
        finally:
            await model.aclose()
    assert reply.finish_reason == "tool_calls"
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in reply.tool_calls}) == 2
    weather, time_ = (json.loads(c.arguments) for c in reply.tool_calls)
    assert set(weather) == {"city"} and set(time_) == {"tz"}


async def test_index0_deltas_with_distinct_ids_are_not_merged(server: ScriptedServer) -> None:
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk(
                        call_delta(0, "call_a", name="get_weather", arguments='{"city":"Paris"}')
                    ),
                    chunk(call_delta(0, "call_b", name="get_time", arguments='{"tz":"UTC"}')),
                    chunk({}, finish="tool_calls"),
                ]
            )
        )
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1", "stream": True})
    reply = await model.complete(request(tools=(WEATHER, TIME)))
    await model.aclose()
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Paris"}'),
        ("call_b", "get_time", '{"tz":"UTC"}'),
    ]


async def test_standard_indexed_deltas_still_assemble(server: ScriptedServer) -> None:
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk(call_delta(0, "call_a", name="get_weather", arguments="")),
                    chunk(call_delta(1, "call_b", name="get_time", arguments='{"tz":')),
                    chunk(call_delta(0, arguments='{"city":')),
                    chunk(call_delta(0, arguments='"Oslo"}')),
                    chunk(call_delta(1, arguments='"CET"}')),
                    chunk({}, finish="tool_calls"),
                ]
            )
        )
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1", "stream": True})
    reply = await model.complete(request(tools=(WEATHER, TIME)))
    await model.aclose()
    assert [(c.id, c.arguments) for c in reply.tool_calls] == [
        ("call_a", '{"city":"Oslo"}'),
        ("call_b", '{"tz":"CET"}'),
    ]


async def test_deltas_without_index_continue_the_open_call(server: ScriptedServer) -> None:
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk(call_delta(None, "call_a", name="get_weather", arguments='{"ci')),
                    chunk(call_delta(None, arguments='ty": "Ro')),
                    chunk(call_delta(None, arguments='me"}')),
                    chunk(call_delta(None, "call_b", name="get_time", arguments='{"tz": ')),
                    chunk(call_delta(None, arguments='"UTC"}')),
                    chunk({}, finish="tool_calls"),
                ]
            )
        )
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1", "stream": True})
    reply = await model.complete(request(tools=(WEATHER, TIME)))
    await model.aclose()
    assert [(c.id, c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("call_a", "get_weather", {"city": "Rome"}),
        ("call_b", "get_time", {"tz": "UTC"}),
    ]


# -- streams without [DONE] -------------------------------------------------------------------


async def test_a_stream_without_done_after_a_finish_reason_is_complete() -> None:
    async with MockServer(profile="no-done") as server:
        model = OpenAIModel("sim-small", {"base_url": server.openai_base_url, "stream": True})
        try:
            reply = await model.complete(request(model="sim-small"))
        finally:
            await model.aclose()
    assert reply.text
    assert reply.finish_reason == "stop"
    assert reply.usage.output_tokens > 0
    assert server.stats.by_status == {200: 1}


async def test_a_cut_stream_without_a_finish_reason_still_fails() -> None:
    async with MockServer(profile="no-done", script=[{"fault": "stream_cut"}]) as server:
        model = OpenAIModel("sim-small", {"base_url": server.openai_base_url, "stream": True})
        try:
            with pytest.raises(OverloadedError, match="without a finish_reason"):
                await model.complete(request("a longer prompt for a longer answer"))
        finally:
            await model.aclose()


# -- empty tool inputs are {} ------------------------------------------------------------------


async def test_an_empty_streamed_openai_tool_input_is_an_empty_object(
    server: ScriptedServer,
) -> None:
    server.add(
        Reply(
            chunks=sse(
                [
                    chunk(call_delta(0, "call_p", name="ping", arguments="")),
                    chunk({}, finish="tool_calls"),
                ]
            )
        ),
        Reply(
            json=completion(
                None,
                finish="tool_calls",
                tool_calls=[
                    {
                        "id": "call_q",
                        "type": "function",
                        "function": {"name": "ping", "arguments": ""},
                    }
                ],
            )
        ),
    )
    streamed = OpenAIModel("m", {"base_url": f"{server.url}/v1", "stream": True})
    plain = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    first = await streamed.complete(request(tools=(NOTHING,)))
    second = await plain.complete(request(tools=(NOTHING,)))
    await streamed.aclose()
    await plain.aclose()
    assert first.tool_calls[0].arguments == "{}"
    assert second.tool_calls[0].arguments == "{}"


async def test_an_empty_streamed_anthropic_tool_input_is_an_empty_object(
    server: ScriptedServer,
) -> None:
    server.add(
        Reply(
            chunks=named_sse(
                [
                    (
                        "message_start",
                        {
                            "type": "message_start",
                            "message": {"model": "claude-x", "usage": {"input_tokens": 5}},
                        },
                    ),
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": "ping",
                                "input": {},
                            },
                        },
                    ),
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "input_json_delta", "partial_json": ""},
                        },
                    ),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "tool_use"},
                            "usage": {"output_tokens": 3},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ]
            )
        )
    )
    model = AnthropicModel("claude-x", {"base_url": server.url, "stream": True})
    reply = await model.complete(request(tools=(NOTHING,)))
    await model.aclose()
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [("toolu_1", "ping", "{}")]
