"""Options shared by several ``trellis`` commands, declared once.

Each is an ``Annotated`` type for a command's signature. Where a command words an option
for itself (what ``--json`` prints, what ``--model`` binds on top of), it passes its own
help to the factory (:func:`json_flag`, :func:`model_option`); the name, short flag, type
and metavar stay the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = [
    "BudgetCallsOption",
    "BudgetTokensOption",
    "BudgetUsdOption",
    "ConfigOption",
    "ExecutorOption",
    "JsonOption",
    "LeaseTtlOption",
    "ModelOption",
    "NoProgressOption",
    "QuietOption",
    "RerunChangedOption",
    "StoreOption",
    "json_flag",
    "model_option",
]


def model_option(help: str) -> Any:
    """``--model/-m ROLE=PROVIDER:MODEL``, repeatable, worded for the command."""
    return typer.Option(
        "--model", "-m", metavar="ROLE=PROVIDER:MODEL", help=help, show_default=False
    )


def json_flag(help: str) -> Any:
    """``--json``, saying what the command prints as JSON."""
    return typer.Option("--json", help=help)


ModelOption = Annotated[
    list[str] | None,
    model_option(
        "Bind a model role, overriding the config file; repeatable. Options go in "
        "a query string: --model small=sim:small --model "
        "'large=sim:large?latency_ms=100-300&rate_limit=0.05'. Providers: sim, "
        "openai (and compatible servers), anthropic."
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
            "(a 'prices' table). Default: the project's trellis.toml: in this directory or "
            "the nearest parent up to the project's root (a .git or .trellis/ folder)."
        ),
        show_default=False,
    ),
]

STORE_HELP = (
    "Where runs are recorded: `sqlite:///path/to/trellis.db` (relative), "
    "`sqlite:////abs/path.db`, a file path ending in .db, `postgresql://user@host:port/db` "
    "(shared by many processes and machines; the password is never recorded: use "
    "PGPASSWORD or ~/.pgpass), or `memory:` (this process only). "
    "Default: $TRELLIS_STORE, else the project's store ([store] url in trellis.toml, or "
    "the nearest .trellis/ folder of this directory or a parent), else "
    "sqlite:///.trellis/trellis.db in the working directory."
)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", metavar="URL", help=STORE_HELP, show_default=False),
]

QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only errors and a one-line outcome: no tables."),
]

JsonOption = Annotated[
    bool,
    json_flag("Print JSON instead of tables (shapes in docs/cli.md)."),
]

NoProgressOption = Annotated[
    bool,
    typer.Option(
        "--no-progress",
        help="No progress bar (it is shown only when stderr is a terminal anyway).",
    ),
]

RerunChangedOption = Annotated[
    bool,
    typer.Option(
        "--rerun-changed",
        help=(
            "When resuming: re-run steps whose code changed since they were recorded, and "
            "everything after them, instead of stopping with an error."
        ),
    ),
]

ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        metavar="WHERE",
        help=(
            "Where a batch's items run: local (default: this process), ray (a local Ray "
            "started for the command), ray:auto (this machine's Ray cluster) or "
            "ray://HOST:PORT. Ray workers need a PostgreSQL store (or --no-store)."
        ),
        show_default=False,
    ),
]

LeaseTtlOption = Annotated[
    float | None,
    typer.Option(
        "--lease-ttl",
        metavar="SECONDS",
        help=(
            "While a process executes a run it holds the run's lease and renews it every "
            "third of this; a killed process's runs can be resumed once it expires. Default "
            "30 (resume: the value the run was started with)."
        ),
        show_default=False,
    ),
]

BudgetUsdOption = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        min=0,
        metavar="USD",
        help=(
            "Stop before the whole command's model spend would exceed this many US "
            "dollars (a resumed batch: counting what its earlier runs spent; default: the "
            "limit it was started with). Items not finished fail with "
            "BudgetExceededError; finished ones are kept and written."
        ),
        show_default=False,
    ),
]

BudgetTokensOption = Annotated[
    int | None,
    typer.Option(
        "--budget-tokens",
        min=0,
        metavar="N",
        help="Like --budget-usd, for the total tokens (input + output).",
        show_default=False,
    ),
]

BudgetCallsOption = Annotated[
    int | None,
    typer.Option(
        "--budget-calls",
        min=0,
        metavar="N",
        help="Like --budget-usd, for the number of model requests (retries included).",
        show_default=False,
    ),
]
