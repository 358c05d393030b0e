"""``trellis run --stream STEP``: one step's tokens printed as they arrive.

An observer of the run's events (:mod:`trellis.engine.events`): the step's token deltas go
to stderr as they come (stdout keeps the result, so ``--json`` stays parseable), each
attempt's text on a line of its own; a retried attempt is marked, since its text is
thrown away. ``STEP`` may be a path into sub-flows (``categorise/label``): the step
``label`` of the child runs of sub-flow step ``categorise``.

Several attempts of the step may stream at once (a mapped step's elements, a mapped
sub-flow's children): one of them is printed live, the others' text is held until it is
their turn, so lines never interleave.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from trellis.engine.events import AttemptFinished, Event, TokenDelta

__all__ = ["TokenPrinter"]

_ELEMENT = re.compile(r"\[\d+\]$")

#: One attempt's text: (run id, (element, round, call, attempt)).
_Key = tuple[str, tuple[int | None, int | None, int, int]]


class TokenPrinter:
    """Prints step ``step``'s streamed text to ``out`` (stderr by default)."""

    def __init__(self, step: str, out: TextIO | None = None) -> None:
        *self._outer, self.step = step.split("/")
        self.out = out if out is not None else sys.stderr
        self._live: _Key | None = None  # the attempt being printed as it streams
        self._held: dict[_Key, list[str]] = {}  # other attempts' text, in arrival order
        self._finished: dict[_Key, str] = {}  # held attempts that ended: their marks

    def _ours(self, run_id: str, step: str) -> bool:
        """Whether ``step`` of run ``run_id`` is the one to print: for a path, a step of
        a child run of those sub-flow steps (``<run>/<subflow>[i]/...``)."""
        if step != self.step:
            return False
        inner = run_id.split("/")[1:]
        return [_ELEMENT.sub("", part) for part in inner] == self._outer

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokenDelta):
            if self._ours(event.run_id, event.step):
                self._text((event.run_id, event.part), event.text)
        elif isinstance(event, AttemptFinished):
            record = event.record
            if self._ours(event.run_id, record.step):
                key = (event.run_id, (record.index, record.round, record.call, record.attempt))
                mark = (
                    ""
                    if record.outcome == "ok"
                    else f"  [attempt {record.attempt}: {record.outcome}]"
                )
                self._end(key, mark)

    def _text(self, key: _Key, text: str) -> None:
        if self._live is None and key not in self._finished:
            self._live = key
        if key == self._live:
            self.out.write(text)
            self.out.flush()
        else:
            self._held.setdefault(key, []).append(text)

    def _end(self, key: _Key, mark: str) -> None:
        if key != self._live:
            if key in self._held:
                self._finished[key] = mark
            return
        self._line(mark)
        self._live = None
        # Print the held attempts that ended meanwhile, then go live with the next one.
        for held in list(self._held):
            if held in self._finished:
                self.out.write("".join(self._held.pop(held)))
                self._line(self._finished.pop(held))
        if self._held:
            self._live, pieces = next(iter(self._held.items()))
            del self._held[self._live]
            self.out.write("".join(pieces))
            self.out.flush()

    def _line(self, mark: str) -> None:
        self.out.write(f"{mark}\n")
        self.out.flush()
