"""What a step can ask for besides data: the LLM handle, its run context, its loop round.

A step parameter annotated with one of these types is *injected* by the engine instead of
being read from a flow input or another step's output::

    @flow.step
    async def summarize(text: str, llm: tl.LLM, ctx: tl.RunContext) -> Summary: ...
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

from trellis.types import Message

__all__ = ["LLM", "Approval", "ElementFailure", "Human", "Prompt", "Round", "RunContext"]

T = TypeVar("T")

#: A prompt: one user message as text, or a conversation as messages or ``{"role", "content"}``.
Prompt = str | Sequence[Message | Mapping[str, str]]


class LLM(abc.ABC):
    """The handle a step uses to call a model. The engine provides it; steps only annotate.

    Every call made through it is validated, retried by failure mode, limited by the run's
    budgets, and accounted to the step that made it.
    """

    @overload
    async def generate(
        self,
        prompt: Prompt,
        *,
        output: type[T],
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasks: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> T: ...

    @overload
    async def generate(
        self,
        prompt: Prompt,
        *,
        output: None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasks: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> str: ...

    @abc.abstractmethod
    async def generate(
        self,
        prompt: Prompt,
        *,
        output: type[Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reasks: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> Any:
        """Call a model and return its reply.

        - ``output``: a type (Pydantic model, dataclass, ``list[str]``, ``Literal``...). Its
          JSON schema is sent with the request and the reply is parsed and validated; on
          failure the error is fed back to the model, at most ``reasks`` times, then
          :class:`~trellis.errors.OutputValidationError` carries every attempt. Without
          ``output`` the reply text is returned.
        - ``model``: a role ("small", "large") bound in configuration, or ``provider:model``.
          Defaults to the step's ``model=``, else the role ``"default"``.
        - ``fallbacks``: roles tried in order when the model refuses, truncates, overflows
          its context or stays overloaded; defaults to the role's configured fallbacks.
        - ``timeout``: seconds per attempt (defaults to the step's retry policy).
        """

    @overload
    async def agent(
        self,
        prompt: Prompt,
        *,
        tools: Sequence[Any],
        output: type[T],
        model: str | None = None,
        system: str | None = None,
        max_turns: int = 10,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> T: ...

    @overload
    async def agent(
        self,
        prompt: Prompt,
        *,
        tools: Sequence[Any],
        output: None = None,
        model: str | None = None,
        system: str | None = None,
        max_turns: int = 10,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> str: ...

    @abc.abstractmethod
    async def agent(
        self,
        prompt: Prompt,
        *,
        tools: Sequence[Any],
        output: type[Any] | None = None,
        model: str | None = None,
        system: str | None = None,
        max_turns: int = 10,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a tool-calling agent: model -> tool calls -> results -> model, until it gives
        its final answer (validated as ``output``) or ``max_turns`` model turns pass
        (:class:`~trellis.errors.AgentTurnLimitError`).

        ``tools`` are :func:`tl.tool` objects or plain typed functions (sync or async).
        Independent tool calls of one turn run concurrently. Invalid arguments or an
        unknown tool go back to the model as an error, never executed; a tool that raises
        goes back as an error until it exceeds its ``retries``. Every model turn and tool
        call is journaled and accounted; the transcript is in ``StepRecord.turns``.
        """


class Approval(BaseModel):
    """A person's decision on something a step proposes."""

    approved: bool
    comment: str | None = None


class Human(abc.ABC):
    """The handle a step uses to wait for a person. The engine provides it.

    ``ask`` pauses the run until someone answers (``trellis reply RUN STEP --input JSON``,
    ``trellis approve RUN STEP``, or ``engine.reply(...)``): the run's status becomes
    ``waiting`` and nothing stays in memory. Steps that do not depend on the answer run
    on. When the answer arrives, even from another process days later, the run resumes
    and ``ask`` returns it, validated as ``output``.
    """

    @abc.abstractmethod
    async def ask(self, prompt: str, *, output: type[T], details: Any = None) -> T:
        """Wait for a person's input of type ``output``; ``details`` are shown with it."""

    async def approve(self, prompt: str, *, details: Any = None) -> Approval:
        """Wait for a person's approval (``trellis approve RUN STEP [--reject]``)."""
        return await self.ask(prompt, output=Approval, details=details)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """Where a step is running: run, flow, step, and its position in a map or loop."""

    run_id: str
    flow: str
    step: str
    index: int | None = None  # element index in a mapped step
    round: int | None = None  # 1-based round in a looping step


@dataclass(frozen=True, slots=True, kw_only=True)
class Round(Generic[T]):
    """Injected into a looping step: which round this is and what earlier rounds returned."""

    number: int  # 1-based
    history: tuple[T, ...] = field(default_factory=tuple)

    @property
    def previous(self) -> T | None:
        return self.history[-1] if self.history else None

    @property
    def first(self) -> bool:
        return self.number == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ElementFailure:
    """Stands in a mapped step's output for an element that failed (``on_error="collect"``)."""

    index: int
    error: str  # the exception type's name
    message: str
