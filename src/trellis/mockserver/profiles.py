"""Server profiles: the mock server behaving like one real server's quirks.

A profile is chosen for all requests (``trellis mock-server --profile NAME``,
``MockServer(profile=NAME)``) or, without one, by the requested model's name:

============  ===========================================================================
``gpt-5``     OpenAI's gpt-5 / o-series: 400 ``unsupported_parameter`` for ``max_tokens``
              and 400 ``unsupported_value`` for a ``temperature`` other than 1 (models
              ``gpt-5*``, ``o1*``, ``o3*``, ``o4*``)
``claude-5``  Claude Opus 4.7+ / Claude 5: 400 "`temperature` is deprecated for this
              model." (models ``claude-5*``, ``claude-*-5*``, ``claude-opus-4-7*``...);
              with ``thinking`` on, replies start with a signed thinking block, a forced
              ``tool_choice`` is refused, and the last assistant turn with tool calls must
              start with its thinking block, signature unchanged (the real 400s)
``mistral``   Mistral's strict schema: 422 ``extra_forbidden`` (a pydantic ``detail``
              list) for ``stream_options`` and ``max_completion_tokens`` (models
              ``mistral*``, ``magistral*``, ``codestral*``, ``devstral*``, ``ministral*``)
``ollama``    Ollama's OpenAI layer: a model offered several tools calls two at once;
              streamed tool calls come each in one chunk, all with ``index: 0`` and
              distinct ids; errors labelled by status only
              (``invalid_request_error`` for 400, ``not_found_error`` for 404,
              ``api_error`` for everything else, 401 and 403 included)
``no-done``   ik_llama.cpp / older TGI: an OpenAI stream ends after its finish_reason
              (and usage) chunk without ``data: [DONE]``
============  ===========================================================================

Each profile acts on one dialect (the Anthropic one for ``claude-5``, the OpenAI one for
the rest); requests in the other dialect are served as usual. The error bodies are the
real servers' (status, JSON shape, message text).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from trellis.mockserver.limits import Admission, LimitSnapshot
from trellis.mockserver.replies import (
    Dialect,
    ErrorKind,
    ParsedRequest,
    Reply,
    StreamPlan,
    sse_data,
    sse_event,
)
from trellis.models.base import ToolCall
from trellis.models.schema_sample import sample_value

__all__ = [
    "PROFILES",
    "Profile",
    "ProfiledDialect",
    "check_profile",
    "profile_for",
    "rejection",
]

Rejection = tuple[int, dict[str, Any]]


def _openai_error(message: str, param: str, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def _gpt5(body: Mapping[str, Any]) -> Rejection | None:
    if body.get("max_tokens") is not None:
        return 400, _openai_error(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return 400, _openai_error(
            f"Unsupported value: 'temperature' does not support {temperature} with this "
            "model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    return None


def _anthropic_error(message: str) -> Rejection:
    return 400, {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": "req_011" + secrets.token_hex(12),
    }


def thinking_on(body: Mapping[str, Any]) -> bool:
    """Whether an Anthropic request enables extended thinking."""
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def thinking_signature(text: str) -> str:
    """The signature the mock gives a thinking block (checked when it comes back)."""
    return "EqMock" + hashlib.blake2b(text.encode(), digest_size=24).hexdigest()


_MUST_START_WITH_THINKING = (
    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). "
    "We recommend you include thinking blocks from previous turns. To avoid this "
    "requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def _thinking_errors(body: Mapping[str, Any]) -> Rejection | None:
    """With thinking on: no forced tool; the last assistant turn with tool calls starts with
    its thinking block, whose signature is the one the mock gave it."""
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("tool", "any"):
        return _anthropic_error("Thinking may not be enabled when tool_choice forces tool use.")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for i in range(len(messages) - 1, -1, -1):
        turn = messages[i]
        if not isinstance(turn, Mapping) or turn.get("role") != "assistant":
            continue
        content = turn.get("content")
        blocks = [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []
        if not any(b.get("type") == "tool_use" for b in blocks):
            return None
        first = str(blocks[0].get("type"))
        if first not in ("thinking", "redacted_thinking"):
            return _anthropic_error(_MUST_START_WITH_THINKING.format(i=i, found=first))
        for j, block in enumerate(blocks):
            signed = thinking_signature(str(block.get("thinking", "")))
            if block.get("type") == "thinking" and block.get("signature") != signed:
                return _anthropic_error(
                    f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                )
        return None
    return None


def _claude5(body: Mapping[str, Any]) -> Rejection | None:
    if "temperature" in body:
        return _anthropic_error("`temperature` is deprecated for this model.")
    if thinking_on(body):
        return _thinking_errors(body)
    return None


_MISTRAL_UNKNOWN = ("stream_options", "max_completion_tokens")


def _mistral(body: Mapping[str, Any]) -> Rejection | None:
    detail = [
        {
            "type": "extra_forbidden",
            "loc": ["body", key],
            "msg": "Extra inputs are not permitted",
            "input": body[key],
        }
        for key in _MISTRAL_UNKNOWN
        if key in body
    ]
    if not detail:
        return None
    return 422, {
        "object": "error",
        "message": {"detail": detail},
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@dataclass(frozen=True, slots=True)
class Profile:
    """One server's behaviour: request fields it rejects, how it streams and labels."""

    name: str
    dialect: str  # the dialect it applies to: "openai" or "anthropic"
    reject: Callable[[Mapping[str, Any]], Rejection | None] | None = None
    ollama_streams: bool = False  # tool calls in one chunk each, all index 0
    ollama_errors: bool = False  # error types by status only
    omit_done: bool = False  # no "data: [DONE]" at the end of a stream
    thinking: bool = False  # replies start with a signed thinking block when it is on


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("gpt-5", "openai", reject=_gpt5),
        Profile("claude-5", "anthropic", reject=_claude5, thinking=True),
        Profile("mistral", "openai", reject=_mistral),
        Profile("ollama", "openai", ollama_streams=True, ollama_errors=True),
        Profile("no-done", "openai", omit_done=True),
    )
}

_BY_MODEL = (
    (re.compile(r"^(gpt-5|o[134])(\b|[-.])"), "gpt-5"),
    (re.compile(r"^claude-(5|[a-z]+-5)(\b|[-.])|^claude-opus-4-([7-9]|\d\d)\b"), "claude-5"),
    (re.compile(r"^(mistral|magistral|codestral|devstral|ministral)"), "mistral"),
)


def check_profile(name: str | None) -> str | None:
    """``name`` if it is a profile (or None); else ``ValueError`` listing the profiles."""
    if name is None or name in PROFILES:
        return name
    raise ValueError(f"unknown mock-server profile {name!r}; profiles: {', '.join(PROFILES)}")


def profile_for(forced: str | None, model: Any, dialect: str) -> Profile | None:
    """The profile serving a request: the forced one, else the one the model name picks;
    ``None`` when it does not apply to ``dialect``."""
    name = forced
    if name is None and isinstance(model, str):
        lowered = model.lower()
        name = next((n for pattern, n in _BY_MODEL if pattern.search(lowered)), None)
    profile = PROFILES.get(name) if name is not None else None
    return profile if profile is not None and profile.dialect == dialect else None


def rejection(forced: str | None, dialect: str, body: Any) -> Rejection | None:
    """The error the profile's server answers this raw request body with, if any."""
    if not isinstance(body, Mapping):
        return None
    profile = profile_for(forced, body.get("model"), dialect)
    if profile is None or profile.reject is None:
        return None
    return profile.reject(body)


def _ollama_type(status: int) -> str:
    if status == 400:
        return "invalid_request_error"
    if status == 404:
        return "not_found_error"
    return "api_error"


def _ollama_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    err = body.get("error")
    message = str(err.get("message") or "") if isinstance(err, dict) else str(err or "")
    if status == 401:
        message = "unauthorized"
    return {
        "error": {"message": message, "type": _ollama_type(status), "param": None, "code": None}
    }


class ProfiledDialect:
    """A dialect that renders like the profile's server (see the module docs)."""

    def __init__(self, base: Dialect, profile: Profile) -> None:
        self.base = base
        self.profile = profile
        self.name = base.name

    def parse(self, body: Any) -> ParsedRequest:
        parsed = self.base.parse(body)
        if self.profile.thinking and isinstance(body, Mapping) and thinking_on(body):
            request = parsed.request
            marked = replace(request, extra={**request.extra, "thinking": True})
            parsed = replace(parsed, request=marked)
        return parsed

    def render(self, parsed: ParsedRequest, reply: Reply) -> dict[str, Any]:
        rendered = self.base.render(parsed, self._reply(parsed, reply))
        block = self._thinking_block(parsed)
        if block is not None:
            rendered["content"] = [block, *rendered["content"]]
        return rendered

    def _thinking_block(self, parsed: ParsedRequest) -> dict[str, Any] | None:
        if not parsed.request.extra.get("thinking"):
            return None
        text = f"Thinking about: {parsed.request.prompt_text()[-80:]}"
        return {"type": "thinking", "thinking": text, "signature": thinking_signature(text)}

    def _reply(self, parsed: ParsedRequest, reply: Reply) -> Reply:
        """Ollama's models call a second offered tool alongside the first (unless a tool
        was named); its arguments are sampled from its schema, deterministically."""
        request = parsed.request
        if (
            not self.profile.ollama_streams
            or reply.finish != "tool_calls"
            or reply.forced_tool
            or len(reply.tool_calls) != 1
        ):
            return reply
        first = reply.tool_calls[0]
        other = next((t for t in request.tools if t.name != first.name), None)
        if other is None:
            return reply
        digest = hashlib.blake2b(first.arguments.encode(), digest_size=8).digest()
        try:
            value = sample_value(other.parameters, random.Random(digest))
        except ValueError:
            return reply
        second = ToolCall("", other.name, json.dumps(value, ensure_ascii=False))
        return replace(reply, tool_calls=(first, second))

    def stream(self, parsed: ParsedRequest, reply: Reply) -> StreamPlan:
        reply = self._reply(parsed, reply)
        if self.profile.ollama_streams and reply.tool_calls:
            plan = self._ollama_tool_stream(parsed, reply)
        else:
            plan = self.base.stream(parsed, reply)
        if self.profile.omit_done and plan.events and plan.events[-1] == b"data: [DONE]\n\n":
            plan = StreamPlan(plan.events[:-1], max(0, plan.terminal - 1))
        block = self._thinking_block(parsed)
        if block is not None:
            plan = _with_thinking_events(plan, block)
        return plan

    def _ollama_tool_stream(self, parsed: ParsedRequest, reply: Reply) -> StreamPlan:
        """Ollama's way: one chunk per complete call, every call ``index: 0``."""
        base = {
            "id": "chatcmpl-" + str(secrets.randbelow(1000)),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": parsed.request.model,
            "system_fingerprint": "fp_ollama",
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse_data(
                {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            )

        events = [
            chunk(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_" + secrets.token_hex(4),
                            "index": 0,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                    ],
                }
            )
            for call in reply.tool_calls
        ]
        events.append(chunk({"role": "assistant", "content": ""}, "tool_calls"))
        terminal = [b"data: [DONE]\n\n"]
        if parsed.include_usage:
            usage = {
                "prompt_tokens": reply.usage.input_tokens,
                "completion_tokens": reply.usage.output_tokens,
                "total_tokens": reply.usage.total_tokens,
            }
            terminal.insert(0, sse_data({**base, "choices": [], "usage": usage}))
        return StreamPlan(events + terminal, len(terminal))

    def validate(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        self.base.validate(body, headers)

    def stream_error(self, message: str | None) -> bytes:
        return self.base.stream_error(message)

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
        status, body = self.base.error(
            kind, model=model, message=message, tokens=tokens, param=param, code=code
        )
        return status, self._relabel(status, body)

    def error_for_status(self, status: int, message: str | None = None) -> dict[str, Any]:
        return self._relabel(status, self.base.error_for_status(status, message))

    def limit_error(self, admission: Admission, *, model: str) -> tuple[int, dict[str, Any]]:
        status, body = self.base.limit_error(admission, model=model)
        return status, self._relabel(status, body)

    def _relabel(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        return _ollama_body(status, body) if self.profile.ollama_errors else body

    def limit_headers(self, snapshot: LimitSnapshot) -> dict[str, str]:
        return self.base.limit_headers(snapshot)

    def retry_headers(self, seconds: float, *, whole_seconds: bool = False) -> dict[str, str]:
        return self.base.retry_headers(seconds, whole_seconds=whole_seconds)

    def base_headers(self) -> dict[str, str]:
        return self.base.base_headers()

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return self.base.authorized(headers, api_key)


def _with_thinking_events(plan: StreamPlan, block: dict[str, Any]) -> StreamPlan:
    """An Anthropic event stream with ``block`` streamed first (indexes shifted by one)."""

    def event(data: dict[str, Any]) -> bytes:
        return sse_event(data["type"], data)

    thinking = [
        event(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
            }
        ),
        event(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": block["signature"]},
            }
        ),
        event({"type": "content_block_stop", "index": 0}),
    ]
    out: list[bytes] = []
    for raw in plan.events:
        name, _, rest = raw.decode().partition("\ndata: ")
        data = json.loads(rest)
        if isinstance(data.get("index"), int):
            data["index"] += 1
            raw = event(data)
        out.append(raw)
        if name == "event: message_start":
            out.extend(thinking)
    return StreamPlan(out, plan.terminal)


def profiled(base: Dialect, forced: str | None, model: Any = None) -> Dialect:
    """``base`` as the profile serving this request renders it (``base`` if none)."""
    if isinstance(base, ProfiledDialect):
        return base
    profile = profile_for(forced, model, base.name)
    wraps = profile is not None and (
        profile.ollama_streams or profile.ollama_errors or profile.omit_done or profile.thinking
    )
    if profile is None or not wraps:
        return base
    return ProfiledDialect(base, profile)
