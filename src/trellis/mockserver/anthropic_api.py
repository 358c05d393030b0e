"""The Anthropic Messages dialect of the mock server.

``POST /v1/messages`` requests become :class:`~trellis.models.base.ModelRequest`
(``system``, text / ``tool_use`` / ``tool_result`` content blocks, ``tools`` with
``input_schema``, ``tool_choice`` auto / any / tool / none, ``max_tokens``, ``temperature``)
and replies are rendered as ``message`` objects or the SSE event sequence
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta``, ``message_stop``. A forced tool
(``tool_choice: {"type": "tool", "name": ...}``) is answered with a ``tool_use`` block whose
``input`` is valid for the tool's schema: structured output the Anthropic way. Errors use
``{"type": "error", "error": {"type", "message"}}`` and rate limits the
``anthropic-ratelimit-*`` headers (resets as RFC 3339 times).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from trellis.mockserver.limits import Admission, LimitSnapshot, format_rfc3339
from trellis.mockserver.replies import (
    ErrorKind,
    ParsedRequest,
    Reply,
    RequestError,
    StreamPlan,
    retry_after_value,
    split_text,
    sse_event,
)
from trellis.mockserver.validate_anthropic import RULES
from trellis.mockserver.validation import check
from trellis.models.base import Message, ModelRequest, ToolCall, ToolSpec, Usage

__all__ = ["AnthropicDialect", "models_list"]

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "refusal": "refusal"}
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _text(content: Any, where: str) -> str:
    """The text of a string or a list of blocks (non-text blocks as ``[type]``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if not isinstance(block, Mapping) or "type" not in block:
                raise RequestError(f"{where}: each content block needs a 'type'")
            if block["type"] == "text":
                parts.append(str(block.get("text", "")))
            else:
                parts.append(f"[{block['type']}]")
        return "\n".join(parts)
    raise RequestError(f"{where}: Input should be a valid string or list of content blocks")


def _turn(role: Any, content: Any, where: str) -> list[Message]:
    if role not in ("user", "assistant"):
        raise RequestError(f"{where}.role: Input should be 'user' or 'assistant'")
    if not isinstance(content, list):
        return [Message(role, _text(content, f"{where}.content"))]
    out: list[Message] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        if not isinstance(block, Mapping) or "type" not in block:
            raise RequestError(f"{at}.type: Field required")
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and role == "assistant":
            args = json.dumps(block.get("input", {}), ensure_ascii=False)
            calls.append(ToolCall(str(block.get("id", "")), str(block.get("name", "")), args))
        elif kind == "tool_result" and role == "user":
            use_id = block.get("tool_use_id")
            if not isinstance(use_id, str):
                raise RequestError(f"{at}.tool_use_id: Field required")
            out.append(Message("tool", _text(block.get("content"), at), tool_call_id=use_id))
        elif kind not in ("thinking", "redacted_thinking"):
            texts.append(f"[{kind}]")
    if texts or calls or not out:
        out.append(Message(role, "\n".join(texts), tool_calls=tuple(calls)))
    return out


def _messages(raw: Any, system: Any) -> tuple[Message, ...]:
    if raw is None:
        raise RequestError("messages: Field required")
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages: at least one message is required")
    out: list[Message] = []
    if system is not None:
        out.append(Message("system", _text(system, "system")))
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise RequestError(f"messages.{i}: Input should be a valid dictionary")
        out.extend(_turn(m.get("role"), m.get("content"), f"messages.{i}"))
    return tuple(out)


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RequestError("tools: Input should be a valid list")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise RequestError(f"tools.{i}.name: Field required")
        if tool.get("type") not in (None, "custom"):
            raise RequestError(
                f"tools.{i}: the mock server supports custom tools only, not {tool['type']!r}"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise RequestError(f"tools.{i}.custom.input_schema: Field required")
        specs.append(ToolSpec(tool["name"], str(tool.get("description") or ""), dict(schema)))
    return tuple(specs)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RequestError("tool_choice: Input should be a valid dictionary")
    kind = raw.get("type")
    if kind == "none":
        return "none"
    if kind == "auto":
        return "auto"
    if not tools and kind in ("any", "tool"):
        raise RequestError("tool_choice: tool_choice may only be specified while providing tools.")
    if kind == "any":
        return "required"
    if kind == "tool":
        name = raw.get("name")
        if name not in {t.name for t in tools}:
            raise RequestError(f"tool_choice.name: tool {name!r} was not provided in 'tools'")
        return str(name)
    raise RequestError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _tool_input(arguments: str) -> dict[str, Any] | None:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def models_list(models: list[str]) -> dict[str, Any]:
    created = format_rfc3339(time.time())
    data = [{"type": "model", "id": m, "display_name": m, "created_at": created} for m in models]
    return {
        "data": data,
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }


class AnthropicDialect:
    """Parse and render Anthropic Messages (see the module docs)."""

    name = "anthropic"

    def parse(self, body: Any) -> ParsedRequest:
        if not isinstance(body, Mapping):
            raise RequestError("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("model: Field required")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise RequestError("max_tokens: Field required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("max_tokens: Input should be a positive integer")
        temperature = body.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 1
        ):
            raise RequestError("temperature: Input should be a number between 0 and 1")
        tools = _tools(body.get("tools"))
        choice = _tool_choice(body.get("tool_choice"), tools)
        request = ModelRequest(
            messages=_messages(body.get("messages"), body.get("system")),
            model=model,
            temperature=None if temperature is None else float(temperature),
            max_tokens=max_tokens,
            tools=tools,
            tool_choice=choice,
        )
        return ParsedRequest(request, stream=body.get("stream") is True)

    def validate(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        """Reject what the real API rejects (:mod:`~trellis.mockserver.validate_anthropic`)."""
        check(RULES, body, headers)

    # -- replies ---------------------------------------------------------------------------

    def _blocks(self, reply: Reply) -> list[dict[str, Any]]:
        if reply.refusal is not None:
            return [{"type": "text", "text": reply.refusal}]
        blocks: list[dict[str, Any]] = []
        if reply.text or not reply.tool_calls:
            blocks.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            value = _tool_input(call.arguments)
            if value is None and reply.finish != "length":
                # Unparseable arguments cannot be a tool_use input: the model wrote its
                # (broken) JSON as text instead.
                blocks.append({"type": "text", "text": call.arguments})
                continue
            tool_id = _new_id("toolu_01")
            blocks.append(
                {"type": "tool_use", "id": tool_id, "name": call.name, "input": value or {}}
            )
        return blocks

    def _stop(self, reply: Reply, blocks: list[dict[str, Any]]) -> str:
        if reply.finish == "tool_calls" and not any(b["type"] == "tool_use" for b in blocks):
            return "end_turn"
        return _STOP[reply.finish]

    def render(self, parsed: ParsedRequest, reply: Reply) -> dict[str, Any]:
        blocks = self._blocks(reply)
        return {
            "id": _new_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": parsed.request.model,
            "content": blocks,
            "stop_reason": self._stop(reply, blocks),
            "stop_sequence": None,
            "usage": _usage(reply.usage),
        }

    def stream(self, parsed: ParsedRequest, reply: Reply) -> StreamPlan:
        start_usage = _usage(Usage(reply.usage.input_tokens, 1))
        message: dict[str, Any] = {
            "id": _new_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": parsed.request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        events = [sse_event("message_start", {"type": "message_start", "message": message})]
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if reply.refusal is not None:
            pieces = split_text(reply.refusal)
            blocks.append(({"type": "text", "text": ""}, [_text_delta(p) for p in pieces]))
        else:
            if reply.text or not reply.tool_calls:
                deltas = [_text_delta(p) for p in split_text(reply.text)]
                blocks.append(({"type": "text", "text": ""}, deltas))
            for call in reply.tool_calls:
                head = {
                    "type": "tool_use",
                    "id": _new_id("toolu_01"),
                    "name": call.name,
                    "input": {},
                }
                parts = ["", *split_text(call.arguments)]
                blocks.append(
                    (head, [{"type": "input_json_delta", "partial_json": p} for p in parts])
                )
        for index, (head, deltas) in enumerate(blocks):
            start = {"type": "content_block_start", "index": index, "content_block": head}
            events.append(sse_event("content_block_start", start))
            if index == 0:
                events.append(sse_event("ping", {"type": "ping"}))
            for delta in deltas:
                body = {"type": "content_block_delta", "index": index, "delta": delta}
                events.append(sse_event("content_block_delta", body))
            events.append(
                sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        stop = _STOP[reply.finish]
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": reply.usage.output_tokens},
        }
        events.append(sse_event("message_delta", final))
        events.append(sse_event("message_stop", {"type": "message_stop"}))
        return StreamPlan(events, 2)

    def stream_error(self, message: str | None) -> bytes:
        error = {"type": "overloaded_error", "message": message or "Overloaded"}
        return sse_event("error", {"type": "error", "error": error})

    # -- errors ----------------------------------------------------------------------------

    @staticmethod
    def _body(type_: str, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": type_, "message": message}}

    def error(
        self,
        kind: ErrorKind,
        *,
        model: str,
        message: str | None = None,
        tokens: int = 0,
        param: str | None = None,
        code: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        if kind == "bad_request":
            return 400, self._body("invalid_request_error", message or "Invalid request.")
        if kind == "auth":
            return 401, self._body("authentication_error", message or "invalid x-api-key")
        if kind == "rate_limit":
            msg = message or (
                "This request would exceed the rate limit for your organization (org-mock). "
                "For details, refer to: https://docs.claude.com/en/api/rate-limits. You can "
                "see the response headers for current usage. Please reduce the prompt length "
                "or the maximum tokens requested, or try again later."
            )
            return 429, self._body("rate_limit_error", msg)
        if kind == "quota":
            msg = message or (
                "Your credit balance is too low to access the Anthropic API. Please go to "
                "Plans & Billing to upgrade or purchase credits."
            )
            return 402, self._body("billing_error", msg)
        if kind == "overloaded":
            return 529, self._body("overloaded_error", message or "Overloaded")
        if kind == "context_length":
            limit = 200_000
            msg = (
                message or f"prompt is too long: {max(tokens, limit + 1)} tokens > {limit} maximum"
            )
            return 400, self._body("invalid_request_error", msg)
        return 500, self._body("api_error", message or "Internal server error")

    def error_for_status(self, status: int, message: str | None = None) -> dict[str, Any]:
        type_ = _STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return self._body(type_, message or f"Mock error (HTTP {status}).")

    def limit_error(self, admission: Admission, *, model: str) -> tuple[int, dict[str, Any]]:
        unit = "requests" if admission.dimension == "requests" else "tokens"
        if admission.retry_after_s is None:
            msg = (
                f"Request too large: {admission.requested} {unit} exceeds the rate limit of "
                f"{admission.limit} {unit} per minute for your organization (org-mock)."
            )
        else:
            msg = (
                "This request would exceed the rate limit for your organization (org-mock) "
                f"of {admission.limit} {unit} per minute. For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits. You can see the response headers "
                "for current usage. Please reduce the prompt length or the maximum tokens "
                "requested, or try again later."
            )
        return 429, self._body("rate_limit_error", msg)

    # -- headers ---------------------------------------------------------------------------

    def limit_headers(self, snapshot: LimitSnapshot) -> dict[str, str]:
        headers: dict[str, str] = {}
        for dim, state in (("requests", snapshot.requests), ("tokens", snapshot.tokens)):
            if state is not None:
                reset = format_rfc3339(snapshot.wall_time + state.reset_s)
                headers[f"anthropic-ratelimit-{dim}-limit"] = str(state.limit)
                headers[f"anthropic-ratelimit-{dim}-remaining"] = str(state.remaining)
                headers[f"anthropic-ratelimit-{dim}-reset"] = reset
        return headers

    def retry_headers(self, seconds: float, *, whole_seconds: bool = False) -> dict[str, str]:
        return {"retry-after": retry_after_value(seconds, whole_seconds)}

    def base_headers(self) -> dict[str, str]:
        return {"request-id": _new_id("req_011")}

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return (
            headers.get("x-api-key", "") == api_key
            or headers.get("Authorization", "") == f"Bearer {api_key}"
        )


def _text_delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "text": text}
