"""Tracebacks trimmed to the user's own code.

When a step, a tool or a condition raises, what a person needs is *their* line: the file,
line, function and source text of each frame of their code, not the engine's frames around
it nor the standard library's below it. :func:`user_frames` walks an exception's traceback
(following ``__cause__`` when Trellis wrapped the original error) and keeps the frames that
are neither inside the ``trellis`` package nor in Python's standard library. Frames of
installed third-party libraries are kept: a user's call into a library that raised is part
of the story. When nothing is left (the error was raised by Trellis itself, e.g. a bad
``Budget(...)``), the frame that called into Trellis is the user's line.

Frames are plain values (:class:`Frame`), JSON-ready with :meth:`Frame.to_dict`, so a
recorded run keeps them and every view (``trellis show``, ``--json``, the UI) shows them.
"""

from __future__ import annotations

import linecache
import os
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Frame", "format_frames", "user_frames", "user_location"]

_TRELLIS_DIR = str(Path(__file__).resolve().parent) + os.sep
_STDLIB_DIRS = tuple(
    {
        str(Path(p).resolve()) + os.sep
        for p in (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib"))
        if p
    }
)
_MAX_FRAMES = 20
_MAX_SOURCE = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One frame of user code: where it is and the line of source that ran."""

    file: str
    line: int
    function: str
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "function": self.function,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Frame:
        return cls(
            file=str(data["file"]),
            line=int(data["line"]),
            function=str(data["function"]),
            source=None if data.get("source") is None else str(data["source"]),
        )

    def __str__(self) -> str:
        return f"{_short(self.file)}:{self.line} in {self.function}"


def _is_internal(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, a dataclass's <string>
        return not filename.startswith(("<stdin>", "<ipython"))
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    if resolved.startswith(_TRELLIS_DIR):
        return True
    if "site-packages" in resolved or "dist-packages" in resolved:
        return False  # an installed third-party library (venvs live under the stdlib dir)
    return resolved.startswith(_STDLIB_DIRS)


def _origin(exc: BaseException) -> BaseException:
    """The exception whose traceback has the user's frames: the original one when Trellis
    wrapped it (``raise StepError(...) from exc``)."""
    seen: set[int] = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__ or ""
        if not module.startswith("trellis"):
            break
        exc = exc.__cause__
    return exc


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb)) if tb is not None else []


def _frame(summary: traceback.FrameSummary) -> Frame:
    line = summary.lineno or 0
    source = summary.line or linecache.getline(summary.filename, line).strip() or None
    if source is not None and len(source) > _MAX_SOURCE:
        source = source[: _MAX_SOURCE - 1] + "…"
    return Frame(file=summary.filename, line=line, function=summary.name, source=source)


def user_frames(exc: BaseException, *, limit: int = _MAX_FRAMES) -> tuple[Frame, ...]:
    """The frames of user code in ``exc``'s traceback, outermost first (at most ``limit``,
    the innermost kept). Empty when the traceback has no frame at all."""
    summaries = _frames(_origin(exc).__traceback__)
    kept = [s for s in summaries if not _is_internal(s.filename)]
    return tuple(_frame(s) for s in kept[-limit:])


def user_location(exc: BaseException) -> Frame | None:
    """The user's line an error points at: the innermost user frame of its traceback. For
    an error Trellis raised while the user called it (``Budget(max_usd=-1)`` at a flow
    file's top level) that is the line of the call. None when no user code is in it."""
    frames = user_frames(exc, limit=1)
    return frames[-1] if frames else None


def format_frames(frames: tuple[Frame, ...] | list[Frame], *, indent: str = "  ") -> list[str]:
    """Lines like Python's own traceback: ``file:line in function`` then the source."""
    lines: list[str] = []
    for frame in frames:
        lines.append(f"{indent}{frame}")
        if frame.source:
            lines.append(f"{indent}  {frame.source}")
    return lines


def _short(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if relative.startswith(".." + os.sep + "..") else relative
