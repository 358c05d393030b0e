"""Agent and human-in-the-loop tests (Python API): tools, the agent loop, durable agents,
steps that wait for a person.

Shared helpers live here (imported with ``from . import ...``): scripted tool-calling
replies for a ``FunctionModel``, a per-name execution counter for once-and-only-once
assertions, and a factory for engines on a SQLite file (one connection each, as separate
processes would have).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import trellis as tl
from trellis.store import SQLiteStore

__all__ = [
    "PRICED",
    "Counts",
    "call",
    "durable_engine",
    "final",
    "scripted",
    "tool_turn",
    "turn_of",
]

#: Prices for the test model, so cost accounting is exercised (USD per 1M tokens).
PRICED = tl.Config(prices={"function:test": {"input": 1.0, "output": 2.0}})


class Counts(Counter[str]):
    """How many times each step function, tool or model turn executed."""

    def hit(self, name: str) -> None:
        self[name] += 1


def call(call_id: str, name: str, arguments: Any) -> tl.ToolCall:
    """A tool call; ``arguments`` is JSON-encoded unless it is already a string."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return tl.ToolCall(call_id, name, text)


def tool_turn(*calls: tl.ToolCall, text: str = "", tokens: tuple[int, int] = (20, 6)) -> Any:
    """A model reply asking for ``calls`` (fixed usage, so accounting is exact)."""
    return tl.ModelResponse(
        text=text,
        usage=tl.Usage(*tokens),
        finish_reason="tool_calls",
        tool_calls=tuple(calls),
    )


def final(value: Any, tokens: tuple[int, int] = (30, 9)) -> tl.ModelResponse:
    """A final answer: ``value`` as JSON (a string is sent as is)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return tl.ModelResponse(text=text, usage=tl.Usage(*tokens))


def turn_of(request: tl.ModelRequest) -> int:
    """Which agent turn a request is (1-based): assistant tool-call turns so far + 1."""
    return 1 + sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)


def scripted(
    turns: Sequence[Any], counts: Counts | None = None
) -> Callable[[tl.ModelRequest], Any]:
    """A model function that answers agent turn ``n`` with ``turns[n - 1]`` (a callable
    item is called with the request, an exception is raised). ``counts["model"]`` counts
    the calls."""

    def reply(request: tl.ModelRequest) -> Any:
        if counts is not None:
            counts.hit("model")
        item = turns[turn_of(request) - 1]
        if isinstance(item, BaseException):
            raise item
        return item(request) if callable(item) else item

    return reply


@contextlib.asynccontextmanager
async def durable_engine(
    path: Path, models: dict[str, Any] | None = None, **kw: Any
) -> AsyncIterator[tl.Engine]:
    """An engine recording to the SQLite file ``path`` through its own connection (as a
    separate process would); the connection is closed on exit."""
    store = SQLiteStore(path)
    try:
        async with tl.Engine(store=store, models=models, config=PRICED, **kw) as engine:
            yield engine
    finally:
        store.close()
