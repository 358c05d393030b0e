"""The value types every layer shares: conversation messages, tool calls and specs, token
usage.

They live at the bottom of the package (layer 1, beside ``trellis.errors``) so that flow
definitions (``trellis.flow``), errors and models all import them downward.
``trellis.models.base`` re-exports them with the model interface that exchanges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Message", "Role", "ToolCall", "ToolSpec", "Usage"]

Role = Literal["system", "user", "assistant", "tool"]


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
