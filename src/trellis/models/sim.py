"""The offline model simulator: a deterministic, fault-injecting stand-in for an LLM API.

``SimModel`` answers every request without a network: plain-text requests get one to three
plausible sentences built from the words of the prompt, structured requests get JSON that
is valid for the requested schema (see :mod:`trellis.models.schema_sample`), and requests
with tools get an agent that calls them for a few rounds before it answers (see "Tools"
below). Latency and provider faults are injected at configurable rates, so flows, retries,
fallbacks, budgets, agent loops and benchmarks can all be exercised offline and
reproducibly.

Options (:class:`SimOptions`; from a binding such as ``sim:small?latency_ms=50-400&rate_limit=0.1``
every value may be a string):

``seed`` (int, 0)
    Selects the whole sequence of replies, faults and latencies.
``latency_ms`` (float or (low, high), 0)
    Delay of every attempt: fixed, or uniform in ``[low, high]``; ``"50-400"`` and ``"200"``
    are accepted as strings.
``output_tokens_per_second`` (float or None)
    When set, a reply additionally takes ``output_tokens / output_tokens_per_second`` s.
``rate_limit``, ``timeout``, ``overloaded``, ``refusal``, ``truncation``, ``malformed_json``,
``invalid_json``, ``invalid_tool_args``, ``unknown_tool``, ``server_error``, ``quota``,
``context_length``, ``auth``, ``connection`` (float in [0, 1], 0)
    Per-attempt probability of each fault (the vocabulary, and each fault's engine
    failure mode, is :mod:`trellis.models.faults`); see below.
``retry_after_s`` (float or None, 1.0)
    The ``retry_after`` sent with a rate-limit fault; None models a provider that says nothing.
``call_log`` (str or None)
    Path of a file to which every :meth:`SimModel.complete` attempt appends one JSON line
    (``{"model", "request", "ts", "pid"}``: the model, a hash of the request, the Unix time
    and the process id) as the attempt *starts*, faulted or not. The file is opened in
    append mode for each line, so several processes can share it: tests count the model
    calls made across a killed and a resumed process with it. It does not change replies.

Determinism: the randomness of an attempt comes from a ``random.Random`` seeded with a
BLAKE2b hash of (seed, model name, messages, output schema, temperature, max_tokens,
request seed) *and* an occurrence counter: the instance counts how often it has seen an
identical request, and the n-th occurrence draws from its own stream. So retrying an
identical request after a fault draws again (a fault would otherwise repeat forever),
while a fresh ``SimModel`` with the same seed (or :meth:`SimModel.reset`) replays exactly
the same sequence. Different prompts give different draws, so enum choices and confidences
vary with the input. A re-ask (the previous bad reply plus the error as extra messages) is
a different request and gets a fresh draw. Python's salted ``hash()`` is never used, so the
sequence is the same across processes.

Tools: when ``request.tools`` is non-empty and ``tool_choice`` is not ``"none"``, the sim
plays an agent. Everything about its path is a stable hash of the seed and the *task* (the
first user message, and which user turn the conversation is at), never of the occurrence
counter, so the same task always takes the same path and a resumed conversation continues
exactly as the original would have:

* It counts the tool *rounds* completed since the latest user message: assistant turns
  with ``tool_calls``, each followed by ``tool`` messages answering its calls. Its target
  is R = 1-3 rounds (:func:`target_rounds`). With ``tool_choice`` ``"auto"`` (or None) it
  calls tools while fewer than R rounds are done, then answers. ``"required"`` always
  gets tool calls and a tool's name always gets one call of that tool, as the real APIs
  behave (a loop that keeps sending either never gets a final answer; switch to ``"auto"``
  after the first round, as with a real model).
* A tool-call reply has ``finish_reason="tool_calls"``, empty text and one call, or two
  parallel calls of two distinct tools in about half of the rounds when there are two or
  more tools. Tools whose name or description words occur in the latest turn (the user
  message, or the previous round's tool results) are preferred, then tools not called yet
  in this task, then a hash order (:func:`plan_tool_calls`). Each call has the id
  ``call_<24 hex>``, derived from the task, the round and the call's index, so ids are
  unique within a conversation and identical on replay. ``arguments`` is the JSON of a
  value valid for the tool's ``parameters`` schema, built from the conversation's words
  and names (user and tool messages), like structured output.
* The final answer is JSON valid for ``output_schema`` when one is requested, else prose
  that opens by quoting the latest tool results briefly ("According to get_weather, ...")
  when the conversation has results, so replies look grounded.
* A request with tools (or a ``tool_choice``) has its conversation checked as the real
  APIs check it: a ``tool`` message must answer a call of the assistant turn before it,
  every call must be answered before the next non-tool message (and before the request
  ends), call ids in a turn must be distinct, a named ``tool_choice`` must be one of the
  tools and tool names must be distinct. A violation raises ``BadRequestError`` (400). A
  request without tools but with tool turns (tools dropped for the final answer) is not
  checked; its reply is only grounded in the results.
* Input tokens add :func:`~trellis.models.tokens.estimate_tool_tokens` (the tool
  definitions and the conversation's tool calls); output tokens of a tool-call reply are
  those of the calls' names and arguments.

Faults: at most one per attempt, drawn with the per-mode rates (scaled down together if
they add up to more than 1); ``malformed_json`` and ``invalid_json`` only apply when an
output schema was requested and the reply is an answer, ``invalid_tool_args`` and
``unknown_tool`` only to tool-call replies; the other modes apply to both. The base
latency is spent before a fault is raised.

* ``rate_limit``: raises ``RateLimitError`` (status 429, ``retry_after=retry_after_s``).
* ``timeout``: raises ``ModelTimeoutError``.
* ``overloaded``: raises ``OverloadedError`` (status 503); ``server_error`` the same with
  status 500.
* ``quota``: raises ``QuotaExceededError`` (status 429, ``insufficient_quota``).
* ``context_length``: raises ``ContextOverflowError`` (status 400).
* ``auth``: raises ``AuthenticationError`` (status 401).
* ``connection``: raises ``ConnectionFailedError`` (the server could not be reached).
* ``refusal``: returns ``finish_reason="refusal"``, empty text and a ``refusal`` message.
* ``truncation``: returns the reply cut roughly in half with ``finish_reason="length"``.
* ``malformed_json``: returns text that is not parseable JSON (JSON cut off, possibly
  behind some prose), ``finish_reason="stop"``.
* ``invalid_json``: returns JSON that parses but fails the schema (a required field
  missing or a field of the wrong type).
* ``invalid_tool_args``: one call's ``arguments`` are broken: half of the time not JSON at
  all (cut off), otherwise JSON that fails the tool's schema (a required field missing or
  a field of the wrong type; best effort for a schema that accepts anything).
* ``unknown_tool``: one call names a tool that is not in ``request.tools`` (its arguments
  are still sampled from the tool the sim meant to call).

On a tool-call reply, ``truncation`` cuts the last call's arguments in half and returns
``finish_reason="length"``; ``refusal`` and the raised faults are as above.

Without a fault, a structured reply (or a tool-call reply's arguments) longer than
``max_tokens`` (≈ 4 characters a token) is cut to fit and returned with
``finish_reason="length"``, as a real API would; a plain-text reply is simply made short
enough. Usage follows :mod:`trellis.models.tokens`.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectionFailedError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)
from trellis.models.base import (
    FinishReason,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from trellis.models.faults import (
    RAISED_FAULTS,
    REFUSAL_MESSAGE,
    SIM_FAULTS,
    Fault,
    ReplyPart,
    draw_fault,
    malformed_json,
)
from trellis.models.prose import hint_words, sample_prose
from trellis.models.schema_corrupt import corrupt_value
from trellis.models.schema_sample import sample_value
from trellis.models.tokens import (
    estimate_request_tokens,
    estimate_tokens,
    estimate_tool_tokens,
    schema_json,
)

__all__ = [
    "FAULT_MODES",
    "REFUSAL_MESSAGE",
    "FaultMode",
    "SimModel",
    "SimOptions",
    "hint_text",
    "plan_tool_calls",
    "target_rounds",
]

#: A fault ``sim:`` injects (one of :data:`FAULT_MODES`; the vocabulary is
#: :mod:`trellis.models.faults`).
FaultMode = Fault
#: Fault modes in the order they are drawn.
FAULT_MODES: tuple[FaultMode, ...] = SIM_FAULTS

#: A per-attempt fault probability.
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class SimOptions(BaseModel):
    """Simulator options; unknown names are an error. See the module docstring."""

    # Built when first validated: a binding without options (``sim:small``) never is, so
    # a run on sim: skips building the validator (start-up: bench/startup_workloads.py).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    seed: int = 0
    latency_ms: float | tuple[float, float] = 0.0
    malformed_json: Rate = 0.0
    invalid_json: Rate = 0.0
    rate_limit: Rate = 0.0
    timeout: Rate = 0.0
    overloaded: Rate = 0.0
    refusal: Rate = 0.0
    truncation: Rate = 0.0
    invalid_tool_args: Rate = 0.0
    unknown_tool: Rate = 0.0
    server_error: Rate = 0.0
    quota: Rate = 0.0
    context_length: Rate = 0.0
    auth: Rate = 0.0
    connection: Rate = 0.0
    retry_after_s: float | None = Field(default=1.0, ge=0.0)
    output_tokens_per_second: float | None = Field(default=None, gt=0.0)
    call_log: str | None = None

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _parse_latency(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().removesuffix("ms").strip()
            try:
                return float(text)
            except ValueError:
                pass
            for sep in ("..", "-", ","):
                low, found, high = text.partition(sep)
                if found and low.strip() and high.strip():
                    return (low.strip(), high.strip())
            return text
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("latency_ms")
    @classmethod
    def _check_latency(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        low, high = value if isinstance(value, tuple) else (value, value)
        if not (0.0 <= low <= high) or math.isinf(high):
            raise ValueError(
                "latency must be a finite number of ms >= 0, or low-high with low <= high"
            )
        return value

    @field_validator("retry_after_s", "output_tokens_per_second", "call_log", mode="before")
    @classmethod
    def _parse_optional(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value

    @property
    def latency_bounds_ms(self) -> tuple[float, float]:
        """``latency_ms`` as a (low, high) range in milliseconds."""
        lat = self.latency_ms
        return lat if isinstance(lat, tuple) else (lat, lat)

    def fault_rates(self) -> dict[FaultMode, float]:
        """Each fault mode's per-attempt rate."""
        return {mode: float(getattr(self, mode)) for mode in FAULT_MODES}

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SimOptions:
        """Validate binding options (strings welcome); raise ``ConfigurationError`` if bad."""
        if not options and cls is SimOptions:
            return _defaults()
        data = {str(k).strip().replace("-", "_"): v for k, v in options.items()}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, data)) from None


def _defaults() -> SimOptions:
    """``SimOptions()`` without validating: the defaults are valid, and no field validates
    its default (the same value, equal and of the same hash as ``SimOptions()``)."""
    return SimOptions.model_construct()


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> str:
    valid = ", ".join(SimOptions.model_fields)
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, list(SimOptions.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown sim option {field!r}{hint}; valid options: {valid}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"invalid sim option {field}={data.get(field)!r}: {msg}; valid options: {valid}"


def _request_key(model: str, seed: int, request: ModelRequest) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{seed}\x00{model}\x00{len(request.messages)}\x00".encode())
    for m in request.messages:
        content = m.content.encode("utf-8", "surrogatepass")
        h.update(f"{m.role}\x00{len(content)}\x00".encode())
        h.update(content)
        # Tool parts only when present, so the key of a plain request never changes.
        if m.tool_calls or m.tool_call_id is not None:
            h.update(f"\x00calls\x00{m.tool_call_id!r}".encode())
            for call in m.tool_calls:
                _update_str(h, call.id)
                _update_str(h, call.name)
                _update_str(h, call.arguments)
    schema = request.output_schema
    h.update(b"\x00-" if schema is None else schema_json(schema).encode())
    h.update(f"\x00{request.temperature!r}\x00{request.max_tokens!r}\x00{request.seed!r}".encode())
    if request.tools or request.tool_choice is not None:
        h.update(f"\x00tools\x00{request.tool_choice!r}".encode())
        for tool in request.tools:
            _update_str(h, tool.name)
            _update_str(h, tool.description)
            _update_str(h, schema_json(tool.parameters))
    return h.digest()


def _update_str(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(f"\x00{len(data)}\x00".encode())
    h.update(data)


def hint_text(request: ModelRequest) -> str:
    """The words a reply draws on: the user messages and the tool results (the mock
    server's replies draw on the same)."""
    user = [m.content for m in request.messages if m.role in ("user", "tool")]
    return "\n".join(user) if user else request.prompt_text()


def _cut_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space].rstrip(" ,") if space > 0 else cut


# --------------------------------------------------------------------------- tools / agent


@dataclass(frozen=True, slots=True)
class _Task:
    """Where a conversation stands, for the agent: see the module docstring."""

    first_user: str  # the first user message: what the task is
    user_turn: int  # how many user messages came before the latest one
    rounds: int  # tool rounds completed since the latest user message
    latest: str  # user / tool text after the last assistant turn
    called: Counter[str]  # tools called since the latest user message
    results: tuple[tuple[str, str], ...]  # (tool name, content) since the latest user message


def _bad_request(message: str, model: str | None) -> BadRequestError:
    return BadRequestError(message, model=model, status_code=400)


def _scan(messages: Sequence[Message], model: str | None = None, *, strict: bool = True) -> _Task:
    """Say where the task of ``messages`` is; ``strict``: first check its tool turns as the
    real APIs do (``BadRequestError`` if they are not well formed)."""
    first_user = next((m.content for m in messages if m.role == "user"), "")
    user_turn = -1
    rounds = 0
    called: Counter[str] = Counter()
    results: list[tuple[str, str]] = []
    open_calls: dict[str, str] = {}  # id -> name: calls of the latest assistant turn
    pending: set[str] = set()  # of those, the ids not answered yet
    latest: list[str] = []
    for i, m in enumerate(messages):
        if m.role == "tool":
            call_id = m.tool_call_id
            if strict and (call_id is None or call_id not in open_calls):
                raise _bad_request(
                    f"messages[{i}]: a 'tool' message must answer a tool call of the "
                    f"assistant turn before it (tool_call_id={call_id!r})",
                    model,
                )
            pending.discard(call_id or "")
            results.append((open_calls.get(call_id or "", "the tool"), m.content))
            latest.append(m.content)
            continue
        if pending and strict:
            raise _bad_request(
                f"messages[{i}]: the assistant tool call(s) {sorted(pending)} have no "
                "'tool' message answering them",
                model,
            )
        open_calls = {}
        if m.role == "user":
            user_turn += 1
            rounds = 0
            called.clear()
            results.clear()
            latest = [m.content]
        elif m.role == "assistant":
            latest = []
            if m.tool_calls:
                ids = [c.id for c in m.tool_calls]
                if strict and len(set(ids)) != len(ids):
                    raise _bad_request(f"messages[{i}]: duplicate tool call ids {ids}", model)
                open_calls = {c.id: c.name for c in m.tool_calls}
                pending = set(ids)
                rounds += 1
                called.update(c.name for c in m.tool_calls)
    if pending and strict:
        raise _bad_request(
            f"the assistant tool call(s) {sorted(pending)} have no 'tool' message answering them",
            model,
        )
    return _Task(first_user, max(user_turn, 0), rounds, "\n".join(latest), called, tuple(results))


def _task_hash(seed: int, task: _Task, *parts: object) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"agent\x00{seed}\x00{task.user_turn}".encode())
    _update_str(h, task.first_user)
    for part in parts:
        _update_str(h, str(part))
    return int.from_bytes(h.digest(), "little")


def _call_id(seed: int, task: _Task, index: int) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(f"call\x00{seed}\x00{task.user_turn}\x00{task.rounds}\x00{index}".encode())
    _update_str(h, task.first_user)
    return "call_" + h.hexdigest()


def _rounds_for(seed: int, task: _Task) -> int:
    return 1 + _task_hash(seed, task, "rounds") % 3


def target_rounds(request: ModelRequest, seed: int = 0) -> int:
    """How many tool rounds (1-3) the sim's agent makes for ``request``'s current task with
    ``tool_choice="auto"`` before it answers: a stable hash of ``seed``, the first user
    message and the number of user turns."""
    return _rounds_for(seed, _scan(request.messages))


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _tool_words(tool: ToolSpec) -> frozenset[str]:
    return frozenset(hint_words(f"{_CAMEL.sub(' ', tool.name)} {tool.description}"))


def _check_tools(tools: Sequence[ToolSpec], model: str | None) -> None:
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _bad_request(f"tool names must be unique; repeated: {dupes}", model)


def _plan(request: ModelRequest, seed: int, task: _Task, model: str | None) -> tuple[ToolSpec, ...]:
    tools = request.tools
    choice = request.tool_choice or "auto"
    if not tools:
        if choice not in ("auto", "none"):
            raise _bad_request(f"tool_choice={choice!r} needs tools, and none were given", model)
        return ()
    _check_tools(tools, model)
    if choice == "none":
        return ()
    if choice not in ("auto", "required"):
        named = next((t for t in tools if t.name == choice), None)
        if named is None:
            raise _bad_request(
                f"tool_choice names {choice!r}, which is not one of the tools "
                f"{[t.name for t in tools]}",
                model,
            )
        return (named,)
    if choice == "auto" and task.rounds >= _rounds_for(seed, task):
        return ()
    latest = frozenset(hint_words(task.latest))
    ranked = sorted(
        tools,
        key=lambda t: (
            -len(_tool_words(t) & latest),
            task.called[t.name],
            _task_hash(seed, task, "tool", task.rounds, t.name),
        ),
    )
    parallel = len(tools) >= 2 and _task_hash(seed, task, "parallel", task.rounds) % 2 == 1
    return tuple(ranked[: 2 if parallel else 1])


def plan_tool_calls(
    request: ModelRequest, seed: int = 0, *, strict: bool = True
) -> tuple[ToolSpec, ...]:
    """The tools the sim's agent calls in reply to ``request`` (one, or two in parallel),
    or ``()`` when it answers instead. Deterministic for the request and ``seed``; raises
    ``BadRequestError`` for a conversation or ``tool_choice`` a real API would reject
    (``strict=False``: without checking the conversation's tool turns, for a caller such as
    the mock server that checked them in its own API's terms)."""
    return _plan(request, seed, _scan(request.messages, strict=strict), None)


def _unknown_tool_name(tools: Sequence[ToolSpec], rng: random.Random) -> str:
    names = {t.name for t in tools}
    candidates = [n for n in _HALLUCINATED_TOOLS if n not in names]
    if candidates:
        return rng.choice(candidates)
    base = rng.choice(list(tools)).name
    name = f"{base}_v2"
    while name in names:
        name += "_v2"
    return name


_HALLUCINATED_TOOLS = (
    "web_search", "lookup", "fetch_url", "run_python", "get_details", "search_database",
)  # fmt: skip


def _grounding(results: Sequence[tuple[str, str]]) -> str:
    """A short opening that quotes the latest (at most two) tool results."""
    parts: list[str] = []
    for name, content in results[-2:]:
        snippet = _cut_words(" ".join(content.split()), 80).rstrip(" ,;:")
        if not snippet:
            continue
        if snippet[-1] not in ".!?":
            snippet += "."
        parts.append(f"According to {name}, {snippet}")
    return " ".join(parts)


class SimModel(Model):
    """Deterministic offline model with latency and fault injection (see module docs)."""

    def __init__(
        self,
        name: str = "sim:small",
        options: SimOptions | Mapping[str, Any] | None = None,
    ) -> None:
        model = name.removeprefix("sim:")
        if not model:
            raise ConfigurationError(f"sim model name is empty in {name!r}; e.g. 'sim:small'")
        self.model = model
        self.name = f"sim:{model}"
        if options is None:
            self.options = _defaults()
        elif isinstance(options, SimOptions):
            self.options = options
        else:
            self.options = SimOptions.parse(options)
        self._seen: dict[bytes, int] = {}
        self.attempts = 0  # every complete() call, faulted or not

    def __repr__(self) -> str:
        return f"SimModel({self.name!r}, seed={self.options.seed})"

    def reset(self) -> None:
        """Forget the occurrence counters: the instance replays its sequence from the start."""
        self._seen.clear()
        self.attempts = 0

    def _rng_for(self, request: ModelRequest) -> random.Random:
        key = _request_key(self.name, self.options.seed, request)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        digest = hashlib.blake2b(key + n.to_bytes(8, "little"), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def _fault(self, u: float, structured: bool, tool_turn: bool = False) -> FaultMode | None:
        # A tool-call reply has no output text to break; an answer has no calls to break.
        has: tuple[ReplyPart, ...] = (
            ("tool_calls",) if tool_turn else ("output",) if structured else ()
        )
        return draw_fault(u, self.options.fault_rates().items(), has)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.attempts += 1
        opts = self.options
        if opts.call_log is not None:
            _log_attempt(opts.call_log, self.name, request)
        rng = self._rng_for(request)
        # A fixed number of draws before the content, so the reply of a fault-free attempt
        # does not depend on which fault rates are configured.
        u_fault, u_variant, u_latency = rng.random(), rng.random(), rng.random()
        schema = request.output_schema
        task: _Task | None = None
        calls_to: tuple[ToolSpec, ...] = ()
        if request.tools or request.tool_choice is not None:
            task = _scan(request.messages, self.name)
            calls_to = _plan(request, opts.seed, task, self.name)
        elif _has_tool_turns(request):
            # Tools dropped for the final answer (or stripped by a wrapper such as the
            # mock server, which checks conversations itself): only ground the reply.
            task = _scan(request.messages, self.name, strict=False)
        fault = self._fault(u_fault, schema is not None, tool_turn=bool(calls_to))
        low, high = opts.latency_bounds_ms
        latency_s = (low + (high - low) * u_latency) / 1000.0

        if fault in RAISED_FAULTS:
            await _sleep(latency_s)
            raise self._fault_error(fault)

        input_tokens = estimate_request_tokens(request) + estimate_tool_tokens(request)
        if fault == "refusal":
            await _sleep(latency_s)
            return ModelResponse(
                text="",
                usage=Usage(input_tokens, max(1, estimate_tokens(REFUSAL_MESSAGE))),
                finish_reason="refusal",
                refusal=REFUSAL_MESSAGE,
                model=self.name,
                raw_finish_reason="refusal",
            )

        hint = hint_text(request)
        finish: FinishReason = "stop"
        max_chars = None if request.max_tokens is None else max(1, request.max_tokens * 4)
        if task is not None and calls_to:
            calls, finish = self._tool_calls(
                request, task, calls_to, rng, hint, fault, u_variant, max_chars
            )
            out = sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in calls)
            usage = Usage(input_tokens, max(1, out))
            if opts.output_tokens_per_second:
                latency_s += usage.output_tokens / opts.output_tokens_per_second
            await _sleep(latency_s)
            return ModelResponse(
                text="",
                usage=usage,
                finish_reason=finish,
                model=self.name,
                raw_finish_reason=finish,
                tool_calls=calls,
            )
        if schema is not None:
            try:
                value = sample_value(schema, rng, hint_text=hint)
            except ValueError as exc:
                raise BadRequestError(
                    f"{self.name}: unusable output schema: {exc}", model=self.name, status_code=400
                ) from exc
            text = json.dumps(value, ensure_ascii=False)
            if fault == "malformed_json":
                text = malformed_json(text, u_variant)
            elif fault == "invalid_json":
                text = json.dumps(corrupt_value(schema, value, rng), ensure_ascii=False)
            elif fault == "truncation":
                text, finish = text[: max(1, len(text) // 2)], "length"
            elif max_chars is not None and len(text) > max_chars:
                text, finish = text[:max_chars], "length"
        else:
            words = hint_words(hint)
            text = sample_prose(rng, hint, sentences=rng.randint(1, 3) if words else 1)
            grounding = _grounding(task.results) if task is not None else ""
            if grounding:
                text = f"{grounding} {text}"
            if max_chars is not None:
                text = _cut_words(text, max_chars)
            if fault == "truncation":
                text, finish = _cut_words(text, max(1, len(text) // 2)), "length"

        usage = Usage(input_tokens, max(1, estimate_tokens(text)))
        if opts.output_tokens_per_second:
            latency_s += usage.output_tokens / opts.output_tokens_per_second
        await _sleep(latency_s)
        if request.on_text is not None:  # someone listens: the reply streams, in pieces
            for piece in _stream_pieces(text):
                request.on_text(piece)
        return ModelResponse(
            text=text, usage=usage, finish_reason=finish, model=self.name, raw_finish_reason=finish
        )

    def _fault_error(self, fault: FaultMode) -> ModelError:
        """The error a provider client raises for ``fault`` (see the module docs)."""
        name = self.name
        if fault == "rate_limit":
            return RateLimitError(
                f"{name}: simulated rate limit (429)",
                retry_after=self.options.retry_after_s,
                model=name,
                status_code=429,
            )
        if fault == "timeout":
            return ModelTimeoutError(f"{name}: simulated timeout", model=name)
        if fault == "overloaded":
            return OverloadedError(f"{name}: simulated overload (503)", model=name, status_code=503)
        if fault == "server_error":
            return OverloadedError(
                f"{name}: simulated server error (500)", model=name, status_code=500
            )
        if fault == "quota":
            return QuotaExceededError(
                f"{name}: simulated exhausted quota (429 insufficient_quota)",
                model=name,
                status_code=429,
            )
        if fault == "context_length":
            return ContextOverflowError(
                f"{name}: simulated context overflow (400): the prompt is too long",
                model=name,
                status_code=400,
            )
        if fault == "auth":
            return AuthenticationError(
                f"{name}: simulated authentication failure (401)", model=name, status_code=401
            )
        return ConnectionFailedError(f"{name}: simulated connection failure", model=name)

    def _tool_calls(
        self,
        request: ModelRequest,
        task: _Task,
        tools: tuple[ToolSpec, ...],
        rng: random.Random,
        hint: str,
        fault: FaultMode | None,
        u_variant: float,
        max_chars: int | None,
    ) -> tuple[tuple[ToolCall, ...], FinishReason]:
        """The calls of a tool-call reply, with the attempt's fault applied to one of them."""
        seed = self.options.seed
        values: list[Any] = []
        for tool in tools:
            try:
                values.append(sample_value(tool.parameters, rng, hint_text=hint))
            except ValueError as exc:
                raise _bad_request(
                    f"{self.name}: unusable parameters schema of tool {tool.name!r}: {exc}",
                    self.name,
                ) from exc
        names = [t.name for t in tools]
        args = [json.dumps(v, ensure_ascii=False) for v in values]
        finish: FinishReason = "tool_calls"
        if fault == "invalid_tool_args":
            i = rng.randrange(len(tools))
            if u_variant < 0.5:
                args[i] = malformed_json(args[i], rng.random())
            else:
                bad = corrupt_value(tools[i].parameters, values[i], rng)
                args[i] = json.dumps(bad, ensure_ascii=False)
        elif fault == "unknown_tool":
            i = rng.randrange(len(tools))
            names[i] = _unknown_tool_name(request.tools, rng)
        elif fault == "truncation":
            args[-1] = args[-1][: max(1, len(args[-1]) // 2)]
            finish = "length"
        elif max_chars is not None and sum(map(len, args)) > max_chars:
            finish = "length"
            room = max_chars
            for i, a in enumerate(args):
                if len(a) > room:
                    args, names = args[: i + 1], names[: i + 1]
                    args[i] = a[: max(1, room)]
                    break
                room -= len(a)
        calls = tuple(
            ToolCall(_call_id(seed, task, i), name, a)
            for i, (name, a) in enumerate(zip(names, args, strict=True))
        )
        return calls, finish


def _has_tool_turns(request: ModelRequest) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in request.messages)


def _log_attempt(path: str, model: str, request: ModelRequest) -> None:
    """Append one line to the ``call_log`` file (opened per write: shareable by processes)."""
    line = json.dumps(
        {
            "model": model,
            "request": _request_key(model, 0, request).hex(),
            "ts": time.time(),
            "pid": os.getpid(),
        }
    )
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


_PIECE = re.compile(r"\S+\s*|\s+")  # a word and the space after it (or leading space)


def _stream_pieces(text: str) -> list[str]:
    """``text`` as a streaming server would send it: about a word (a token or two) a piece."""
    return _PIECE.findall(text)
