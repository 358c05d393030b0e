"""Options shared by several ``trellis`` commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ConfigOption", "ModelOption"]

ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ROLE=PROVIDER:MODEL",
        help=(
            "Bind a model role, overriding the config file; repeatable. Options go in "
            "a query string: --model small=sim:small --model "
            "'large=sim:large?latency_ms=100-300&rate_limit=0.05'. Providers: sim, "
            "openai (and compatible servers), anthropic."
        ),
        show_default=False,
    ),
]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE.toml",
        help=(
            "Configuration file with the model roles (a 'models' table) and prices "
            "(a 'prices' table). Default: ./trellis.toml when it exists."
        ),
        show_default=False,
    ),
]
