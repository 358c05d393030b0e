"""``anthropic:<model>``: the Anthropic Messages API over httpx.

Options (:class:`AnthropicOptions`; strings accepted), beyond the shared ``base_url``
(default ``$ANTHROPIC_BASE_URL``, else ``https://api.anthropic.com``; a URL ending in
``/v1`` works too), ``api_key`` / ``api_key_env`` (default ``ANTHROPIC_API_KEY``),
``timeout``, ``connect_timeout``, ``stream``, ``stream_idle_timeout``, ``rpm``, ``tpm``:

``anthropic_version`` (default ``2023-06-01``)
    The ``anthropic-version`` header.
``max_tokens`` (default 4096)
    Sent when a request sets none: the Messages API requires it.

Sampling parameters: ``temperature`` is clamped to [0, 1] (the Messages API's range);
with ``anthropic_version`` 2026-10-21 or later, which has no ``temperature``, ``top_p``
or ``top_k``, it is not sent (noted on the reply). A 400 that names ``temperature``,
``top_p`` or ``top_k`` as unsupported or deprecated (Claude Opus 4.7 and later, the
Claude 5 family) resends the request at once without it, remembered for the binding for
the rest of the process and noted on the reply (:mod:`trellis.providers.negotiation`).

``thinking`` (``adaptive`` or a token budget such as ``2048``; default off)
    Extended thinking: ``thinking: {type: adaptive}`` or ``{type: enabled,
    budget_tokens: N}``. ``thinking`` / ``redacted_thinking`` blocks of a reply that calls
    tools are kept, signatures included, and sent back unchanged in front of those tool
    calls in the next agent turn (remembered by this instance, for the last 1024 replies:
    a run resumed in another process sends its replayed turns without them).
``structured`` (``auto`` | ``native`` | ``tool``, default ``auto``)
    How a structured output is asked for. ``tool``: a forced call of an output tool (see
    below). ``native``: ``output_config: {format: {type: json_schema, schema}}``, the
    reply's text is the JSON. ``auto``: the forced tool, except with thinking on (the API
    refuses a forced tool then): native for the official API, else the output tool with
    ``tool_choice: auto`` (a reply that is not the tool's input is re-asked by the engine).

Mapping: system messages become the top-level ``system``; tool calls are ``tool_use``
blocks (``ToolCall.arguments`` is ``json.dumps(input)``), tool results ``tool_result``
blocks in user turns (``is_error: true`` for a failed tool), and consecutive turns of one
role are merged; whitespace-only text is never sent as a block (the API rejects it). A
structured output is (by default) a forced tool call (``tools: [{name: <schema name>,
input_schema: <schema>}]``, ``tool_choice: {type: tool, name}``) whose input becomes the
reply text; a non-object root is wrapped as ``{"value": ...}`` and unwrapped again.
``stop_reason``: ``end_turn`` / ``stop_sequence`` -> ``stop``; ``max_tokens`` /
``model_context_window_exceeded`` -> ``length``; ``tool_use`` -> ``tool_calls`` (``stop``
for the forced structured-output call); ``refusal`` -> ``refusal``; anything else ->
``other``. Usage counts cached input tokens as input. With ``stream``, the
``message_start`` / ``content_block_*`` / ``message_delta`` / ``message_stop`` events are
assembled; an ``error`` event, or a stream that ends before ``message_stop``, fails the
attempt.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from trellis.errors import OverloadedError
from trellis.models.base import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from trellis.providers._base import HTTPModel, HTTPOptions
from trellis.providers._keys import on_official_host
from trellis.providers._schema import object_root, schema_name, unwrap_reply
from trellis.providers._sse import SSEEvent
from trellis.providers.ratelimit import RequestPacer

__all__ = ["AnthropicModel", "AnthropicOptions"]

_STOP: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}
_OUTPUT_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool exactly once; its input is the answer."
)
_REFUSED = "the model refused (stop_reason: refusal)"
_THINKING_KINDS = frozenset({"thinking", "redacted_thinking"})
#: Replies whose thinking blocks an instance remembers for the next agent turn.
_THINKING_MEMORY = 1024
#: The first API version without ``temperature``, ``top_p`` and ``top_k``.
SAMPLING_REMOVED_VERSION = "2026-10-21"


def _clamp(temperature: float) -> float:
    """``temperature`` within the Messages API's range [0, 1]."""
    return min(1.0, max(0.0, temperature))


class AnthropicOptions(HTTPOptions):
    """Options of ``anthropic:`` bindings; see the module docstring."""

    provider: ClassVar[str] = "anthropic"

    api_key_env: str = "ANTHROPIC_API_KEY"
    anthropic_version: str = "2023-06-01"
    max_tokens: int = Field(default=4096, gt=0)
    thinking: Literal["adaptive"] | int | None = None
    structured: Literal["auto", "native", "tool"] = "auto"

    @field_validator("thinking", mode="before")
    @classmethod
    def _thinking(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("", "none", "null", "off", "false", "0"):
                return None
            return int(text) if text.isdigit() else text
        return value

    @field_validator("thinking")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1024:
            raise ValueError("a thinking budget is at least 1024 tokens")
        return value


@dataclass(frozen=True, slots=True)
class _ReplyShape:
    """How to read a reply: the structured-output tool's name and whether it wraps."""

    output_tool: str | None = None
    wrapped: bool = False
    native: bool = False  # output_config json_schema: the text is the output


@dataclass(slots=True)
class _Block:
    """One content block, complete or being assembled from a stream."""

    type: str
    text: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""
    input: Any = None
    partial_json: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # a thinking block as received
    thinking: list[str] = field(default_factory=list)  # streamed thinking text
    signature: list[str] = field(default_factory=list)  # streamed signature

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> _Block:
        text = raw.get("text")
        kind = str(raw.get("type") or "")
        return cls(
            type=kind,
            text=[text] if isinstance(text, str) else [],
            id=str(raw.get("id") or ""),
            name=str(raw.get("name") or ""),
            input=raw.get("input"),
            raw=dict(raw) if kind in _THINKING_KINDS else {},
        )

    def thinking_block(self) -> dict[str, Any]:
        """The thinking block to send back: as received, with streamed parts joined."""
        block = dict(self.raw) or {"type": self.type}
        if self.type == "thinking" and (self.thinking or self.signature):
            block["thinking"] = str(block.get("thinking") or "") + "".join(self.thinking)
            block["signature"] = str(block.get("signature") or "") + "".join(self.signature)
        return block

    def arguments(self) -> str:
        """The tool input as JSON text (streamed fragments, else the complete input; an
        empty streamed input is ``{}``, as in the non-streamed form)."""
        streamed = "".join(self.partial_json)
        if streamed.strip():
            return streamed
        return json.dumps(self.input if self.input is not None else {}, ensure_ascii=False)


class AnthropicModel(HTTPModel):
    """A Messages API model; see the module docstring for options and mappings."""

    provider: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    base_url_env: ClassVar[str] = "ANTHROPIC_BASE_URL"
    official_hosts: ClassVar[tuple[str, ...]] = ("api.anthropic.com",)
    negotiable: ClassVar[frozenset[str]] = frozenset({"temperature", "top_p", "top_k"})

    options: AnthropicOptions

    def __init__(
        self,
        model: str,
        options: AnthropicOptions | Mapping[str, Any] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RequestPacer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        opts = options if isinstance(options, AnthropicOptions) else AnthropicOptions.parse(options)
        super().__init__(model, opts, transport=transport, limiter=limiter, now=now)
        #: thinking blocks of recent replies, by the id of their first tool call
        self._thinking: OrderedDict[str, tuple[dict[str, Any], ...]] = OrderedDict()

    @property
    def endpoint(self) -> str:
        if self.base_url.endswith("/v1"):
            return f"{self.base_url}/messages"
        return f"{self.base_url}/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "anthropic-version": self.options.anthropic_version,
        }
        if self._api_key is not None:
            headers["x-api-key"] = self._api_key.get_secret_value()
        return headers

    # -- complete ---------------------------------------------------------------------------

    async def complete(self, request: ModelRequest) -> ModelResponse:
        stream = self.options.stream
        payload, shape = self.build_payload(request, stream=stream)
        notes = self.sampling_notes(request)

        def parse(data: Any) -> ModelResponse:
            return self.parse_message(data, request, shape)

        async def assemble(events: AsyncIterator[SSEEvent]) -> ModelResponse:
            return await self.assemble_stream(events, request, shape)

        return await self._negotiated_send(
            payload,
            estimate=self.estimate_tokens(request, payload["max_tokens"]),
            stream=stream,
            parse=parse,
            assemble=assemble,
            notes=notes,
        )

    @property
    def sampling_removed(self) -> bool:
        """Whether the configured API version has no sampling parameters at all."""
        return self.options.anthropic_version.strip() >= SAMPLING_REMOVED_VERSION

    def sampling_notes(self, request: ModelRequest) -> tuple[str, ...]:
        """How ``build_payload`` changed the request's temperature, for the reply."""
        if request.temperature is None:
            return ()
        if self.sampling_removed:
            return (
                f"temperature not sent: anthropic-version {self.options.anthropic_version} "
                "has no sampling parameters",
            )
        clamped = _clamp(request.temperature)
        if clamped != request.temperature:
            return (f"temperature {request.temperature:g} clamped to {clamped:g}",)
        return ()

    # -- request ----------------------------------------------------------------------------

    def build_payload(
        self, request: ModelRequest, *, stream: bool = False
    ) -> tuple[dict[str, Any], _ReplyShape]:
        """The request body, and how to read its reply."""
        system = [m.content for m in request.messages if m.role == "system" and m.content.strip()]
        payload: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens or self.options.max_tokens,
            "messages": _turns((m for m in request.messages if m.role != "system"), self._thinking),
        }
        if system:
            payload["system"] = "\n\n".join(system)
        thinking = self.options.thinking
        if thinking is not None:
            payload["thinking"] = (
                {"type": "adaptive"}
                if thinking == "adaptive"
                else {"type": "enabled", "budget_tokens": thinking}
            )
        if request.temperature is not None and not self.sampling_removed:
            payload["temperature"] = _clamp(request.temperature)
        tools = [_tool(t) for t in request.tools]
        shape = _ReplyShape()
        plan = self.structured_plan()
        if request.output_schema is not None and plan == "native":
            rooted, wrapped = object_root(request.output_schema)
            payload["output_config"] = {"format": {"type": "json_schema", "schema": rooted}}
            shape = _ReplyShape(wrapped=wrapped, native=True)
        elif request.output_schema is not None:
            rooted, wrapped = object_root(request.output_schema)
            name = _unique(schema_name(request.schema_name), {t.name for t in request.tools})
            tools.append(
                {"name": name, "description": _OUTPUT_TOOL_DESCRIPTION, "input_schema": rooted}
            )
            shape = _ReplyShape(output_tool=name, wrapped=wrapped)
        if tools:
            payload["tools"] = tools
            if shape.output_tool is not None and plan == "auto_tool":
                payload["tool_choice"] = {"type": "auto"}  # forcing is refused with thinking
            elif shape.output_tool is not None and not request.tools:
                payload["tool_choice"] = {"type": "tool", "name": shape.output_tool}
            elif request.tool_choice is not None:
                payload["tool_choice"] = _tool_choice(request.tool_choice)
            elif shape.output_tool is not None:
                payload["tool_choice"] = {"type": "any"}
        if stream:
            payload["stream"] = True
        return payload, shape

    def structured_plan(self) -> Literal["native", "tool", "auto_tool"]:
        """How a structured output is asked for now (see the ``structured`` option)."""
        structured = self.options.structured
        if structured != "auto":
            return structured
        if self.options.thinking is None:
            return "tool"
        return "native" if on_official_host(self.base_url, self.official_hosts) else "auto_tool"

    # -- reply ------------------------------------------------------------------------------

    def parse_message(
        self, data: Any, request: ModelRequest, shape: _ReplyShape | None = None
    ) -> ModelResponse:
        """A ``message`` body as a :class:`ModelResponse` (errors raised typed)."""
        shape = shape or _ReplyShape()
        error = self.payload_error(data)
        if error is not None:
            raise error
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, list):
            raise OverloadedError(
                f"{self.name}: the reply has no content: {str(data)[:200]!r}", model=self.name
            )
        blocks = [_Block.from_json(b) for b in content if isinstance(b, dict)]
        return self._response(
            request,
            shape,
            blocks,
            stop=data.get("stop_reason"),
            usage=data.get("usage"),
            model=data.get("model"),
            response_id=data.get("id"),
        )

    async def assemble_stream(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, shape: _ReplyShape
    ) -> ModelResponse:
        """Assemble Messages stream events; fail on an ``error`` event or a stream that ends
        before ``message_stop`` (the partial reply is discarded)."""
        blocks: dict[int, _Block] = {}
        usage: dict[str, Any] = {}
        stop: Any = None
        model: Any = None
        response_id: Any = None
        done = False
        async for event in events:
            data = self.json_loads(event.data, what=f"stream event {event.event!r}")
            error = self.payload_error(data, where="error event mid-stream")
            if error is not None:
                raise error
            if event.event == "error" or (isinstance(data, dict) and data.get("type") == "error"):
                raise self.event_error(data, event.data)
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event.event
            if kind == "message_start":
                message = data.get("message")
                if isinstance(message, dict):
                    model = message.get("model") or model
                    response_id = message.get("id") or response_id
                    if isinstance(message.get("usage"), dict):
                        usage.update(message["usage"])
            elif kind == "content_block_start":
                raw = data.get("content_block")
                if isinstance(raw, dict):
                    blocks[_index(data, blocks)] = _Block.from_json(raw)
            elif kind == "content_block_delta":
                index = _index(data, blocks, current=True)
                _apply_delta(blocks, index, data.get("delta"))
                if request.on_text is not None:
                    _forward_text(request.on_text, blocks.get(index), data.get("delta"), shape)
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason"):
                    stop = delta["stop_reason"]
                if isinstance(data.get("usage"), dict):
                    usage.update({k: v for k, v in data["usage"].items() if v is not None})
            elif kind == "message_stop":
                done = True
                break
        if not done:
            raise OverloadedError(
                f"{self.name}: the stream ended before message_stop; partial reply discarded",
                model=self.name,
            )
        ordered = [blocks[i] for i in sorted(blocks)]
        return self._response(
            request, shape, ordered, stop=stop, usage=usage, model=model, response_id=response_id
        )

    def _response(
        self,
        request: ModelRequest,
        shape: _ReplyShape,
        blocks: list[_Block],
        *,
        stop: Any,
        usage: Any,
        model: Any,
        response_id: Any = None,
    ) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        structured: str | None = None
        thinking: list[dict[str, Any]] = []
        for block in blocks:
            if block.type in _THINKING_KINDS:
                thinking.append(block.thinking_block())
            elif block.type == "text":
                text.extend(block.text)
            elif block.type == "tool_use":
                if structured is None and shape.output_tool and block.name == shape.output_tool:
                    structured = block.arguments()
                else:
                    calls.append(ToolCall(block.id, block.name, block.arguments()))
        raw = stop if isinstance(stop, str) else None
        reason: FinishReason = _STOP.get(raw, "other") if raw is not None else "other"
        if raw == "tool_use" and structured is not None and not calls:
            reason = "stop"
        plain = "".join(text)
        refusal = (plain.strip() or _REFUSED) if reason == "refusal" else None
        reply = plain
        if structured is not None:
            reply = unwrap_reply(structured) if shape.wrapped else structured
        elif shape.native and shape.wrapped and refusal is None:
            reply = unwrap_reply(plain)
        if thinking and calls:
            self._remember_thinking(calls[0].id, tuple(thinking))
        return ModelResponse(
            text=reply,
            usage=_usage(usage) or self.fallback_usage(request, reply),
            finish_reason=reason,
            refusal=refusal,
            model=model if isinstance(model, str) and model else request.model or self.model,
            raw_finish_reason=raw,
            tool_calls=tuple(calls),
            response_id=response_id if isinstance(response_id, str) and response_id else None,
        )

    def _remember_thinking(self, call_id: str, blocks: tuple[dict[str, Any], ...]) -> None:
        memory = self._thinking
        memory[call_id] = blocks
        memory.move_to_end(call_id)
        while len(memory) > _THINKING_MEMORY:
            memory.popitem(last=False)


# -- wire helpers ---------------------------------------------------------------------------


def _turns(
    messages: Iterable[Message],
    thinking: Mapping[str, tuple[dict[str, Any], ...]] | None = None,
) -> list[dict[str, Any]]:
    """Non-system messages as alternating turns of content blocks (same-role turns merged,
    tool results first in their user turn, empty and whitespace-only text dropped). An
    assistant turn whose first tool call is in ``thinking`` starts with those blocks."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if m.role == "assistant" and m.tool_calls and thinking:
            blocks.extend(dict(b) for b in thinking.get(m.tool_calls[0].id, ()))
        if m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            if m.content.strip():
                result["content"] = m.content
            if m.is_error:
                result["is_error"] = True
            blocks.append(result)
        elif m.content.strip():
            blocks.append({"type": "text", "text": m.content})
        for call in m.tool_calls if m.role == "assistant" else ():
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return turns


def _input(call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as the object ``tool_use.input`` needs."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"name": spec.name, "description": spec.description, "input_schema": spec.parameters}


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": choice}


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[:60]}_{n}"
    return candidate


def _index(data: Mapping[str, Any], blocks: Mapping[int, _Block], *, current: bool = False) -> int:
    index = data.get("index")
    if isinstance(index, int):
        return index
    if current and blocks:
        return max(blocks)
    return len(blocks)


def _apply_delta(blocks: dict[int, _Block], index: int, delta: Any) -> None:
    if not isinstance(delta, dict):
        return
    block = blocks.get(index)
    kind = delta.get("type")
    if kind == "text_delta":
        if block is None:
            block = blocks[index] = _Block("text")
        block.text.append(str(delta.get("text") or ""))
    elif kind == "input_json_delta":
        if block is None:
            block = blocks[index] = _Block("tool_use")
        block.partial_json.append(str(delta.get("partial_json") or ""))
    elif kind in ("thinking_delta", "signature_delta"):
        if block is None:
            block = blocks[index] = _Block("thinking", raw={"type": "thinking"})
        if kind == "thinking_delta":
            block.thinking.append(str(delta.get("thinking") or ""))
        else:
            block.signature.append(str(delta.get("signature") or ""))


def _forward_text(
    on_text: Callable[[str], None], block: _Block | None, delta: Any, shape: _ReplyShape
) -> None:
    """Pass a streamed piece of the reply on: text, or the structured-output tool's JSON
    (unless it is wrapped under a key, which is not the output's own JSON)."""
    if not isinstance(delta, dict) or block is None:
        return
    kind = delta.get("type")
    if kind == "text_delta" and block.type == "text":
        piece = str(delta.get("text") or "")
    elif (
        kind == "input_json_delta"
        and shape.output_tool is not None
        and block.name == shape.output_tool
        and not shape.wrapped
    ):
        piece = str(delta.get("partial_json") or "")
    else:
        return
    if piece:
        on_text(piece)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    counts = {k: v for k, v in raw.items() if isinstance(v, int)}
    if "input_tokens" not in counts and "output_tokens" not in counts:
        return None
    cached = counts.get("cache_creation_input_tokens", 0) + counts.get("cache_read_input_tokens", 0)
    return Usage(counts.get("input_tokens", 0) + cached, counts.get("output_tokens", 0))
