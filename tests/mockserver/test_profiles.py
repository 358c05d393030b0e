"""Mock-server profiles over real HTTP: each reproduces one real server's behaviour."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from trellis.cli.app import app
from trellis.mockserver import MockServer
from trellis.mockserver.profiles import PROFILES, profile_for, thinking_signature

from . import USER, anthropic_events, openai_chunks, post

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string"}},
                "required": ["tz"],
            },
        },
    },
]


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(seed=3) as s:
        yield s


async def chat(server: MockServer, **body: Any) -> tuple[int, Any]:
    response = await post(f"{server.openai_base_url}/chat/completions", {"messages": USER, **body})
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


async def messages(server: MockServer, **body: Any) -> tuple[int, Any]:
    response = await post(
        f"{server.anthropic_base_url}/v1/messages",
        {"max_tokens": 3000, "messages": USER, **body},
        headers={"anthropic-version": "2023-06-01"},
    )
    return response.status_code, response.json()


# -- choosing a profile ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "dialect", "expected"),
    [
        ("gpt-5", "openai", "gpt-5"),
        ("gpt-5-mini", "openai", "gpt-5"),
        ("gpt-5.1", "openai", "gpt-5"),
        ("o3-mini", "openai", "gpt-5"),
        ("o1", "openai", "gpt-5"),
        ("gpt-4o-mini", "openai", None),
        ("sim-small", "openai", None),
        ("claude-opus-5", "anthropic", "claude-5"),
        ("claude-5-haiku", "anthropic", "claude-5"),
        ("claude-sonnet-5-20260801", "anthropic", "claude-5"),
        ("claude-opus-4-7", "anthropic", "claude-5"),
        ("claude-sonnet-4-5", "anthropic", None),
        ("claude-opus-4-1", "anthropic", None),
        ("claude-opus-5", "openai", None),  # a profile acts on its own dialect only
        ("mistral-small-latest", "openai", "mistral"),
        ("devstral-2512", "openai", "mistral"),
    ],
)
def test_a_model_name_picks_its_profile(model: str, dialect: str, expected: str | None) -> None:
    found = profile_for(None, model, dialect)
    assert (found.name if found else None) == expected


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown mock-server profile 'gpt5'.*gpt-5, claude-5"):
        MockServer(profile="gpt5")


def test_the_cli_takes_and_checks_profile() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["mock-server", "--help"]).output
    assert "--profile" in help_text
    result = runner.invoke(app, ["mock-server", "--profile", "nope", "--port", "0"])
    assert result.exit_code != 0
    assert "unknown mock-server profile 'nope'" in result.output


def test_every_documented_profile_exists() -> None:
    assert set(PROFILES) == {"gpt-5", "claude-5", "mistral", "ollama", "no-done"}


# -- gpt-5 ------------------------------------------------------------------------------------


async def test_gpt5_rejects_max_tokens_with_openais_body(server: MockServer) -> None:
    status, body = await chat(server, model="gpt-5-mini", max_tokens=50)
    assert status == 400
    assert body == {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    status, body = await chat(server, model="gpt-5-mini", max_completion_tokens=50)
    assert status == 200 and body["choices"][0]["message"]["content"]


async def test_gpt5_rejects_a_non_default_temperature(server: MockServer) -> None:
    status, body = await chat(server, model="o3-mini", temperature=0.2)
    assert status == 400
    assert body["error"]["param"] == "temperature"
    assert body["error"]["code"] == "unsupported_value"
    assert body["error"]["message"] == (
        "Unsupported value: 'temperature' does not support 0.2 with this model. Only the "
        "default (1) value is supported."
    )
    assert (await chat(server, model="o3-mini", temperature=1))[0] == 200


async def test_other_models_take_both_without_a_profile(server: MockServer) -> None:
    status, _ = await chat(server, model="gpt-4o-mini", max_tokens=50, temperature=0.2)
    assert status == 200


async def test_a_forced_profile_applies_to_every_model() -> None:
    async with MockServer(profile="gpt-5") as server:
        status, body = await chat(server, model="sim-small", max_tokens=5)
    assert status == 400 and body["error"]["code"] == "unsupported_parameter"
    assert server.stats.by_status[400] == 1


# -- claude-5 --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-opus-5", "claude-opus-4-7", "claude-sonnet-5"])
async def test_claude5_rejects_temperature(server: MockServer, model: str) -> None:
    status, body = await messages(server, model=model, temperature=0.5)
    assert status == 400
    assert body["type"] == "error"
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "`temperature` is deprecated for this model.",
    }
    assert body["request_id"].startswith("req_011")
    assert (await messages(server, model=model))[0] == 200


async def test_older_claude_takes_temperature(server: MockServer) -> None:
    assert (await messages(server, model="claude-sonnet-4-5", temperature=0.5))[0] == 200


# -- mistral ---------------------------------------------------------------------------------


async def test_mistral_rejects_stream_options_with_a_pydantic_422(server: MockServer) -> None:
    status, body = await chat(
        server, model="mistral-small-latest", stream=True, stream_options={"include_usage": True}
    )
    assert status == 422
    assert body == {
        "object": "error",
        "message": {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "stream_options"],
                    "msg": "Extra inputs are not permitted",
                    "input": {"include_usage": True},
                }
            ]
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    status, text = await chat(server, model="mistral-small-latest", stream=True)
    assert status == 200
    assert openai_chunks(text)[1]


async def test_mistral_names_every_extra_field(server: MockServer) -> None:
    status, body = await chat(
        server,
        model="mistral-large-latest",
        max_completion_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert status == 422
    locs = [d["loc"] for d in body["message"]["detail"]]
    assert locs == [["body", "stream_options"], ["body", "max_completion_tokens"]]


# -- ollama ----------------------------------------------------------------------------------


async def test_ollama_streams_parallel_tool_calls_all_at_index_0() -> None:
    async with MockServer(profile="ollama", seed=1) as server:
        status, text = await chat(
            server, model="qwen3", tools=TOOLS, tool_choice="auto", stream=True
        )
    assert status == 200
    chunks, done = openai_chunks(text)
    assert done
    deltas = [
        call
        for c in chunks
        for choice in c["choices"]
        for call in choice["delta"].get("tool_calls") or ()
    ]
    assert len(deltas) == 2
    assert {d["index"] for d in deltas} == {0}
    assert len({d["id"] for d in deltas}) == 2
    assert {d["function"]["name"] for d in deltas} == {"get_weather", "get_time"}
    for delta in deltas:  # each call complete in its one chunk
        assert isinstance(json.loads(delta["function"]["arguments"]), dict)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["system_fingerprint"] == "fp_ollama" for c in chunks)


async def test_ollama_labels_a_401_api_error() -> None:
    async with MockServer(profile="ollama", api_key="right") as server:
        response = await post(
            f"{server.openai_base_url}/chat/completions",
            {"model": "qwen3", "messages": USER},
            headers={"Authorization": "Bearer wrong"},
        )
    assert response.status_code == 401
    assert response.json() == {
        "error": {"message": "unauthorized", "type": "api_error", "param": None, "code": None}
    }


async def test_ollama_labels_a_400_invalid_request() -> None:
    async with MockServer(profile="ollama") as server:
        status, body = await chat(server, model="qwen3", n=3)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"


# -- no-done ---------------------------------------------------------------------------------


async def test_no_done_ends_the_stream_after_the_finish_reason() -> None:
    async with MockServer(profile="no-done") as server:
        status, text = await chat(
            server, model="sim-small", stream=True, stream_options={"include_usage": True}
        )
    assert status == 200
    chunks, done = openai_chunks(text)
    assert not done
    assert "[DONE]" not in text
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_profiles_leave_the_other_dialect_alone() -> None:
    async with MockServer(profile="gpt-5") as server:
        status, _ = await messages(server, model="sim-small", temperature=0.3)
    assert status == 200


# -- claude-5 with thinking ----------------------------------------------------------------


THINK = {"type": "enabled", "budget_tokens": 2048}
WEATHER_TOOL = {
    "name": "get_weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


async def test_claude5_replies_start_with_a_signed_thinking_block(server: MockServer) -> None:
    status, body = await messages(server, model="claude-opus-5", thinking=THINK)
    assert status == 200
    first, *rest = body["content"]
    assert first["type"] == "thinking"
    assert first["signature"] == thinking_signature(first["thinking"])
    assert [b["type"] for b in rest] == ["text"]


async def test_claude5_streams_the_thinking_block_first(server: MockServer) -> None:
    response = await post(
        f"{server.anthropic_base_url}/v1/messages",
        {
            "model": "claude-opus-5",
            "max_tokens": 100,
            "messages": USER,
            "thinking": THINK,
            "stream": True,
        },
        headers={"anthropic-version": "2023-06-01"},
    )
    events = anthropic_events(response.text)
    starts = [
        (d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"
    ]
    assert starts == [(0, "thinking"), (1, "text")]
    deltas = {
        d["delta"]["type"] for n, d in events if n == "content_block_delta" and d["index"] == 0
    }
    assert deltas == {"thinking_delta", "signature_delta"}


async def test_claude5_refuses_a_forced_tool_with_thinking(server: MockServer) -> None:
    status, body = await messages(
        server,
        model="claude-opus-5",
        thinking=THINK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert status == 400
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "Thinking may not be enabled when tool_choice forces tool use.",
    }


async def test_claude5_wants_the_thinking_block_back_unchanged(server: MockServer) -> None:
    status, first = await messages(
        server,
        model="claude-opus-5",
        thinking=THINK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
    )
    assert status == 200
    thinking, call = first["content"][0], first["content"][-1]
    assert call["type"] == "tool_use"
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18C"}],
    }

    async def turn(assistant: list[dict[str, Any]]) -> tuple[int, Any]:
        return await messages(
            server,
            model="claude-opus-5",
            thinking=THINK,
            tools=[WEATHER_TOOL],
            messages=[*USER, {"role": "assistant", "content": assistant}, result],
        )

    status, body = await turn([call])
    assert status == 400
    assert body["error"]["message"].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start"
    )
    status, body = await turn([{**thinking, "signature": "EqForged"}, call])
    assert status == 400
    assert (
        body["error"]["message"] == "messages.1.content.0: Invalid `signature` in `thinking` block"
    )
    status, body = await turn([thinking, call])
    assert status == 200
