"""Function-backed models for tests: answer each request with your own code.

``FunctionModel(fn)`` calls ``fn(request)`` (sync or async) for every attempt. ``fn`` may
return a :class:`ModelResponse` (used as is), a ``str`` (the reply text), or a ``dict``,
``list`` or pydantic model (serialised to JSON text); raising a ``ModelError`` subclass
simulates a provider failure and propagates unchanged. Usage of a non-``ModelResponse``
reply is estimated like the simulator's (:mod:`trellis.models.tokens`).

``TestModel(*replies)`` is the scripted version: it returns the given replies in order
(an exception instance or class among them is raised instead) and fails loudly with
:class:`TestModelExhaustedError` when a call comes after the last one.

Both keep every request they received in ``calls``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, TypeAlias

from pydantic import BaseModel

from trellis.models.base import Model, ModelRequest, ModelResponse, Usage, new_response
from trellis.models.tokens import estimate_request_tokens

__all__ = ["FunctionModel", "Reply", "ReplyFn", "TestModel", "TestModelExhaustedError"]

#: What a model function may return.
Reply: TypeAlias = ModelResponse | str | dict[str, Any] | list[Any] | BaseModel
ReplyFn: TypeAlias = Callable[[ModelRequest], Reply | Awaitable[Reply]]


def _reply_text(reply: str | dict[str, Any] | list[Any] | BaseModel) -> str:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, BaseModel):
        return reply.model_dump_json()
    if isinstance(reply, dict | list):
        return json.dumps(reply, ensure_ascii=False, default=str)
    raise TypeError(
        "a model function must return a ModelResponse, str, dict, list or pydantic model, "
        f"not {type(reply).__name__}"
    )


class FunctionModel(Model):
    """A model whose replies come from ``fn(request)``; see the module docstring."""

    def __init__(self, fn: ReplyFn, *, name: str = "function:test") -> None:
        self.name = name
        self._fn = fn
        self.calls: list[ModelRequest] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, calls={len(self.calls)})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls.append(request)
        result = self._fn(request)
        if type(result) is not str and (
            type(result) is CoroutineType or inspect.isawaitable(result)
        ):
            result = await result
        return self._to_response(request, result)

    def _to_response(self, request: ModelRequest, reply: Reply) -> ModelResponse:
        if type(reply) is str:  # the common case first
            text = reply
        elif isinstance(reply, ModelResponse):
            return reply
        else:
            text = _reply_text(reply)
        # the reply's tokens: estimate_tokens(text), at least 1 (inlined: once per attempt)
        usage = Usage(estimate_request_tokens(request), max(1, (len(text) + 3) // 4))
        return new_response(text, usage, self.name)


class TestModelExhaustedError(AssertionError):
    """A :class:`TestModel` was called more often than it had replies for."""

    __test__ = False  # not a pytest test class


ScriptedReply: TypeAlias = Reply | BaseException | type[BaseException]


class TestModel(FunctionModel):
    """Returns ``replies`` in order; exceptions among them are raised. Then fails loudly.

    >>> model = TestModel('{"label": "spam"}', RateLimitError("slow down"), {"label": "ham"})
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *replies: ScriptedReply, name: str = "test:model") -> None:
        super().__init__(self._next, name=name)
        self.replies: tuple[ScriptedReply, ...] = replies
        self._index = 0

    @property
    def remaining(self) -> int:
        """How many scripted replies have not been used yet."""
        return len(self.replies) - self._index

    def _next(self, request: ModelRequest) -> Reply:
        if self._index >= len(self.replies):
            prompt = request.prompt_text()
            if len(prompt) > 120:
                prompt = prompt[:117] + "..."
            raise TestModelExhaustedError(
                f"TestModel {self.name!r} was given {len(self.replies)} "
                f"repl{'y' if len(self.replies) == 1 else 'ies'} but received call "
                f"#{len(self.calls)} (prompt: {prompt!r})"
            )
        reply = self.replies[self._index]
        self._index += 1
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, type) and issubclass(reply, BaseException):
            raise reply(f"{self.name}: scripted {reply.__name__}")
        return reply
