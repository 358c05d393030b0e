"""The model interface: one core method, ``complete``, and the plain data it exchanges.

A provider (the simulator, a function-backed test model, an HTTP client for a real API)
implements :class:`Model`. It turns a :class:`ModelRequest` into a :class:`ModelResponse`,
or raises a :class:`~trellis.errors.ModelError` subclass whose ``mode`` classifies the
failure. Providers never retry: the engine's retry layer is the only one. Providers also
do not interpret ``finish_reason``; the engine maps ``length`` and refusals to failures.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = [
    "FinishReason",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]

#: Normalised reasons a reply ended. Providers map their own dialect onto these; a value
#: they do not know is passed through as ``"other"`` with the original kept in ``raw``.
FinishReason = Literal["stop", "length", "content_filter", "refusal", "tool_calls", "other"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the raw JSON text, unvalidated."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn. An assistant turn may carry ``tool_calls``; a ``tool`` turn
    answers the call ``tool_call_id`` with ``content`` (``is_error``: the tool failed or
    was not run, and ``content`` says why)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one attempt (or a sum of attempts)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything a provider needs for one attempt. Immutable: a re-ask is a new request."""

    messages: tuple[Message, ...]
    model: str  # the provider's model name, without the provider prefix
    output_schema: dict[str, Any] | None = None  # JSON schema of the structured output
    schema_name: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # "auto", "required", "none", or a tool's name
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific options

    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str
    usage: Usage
    finish_reason: FinishReason = "stop"
    refusal: str | None = None  # the refusal message, when the model refused
    model: str | None = None  # the model that answered, as the provider reports it
    raw_finish_reason: str | None = None  # the provider's own finish value
    tool_calls: tuple[ToolCall, ...] = ()
    #: How the provider changed the request to get it accepted (e.g. "temperature not
    #: sent: the server rejected temperature (HTTP 400)"); recorded on the CallRecord.
    adjustments: tuple[str, ...] = ()
    #: What this reply cost in USD when the provider knows it (a replayed recording); the
    #: engine then bills it instead of pricing ``usage`` with the price table.
    cost_usd: float | None = None


class Model(abc.ABC):
    """A model provider bound to one model. Subclasses implement :meth:`complete`."""

    #: ``provider:model``, as used in bindings, accounting and the price table.
    name: str
    #: A remote service (keys, quotas, outages): the engine lets one request through
    #: before the others until it has answered once (see ``trellis.engine.breaker``).
    remote: ClassVar[bool] = False

    @abc.abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one request; return the reply or raise a ``ModelError`` subclass."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Release connections. The engine calls it when it is closed."""
