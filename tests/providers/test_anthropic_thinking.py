"""Anthropic: thinking blocks kept and sent back unchanged, structured output with thinking
on, no whitespace-only text blocks, failed tool results marked ``is_error`` - over real
HTTP against the scripted server (bodies in the Messages API's own shapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import BadRequestError, ConfigurationError
from trellis.mockserver import MockServer
from trellis.models.base import Message, ModelRequest, ToolSpec
from trellis.providers import AnthropicModel

from .conftest import Reply, ScriptedServer, message, named_sse, request

WEATHER = ToolSpec(
    "get_weather",
    "Current weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
THINKING = {
    "type": "thinking",
    "thinking": "The user wants the weather in Paris; I should call the tool.",
    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5"}
TOOL_USE = {
    "type": "tool_use",
    "id": "toolu_01A",
    "name": "get_weather",
    "input": {"city": "Paris"},
}


def model(server: ScriptedServer, **options: Any) -> AnthropicModel:
    return AnthropicModel("claude-opus-5", {"base_url": server.url, **options})


def follow_up(first: Any) -> ModelRequest:
    """The next agent turn: the assistant's tool call, then its result."""
    return ModelRequest(
        messages=(
            Message("user", "Weather in Paris?"),
            Message("assistant", first.text, tool_calls=first.tool_calls),
            Message("tool", "18C and sunny", tool_call_id=first.tool_calls[0].id),
        ),
        model="claude-opus-5",
        tools=(WEATHER,),
    )


async def test_thinking_blocks_go_back_unchanged(server: ScriptedServer) -> None:
    server.add(
        Reply(json=message([THINKING, REDACTED, TOOL_USE], stop="tool_use")),
        Reply(json=message([{"type": "text", "text": "It is 18C."}])),
    )
    llm = model(server, thinking="2048")
    first = await llm.complete(request("Weather in Paris?", tools=(WEATHER,)))
    assert [c.id for c in first.tool_calls] == ["toolu_01A"]
    assert first.text == ""  # thinking is not the reply's text
    second = await llm.complete(follow_up(first))
    await llm.aclose()
    assert second.text == "It is 18C."
    sent = server.requests[1].body
    assert server.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [THINKING, REDACTED, TOOL_USE]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C and sunny"}
    ]


async def test_streamed_thinking_blocks_go_back_unchanged(server: ScriptedServer) -> None:
    def event(kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, **data}

    stream = [
        event("message_start", message={"model": "claude-opus-5", "usage": {"input_tokens": 9}}),
        event(
            "content_block_start",
            index=0,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        ),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "thinking_delta", "thinking": "The user wants the weather "},
        ),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "thinking_delta", "thinking": "in Paris; I should call the tool."},
        ),
        event(
            "content_block_delta",
            index=0,
            delta={"type": "signature_delta", "signature": THINKING["signature"]},
        ),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block=REDACTED),
        event("content_block_stop", index=1),
        event("content_block_start", index=2, content_block={**TOOL_USE, "input": {}}),
        event(
            "content_block_delta",
            index=2,
            delta={"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
        ),
        event("content_block_stop", index=2),
        event("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 30}),
        event("message_stop"),
    ]
    server.add(Reply(chunks=named_sse(stream)), Reply(json=message()))
    llm = model(server, thinking="adaptive", stream=True)
    first = await llm.complete(request("Weather in Paris?", tools=(WEATHER,)))
    llm.options = llm.options.model_copy(update={"stream": False})
    await llm.complete(follow_up(first))
    await llm.aclose()
    assert server.requests[0].body["thinking"] == {"type": "adaptive"}
    assert server.requests[1].body["messages"][1]["content"] == [
        THINKING,
        REDACTED,
        {**TOOL_USE, "input": {"city": "Paris"}},
    ]


def test_a_thinking_budget_below_the_minimum_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="thinking"):
        AnthropicModel("claude-x", {"base_url": "http://127.0.0.1:1", "thinking": "100"})


# -- structured output with thinking on ---------------------------------------------------------


SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}},
    "required": ["label"],
    "additionalProperties": False,
}


async def test_native_output_format_when_thinking(server: ScriptedServer) -> None:
    server.add(Reply(json=message([THINKING, {"type": "text", "text": '{"label": "ok"}'}])))
    llm = model(server, thinking="2048", structured="native")
    reply = await llm.complete(request(schema=SCHEMA, schema_name="Verdict"))
    await llm.aclose()
    body = server.requests[0].body
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "tool_choice" not in body and "tools" not in body
    assert json.loads(reply.text) == {"label": "ok"}


def test_the_official_api_gets_the_native_format_when_thinking() -> None:
    llm = AnthropicModel(
        "claude-opus-5",
        {"base_url": "https://api.anthropic.com", "api_key": "sk-ant-test-0000", "thinking": 4096},
    )
    payload, _ = llm.build_payload(request(schema=SCHEMA))
    assert "output_config" in payload and "tool_choice" not in payload
    plain = AnthropicModel(
        "claude-opus-5", {"base_url": "https://api.anthropic.com", "api_key": "sk-ant-test-0000"}
    )
    forced, _ = plain.build_payload(request(schema=SCHEMA))
    assert forced["tool_choice"]["type"] == "tool"  # without thinking: the forced tool


async def test_elsewhere_thinking_uses_the_output_tool_with_auto_choice(
    server: ScriptedServer,
) -> None:
    output_call = {"type": "tool_use", "id": "toolu_9", "name": "Verdict", "input": {"label": "x"}}
    server.add(Reply(json=message([THINKING, output_call], stop="tool_use")))
    llm = model(server, thinking="2048")
    reply = await llm.complete(request(schema=SCHEMA, schema_name="Verdict"))
    await llm.aclose()
    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "auto"}
    assert [t["name"] for t in body["tools"]] == ["Verdict"]
    assert json.loads(reply.text) == {"label": "x"}
    assert reply.finish_reason == "stop"


class Verdict(BaseModel):
    label: str


async def test_a_prose_answer_with_thinking_is_reasked(server: ScriptedServer) -> None:
    """tool_choice auto: the model may answer in prose; the engine re-asks it."""
    output_call = {"type": "tool_use", "id": "toolu_9", "name": "Verdict", "input": {"label": "x"}}
    server.add(
        Reply(json=message([THINKING, {"type": "text", "text": "I think it is fine."}])),
        Reply(json=message([THINKING, output_call], stop="tool_use")),
    )
    flow = tl.Flow("judge", inputs={"text": str})

    @flow.step
    async def judge(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(text, output=Verdict)

    binding = f"anthropic:claude-opus-5?base_url={server.url}&thinking=2048"
    async with tl.Engine(models={"default": binding}) as engine:
        result = await engine.run(flow, {"text": "t"})
    assert result.ok, result.error
    assert result["judge"] == Verdict(label="x")
    assert [c.outcome for c in result.calls] == ["malformed", "ok"]


# -- text blocks and tool results ------------------------------------------------------------------


async def test_whitespace_only_text_is_never_a_block(server: ScriptedServer) -> None:
    server.add(Reply(json=message()))
    llm = model(server)
    await llm.complete(
        ModelRequest(
            messages=(
                Message("system", "  \n "),
                Message("user", "Weather in Paris?"),
                Message("assistant", " \n", tool_calls=(tl.ToolCall("toolu_1", "w", "{}"),)),
                Message("tool", "sunny", tool_call_id="toolu_1"),
                Message("user", "   "),
            ),
            model="claude-opus-5",
        )
    )
    await llm.aclose()
    body = server.requests[0].body
    assert "system" not in body
    texts = [
        block for turn in body["messages"] for block in turn["content"] if block["type"] == "text"
    ]
    assert texts == [{"type": "text", "text": "Weather in Paris?"}]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}
    ]


async def test_an_agents_failed_tool_result_is_marked_is_error(server: ScriptedServer) -> None:
    server.add(
        Reply(json=message([THINKING, TOOL_USE], stop="tool_use")),
        Reply(json=message([{"type": "text", "text": "The weather service is down."}])),
    )
    flow = tl.Flow("weather", inputs={"q": str})

    @tl.tool(retries=1)
    async def get_weather(city: str) -> str:
        """Current weather.

        Args:
            city: the city
        """
        raise RuntimeError("service unavailable")

    @flow.step
    async def ask(q: str, llm: tl.LLM) -> str:
        return await llm.agent(q, tools=[get_weather])

    binding = f"anthropic:claude-opus-5?base_url={server.url}&thinking=2048"
    async with tl.Engine(models={"default": binding}) as engine:
        result = await engine.run(flow, {"q": "Weather in Paris?"})
    assert result.ok, result.error
    turn = server.requests[1].body["messages"]
    assert turn[1]["content"][:1] == [THINKING]  # sent back in front of its tool call
    (tool_result,) = turn[2]["content"]
    assert tool_result["type"] == "tool_result"
    assert tool_result["tool_use_id"] == "toolu_01A"
    assert tool_result["is_error"] is True
    assert "service unavailable" in tool_result["content"]


# -- against the mock's claude-5 profile (thinking signed, checked when it comes back) -------


@pytest.mark.parametrize("stream", [False, True])
async def test_an_agent_with_thinking_completes_against_claude5(stream: bool) -> None:
    flow = tl.Flow("weather", inputs={"q": str})

    @tl.tool
    async def get_weather(city: str) -> str:
        """Current weather.

        Args:
            city: the city
        """
        return f"18C in {city}"

    @flow.step
    async def ask(q: str, llm: tl.LLM) -> Verdict:
        return await llm.agent(q, tools=[get_weather], output=Verdict)

    async with MockServer(seed=2) as server:
        binding = (
            f"anthropic:claude-opus-5?base_url={server.anthropic_base_url}&thinking=2048"
            f"&stream={str(stream).lower()}"
        )
        async with tl.Engine(models={"default": binding}) as engine:
            result = await engine.run(flow, {"q": "Weather in Paris?"})
    assert result.ok, result.error
    assert isinstance(result["ask"], Verdict)
    assert len(result.calls) >= 2  # a tool turn, then the answer
    assert server.stats.by_status == {200: len(result.calls)}  # the thinking went back intact


async def test_structured_output_with_thinking_against_claude5() -> None:
    flow = tl.Flow("judge", inputs={"text": str})

    @flow.step
    async def judge(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(text, output=Verdict)

    async with MockServer(seed=4) as server:
        binding = f"anthropic:claude-opus-5?base_url={server.anthropic_base_url}&thinking=2048"
        async with tl.Engine(models={"default": binding}) as engine:
            result = await engine.run(flow, {"text": "Is this fine?"})
        forced = AnthropicModel(
            "claude-opus-5",
            {"base_url": server.anthropic_base_url, "thinking": 2048, "structured": "tool"},
        )
        with pytest.raises(BadRequestError, match="tool_choice forces tool use"):
            await forced.complete(request(model="claude-opus-5", schema=SCHEMA))
        await forced.aclose()
    assert result.ok, result.error
    assert isinstance(result["judge"], Verdict)
    assert server.stats.by_status == {200: 1, 400: 1}
