"""Running a blocking (synchronous) step function off the event loop, so that a wall-time
deadline can fire while it blocks.

:func:`call_in_daemon_thread` runs ``fn`` in a new *daemon* thread and awaits its result.
Cancelling the await (the run's ``max_seconds`` expired) stops waiting at once, but a
thread cannot be stopped: it runs on in the background and whatever it returns or raises
is discarded. Being a daemon thread it never keeps the process alive: a command that
timed out exits at once, and ``asyncio.run`` does not wait for it either (the loop's
default executor would, on shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["call_in_daemon_thread"]


async def call_in_daemon_thread(fn: Callable[..., Any], kwargs: dict[str, Any], name: str) -> Any:
    """``fn(**kwargs)`` in a daemon thread (named ``name``); its result, or its exception."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():  # the caller stopped waiting (cancelled): discard
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = context.run(fn, **kwargs)
        except BaseException as exc:  # delivered to the awaiting step, as if run inline
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future
