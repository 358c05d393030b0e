"""Rough token estimates (≈ 4 characters per token) shared by the offline providers.

The simulator and the function-backed test models have no tokenizer; they bill with the
same simple rule so that budgets and accounting behave plausibly in tests and benchmarks:

* ``estimate_tokens(text)`` = ``ceil(len(text) / 4)``;
* a request costs ``ceil((characters of all messages + of the JSON output schema) / 4)``
  plus 3 tokens of framing per message;
* tools add ``estimate_tool_tokens(request)``: each tool definition (name, description and
  JSON parameters) and each tool call of the conversation's assistant turns (name and
  arguments). It is kept apart from ``estimate_request_tokens`` because callers that bill
  tool definitions themselves (the mock server) add them on top of that estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trellis.models.base import ModelRequest

__all__ = ["estimate_request_tokens", "estimate_tokens", "estimate_tool_tokens", "schema_json"]

_TOKENS_PER_MESSAGE = 3
_SCHEMA_JSON_CACHE: dict[int, tuple[Mapping[str, Any], str]] = {}
_SCHEMA_JSON_CACHE_SIZE = 256


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters, rounded up (0 for the empty string)."""
    return (len(text) + 3) // 4


def schema_json(schema: Mapping[str, Any]) -> str:
    """``json.dumps(schema, sort_keys=True)``, cached per schema object.

    Requests of one step share the same schema dict, so the cache is keyed by identity;
    the entry keeps the dict alive, so an ``id`` is never confused with a recycled one.
    Schemas are treated as immutable once they have been sent.
    """
    key = id(schema)
    hit = _SCHEMA_JSON_CACHE.get(key)
    if hit is not None and hit[0] is schema:
        return hit[1]
    text = json.dumps(schema, sort_keys=True, default=str)
    if len(_SCHEMA_JSON_CACHE) >= _SCHEMA_JSON_CACHE_SIZE:
        _SCHEMA_JSON_CACHE.clear()
    _SCHEMA_JSON_CACHE[key] = (schema, text)
    return text


def estimate_request_tokens(request: ModelRequest) -> int:
    """Input tokens of ``request``: its messages and output schema, plus per-message framing."""
    messages = request.messages
    chars = 0
    for m in messages:  # a loop, not sum() of a generator: most requests have 1-3 messages
        chars += len(m.content)
    schema = request.output_schema
    if schema is not None:
        chars += len(schema_json(schema))
    return (chars + 3) // 4 + _TOKENS_PER_MESSAGE * len(messages)


def estimate_tool_tokens(request: ModelRequest) -> int:
    """Input tokens of ``request``'s tools beyond :func:`estimate_request_tokens`: the tool
    definitions (name + description + JSON parameters, each rounded up on its own, as the
    mock server bills them) and the tool calls of the assistant turns (name + arguments)."""
    tokens = 0
    for tool in request.tools:
        tokens += estimate_tokens(tool.name + tool.description + schema_json(tool.parameters))
    for m in request.messages:
        for call in m.tool_calls:
            tokens += estimate_tokens(call.name + call.arguments)
    return tokens
