"""Printing a line as ``typer.echo`` does, without importing typer (or click) for it.

``typer.echo`` is click's ``echo``: it writes the text and a newline and flushes; it also
strips ANSI codes when the stream is not a terminal, rewraps a stream whose encoding is
ASCII (or unset), writes bytes to the binary buffer and wraps Windows consoles.
:func:`echo` does the write-and-flush itself only where none of that applies (a text
stream with a real encoding and error handler, text without an escape character, not
Windows) and hands everything else to ``typer.echo``: what is printed is the same either
way, and a ``trellis run`` that prints one line does not pay for importing typer
(``trellis.cli.fastrun``).

This module imports only the standard library (``tests/cli/test_startup_modules.py``).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import sys

__all__ = ["echo", "tolerant_streams"]


def _plain(stream: object) -> bool:
    """Whether click's echo would write to ``stream`` as it is, text unchanged."""
    if not isinstance(stream, io.TextIOWrapper) or sys.platform.startswith("win"):
        return False
    encoding = getattr(stream, "encoding", None)
    if not encoding or getattr(stream, "errors", None) is None:
        return False
    try:
        return codecs.lookup(encoding).name != "ascii"
    except LookupError:
        return True  # click's is_ascii_encoding: an unknown encoding is not ASCII


def echo(message: str, *, err: bool = False) -> None:
    """``typer.echo(message, err=err)``: ``message`` and a newline, flushed."""
    stream = sys.stderr if err else sys.stdout
    if "\x1b" in message or not _plain(stream):
        import typer

        typer.echo(message, err=err)
        return
    stream.write(message + "\n")
    stream.flush()


def tolerant_streams() -> None:
    """Text UTF-8 cannot encode (a lone surrogate in a recorded value) is printed as its
    escape (``\\ud800``) in tables and messages instead of crashing the command."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")
