"""Where the engine reads the time: one :class:`Clock`, injectable like ``sleep``.

``Engine(clock=...)`` puts one in the engine's :class:`~trellis.engine.services.Services`,
and a run reads the time only through it: ``now()`` for timestamps (``started_at``) and the
response cache's expiry, ``monotonic()`` for deadlines (a budget's ``max_seconds``) and
``perf()`` for durations (``StepRecord.duration_s``, ``CallRecord.latency_s``, the retry
deadline's spending). The default is the real clock, whose methods *are* ``time.time``,
``time.monotonic`` and ``time.perf_counter`` (no wrapper on the hot path).

A test subclasses it with a clock it moves itself (and passes ``sleep=`` that moves it
too), so latencies, durations and deadlines follow it exactly, with no real waiting. The
clock measures; it does not wait: what waits on the event loop (an attempt's ``timeout``,
the run's wall-time deadline firing, circuit-breaker cool-downs, which keep the real
monotonic clock) still takes real time.
"""

from __future__ import annotations

import time

__all__ = ["SYSTEM_CLOCK", "Clock"]


class Clock:
    """The real clock; subclass it (override the three methods) for a fake one.

    - ``now()``: wall time, seconds since the epoch (``time.time``);
    - ``monotonic()``: a monotonic time for deadlines (``time.monotonic``);
    - ``perf()``: a high-resolution time for durations (``time.perf_counter``).
    """

    __slots__ = ()

    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)
    perf = staticmethod(time.perf_counter)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: The real clock (what an engine uses unless given another).
SYSTEM_CLOCK = Clock()
