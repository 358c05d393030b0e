"""Concurrent work that succeeds or stops together: a mapped step's elements, a sub-flow
step's child runs, an agent turn's tool calls, a batch's items.

:func:`gather_or_cancel` awaits every task; when one fails (or the await itself is
cancelled: the run stopped) the others are cancelled and awaited before the error goes
on, so nothing keeps running, or raises unobserved, after its step has failed.
:func:`cancel_and_wait` is that clean-up on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, TypeVar

__all__ = ["cancel_and_wait", "gather_or_cancel"]

T = TypeVar("T")


async def gather_or_cancel(tasks: Collection[asyncio.Future[T]]) -> list[T]:
    """Every task's result, in order; on the first failure the others are cancelled and
    awaited, then it is raised."""
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        await cancel_and_wait(tasks)
        raise


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancel the tasks that are still running and wait until every one has settled
    (their outcomes are retrieved, so none is reported as never retrieved)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
