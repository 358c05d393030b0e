"""``trellis run --stream STEP``: one step's tokens printed as they arrive.

An observer of the run's events (:mod:`trellis.engine.events`): the step's token deltas go
to stderr as they come (stdout keeps the result, so ``--json`` stays parseable), each
attempt's text on a line of its own; a retried attempt is marked, since its text is
thrown away.
"""

from __future__ import annotations

import sys
from typing import TextIO

from trellis.engine.events import AttemptFinished, AttemptStarted, Event, TokenDelta

__all__ = ["TokenPrinter"]


class TokenPrinter:
    """Prints step ``step``'s streamed text to ``out`` (stderr by default)."""

    def __init__(self, step: str, out: TextIO | None = None) -> None:
        self.step = step
        self.out = out if out is not None else sys.stderr
        self._open = False  # a line of text was started and not ended

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokenDelta) and event.step == self.step:
            self.out.write(event.text)
            self.out.flush()
            self._open = True
        elif isinstance(event, AttemptStarted) and event.step == self.step and event.attempt > 1:
            self._end_line()
        elif isinstance(event, AttemptFinished) and event.record.step == self.step:
            if self._open and event.record.outcome != "ok":
                self.out.write(f"  [attempt {event.record.attempt}: {event.record.outcome}]")
            self._end_line()

    def _end_line(self) -> None:
        if self._open:
            self.out.write("\n")
            self.out.flush()
            self._open = False
