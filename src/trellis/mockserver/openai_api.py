"""The OpenAI Chat Completions dialect of the mock server.

``POST /v1/chat/completions`` requests become :class:`~trellis.models.base.ModelRequest`
(messages incl. ``tool_calls`` and ``tool`` results, ``response_format`` json_schema /
json_object, ``tools`` / ``tool_choice``, ``max_tokens`` / ``max_completion_tokens``,
``temperature``, ``seed``) and replies are rendered as ``chat.completion`` objects or
``chat.completion.chunk`` server-sent events (with the usage chunk of
``stream_options.include_usage``, then ``data: [DONE]``). Errors use OpenAI's body
``{"error": {"message", "type", "param", "code"}}`` and rate limits its
``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from typing import Any

from trellis.mockserver.limits import Admission, LimitSnapshot, format_duration
from trellis.mockserver.replies import (
    JSON_OBJECT_SCHEMA,
    ErrorKind,
    ParsedRequest,
    Reply,
    RequestError,
    StreamPlan,
    retry_after_value,
    split_text,
    sse_data,
)
from trellis.mockserver.validate_openai import RULES
from trellis.mockserver.validation import check
from trellis.models.base import Message, ModelRequest, Role, ToolCall, ToolSpec, Usage

__all__ = ["OpenAIDialect", "models_list"]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_FINGERPRINT = "fp_trellis_mock"


def _new_id(prefix: str, n: int = 24) -> str:
    return prefix + secrets.token_hex(n // 2)


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or "type" not in part:
                raise RequestError(f"Invalid content part at {where}[{i}].", param=where)
            if part["type"] == "text":
                parts.append(str(part.get("text", "")))
            elif part["type"] == "refusal":
                parts.append(str(part.get("refusal", "")))
            else:
                parts.append(f"[{part['type']}]")
        return "\n".join(parts)
    raise RequestError(f"Invalid type for '{where}': expected a string or array.", param=where)


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RequestError(f"Invalid type for '{where}': expected an array.", param=where)
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise RequestError(
                f"Missing required parameter: '{where}[{i}].function.name'.", param=where
            )
        calls.append(ToolCall(str(call.get("id", "")), fn["name"], str(fn.get("arguments", ""))))
    return tuple(calls)


def _messages(raw: Any) -> tuple[Message, ...]:
    if raw is None:
        raise RequestError("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(raw, list) or not raw:
        raise RequestError(
            "Invalid 'messages': expected a non-empty array of messages.", param="messages"
        )
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise RequestError(f"Invalid type for '{where}': expected an object.", param=where)
        role = m.get("role")
        content = _content_text(m.get("content"), f"{where}.content")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise RequestError(
                    f"Missing required parameter: '{where}.tool_call_id'.", param=where
                )
            out.append(Message("tool", content, tool_call_id=call_id))
        elif role in _ROLES:
            calls = _tool_calls(m.get("tool_calls"), f"{where}.tool_calls")
            out.append(Message(_ROLES[role], content, tool_calls=calls))
        else:
            raise RequestError(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', "
                "'user', 'tool', and 'developer'.",
                param=f"{where}.role",
            )
    return tuple(out)


def _response_format(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    if raw is None:
        return None, None
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind == "text":
        return None, None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA, None
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise RequestError(
                "Missing required parameter: 'response_format.json_schema.name'.",
                param="response_format.json_schema.name",
            )
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, Mapping):
            raise RequestError(
                "Invalid type for 'response_format.json_schema.schema': expected an object.",
                param="response_format.json_schema.schema",
            )
        return dict(schema), spec["name"]
    raise RequestError(
        f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
        param="response_format.type",
    )


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RequestError("Invalid type for 'tools': expected an array.", param="tools")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise RequestError(
                f"Missing required parameter: 'tools[{i}].function.name'.", param=f"tools[{i}]"
            )
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        specs.append(ToolSpec(fn["name"], str(fn.get("description") or ""), dict(params)))
    return tuple(specs)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> str | None:
    if raw is None:
        return None
    if not tools:
        raise RequestError(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
            param="tool_choice",
        )
    if raw in ("none", "auto", "required"):
        return str(raw)
    fn = raw.get("function") if isinstance(raw, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise RequestError(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    if name not in {t.name for t in tools}:
        raise RequestError(
            f"Invalid value for 'tool_choice': function '{name}' is not in 'tools'.",
            param="tool_choice",
        )
    return name


def _number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(
            f"Invalid '{key}': expected a number between {low:g} and {high:g}.", param=key
        )
    return float(value)


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"Invalid type for '{key}': expected an integer.", param=key)
    return value


def models_list(models: list[str]) -> dict[str, Any]:
    created = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "trellis-mock"}
            for m in models
        ],
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish(reply: Reply) -> str:
    if reply.finish == "refusal":
        return "stop"
    if reply.finish == "tool_calls" and reply.forced_tool:
        return "stop"  # what OpenAI reports when tool_choice names the function
    return reply.finish


class OpenAIDialect:
    """Parse and render OpenAI Chat Completions (see the module docs)."""

    name = "openai"

    def parse(self, body: Any) -> ParsedRequest:
        if not isinstance(body, Mapping):
            raise RequestError("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("you must provide a model parameter", param="model")
        n = body.get("n")
        if n not in (None, 1):
            raise RequestError("The mock server only supports n=1.", param="n")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        if options is not None and not stream:
            raise RequestError(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        schema, schema_name = _response_format(body.get("response_format"))
        tools = _tools(body.get("tools"))
        max_tokens = _int(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _int(body, "max_tokens")
        if max_tokens is not None and max_tokens < 1:
            raise RequestError("Invalid 'max_tokens': expected at least 1.", param="max_tokens")
        request = ModelRequest(
            messages=_messages(body.get("messages")),
            model=model,
            output_schema=schema,
            schema_name=schema_name,
            temperature=_number(body, "temperature", 0.0, 2.0),
            max_tokens=max_tokens,
            seed=_int(body, "seed"),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice"), tools),
        )
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return ParsedRequest(request, stream=stream, include_usage=include_usage)

    def validate(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        """Reject what the real API rejects (:mod:`~trellis.mockserver.validate_openai`)."""
        check(RULES, body, headers)

    # -- replies ---------------------------------------------------------------------------

    def _message(self, reply: Reply, ids: list[str]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if reply.refusal is not None or reply.tool_calls else reply.text,
            "refusal": reply.refusal,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": ids[i],
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for i, c in enumerate(reply.tool_calls)
            ]
        return message

    def render(self, parsed: ParsedRequest, reply: Reply) -> dict[str, Any]:
        ids = [_new_id("call_") for _ in reply.tool_calls]
        return {
            "id": _new_id("chatcmpl-", 28),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.request.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(reply, ids),
                    "logprobs": None,
                    "finish_reason": _finish(reply),
                }
            ],
            "usage": _usage(reply.usage),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }

    def stream(self, parsed: ParsedRequest, reply: Reply) -> StreamPlan:
        base: dict[str, Any] = {
            "id": _new_id("chatcmpl-", 28),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": parsed.request.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if parsed.include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse_data({**base, "choices": [choice]})

        events: list[bytes] = []
        if reply.tool_calls:
            events.append(chunk({"role": "assistant", "content": None, "refusal": None}))
            for i, call in enumerate(reply.tool_calls):
                head = {
                    "index": i,
                    "id": _new_id("call_"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                events.append(chunk({"tool_calls": [head]}))
                for piece in split_text(call.arguments):
                    delta = {"index": i, "function": {"arguments": piece}}
                    events.append(chunk({"tool_calls": [delta]}))
        elif reply.refusal is not None:
            events.append(chunk({"role": "assistant", "content": None, "refusal": ""}))
            events.extend(chunk({"refusal": p}) for p in split_text(reply.refusal))
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events.extend(chunk({"content": p}) for p in split_text(reply.text))
        events.append(chunk({}, _finish(reply)))
        terminal = [b"data: [DONE]\n\n"]
        if parsed.include_usage:
            terminal.insert(0, sse_data({**base, "choices": [], "usage": _usage(reply.usage)}))
        return StreamPlan(events + terminal, len(terminal))

    def stream_error(self, message: str | None) -> bytes:
        msg = message or "The server had an error while processing your request. Sorry about that!"
        return sse_data(
            {"error": {"message": msg, "type": "server_error", "param": None, "code": None}}
        )

    # -- errors ----------------------------------------------------------------------------

    @staticmethod
    def _body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

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
            msg = message or "Invalid request."
            return 400, self._body(msg, "invalid_request_error", param, code)
        if kind == "auth":
            msg = message or (
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return 401, self._body(msg, "invalid_request_error", None, "invalid_api_key")
        if kind == "rate_limit":
            msg = message or (
                f"Rate limit reached for {model} in organization org-mock on requests per min "
                "(RPM). Please try again later. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
            return 429, self._body(msg, "requests", None, "rate_limit_exceeded")
        if kind == "quota":
            msg = message or (
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            return 429, self._body(msg, "insufficient_quota", None, "insufficient_quota")
        if kind == "overloaded":
            msg = message or "The engine is currently overloaded, please try again later."
            return 503, self._body(msg, "server_error", None, None)
        if kind == "context_length":
            limit = 128_000
            msg = message or (
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {max(tokens, limit + 1)} tokens. Please reduce the "
                "length of the messages."
            )
            return 400, self._body(
                msg, "invalid_request_error", "messages", "context_length_exceeded"
            )
        msg = message or "The server had an error while processing your request. Sorry about that!"
        return 500, self._body(msg, "server_error", None, None)

    def error_for_status(self, status: int, message: str | None = None) -> dict[str, Any]:
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return self._body(message or f"Mock error (HTTP {status}).", type_, None, None)

    def limit_error(self, admission: Admission, *, model: str) -> tuple[int, dict[str, Any]]:
        dim = admission.dimension or "requests"
        unit = "requests per min (RPM)" if dim == "requests" else "tokens per min (TPM)"
        if admission.retry_after_s is None:
            msg = (
                f"Request too large for {model} in organization org-mock on {unit}: Limit "
                f"{admission.limit}, Requested {admission.requested}. The input or output "
                "tokens must be reduced in order to run successfully."
            )
        else:
            msg = (
                f"Rate limit reached for {model} in organization org-mock on {unit}: Limit "
                f"{admission.limit}, Used {admission.used}, Requested {admission.requested}. "
                f"Please try again in {format_duration(admission.retry_after_s)}. Visit "
                "https://platform.openai.com/account/rate-limits to learn more."
            )
        return 429, self._body(msg, dim, None, "rate_limit_exceeded")

    # -- headers ---------------------------------------------------------------------------

    def limit_headers(self, snapshot: LimitSnapshot) -> dict[str, str]:
        headers: dict[str, str] = {}
        for dim, state in (("requests", snapshot.requests), ("tokens", snapshot.tokens)):
            if state is not None:
                headers[f"x-ratelimit-limit-{dim}"] = str(state.limit)
                headers[f"x-ratelimit-remaining-{dim}"] = str(state.remaining)
                headers[f"x-ratelimit-reset-{dim}"] = format_duration(state.reset_s)
        return headers

    def retry_headers(self, seconds: float, *, whole_seconds: bool = False) -> dict[str, str]:
        ms = max(0, math.ceil(seconds * 1000.0 - 1e-6))
        return {"retry-after-ms": str(ms), "retry-after": retry_after_value(seconds, whole_seconds)}

    def base_headers(self) -> dict[str, str]:
        return {"x-request-id": _new_id("req_", 32), "openai-version": "2020-10-01"}

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("Authorization", "") == f"Bearer {api_key}"
