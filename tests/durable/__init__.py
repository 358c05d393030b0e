"""Durable execution tests (Python API): resume, changed steps, leases, cache, batches.

Shared helpers live here (imported with ``from . import ...``): a per-name execution
counter for once-and-only-once assertions, a priced, call-counting ``FunctionModel``, and
a factory for engines on a SQLite file.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trellis as tl
from trellis.store import SQLiteStore

__all__ = ["PRICED", "Counts", "durable_engine", "priced_model", "reply_by_schema"]

#: Prices for the test model, so cost accounting is exercised (USD per 1M tokens).
PRICED = tl.Config(prices={"function:test": {"input": 1.0, "output": 2.0}})


class Counts(Counter[str]):
    """How many times each step function (or element, or round) executed."""

    def hit(self, name: str) -> None:
        self[name] += 1


def reply_by_schema(replies: dict[str | None, Any]) -> Callable[[tl.ModelRequest], Any]:
    """A model function answering by the requested output schema's name (``None``: text)."""

    def reply(request: tl.ModelRequest) -> Any:
        value = replies[request.schema_name]
        return value(request) if callable(value) else value

    return reply


def priced_model(fn: Callable[[tl.ModelRequest], Any]) -> tl.FunctionModel:
    """A ``FunctionModel`` named ``function:test`` (priced by ``PRICED``); ``.calls`` counts."""
    return tl.FunctionModel(fn, name="function:test")


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
