"""How the mock model finishes an agent: after tool results it answers, with the output
tool when the request has one (Anthropic structured output), else in text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from trellis.mockserver import MockServer

from . import USER, post


class Answer(BaseModel):
    answer: str
    sources: list[str]


LOOKUP = {
    "name": "lookup",
    "description": "Look a fact up",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
OUTPUT = {
    "name": "Answer",
    "description": "Give your final answer by calling this tool exactly once; its input is the "
    "answer.",
    "input_schema": Answer.model_json_schema(),
}
AFTER_RESULTS = [
    *USER,
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}],
    },
]


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(seed=7) as s:
        yield s


async def _message(server: MockServer, **body: Any) -> dict[str, Any]:
    body = {"model": "claude-x", "max_tokens": 500, **body}
    response = await post(f"{server.anthropic_base_url}/v1/messages", body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


@pytest.mark.parametrize("choice", [{"type": "auto"}, {"type": "any"}])
async def test_after_tool_results_the_output_tool_is_called(
    server: MockServer, choice: dict[str, str]
) -> None:
    for tools in ([LOOKUP, OUTPUT], [OUTPUT, LOOKUP]):  # wherever it is listed
        data = await _message(server, messages=AFTER_RESULTS, tools=tools, tool_choice=choice)
        [block] = data["content"]
        assert block["type"] == "tool_use" and block["name"] == "Answer"
        Answer.model_validate(block["input"])
        assert data["stop_reason"] == "tool_use"


async def test_without_an_output_tool_auto_answers_in_text(server: MockServer) -> None:
    data = await _message(
        server, messages=AFTER_RESULTS, tools=[LOOKUP], tool_choice={"type": "auto"}
    )
    assert [b["type"] for b in data["content"]] == ["text"]
    assert data["stop_reason"] == "end_turn"


async def test_a_required_call_after_results_without_an_output_tool_goes_to_the_last(
    server: MockServer,
) -> None:
    other = {**LOOKUP, "name": "other"}
    data = await _message(
        server, messages=AFTER_RESULTS, tools=[LOOKUP, other], tool_choice={"type": "any"}
    )
    assert [b["name"] for b in data["content"]] == ["other"]


async def test_before_any_tool_result_a_tool_is_still_called(server: MockServer) -> None:
    data = await _message(
        server, messages=USER, tools=[LOOKUP, OUTPUT], tool_choice={"type": "any"}
    )
    assert data["content"][-1]["type"] == "tool_use"
