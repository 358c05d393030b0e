"""Requests OpenAI's Chat Completions API rejects, and the 400 it answers for each.

The mock server runs :data:`RULES` on every ``POST /v1/chat/completions`` body that parses,
so a client that passes the mock does not fail against the real API for these reasons:

- ``unknown_field``: a top-level field the API does not define (the list is
  ``CreateChatCompletionRequest`` of the official OpenAPI spec): "Unrecognized request
  argument supplied: foo";
- ``tool_message_without_call``: a ``tool`` message not answering a preceding assistant
  message with ``tool_calls``, or answering an id it does not have;
- ``unanswered_tool_calls``: an assistant message whose ``tool_calls`` are not all
  answered by the ``tool`` messages right after it;
- ``invalid_schema_name`` / ``invalid_tool_name``: a ``response_format`` schema or a
  function name not matching ``^[a-zA-Z0-9_-]+$`` (at most 64 characters);
- ``strict_schema_not_closed``: ``strict: true`` (response format or function) with an
  object that is not closed (``additionalProperties: false``, every property required).

Errors are OpenAI's body ``{"error": {"message", "type": "invalid_request_error", "param",
"code"}}`` with the API's wording.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.mockserver.replies import RequestError
from trellis.mockserver.validation import Rule, open_objects, valid_name

__all__ = ["KNOWN_FIELDS", "RULES"]

#: The properties of ``CreateChatCompletionRequest`` (openai/openai-openapi).
KNOWN_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
_PATTERN = "^[a-zA-Z0-9_-]+$"


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = body.get("messages")
    if not isinstance(raw, list):
        return []
    return [m if isinstance(m, Mapping) else {} for m in raw]


def _call_ids(message: Mapping[str, Any]) -> list[str]:
    calls = message.get("tool_calls")
    if message.get("role") != "assistant" or not isinstance(calls, list):
        return []
    return [str(c.get("id", "")) for c in calls if isinstance(c, Mapping)]


def unknown_field(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    unknown = sorted(k for k in body if k not in KNOWN_FIELDS)
    if not unknown:
        return None
    if len(unknown) == 1:
        return RequestError(f"Unrecognized request argument supplied: {unknown[0]}")
    return RequestError(f"Unrecognized request arguments supplied: {', '.join(unknown)}")


def tool_message_without_call(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    """A ``tool`` message must follow an assistant ``tool_calls`` message (or another
    ``tool`` message answering it) and answer one of its calls."""
    calls: list[str] = []
    for i, message in enumerate(_messages(body)):
        if message.get("role") != "tool":
            calls = _call_ids(message)
            continue
        if not calls:
            return RequestError(
                "Invalid parameter: messages with role 'tool' must be a response to a "
                "preceeding message with 'tool_calls'.",
                param=f"messages.[{i}].role",
            )
        call_id = message.get("tool_call_id")
        if call_id not in calls:
            return RequestError(
                f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' "
                "of previous message."
            )
    return None


def unanswered_tool_calls(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    """Every ``tool_call_id`` of an assistant message is answered by the ``tool`` messages
    that come right after it."""
    messages = _messages(body)
    for i, message in enumerate(messages):
        ids = _call_ids(message)
        if not ids:
            continue
        answered: set[str] = set()
        for later in messages[i + 1 :]:
            if later.get("role") != "tool":
                break
            answered.add(str(later.get("tool_call_id", "")))
        missing = [call_id for call_id in ids if call_id not in answered]
        if missing:
            return RequestError(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(missing)}",
                param=f"messages.[{i}].role",
            )
    return None


def _name_error(name: Any, where: str) -> RequestError | None:
    if valid_name(name):
        return None
    if isinstance(name, str) and len(name) > 64:
        return RequestError(
            f"Invalid '{where}': string too long. Expected a string with maximum length 64, "
            f"but got a string with length {len(name)} instead.",
            param=where,
            code="string_above_max_length",
        )
    return RequestError(
        f"Invalid '{where}': string does not match pattern. Expected a string that matches "
        f"the pattern '{_PATTERN}'.",
        param=where,
        code="invalid_value",
    )


def _json_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    return spec if isinstance(spec, Mapping) else None


def _functions(body: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping):
            out.append((i, fn))
    return out


def invalid_schema_name(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    spec = _json_schema(body)
    if spec is None or "name" not in spec:
        return None
    return _name_error(spec["name"], "response_format.json_schema.name")


def invalid_tool_name(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestError | None:
    for i, fn in _functions(body):
        error = _name_error(fn.get("name"), f"tools[{i}].function.name")
        if error is not None:
            return error
    return None


def strict_schema_not_closed(
    body: Mapping[str, Any], headers: Mapping[str, str]
) -> RequestError | None:
    spec = _json_schema(body)
    if spec is not None and spec.get("strict") is True:
        for context, what in open_objects(spec.get("schema", {})):
            return RequestError(
                f"Invalid schema for response_format '{spec.get('name')}': In "
                f"context={context!r}, {what}",
                param="response_format",
            )
    for i, fn in _functions(body):
        if fn.get("strict") is not True:
            continue
        for context, what in open_objects(fn.get("parameters", {})):
            return RequestError(
                f"Invalid schema for function '{fn.get('name')}': In context={context!r}, {what}",
                param=f"tools[{i}].function.parameters",
            )
    return None


RULES: tuple[Rule, ...] = (
    Rule("unknown_field", unknown_field),
    Rule("tool_message_without_call", tool_message_without_call),
    Rule("unanswered_tool_calls", unanswered_tool_calls),
    Rule("invalid_schema_name", invalid_schema_name),
    Rule("invalid_tool_name", invalid_tool_name),
    Rule("strict_schema_not_closed", strict_schema_not_closed),
)
