"""The ``trellis`` command-line interface (typer + rich).

``trellis run TARGET`` runs a flow once or over a JSONL batch and summarises what it did;
``trellis check TARGET`` validates a flow and lists its steps. ``main`` is the console
script's entry point; ``app`` is the typer application (for ``typer.testing.CliRunner``).
"""

from trellis.cli.app import app, main

__all__ = ["app", "main"]
