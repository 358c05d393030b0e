"""The CLI's one error: a message for the user and an exit code, never a traceback.

Typer is imported when a command raises through it (:func:`fail`, :func:`command`), not
with this module: ``trellis run``'s fast path (``trellis.cli.fastrun``) never loads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec

from trellis.cli.echo import echo

if TYPE_CHECKING:
    import typer

    from trellis.engine.results import RunResult


__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_WAITING",
    "CliError",
    "command",
    "configuration_error",
    "fail",
    "report",
]

EXIT_OK = 0  # every item is done
EXIT_FAILED = 1  # at least one item failed
EXIT_USAGE = 2  # bad usage or configuration: nothing (more) was run
EXIT_WAITING = 3  # a run (or an item, none failed) waits for a person's answer
EXIT_INTERRUPTED = 130  # Ctrl-C: what finished was written


class CliError(Exception):
    """Reported as ``error: <message>`` on stderr, then the process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def configuration_error(results: Iterable[RunResult]) -> str | None:
    """The message of the first ConfigurationError among ``results`` (run or step), if any.

    A configuration error (an unbound role, an unknown provider, an unpriced model under a
    USD budget) fails every item the same way, so the CLI reports it once and stops.
    """
    for result in results:
        errors = [result.error, *(s.error for s in result.steps.values())]
        for error in errors:
            if error is not None and error.type == "ConfigurationError":
                return error.message
    return None


def fail(error: CliError) -> typer.Exit:
    """Report ``error`` as one ``error: ...`` line on stderr; the Exit to raise."""
    import typer

    report(error)
    return typer.Exit(error.code)


def report(error: CliError) -> None:
    """Print ``error`` as one ``error: ...`` line on stderr (what :func:`fail` prints)."""
    echo(f"error: {error.message}", err=True)


P = ParamSpec("P")


def command(function: Callable[P, int | None]) -> Callable[P, None]:
    """Make ``function`` a command: a :class:`CliError` it raises is one ``error:`` line
    and its exit code; the exit code it returns (None: 0) ends the process. Every command
    goes through this one wrapper (its signature is kept for typer)."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        import typer

        try:
            code = function(*args, **kwargs)
        except CliError as exc:
            raise fail(exc) from None
        if code:
            raise typer.Exit(code)

    return run
