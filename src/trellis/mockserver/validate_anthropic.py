"""Requests Anthropic's Messages API rejects, and the 400 it answers for each.

The mock server runs :data:`RULES` on every ``POST /v1/messages`` body that parses:

- ``missing_version``: no ``anthropic-version`` header;
- ``unknown_field``: a top-level field ``MessageCreateParams`` does not define (the
  official SDK's types; with an ``anthropic-beta`` header the beta fields too):
  "foo: Extra inputs are not permitted";
- ``empty_text_block``: an empty text block, or a message whose text is only whitespace;
- ``tool_result_without_call``: a ``tool_result`` whose ``tool_use_id`` is not a
  ``tool_use`` of the previous (assistant) message;
- ``unanswered_tool_use``: ``tool_use`` blocks without their ``tool_result`` in the next
  message;
- ``tool_result_not_first``: the next message has the results, but not as its first
  blocks;
- ``invalid_tool_name``: a tool name not matching ``^[a-zA-Z0-9_-]{1,64}$``;
- ``thinking_with_forced_tool``: ``thinking`` enabled with ``tool_choice`` ``any`` or
  ``tool``.

Errors are ``{"type": "error", "error": {"type": "invalid_request_error", "message"}}`` with
the API's wording (``messages.N`` paths count from 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.mockserver.replies import RequestError
from trellis.mockserver.validation import NAME_PATTERN, Rule, valid_name

__all__ = ["BETA_FIELDS", "KNOWN_FIELDS", "RULES"]

#: The body fields of ``MessageCreateParams`` (anthropics/anthropic-sdk-python).
KNOWN_FIELDS = frozenset(
    {
        "cache_control",
        "container",
        "inference_geo",
        "max_tokens",
        "messages",
        "metadata",
        "model",
        "output_config",
        "service_tier",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
#: The further body fields of the beta ``MessageCreateParams`` (with ``anthropic-beta``).
BETA_FIELDS = frozenset(
    {
        "context_management",
        "diagnostics",
        "fallback_credit_token",
        "fallbacks",
        "mcp_servers",
        "output_format",
        "speed",
    }
)


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = body.get("messages")
    if not isinstance(raw, list):
        return []
    return [m if isinstance(m, Mapping) else {} for m in raw]


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b if isinstance(b, Mapping) else {} for b in content]


def _tool_use_ids(message: Mapping[str, Any]) -> list[str]:
    if message.get("role") != "assistant":
        return []
    return [str(b.get("id", "")) for b in _blocks(message) if b.get("type") == "tool_use"]


def missing_version(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    if headers.get("anthropic-version"):
        return None
    return RequestError("anthropic-version: header is required")


def unknown_field(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    known = KNOWN_FIELDS | BETA_FIELDS if headers.get("anthropic-beta") else KNOWN_FIELDS
    unknown = sorted(k for k in body if k not in known)
    if not unknown:
        return None
    return RequestError(f"{unknown[0]}: Extra inputs are not permitted")


def empty_text_block(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    """Text blocks must be non-empty, and a message's text must not be only whitespace
    (a whitespace block next to real text is accepted)."""
    messages = _messages(body)
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            final_assistant = i == len(messages) - 1 and message.get("role") == "assistant"
            if content == "" and not final_assistant:
                return RequestError(
                    f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            if content and not content.strip():
                return RequestError(
                    "messages: text content blocks must contain non-whitespace text"
                )
            continue
        texts = [b.get("text") for b in _blocks(message) if b.get("type") == "text"]
        if any(t == "" for t in texts):
            return RequestError("messages: text content blocks must be non-empty")
        strings = [t for t in texts if isinstance(t, str)]
        if strings and not any(t.strip() for t in strings):
            return RequestError("messages: text content blocks must contain non-whitespace text")
    return None


def tool_result_without_call(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    previous: list[str] = []
    for i, message in enumerate(_messages(body)):
        for j, block in enumerate(_blocks(message)):
            if block.get("type") != "tool_result":
                continue
            use_id = str(block.get("tool_use_id", ""))
            if use_id not in previous:
                return RequestError(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {use_id}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        previous = _tool_use_ids(message)
    return None


def _results(message: Mapping[str, Any]) -> list[str]:
    return [
        str(b.get("tool_use_id", "")) for b in _blocks(message) if b.get("type") == "tool_result"
    ]


def unanswered_tool_use(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    messages = _messages(body)
    for i, message in enumerate(messages[:-1]):
        ids = _tool_use_ids(message)
        answered = set(_results(messages[i + 1]))
        missing = [use_id for use_id in ids if use_id not in answered]
        if missing:
            return RequestError(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    return None


def tool_result_not_first(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    messages = _messages(body)
    for i, message in enumerate(messages[:-1]):
        ids = _tool_use_ids(message)
        count = len(ids)
        if not count or not set(ids) <= set(_results(messages[i + 1])):
            continue  # nothing to answer, or unanswered_tool_use's error
        head = _blocks(messages[i + 1])[:count]
        if any(b.get("type") != "tool_result" for b in head) or len(head) < count:
            return RequestError(
                f"messages.{i + 1}: Did not find {count} `tool_result` block(s) at the "
                "beginning of this message. Messages following `tool_use` blocks must begin "
                "with a matching number of `tool_result` blocks."
            )
    return None


def invalid_tool_name(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") not in (None, "custom"):
            continue
        if not valid_name(tool.get("name")):
            return RequestError(
                f"tools.{i}.custom.name: String should match pattern '{NAME_PATTERN.pattern}'"
            )
    return None


def thinking_with_forced_tool(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    thinking = body.get("thinking")
    choice = body.get("tool_choice")
    enabled = isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")
    forced = isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")
    if enabled and forced:
        return RequestError("Thinking may not be enabled when tool_choice forces tool use.")
    return None


RULES: tuple[Rule, ...] = (
    Rule("missing_version", missing_version),
    Rule("unknown_field", unknown_field),
    Rule("empty_text_block", empty_text_block),
    Rule("tool_result_without_call", tool_result_without_call),
    Rule("tool_result_not_first", tool_result_not_first),
    Rule("unanswered_tool_use", unanswered_tool_use),
    Rule("invalid_tool_name", invalid_tool_name),
    Rule("thinking_with_forced_tool", thinking_with_forced_tool),
)
