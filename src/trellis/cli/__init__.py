"""The ``trellis`` command-line interface (typer + rich).

``trellis run TARGET`` runs a flow once or over a JSONL batch and summarises what it did;
``trellis check TARGET`` validates a flow and lists its steps. ``main`` is the console
script's entry point; ``app`` is the typer application (for ``typer.testing.CliRunner``).

``app`` is imported when first used (PEP 562): ``trellis --help`` prints its screen without
typer (``trellis.cli.roothelp``), and ``trellis run`` parses its common command lines
without it (``trellis.cli.fastrun``: anything else goes to typer), so the package itself
imports nothing heavy.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trellis.cli.app import app as app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``trellis`` console script."""
    from trellis.cli.roothelp import HELP_ARGS, print_root_help

    args = tuple(sys.argv[1:])
    if args in HELP_ARGS and print_root_help():
        raise SystemExit(2 if not args else 0)  # as typer: no arguments is a usage error
    if args[:1] == ("run",):
        from trellis.cli.fastrun import parse_run, run

        parsed = parse_run(args[1:])
        if parsed is not None:
            run(*parsed)
    from trellis.cli.app import main as run_app

    run_app()


class _Package(types.ModuleType):
    """``trellis.cli.app`` is the typer application, as when this package imported it
    eagerly. The import system's binding of the submodule ``app`` is left out, so the
    application (every command: ``trellis.cli.app.build_app``) is only built when it is
    used, not when the console script imports the submodule for one command."""

    def __getattr__(self, name: str) -> Any:
        if name == "app":
            from trellis.cli.app import app

            return app
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "app" and isinstance(value, types.ModuleType):
            return  # the submodule: ``__getattr__`` gives its application when asked
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
