"""The model interface: one core method, ``complete``, and the plain data it exchanges.

A provider (the simulator, a function-backed test model, an HTTP client for a real API)
implements :class:`Model`. It turns a :class:`ModelRequest` into a :class:`ModelResponse`,
or raises a :class:`~trellis.errors.ModelError` subclass whose ``mode`` classifies the
failure. Providers never retry: the engine's retry layer is the only one. Providers also
do not interpret ``finish_reason``; the engine maps ``length`` and refusals to failures.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, Literal

from trellis.types import Message, Role, ToolCall, ToolSpec, Usage

__all__ = [
    "FinishReason",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

#: Normalised reasons a reply ended. Providers map their own dialect onto these; a value
#: they do not know is passed through as ``"other"`` with the original kept in ``raw``.
FinishReason = Literal["stop", "length", "content_filter", "refusal", "tool_calls", "other"]


@dataclass(frozen=True, slots=True, kw_only=True)
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
    #: Set by the engine when someone listens to the run's events: a provider that streams
    #: calls it with each piece of reply text as it arrives (the structured output's JSON
    #: text, for a structured call). Not part of the request's identity.
    on_text: Callable[[str], None] | None = field(
        default=None, compare=False, hash=False, repr=False
    )

    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str
    usage: Usage
    _: KW_ONLY
    finish_reason: FinishReason = "stop"
    refusal: str | None = None  # the refusal message, when the model refused
    model: str | None = None  # the model that answered, as the provider reports it
    response_id: str | None = None  # the provider's id of this reply (chatcmpl-..., msg_...)
    raw_finish_reason: str | None = None  # the provider's own finish value
    tool_calls: tuple[ToolCall, ...] = ()
    #: How the provider changed the request to get it accepted (e.g. "temperature not
    #: sent: the server rejected temperature (HTTP 400)"); recorded on the CallRecord.
    adjustments: tuple[str, ...] = ()
    #: What this reply cost in USD when the provider knows it (a replayed recording); the
    #: engine then bills it instead of pricing ``usage`` with the price table.
    cost_usd: float | None = None


# -- building requests and replies on the hot path --------------------------------------
#
# A frozen dataclass's ``__init__`` stores each field with ``object.__setattr__`` (its own
# ``__setattr__`` refuses): about ten times a plain slot store, 1.6 us for a request. The
# engine makes a request for every attempt and an offline model a reply, so they are built
# here through a mutable twin with the very same slots (a plain store per field), which
# then takes the frozen class as its own: the object is exactly what the constructor makes
# (same fields, still frozen), for a fifth of the cost.


class _RequestFields:
    __slots__ = ModelRequest.__slots__


class _ResponseFields:
    __slots__ = ModelResponse.__slots__


def new_request(
    messages: tuple[Message, ...],
    model: str,
    output_schema: dict[str, Any] | None,
    schema_name: str | None,
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
    tools: tuple[ToolSpec, ...],
    tool_choice: str | None,
    on_text: Callable[[str], None] | None,
) -> ModelRequest:
    """``ModelRequest(...)`` of these fields (``extra`` empty), built fast (see above)."""
    r: Any = _RequestFields()
    r.messages = messages
    r.model = model
    r.output_schema = output_schema
    r.schema_name = schema_name
    r.temperature = temperature
    r.max_tokens = max_tokens
    r.seed = seed
    r.tools = tools
    r.tool_choice = tool_choice
    r.extra = {}
    r.on_text = on_text
    r.__class__ = ModelRequest
    request: ModelRequest = r
    return request


def new_response(text: str, usage: Usage, model: str | None) -> ModelResponse:
    """``ModelResponse(text, usage, model=model)``, built fast (see above)."""
    r: Any = _ResponseFields()
    r.text = text
    r.usage = usage
    r.finish_reason = "stop"
    r.refusal = None
    r.model = model
    r.response_id = None
    r.raw_finish_reason = None
    r.tool_calls = ()
    r.adjustments = ()
    r.cost_usd = None
    r.__class__ = ModelResponse
    response: ModelResponse = r
    return response


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
