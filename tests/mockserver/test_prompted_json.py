"""Prompted JSON: a schema in the messages (no native structured-output field) is answered
with JSON valid for it, in both dialects, raw and through Trellis's own client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from trellis.mockserver import MockServer
from trellis.mockserver.prompted import prompted_schema
from trellis.models.base import Message, ModelRequest
from trellis.providers.openai import OpenAIModel, prompted_json_instruction

from . import post


class Ticket(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgency: int
    tags: list[str]


SCHEMA = Ticket.model_json_schema()
INSTRUCTION = prompted_json_instruction(SCHEMA)
ASK = {"role": "user", "content": "The export button crashes the app"}


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(seed=2) as s:
        yield s


def test_the_schema_is_found_after_the_words_json_schema() -> None:
    found = prompted_schema((Message("system", INSTRUCTION), Message("user", "hi")))
    assert found == SCHEMA
    assert prompted_schema((Message("user", 'Say {"type": "object"} politely'),)) is None
    assert prompted_schema((Message("user", "Use this JSON schema: {not json}"),)) is None
    assert prompted_schema((Message("user", 'JSON schema: {"name": "x"}'),)) is None


async def test_openai_prompted_json_is_valid_for_the_schema(server: MockServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": INSTRUCTION}, ASK]}
    response = await post(f"{server.openai_base_url}/chat/completions", body)
    assert response.status_code == 200, response.text
    Ticket.model_validate_json(response.json()["choices"][0]["message"]["content"])


async def test_openai_json_mode_follows_the_schema_in_the_prompt(server: MockServer) -> None:
    ask = {"role": "user", "content": f"{ASK['content']}\n\nAnswer in JSON. {INSTRUCTION}"}
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [ask],
        "response_format": {"type": "json_object"},
    }
    response = await post(f"{server.openai_base_url}/chat/completions", body)
    assert response.status_code == 200, response.text
    Ticket.model_validate_json(response.json()["choices"][0]["message"]["content"])


async def test_anthropic_prompted_json_is_valid_for_the_schema(server: MockServer) -> None:
    body = {"model": "claude-x", "max_tokens": 500, "system": INSTRUCTION, "messages": [ASK]}
    response = await post(f"{server.anthropic_base_url}/v1/messages", body)
    assert response.status_code == 200, response.text
    [block] = response.json()["content"]
    Ticket.model_validate_json(block["text"])


@pytest.mark.parametrize("stream", [False, True])
async def test_trellis_prompt_mode_gets_valid_json_at_the_first_attempt(
    server: MockServer, stream: bool
) -> None:
    options = {
        "base_url": server.openai_base_url,
        "api_key": "test",
        "structured": "prompt",
        "stream": stream,
    }
    model = OpenAIModel("gpt-4o-mini", options)
    try:
        request = ModelRequest(
            messages=(Message("user", ASK["content"]),),
            model="gpt-4o-mini",
            output_schema=SCHEMA,
            schema_name="Ticket",
        )
        response = await model.complete(request)
    finally:
        await model.aclose()
    assert response.finish_reason == "stop"
    Ticket.model_validate(json.loads(response.text))
    assert server.stats.requests == 1
