"""A Server-Sent Events parser with an idle timeout (:func:`iter_sse`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass

__all__ = ["SSEEvent", "StreamIdleTimeout", "iter_sse"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One Server-Sent Event: its ``event`` name (``"message"`` if unnamed) and data."""

    event: str
    data: str
    id: str | None = None


class StreamIdleTimeout(Exception):
    """No bytes arrived on a stream for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no data for {seconds:g}s")
        self.seconds = seconds


async def iter_sse(
    lines: AsyncIterable[str], *, idle_timeout: float | None = None
) -> AsyncGenerator[SSEEvent, None]:
    """Parse SSE from ``lines`` (without their line endings), per the WHATWG rules.

    ``data:`` lines of one event are joined with newlines; ``:`` comments are skipped
    (but, like every line, reset the idle clock); a blank line dispatches the event; an
    event still pending when the stream ends is dispatched too. If no line arrives for
    ``idle_timeout`` seconds, :class:`StreamIdleTimeout` is raised.
    """
    iterator = aiter(lines)
    event = ""
    data: list[str] = []
    last_id: str | None = None
    while True:
        try:
            if idle_timeout is None:
                line = await anext(iterator)
            else:
                async with asyncio.timeout(idle_timeout):
                    line = await anext(iterator)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise StreamIdleTimeout(idle_timeout or 0.0) from None
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data), last_id)
