"""A conversation and a reply written down as the OpenTelemetry GenAI conventions' message
parts (``{"role": ..., "parts": [{"type": "text", "content": ...}, ...]}``).

One shape for every place that keeps what a model was asked and what it answered: the
``gen_ai.input.messages`` / ``gen_ai.output.messages`` attributes of a trace, and the
``prompt`` / ``output`` of a recorded attempt (``Engine(record_prompts=True)``) that
``trellis show`` and the web UI display.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trellis.models.base import ModelResponse
from trellis.types import Message, ToolCall

__all__ = ["message_parts", "reply_parts"]


def _tool_call_parts(calls: Iterable[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
    ]


def message_parts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """The messages sent, one ``{"role", "parts"}`` per message."""
    out: list[dict[str, Any]] = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        if m.role == "tool":
            parts.append(
                {"type": "tool_call_response", "id": m.tool_call_id, "response": m.content}
            )
        elif m.content:
            parts.append({"type": "text", "content": m.content})
        parts.extend(_tool_call_parts(m.tool_calls))
        out.append({"role": m.role, "parts": parts})
    return out


def reply_parts(response: ModelResponse) -> list[dict[str, Any]]:
    """The reply (its text and tool calls) as one assistant message with its finish
    reason (the provider's own value when it has one)."""
    parts: list[dict[str, Any]] = []
    if response.text:
        parts.append({"type": "text", "content": response.text})
    parts.extend(_tool_call_parts(response.tool_calls))
    finish = response.raw_finish_reason or response.finish_reason
    return [{"role": "assistant", "parts": parts, "finish_reason": finish}]
