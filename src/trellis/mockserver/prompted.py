"""Prompted JSON: the schema a request asks for in its messages rather than natively.

Clients without a native structured-output feature (Trellis's ``structured=prompt``, JSON
mode with the schema in the prompt, most local servers) write the schema into a system or
user message, e.g. "Reply with only a JSON value that matches the JSON schema below ...
JSON schema:\\n{...}". A real model follows that instruction; so does the mock server:
:func:`prompted_schema` finds the first JSON object after the words "JSON schema" that looks
like a schema (system messages first, then the latest user message), and the reply is
sampled from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from trellis.models.base import Message

__all__ = ["prompted_schema"]

_MARKER = re.compile(r"json[ _-]?schema", re.IGNORECASE)
_SCHEMA_KEYS = frozenset({"type", "properties", "$defs", "$ref", "anyOf", "oneOf", "enum"})
_DECODER = json.JSONDecoder()


def _schema_in(text: str) -> dict[str, Any] | None:
    for match in _MARKER.finditer(text):
        start = text.find("{", match.end())
        if start < 0:
            return None
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and _SCHEMA_KEYS & value.keys():
            return value
    return None


def _candidates(messages: tuple[Message, ...]) -> Iterable[str]:
    yield from (m.content for m in messages if m.role == "system")
    user = [m.content for m in messages if m.role == "user"]
    if user:
        yield user[-1]


def prompted_schema(messages: tuple[Message, ...]) -> dict[str, Any] | None:
    """The JSON schema the messages instruct the model to answer with, if any."""
    for text in _candidates(messages):
        schema = _schema_in(text)
        if schema is not None:
            return schema
    return None
