"""The one fault vocabulary of the simulator (``sim:``) and the mock server.

A *fault* is a way a simulated model misbehaves on purpose. Each has one name
(:data:`Fault`), and :data:`FAULTS` says, for each, what the client sees and which engine
:class:`~trellis.errors.FailureMode` it becomes, so the three vocabularies (the sim's
options, the mock server's ``--fault`` modes, the engine's failure modes) are one, mapped
explicitly:

=====================  ====================  ==========================================
fault                  failure mode          what the client sees
=====================  ====================  ==========================================
``rate_limit``         rate_limit            429 with ``retry-after``
``quota``              quota                 OpenAI 429 ``insufficient_quota``,
                                             Anthropic 402 ``billing_error``
``overloaded``         overloaded            503 / Anthropic 529 ``overloaded_error``
``server_error``       overloaded            500
``context_length``     context_overflow      400 "prompt is too long"
``auth``               auth                  401
``timeout``            timeout               no reply within the client's timeout
``connection``         connection            the server could not be reached
``refusal``            refusal               a refusal instead of an answer
``truncation``         truncated             the reply cut, finish reason ``length``
``malformed_json``     malformed             structured output that is not JSON
``invalid_json``       invalid               JSON that fails the schema
``invalid_tool_args``  (none: the agent      a tool call whose arguments are broken
                       answers the model)
``unknown_tool``       (none: the agent      a call of a tool that was not offered
                       answers the model)
``stream_error``       overloaded            an error event mid-stream, after HTTP 200
``stream_cut``         overloaded            the stream ends without its terminal event
=====================  ====================  ==========================================

Each producer injects the faults its medium can render, drawn in its own order
(:data:`SIM_FAULTS`, :data:`MOCK_FAULTS`): the sim raises the error a provider client
would raise (it has no HTTP), the mock server renders each dialect's status and body.

A fault applies only to a reply that has what it breaks (:attr:`FaultKind.needs`):
``output`` (a structured answer, or for the mock server any structured reply, tool
arguments included), ``tool_calls`` (a tool-call reply) or ``stream``. :func:`draw_fault`
is the one way both pick a fault from per-mode rates.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from trellis.errors import FailureMode

__all__ = [
    "CONTENT_FAULTS",
    "ERROR_FAULTS",
    "FAULTS",
    "MOCK_FAULTS",
    "RAISED_FAULTS",
    "REFUSAL_MESSAGE",
    "SIM_FAULTS",
    "ContentFault",
    "ErrorFault",
    "Fault",
    "FaultKind",
    "ReplyPart",
    "content_fault",
    "draw_fault",
    "error_fault",
    "fault_named",
    "malformed_json",
]

#: The faults answered with the error a provider returns: an HTTP status and error body from
#: the mock server, the provider client's error raised by the sim.
ErrorFault = Literal["rate_limit", "quota", "overloaded", "server_error", "context_length", "auth"]
#: The faults of the transport: no reply in time, or no connection at all.
TransportFault = Literal["timeout", "connection"]
#: The faults in a reply's content (the request itself succeeds).
ContentFault = Literal["refusal", "truncation", "malformed_json", "invalid_json"]
#: The faults in a tool-call reply, which an agent answers to the model.
ToolCallFault = Literal["invalid_tool_args", "unknown_tool"]
#: The faults of a streamed reply, after HTTP 200.
StreamFault = Literal["stream_error", "stream_cut"]
Fault = Literal[ErrorFault, TransportFault, ContentFault, ToolCallFault, StreamFault]

#: The faults answered with a provider's error (:data:`ErrorFault`).
ERROR_FAULTS: frozenset[ErrorFault] = frozenset(get_args(ErrorFault))
#: The faults in a reply's content (:data:`ContentFault`).
CONTENT_FAULTS: frozenset[ContentFault] = frozenset(get_args(ContentFault))
#: The faults a producer without HTTP (the sim) raises as the provider client's error:
#: the error faults and the transport's.
RAISED_FAULTS: frozenset[Fault] = ERROR_FAULTS | frozenset(get_args(TransportFault))
#: What a reply must have for a fault to apply to it.
ReplyPart = Literal["output", "tool_calls", "stream"]

#: The refusal text of a simulated refusal.
REFUSAL_MESSAGE = "I can't help with that."


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultKind:
    """One fault: the engine's failure mode for it (None when the engine sees no failed
    attempt: an agent answers a bad tool call to the model) and what it needs to apply."""

    name: Fault
    mode: FailureMode | None
    needs: ReplyPart | None = None


_KINDS = (
    FaultKind(name="rate_limit", mode=FailureMode.RATE_LIMIT),
    FaultKind(name="quota", mode=FailureMode.QUOTA),
    FaultKind(name="overloaded", mode=FailureMode.OVERLOADED),
    FaultKind(name="server_error", mode=FailureMode.OVERLOADED),
    FaultKind(name="context_length", mode=FailureMode.CONTEXT_OVERFLOW),
    FaultKind(name="auth", mode=FailureMode.AUTH),
    FaultKind(name="timeout", mode=FailureMode.TIMEOUT),
    FaultKind(name="connection", mode=FailureMode.CONNECTION),
    FaultKind(name="refusal", mode=FailureMode.REFUSAL),
    FaultKind(name="truncation", mode=FailureMode.TRUNCATED),
    FaultKind(name="malformed_json", mode=FailureMode.MALFORMED, needs="output"),
    FaultKind(name="invalid_json", mode=FailureMode.INVALID, needs="output"),
    FaultKind(name="invalid_tool_args", mode=None, needs="tool_calls"),
    FaultKind(name="unknown_tool", mode=None, needs="tool_calls"),
    FaultKind(name="stream_error", mode=FailureMode.OVERLOADED, needs="stream"),
    FaultKind(name="stream_cut", mode=FailureMode.OVERLOADED, needs="stream"),
)
#: Every fault by name, in the vocabulary's order.
FAULTS: Mapping[Fault, FaultKind] = {kind.name: kind for kind in _KINDS}

#: The faults ``sim:`` injects, in the order its rates are drawn.
SIM_FAULTS: tuple[Fault, ...] = (
    "rate_limit",
    "timeout",
    "overloaded",
    "refusal",
    "truncation",
    "malformed_json",
    "invalid_json",
    "invalid_tool_args",
    "unknown_tool",
    "server_error",
    "quota",
    "context_length",
    "auth",
    "connection",
)
#: The faults the mock server injects, in the order its error messages list them.
MOCK_FAULTS: tuple[Fault, ...] = (
    "rate_limit",
    "quota",
    "overloaded",
    "server_error",
    "timeout",
    "context_length",
    "refusal",
    "truncation",
    "malformed_json",
    "invalid_json",
    "stream_error",
    "stream_cut",
    "auth",
)


def error_fault(fault: Fault | None) -> ErrorFault | None:
    """``fault`` if it is answered with a provider's error, else None."""
    return next((kind for kind in ERROR_FAULTS if kind == fault), None)


def content_fault(fault: Fault | None) -> ContentFault | None:
    """``fault`` if it breaks a reply's content, else None."""
    return next((kind for kind in CONTENT_FAULTS if kind == fault), None)


def fault_named(name: str, allowed: Iterable[Fault]) -> Fault | None:
    """The fault of ``allowed`` called ``name`` (``-`` read as ``_``), else None."""
    wanted = name.strip().replace("-", "_")
    return next((fault for fault in allowed if fault == wanted), None)


def draw_fault(
    u: float, rates: Iterable[tuple[Fault, float]], has: Collection[ReplyPart] = ()
) -> Fault | None:
    """The fault a uniform draw ``u`` in [0, 1) picks from per-fault ``rates`` (in their
    order), among the faults that apply to a reply with the parts ``has``; None for none.

    Rates adding up to more than 1 are scaled down together, so every applicable fault
    keeps its share and every draw is a fault.
    """
    applicable = [
        (fault, rate)
        for fault, rate in rates
        if rate > 0.0 and (FAULTS[fault].needs is None or FAULTS[fault].needs in has)
    ]
    total = sum(rate for _, rate in applicable)
    if total <= 0.0:
        return None
    scale = 1.0 / total if total > 1.0 else 1.0
    acc = 0.0
    for fault, rate in applicable:
        acc += rate * scale
        if u < acc:
            return fault
    return None


def malformed_json(text: str, variant: float = 0.0) -> str:
    """``text`` (JSON) made unparseable, even for a lenient parser: the JSON is always left
    unclosed. ``variant`` in [0, 1) picks how: cut in half (below 0.4), cut behind some
    chatter in a code fence, missing its last character, or only chatter."""
    if not text.startswith(("{", "[")):
        text = '{"value": ' + text
    if variant < 0.4:
        return text[: max(1, len(text) // 2)]
    if variant < 0.7:
        return (
            "Sure! Here is the JSON you asked for:\n```json\n" + text[: max(1, len(text) * 2 // 3)]
        )
    if variant < 0.85:
        return text[:-1] if len(text) > 1 else text
    return "Let me think about this step by step before I answer. {"
