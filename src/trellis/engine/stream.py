"""``engine.stream``: a run's (or a batch's) events as an async iterator, with back-pressure.

:class:`EventBuffer` is the observer a stream registers: it never blocks the run (an
observer is called synchronously on the run's loop) and never drops an event, except that
token deltas are coalesced: once ``limit`` events wait unread, the deltas of one attempt
(:attr:`TokenDelta.part`) that follow are merged into its latest waiting delta instead of
each taking a place of its own. A delta is merged only into one that came after the last
other event, so merging never moves text before or after a step or attempt event (the
next attempt's text is never glued to the failed one's), and never mixes two attempts
(two mapped elements streaming at once keep their own text). So a consumer that sleeps
holds at most ``limit`` events plus the (few, bounded by the flow's size) step and attempt
events and a delta after each, however many tokens stream meanwhile.

:class:`EventStream` drives the work in a task while its consumer iterates; the run's
result is the last event (:class:`~trellis.engine.events.RunFinished`) and, afterwards,
:attr:`EventStream.result` (``results`` for a batch). Leaving the iteration early cancels
the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from trellis.engine.events import DeltaPart, Event, TokenDelta, token_delta
from trellis.engine.results import RunResult
from trellis.errors import InputError

__all__ = ["EventBuffer", "EventStream"]

DEFAULT_LIMIT = 1000


class _Merged:
    """Deltas of one attempt merged past the limit: the pieces, joined into one
    :class:`TokenDelta` only when the consumer takes them (not one event per merge)."""

    __slots__ = ("first", "pieces")

    def __init__(self, first: TokenDelta, text: str) -> None:
        self.first = first
        self.pieces = [first.text, text]

    def event(self) -> TokenDelta:
        first = self.first
        return token_delta(first.run_id, first.step, "".join(self.pieces), first.part)


class EventBuffer:
    """A bounded, coalescing buffer of events between a run and one consumer.

    Cheap per event, as it is called for every token: below the limit an event is one
    list append; a waiting consumer is woken by the first event after it started waiting
    (one future resolved, so at most once per loop iteration however many events follow
    in that iteration), and the merged deltas past the limit are kept as pieces joined
    when taken."""

    __slots__ = ("_events", "_latest_delta", "_merged", "_waiter", "coalesced", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise InputError("a stream's buffer must hold at least 1 event")
        self.limit = limit
        self._events: list[Event | _Merged] = []
        #: Where each attempt's deltas merge now: (run, step, part) -> position. Emptied by
        #: every other event, so that no delta merges back past it.
        self._latest_delta: dict[tuple[str, str, DeltaPart], int] = {}
        self._merged: list[int] = []  # positions of merged deltas, joined when taken
        self._waiter: asyncio.Future[None] | None = None
        self.coalesced = 0  # deltas merged into an earlier one (for tests and figures)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokenDelta):
            self.delta(event.run_id, event.step, event.text, event.part, event)
            return
        if self._latest_delta:
            self._latest_delta.clear()
        self._events.append(event)
        if self._waiter is not None:
            self.wake()

    def delta(
        self,
        run_id: str,
        step: str,
        text: str,
        part: DeltaPart,
        event: TokenDelta | None = None,
    ) -> None:
        """A token delta of attempt ``part`` (the :class:`~trellis.engine.events.Emitter`
        hands a lone buffer its text: no event is built for a delta that merges)."""
        events = self._events
        # Below the limit a delta is appended and nothing else is tracked; past it, each
        # attempt's newest delta since the last other event is remembered, and later
        # deltas of that attempt merge into it.
        if len(events) >= self.limit:
            key = (run_id, step, part)
            at = self._latest_delta.get(key)
            if at is not None:
                older = events[at]
                if isinstance(older, _Merged):
                    older.pieces.append(text)
                else:
                    assert isinstance(older, TokenDelta)
                    events[at] = _Merged(older, text)
                    self._merged.append(at)
                self.coalesced += 1
                return
            self._latest_delta[key] = len(events)
        events.append(event or token_delta(run_id, step, text, part))
        if self._waiter is not None:
            self.wake()

    def __len__(self) -> int:
        return len(self._events)

    def take(self) -> list[Event]:
        """Every waiting event, oldest first (the buffer is then empty)."""
        taken = self._events
        self._events = []
        self._latest_delta.clear()
        if self._merged:
            for at in self._merged:
                merged = taken[at]
                assert isinstance(merged, _Merged)
                taken[at] = merged.event()
            self._merged = []
        return taken  # type: ignore[return-value]  # no _Merged is left in it

    def wake(self) -> None:
        """Wake the consumer waiting in :meth:`wait` (if any)."""
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until an event arrives (at once if one waits) or :meth:`wake` is called."""
        if self._events:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None


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
        work.add_done_callback(lambda _: buffer.wake())
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
