"""``engine.stream``: a run's (or a batch's) events as an async iterator, with back-pressure.

:class:`EventBuffer` is the observer a stream registers: it never blocks the run (an
observer is called synchronously on the run's loop) and never drops an event, except that
token deltas are coalesced: once ``limit`` events wait unread, the deltas of a step that
follow are merged into one waiting delta instead of each taking a place of its own. So a
consumer that sleeps holds at most ``limit`` events plus the (few, bounded by the flow's
size) step and attempt events, however many tokens stream meanwhile.

:class:`EventStream` drives the work in a task while its consumer iterates; the run's
result is the last event (:class:`~trellis.engine.events.RunFinished`) and, afterwards,
:attr:`EventStream.result` (``results`` for a batch). Leaving the iteration early cancels
the work.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from trellis.engine.events import Event, TokenDelta
from trellis.engine.results import RunResult
from trellis.errors import InputError

__all__ = ["EventBuffer", "EventStream"]

DEFAULT_LIMIT = 1000


class EventBuffer:
    """A bounded, coalescing buffer of events between a run and one consumer."""

    __slots__ = ("_events", "_latest_delta", "_wakeup", "coalesced", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise InputError("a stream's buffer must hold at least 1 event")
        self.limit = limit
        self._events: deque[Event] = deque()
        self._latest_delta: dict[tuple[str, str], int] = {}  # (run, step) -> position
        self._wakeup = asyncio.Event()
        self.coalesced = 0  # deltas merged into an earlier one (for tests and figures)

    def __call__(self, event: Event) -> None:
        events = self._events
        # Below the limit an event is appended and nothing else is tracked; past it, each
        # step's newest delta is remembered, and later deltas of that step merge into it.
        if len(events) >= self.limit and isinstance(event, TokenDelta):
            key = (event.run_id, event.step)
            at = self._latest_delta.get(key)
            if at is not None:
                older = events[at]
                assert isinstance(older, TokenDelta)
                events[at] = TokenDelta(
                    run_id=older.run_id, step=older.step, text=older.text + event.text
                )
                self.coalesced += 1
                return
            self._latest_delta[key] = len(events)
        events.append(event)
        if not self._wakeup.is_set():
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._events)

    def take(self) -> list[Event]:
        """Every waiting event, oldest first (the buffer is then empty)."""
        taken = list(self._events)
        self._events.clear()
        self._latest_delta.clear()
        self._wakeup.clear()
        return taken

    async def wait(self) -> None:
        await self._wakeup.wait()


class EventStream:
    """``async for event in stream``: the events of work started on first iteration.

    ``start(observer)`` returns the coroutine doing the work with ``observer`` registered;
    its value is a :class:`RunResult` (one run) or a list of them (a batch)."""

    def __init__(
        self,
        start: Callable[[EventBuffer], Coroutine[Any, Any, Any]],
        *,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._start = start
        self.buffer = EventBuffer(limit)
        self._outcome: Any = None
        self._finished = False

    @property
    def result(self) -> RunResult:
        """The run's result, once the stream was read to its end."""
        if not self._finished or not isinstance(self._outcome, RunResult):
            raise InputError("the stream's result is known once it was read to its end")
        return self._outcome

    @property
    def results(self) -> list[RunResult]:
        """A batch's results by item index, once the stream was read to its end."""
        if not self._finished or not isinstance(self._outcome, list):
            raise InputError("the stream's results are known once it was read to its end")
        return self._outcome

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if self._finished:
            raise InputError("a stream can be read once")
        buffer = self.buffer
        work = asyncio.get_running_loop().create_task(self._start(buffer))
        work.add_done_callback(lambda _: buffer._wakeup.set())
        try:
            while True:
                for event in buffer.take():
                    yield event
                if work.done():
                    break
                await buffer.wait()
            for event in buffer.take():
                yield event
            self._outcome = work.result()  # the work's own error, if it raised
            self._finished = True
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
