"""What the mock model answers, independent of the wire dialect.

Both dialects parse a request into a :class:`ParsedRequest` (a
:class:`~trellis.models.base.ModelRequest` plus streaming flags) and render a
:class:`Reply`. Content comes from :class:`~trellis.models.sim.SimModel`: prose for a
plain request, schema-valid JSON for a structured one, whether the schema is native
(``response_format``) or prompted (written into the messages, see
:mod:`~trellis.mockserver.prompted`). Tool calls are made here: with
tools and ``tool_choice`` ``auto`` the model calls one of them (chosen deterministically
from the request) with arguments sampled from the tool's parameter schema, until a tool
result is in the latest turn, and then answers: by calling the output tool if the request
has one (:func:`answer_tool`; how an Anthropic agent with a structured output finishes),
else in text. A named tool always gets a call of it and ``required`` a call of some tool
(after tool results: the output tool, else the last one), as the real APIs do.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from trellis.errors import BadRequestError
from trellis.mockserver.limits import Admission, LimitSnapshot
from trellis.mockserver.prompted import prompted_schema
from trellis.models.base import ModelRequest, ToolCall, ToolSpec, Usage
from trellis.models.faults import REFUSAL_MESSAGE, ContentFault, ErrorFault, malformed_json
from trellis.models.schema_corrupt import corrupt_value
from trellis.models.schema_sample import sample_value
from trellis.models.sim import SimModel, hint_text, plan_tool_calls
from trellis.models.tokens import estimate_request_tokens, estimate_tokens, schema_json

__all__ = [
    "JSON_OBJECT_SCHEMA",
    "Dialect",
    "ErrorKind",
    "ParsedRequest",
    "Reply",
    "RequestError",
    "StreamPlan",
    "answer_schema",
    "answer_tool",
    "choose_tools",
    "input_tokens",
    "make_reply",
    "retry_after_value",
    "split_text",
    "sse_data",
    "sse_event",
]

#: The schema answered for JSON mode (``response_format: {"type": "json_object"}``).
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}

#: Errors a dialect can render: each maps to the provider's status, type and message (a
#: request the API rejects, or an injected error fault).
ErrorKind = Literal["bad_request", ErrorFault]
Finish = Literal["stop", "length", "tool_calls", "refusal"]


class RequestError(ValueError):
    """A request the real API would reject with 400; ``param`` names the bad field and
    ``code`` is OpenAI's error code (``None`` for most)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    request: ModelRequest
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: text (or a refusal) or tool calls, why it ended, and its usage.

    Tool call ids are left empty; each dialect names its calls its own way.
    """

    text: str
    usage: Usage
    finish: Finish = "stop"
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    forced_tool: bool = False  # the request named the tool to call


def input_tokens(request: ModelRequest) -> int:
    """Input tokens of a request: its messages and schema, plus its tool definitions."""
    tokens = estimate_request_tokens(request)
    for tool in request.tools:
        tokens += estimate_tokens(tool.name + tool.description + schema_json(tool.parameters))
    return tokens


def _digest(seed: int, request: ModelRequest, salt: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{salt}\x00{seed}\x00{request.model}\x00".encode())
    for m in request.messages:
        h.update(f"{m.role}\x00{len(m.content)}\x00".encode())
        h.update(m.content.encode("utf-8", "surrogatepass"))
        for call in m.tool_calls:
            h.update(f"\x00{call.name}\x00{call.arguments}".encode())
    for tool in request.tools:
        h.update(f"\x00tool:{tool.name}".encode())
    return int.from_bytes(h.digest(), "little")


_ANSWER_TOOL = re.compile(r"final answer|final response|structured output", re.IGNORECASE)


def answer_tool(tools: tuple[ToolSpec, ...]) -> ToolSpec | None:
    """The output tool, which a model gives its final answer with: the one whose description
    says so (Trellis's: "Give your final answer by calling this tool...")."""
    return next((t for t in tools if _ANSWER_TOOL.search(t.description)), None)


def choose_tools(request: ModelRequest, seed: int) -> tuple[ToolSpec, ...]:
    """The tools the mock model calls for ``request`` (``()``: it answers instead).

    The simulator's agent decides (:func:`~trellis.models.sim.plan_tool_calls`: the tools
    most relevant to the task, one or two at a time, for one to three rounds). The output
    tool (Anthropic structured output in an agent) is not one of its tools: the model calls
    it to answer once the agent is done, and a required call with no output tool goes to
    the last tool.
    """
    if not request.tools or request.tool_choice == "none":
        return ()
    choice = request.tool_choice or "auto"
    if choice not in ("auto", "required"):
        return tuple(t for t in request.tools if t.name == choice)[:1]
    answer = answer_tool(request.tools)
    working = tuple(t for t in request.tools if t is not answer)
    if working:
        # Whether the agent is done is the sim's "auto" decision, also under "required"
        # (which a model then meets by calling the output tool).
        agent = replace(request, tools=working, tool_choice="auto")
        planned = plan_tool_calls(agent, seed, strict=False)
        if planned:
            return planned
    if answer is not None:
        return (answer,)
    return (request.tools[-1],) if choice == "required" else ()


def answer_schema(request: ModelRequest) -> dict[str, Any] | None:
    """The schema the answer follows: the native one (``response_format`` json_schema), else
    one the messages ask for (prompted JSON, also in JSON mode), else JSON mode's default."""
    native = request.output_schema
    if native is not None and native is not JSON_OBJECT_SCHEMA:
        return native
    return prompted_schema(request.messages) or native


async def make_reply(
    sim: SimModel,
    request: ModelRequest,
    *,
    seed: int,
    fault: ContentFault | None = None,
) -> Reply:
    """The reply to ``request``, with at most one content fault applied.

    Raises :class:`RequestError` for an output or tool schema the sampler cannot use.
    """
    tokens_in = input_tokens(request)
    if fault == "refusal":
        usage = Usage(tokens_in, max(1, estimate_tokens(REFUSAL_MESSAGE)))
        return Reply("", usage, "refusal", refusal=REFUSAL_MESSAGE)
    tools = choose_tools(request, seed)
    if tools:
        return _tool_reply(request, tools, seed, fault, tokens_in)
    request = replace(request, output_schema=answer_schema(request))
    try:
        response = await sim.complete(replace(request, tools=(), tool_choice=None))
    except BadRequestError as exc:  # an output schema the sampler cannot walk
        raise RequestError(f"Invalid schema for response_format: {exc}") from exc
    text = response.text
    finish: Finish = "length" if response.finish_reason == "length" else "stop"
    schema = request.output_schema
    if fault == "truncation":
        text, finish = text[: max(1, len(text) // 2)].rstrip(), "length"
    elif fault == "malformed_json" and schema is not None:
        text = malformed_json(text)
    elif fault == "invalid_json" and schema is not None and finish == "stop":
        rng = random.Random(_digest(seed, request, "corrupt"))
        text = json.dumps(corrupt_value(schema, json.loads(text), rng), ensure_ascii=False)
    return Reply(text, Usage(tokens_in, max(1, estimate_tokens(text))), finish)


def _tool_reply(
    request: ModelRequest,
    tools: tuple[ToolSpec, ...],
    seed: int,
    fault: ContentFault | None,
    tokens_in: int,
) -> Reply:
    """A reply calling ``tools`` (in parallel when more than one), with arguments sampled
    from their schemas; a content fault breaks the first call's arguments."""
    rng = random.Random(_digest(seed, request, "args"))
    hint = hint_text(request)
    finish: Finish = "tool_calls"
    max_chars = None if request.max_tokens is None else request.max_tokens * 4
    calls: list[ToolCall] = []
    for tool in tools:
        try:
            value = sample_value(tool.parameters, rng, hint_text=hint)
        except ValueError as exc:
            raise RequestError(
                f"Invalid schema for function '{tool.name}': {exc}", param="tools"
            ) from exc
        args = json.dumps(value, ensure_ascii=False)
        first = not calls
        if first and fault == "truncation":
            args, finish = args[: max(1, len(args) // 2)], "length"
        elif first and fault == "malformed_json":
            args = malformed_json(args)
        elif first and fault == "invalid_json":
            args = json.dumps(corrupt_value(tool.parameters, value, rng), ensure_ascii=False)
        calls.append(ToolCall("", tool.name, args))
        if finish == "length":
            break  # the reply was cut inside this call: nothing after it
    total = sum(len(call.arguments) for call in calls)
    if finish != "length" and max_chars is not None and total > max_chars:
        head = calls[0]
        calls, finish = [ToolCall("", head.name, head.arguments[:max_chars])], "length"
    forced = request.tool_choice not in (None, "auto", "required", "none")
    out = sum(estimate_tokens(call.arguments) + 8 for call in calls)
    return Reply(
        "", Usage(tokens_in, max(1, out)), finish, tool_calls=tuple(calls), forced_tool=forced
    )


_PIECE = re.compile(r"\S+\s*|\s+")


def split_text(text: str, size: int = 12) -> list[str]:
    """``text`` in stream-sized pieces (a few words each, at most ``2 * size`` characters
    for a long run without spaces); ``"".join`` gives ``text`` back."""
    pieces: list[str] = []
    current = ""
    for word in _PIECE.findall(text):
        while len(word) > 2 * size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[: 2 * size])
            word = word[2 * size :]
        current += word
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The encoded events of a stream; the last ``terminal`` of them end it properly
    (a stream fault strikes before those)."""

    events: list[bytes]
    terminal: int


class Dialect(Protocol):
    """What the server needs from a wire dialect (OpenAI or Anthropic)."""

    name: str

    def parse(self, body: Any) -> ParsedRequest: ...

    def validate(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> None: ...

    def render(self, parsed: ParsedRequest, reply: Reply) -> dict[str, Any]: ...

    def stream(self, parsed: ParsedRequest, reply: Reply) -> StreamPlan: ...

    def stream_error(self, message: str | None) -> bytes: ...

    def error(
        self,
        kind: ErrorKind,
        *,
        model: str,
        message: str | None = None,
        tokens: int = 0,
        param: str | None = None,
        code: str | None = None,
    ) -> tuple[int, dict[str, Any]]: ...

    def error_for_status(self, status: int, message: str | None = None) -> dict[str, Any]: ...

    def limit_error(self, admission: Admission, *, model: str) -> tuple[int, dict[str, Any]]: ...

    def limit_headers(self, snapshot: LimitSnapshot) -> dict[str, str]: ...

    def retry_headers(self, seconds: float, *, whole_seconds: bool = False) -> dict[str, str]: ...

    def base_headers(self) -> dict[str, str]: ...

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool: ...


def retry_after_value(seconds: float, whole_seconds: bool = False) -> str:
    """A ``retry-after`` header value. ``whole_seconds``: rounded up to whole seconds (at
    least 1), as servers usually send it; otherwise exact (``0.5``) when not whole."""
    if whole_seconds:
        return str(max(1, math.ceil(seconds - 1e-9)))
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def sse_data(data: Any) -> bytes:
    """One server-sent event of JSON ``data`` with no event name (OpenAI's chunks)."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def sse_event(name: str, data: Any) -> bytes:
    """One named server-sent event of JSON ``data`` (Anthropic's events)."""
    payload = json.dumps(data, ensure_ascii=False)
    return f"event: {name}\ndata: {payload}\n\n".encode()
