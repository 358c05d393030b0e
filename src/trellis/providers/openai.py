"""``openai:<model>``: the Chat Completions API over httpx, for OpenAI and every compatible
server (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter, Together, ...).

Options (:class:`OpenAIOptions`; strings accepted, as in
``openai:gpt-4o-mini?base_url=http://localhost:8000/v1&rpm=60``), beyond the shared
``base_url`` (default ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``),
``api_key`` / ``api_key_env`` (default ``OPENAI_API_KEY``), ``timeout``,
``connect_timeout``, ``stream``, ``stream_idle_timeout``, ``rpm`` and ``tpm``:

``organization`` / ``project``
    Sent as ``OpenAI-Organization`` / ``OpenAI-Project``.
``structured`` (``auto`` | ``native`` | ``prompt``, default ``auto``)
    How a structured output is asked for. ``native``: ``response_format: {type:
    json_schema, json_schema: {name, schema, strict}}``; the schema is rewritten for strict
    mode (closed objects, all properties required; a non-object root is wrapped as
    ``{"value": ...}`` and unwrapped from the reply) and sent with ``strict: false`` when
    it cannot be, or when the server rejected it in strict mode (remembered per schema).
    ``prompt``: the schema goes into the system message as an instruction, without
    ``response_format``. ``auto``: native, but a 400/422 that rejects ``response_format``
    / ``json_schema`` switches this instance to prompted JSON for good and resends that
    request at once (once: this fallback is not an engine retry).
``max_tokens_param`` (``max_tokens`` | ``max_completion_tokens``)
    The field ``max_tokens`` is sent as. Default: ``max_completion_tokens`` for the
    official API (``api.openai.com``, ``*.openai.azure.com``: current models reject
    ``max_tokens``), ``max_tokens`` for every other server (Ollama, llama.cpp, older vLLM
    read only that).

Parameter negotiation: a 400 / 422 that names ``max_tokens`` / ``max_completion_tokens``
(renamed to the other), ``temperature``, ``top_p``, ``seed``, ``stream_options``,
``parallel_tool_calls``, ``frequency_penalty`` or ``presence_penalty`` as unsupported or
unknown resends the request at once without it (or renamed), remembered for the binding
for the rest of the process and noted on the reply (see
:mod:`trellis.providers.negotiation`).

Replies: ``message.content`` is the text, ``message.tool_calls`` the raw tool calls,
``message.refusal`` makes the finish reason ``refusal``; ``finish_reason`` ``stop`` /
``length`` / ``content_filter`` / ``tool_calls`` map to themselves and anything else to
``other``. Usage comes from ``usage.prompt_tokens`` / ``completion_tokens`` (estimated
when a server sends none). With ``stream``, ``stream_options: {include_usage: true}`` is
sent and the deltas are assembled. Tool-call deltas belong to a call by ``index``, but a
new ``id`` under an index already used starts a new call (Ollama numbers every call 0),
and a delta without ``index`` continues the open call; empty arguments are ``{}``. A
stream that ends without ``[DONE]`` is complete if a ``finish_reason`` was seen (as
ik_llama.cpp and older TGI send it), else it fails the attempt.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx
from pydantic import field_validator

from trellis.errors import BadRequestError, OverloadedError
from trellis.models.base import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from trellis.models.tokens import schema_json
from trellis.providers._base import HTTPModel, HTTPOptions
from trellis.providers._keys import on_official_host
from trellis.providers._schema import object_root, schema_name, to_strict, unwrap_reply
from trellis.providers._sse import SSEEvent
from trellis.providers.ratelimit import RequestPacer

__all__ = ["OpenAIModel", "OpenAIOptions", "prompted_json_instruction"]

StructuredPlan = Literal["strict", "loose", "prompt"]

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}
_REJECTS_STRUCTURED = re.compile(
    r"response_format|json_schema|structured output|guided_json", re.IGNORECASE
)
_REJECTS_SCHEMA = re.compile(r"invalid schema|schema .*(?:not permitted|not supported)", re.I)


class OpenAIOptions(HTTPOptions):
    """Options of ``openai:`` bindings; see the module docstring."""

    provider: ClassVar[str] = "openai"

    api_key_env: str = "OPENAI_API_KEY"
    organization: str | None = None
    project: str | None = None
    structured: Literal["auto", "native", "prompt"] = "auto"
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None

    @field_validator("organization", "project", "max_tokens_param", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value


def prompted_json_instruction(schema: Mapping[str, Any]) -> str:
    """The system instruction that asks for JSON when no native feature is used."""
    return (
        "Reply with only a JSON value that matches the JSON schema below: no prose before "
        "or after it, no Markdown code fences.\nJSON schema:\n"
        + json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    )


_OFFICIAL_SUFFIXES = (".openai.azure.com",)


def default_max_tokens_param(base_url: str) -> Literal["max_tokens", "max_completion_tokens"]:
    """``max_completion_tokens`` for the official API (OpenAI, Azure OpenAI), whose current
    models reject ``max_tokens``; ``max_tokens`` for every other server."""
    if on_official_host(base_url, OpenAIModel.official_hosts, _OFFICIAL_SUFFIXES):
        return "max_completion_tokens"
    return "max_tokens"


@dataclass(slots=True)
class _PartialCall:
    index: int | None = None
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def tool_call(self, position: int) -> ToolCall:
        arguments = "".join(self.arguments)
        return ToolCall(
            self.id or f"call_{position}", self.name, arguments if arguments.strip() else "{}"
        )


class OpenAIModel(HTTPModel):
    """A Chat Completions model; see the module docstring for options and mappings."""

    provider: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    base_url_env: ClassVar[str] = "OPENAI_BASE_URL"
    official_hosts: ClassVar[tuple[str, ...]] = ("api.openai.com",)
    negotiable: ClassVar[frozenset[str]] = frozenset(
        {
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "seed",
            "stream_options",
            "parallel_tool_calls",
            "frequency_penalty",
            "presence_penalty",
        }
    )
    renames: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_completion_tokens",
        "max_completion_tokens": "max_tokens",
    }

    options: OpenAIOptions

    def __init__(
        self,
        model: str,
        options: OpenAIOptions | Mapping[str, Any] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RequestPacer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        opts = options if isinstance(options, OpenAIOptions) else OpenAIOptions.parse(options)
        super().__init__(model, opts, transport=transport, limiter=limiter, now=now)
        #: How structured outputs are asked for now ("native" until a server rejects it).
        self.structured_mode: Literal["native", "prompt"] = (
            "prompt" if opts.structured == "prompt" else "native"
        )
        self._loose_schemas: set[str] = set()  # schemas rejected in strict mode
        self._prompted_schemas: set[str] = set()  # schemas rejected by json_schema at all
        #: The field ``max_tokens`` is sent as (option, else by base URL).
        self.max_tokens_param = opts.max_tokens_param or default_max_tokens_param(self.base_url)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        if self.options.organization:
            headers["OpenAI-Organization"] = self.options.organization
        if self.options.project:
            headers["OpenAI-Project"] = self.options.project
        return headers

    # -- complete ---------------------------------------------------------------------------

    async def complete(self, request: ModelRequest) -> ModelResponse:
        plan = self._plan(request)
        while True:  # plans only degrade (strict -> loose -> prompt): at most three sends
            try:
                return await self._attempt(request, plan)
            except BadRequestError as exc:
                next_plan = self._fallback(request, plan, exc)
                if next_plan is None:
                    raise
                plan = next_plan

    def _plan(self, request: ModelRequest) -> StructuredPlan | None:
        if request.output_schema is None:
            return None
        key = schema_json(request.output_schema)
        if self.structured_mode == "prompt" or key in self._prompted_schemas:
            return "prompt"
        return "loose" if key in self._loose_schemas else "strict"

    def _fallback(
        self, request: ModelRequest, plan: StructuredPlan | None, exc: BadRequestError
    ) -> StructuredPlan | None:
        """The next way to ask after ``exc``, or ``None`` if ``exc`` is not about it.

        A schema rejected in strict mode is resent loose (``native`` and ``auto``); only
        ``auto`` goes on to prompted JSON, for that schema or, when the server rejects the
        feature itself, for the whole instance."""
        if plan in (None, "prompt") or request.output_schema is None:
            return None
        message = str(exc)
        if not _REJECTS_STRUCTURED.search(message):
            return None
        auto = self.options.structured == "auto"
        key = schema_json(request.output_schema)
        if _REJECTS_SCHEMA.search(message):  # this schema, not the feature
            if plan == "strict" and to_strict(object_root(request.output_schema)[0]):
                self._loose_schemas.add(key)
                return "loose"
            if auto:
                self._prompted_schemas.add(key)
                return "prompt"
            return None
        if auto:
            self.structured_mode = "prompt"
            return "prompt"
        return None

    async def _attempt(self, request: ModelRequest, plan: StructuredPlan | None) -> ModelResponse:
        stream = self.options.stream
        payload, wrapped = self.build_payload(request, plan, stream=stream)
        max_tokens = request.max_tokens

        def parse(data: Any) -> ModelResponse:
            return self.parse_completion(data, request, wrapped=wrapped)

        async def assemble(events: AsyncIterator[SSEEvent]) -> ModelResponse:
            return await self.assemble_stream(events, request, wrapped=wrapped)

        return await self._negotiated_send(
            payload,
            estimate=self.estimate_tokens(request, max_tokens),
            stream=stream,
            parse=parse,
            assemble=assemble,
        )

    # -- request ----------------------------------------------------------------------------

    def build_payload(
        self, request: ModelRequest, plan: StructuredPlan | None, *, stream: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """The request body, and whether the output schema's root was wrapped."""
        messages = [_message(m) for m in request.messages]
        payload: dict[str, Any] = {"model": request.model or self.model}
        wrapped = False
        schema = request.output_schema
        if schema is not None:
            if plan == "prompt":
                messages = _with_system(messages, prompted_json_instruction(schema))
            else:
                rooted, wrapped = object_root(schema)
                strict = to_strict(rooted) if plan == "strict" else None
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": schema_name(request.schema_name),
                        "schema": strict if strict is not None else rooted,
                        "strict": strict is not None,
                    },
                }
        payload["messages"] = messages
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.max_tokens is not None:
            payload[self.max_tokens_param] = request.max_tokens
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.tools:
            payload["tools"] = [_tool(t) for t in request.tools]
            if request.tool_choice is not None:
                payload["tool_choice"] = _tool_choice(request.tool_choice)
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload, wrapped

    # -- reply ------------------------------------------------------------------------------

    def parse_completion(
        self, data: Any, request: ModelRequest, *, wrapped: bool = False
    ) -> ModelResponse:
        """A ``chat.completion`` body as a :class:`ModelResponse` (errors raised typed)."""
        error = self.payload_error(data)
        if error is not None:
            raise error
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise OverloadedError(
                f"{self.name}: the reply has no choices: {str(data)[:200]!r}", model=self.name
            )
        choice = choices[0]
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        return self._response(
            request,
            wrapped=wrapped,
            text=_content_text(message.get("content")),
            refusal=message.get("refusal"),
            tool_calls=_tool_calls(message.get("tool_calls")),
            finish=choice.get("finish_reason"),
            usage=data.get("usage"),
            model=data.get("model"),
            response_id=data.get("id"),
        )

    async def assemble_stream(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, *, wrapped: bool = False
    ) -> ModelResponse:
        """Assemble ``chat.completion.chunk`` events; fail on an error event or a stream
        that ends before ``[DONE]`` (the partial reply is discarded)."""
        text: list[str] = []
        refusal: list[str] = []
        calls: list[_PartialCall] = []
        finish: Any = None
        usage: Any = None
        model: Any = None
        response_id: Any = None
        done = False
        async for event in events:
            data = event.data.strip()
            if data == "[DONE]":
                done = True
                break
            if not data:
                continue
            chunk = self.json_loads(data, what="a stream chunk")
            error = self.payload_error(chunk, where="error event mid-stream")
            if error is not None:
                raise error
            if event.event == "error":
                raise self.event_error(chunk, data)
            if not isinstance(chunk, dict):
                continue
            model = chunk.get("model") or model
            response_id = chunk.get("id") or response_id
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    _add_delta(delta, text, refusal, calls)
                    content = delta.get("content")
                    # (a wrapped reply's JSON is not the output's own: not passed on)
                    if request.on_text and isinstance(content, str) and content and not wrapped:
                        request.on_text(content)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        if not done and not finish:
            raise OverloadedError(
                f"{self.name}: the stream ended before [DONE] and without a finish_reason; "
                "partial reply discarded",
                model=self.name,
            )
        tool_calls = tuple(call.tool_call(i) for i, call in enumerate(calls))
        return self._response(
            request,
            wrapped=wrapped,
            text="".join(text),
            refusal="".join(refusal) or None,
            tool_calls=tool_calls,
            finish=finish,
            usage=usage,
            model=model,
            response_id=response_id,
        )

    def _response(
        self,
        request: ModelRequest,
        *,
        wrapped: bool,
        text: str,
        refusal: Any,
        tool_calls: tuple[ToolCall, ...],
        finish: Any,
        usage: Any,
        model: Any,
        response_id: Any = None,
    ) -> ModelResponse:
        raw = finish if isinstance(finish, str) else None
        reason: FinishReason = _FINISH.get(raw, "other") if raw is not None else "other"
        refused = refusal.strip() if isinstance(refusal, str) and refusal.strip() else None
        if refused is not None:
            reason = "refusal"
        if wrapped and refused is None:
            text = unwrap_reply(text)
        return ModelResponse(
            text=text,
            usage=_usage(usage) or self.fallback_usage(request, text),
            finish_reason=reason,
            refusal=refused,
            model=model if isinstance(model, str) and model else request.model or self.model,
            raw_finish_reason=raw,
            tool_calls=tool_calls,
            response_id=response_id if isinstance(response_id, str) and response_id else None,
        )


# -- wire helpers ---------------------------------------------------------------------------


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in m.tool_calls
        ]
    return out


def _with_system(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """``instruction`` appended to the leading system message, or as a new first one (some
    local chat templates reject a second system message)."""
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, as some servers send
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "output_text", None)
        )
    return ""


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if not isinstance(raw, list):
        return ()
    calls = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        function = item.get("function")
        function = function if isinstance(function, dict) else {}
        calls.append(
            ToolCall(
                id=str(item.get("id") or f"call_{i}"),
                name=str(function.get("name") or ""),
                arguments=_arguments(function.get("arguments")).strip() or "{}",
            )
        )
    return tuple(calls)


def _call_for(item: Mapping[str, Any], calls: list[_PartialCall]) -> _PartialCall:
    """The call a streamed tool-call delta belongs to (appended to ``calls`` if new).

    By ``index``, except that a new ``id`` under an index already in use is a new call
    (Ollama sends every call as index 0); a delta without ``index`` continues the open
    (latest) call unless it brings a new ``id``."""
    index = item.get("index")
    index = index if isinstance(index, int) and not isinstance(index, bool) else None
    new_id = str(item["id"]) if item.get("id") else ""
    found: _PartialCall | None = None
    if index is not None:
        found = next((c for c in reversed(calls) if c.index == index), None)
    elif calls:
        found = calls[-1]
    if found is not None and new_id and found.id and found.id != new_id:
        found = None
    if found is None:
        found = _PartialCall(index=index)
        calls.append(found)
    return found


def _add_delta(
    delta: dict[str, Any],
    text: list[str],
    refusal: list[str],
    calls: list[_PartialCall],
) -> None:
    content = delta.get("content")
    if isinstance(content, str):
        text.append(content)
    elif isinstance(content, list):
        text.append(_content_text(content))
    if isinstance(delta.get("refusal"), str):
        refusal.append(delta["refusal"])
    for item in delta.get("tool_calls") or ():
        if not isinstance(item, dict):
            continue
        partial = _call_for(item, calls)
        if item.get("id") and not partial.id:
            partial.id = str(item["id"])
        function = item.get("function")
        if not isinstance(function, dict):
            continue
        if function.get("name") and not partial.name:
            partial.name = str(function["name"])
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            partial.arguments.append(arguments)
        elif arguments is not None:
            partial.arguments = [_arguments(arguments)]


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens"))
    completion = raw.get("completion_tokens", raw.get("output_tokens"))
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    return Usage(
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )
