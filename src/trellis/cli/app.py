"""The ``trellis`` command: ``run``, ``check``, ``resume``, ``approve``, ``reply``, ``runs``,
``show``, ``cache``, wired from the other cli modules.

The commands' declarations (their options and help) load without the engine, the store,
asyncio or rich (typer loads rich for a help screen): what a command does is imported when
it runs, so ``trellis --help`` and ``trellis CMD --help`` start fast, and a run loads only
what it uses (tests/cli/test_startup_modules.py holds them to it).

:func:`build_app` makes the typer application. ``app`` (every command) is built when first
used (PEP 562); the console script (:func:`main`) builds one with only the command it
invokes: typer turns every command it holds into a click command (its options and their
types) before it parses anything, and the other commands' modules are not even imported.
A command's screens and errors are the same in both (``tests/cli/test_lazy_app.py``);
anything but a command's name first (``--version``, an unknown command) gets every
command."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trellis import __version__
from trellis.cli.echo import tolerant_streams as _tolerant_streams
from trellis.cli.errors import EXIT_OK, CliError, command
from trellis.cli.options import (
    BudgetCallsOption,
    BudgetTokensOption,
    BudgetUsdOption,
    ConfigOption,
    ExecutorOption,
    LeaseTtlOption,
    ModelOption,
    NoProgressOption,
    QuietOption,
    RerunChangedOption,
    StoreOption,
    json_flag,
)
from trellis.cli.roothelp import APP_HELP

if TYPE_CHECKING:
    #: The application with every command (built on first use: :func:`__getattr__`).
    app: typer.Typer

__all__ = ["COMMANDS", "app", "build_app", "main"]

TARGET_HELP = (
    "The flow to use: `path/to/file.py:flow` (a Python file and the name of the "
    "tl.Flow in it) or `package.module:flow`. The `:flow` part may be left out "
    "when the file defines exactly one flow."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trellis {__version__}")
        raise typer.Exit(EXIT_OK)


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the installed Trellis version and exit.",
        ),
    ] = False,
) -> None:
    """Trellis: reliable multi-step LLM workflows.

    Run a flow once or over a JSONL file of items with `trellis run`, or check a
    flow's definition with `trellis check`. Model roles ("small", "large"...) are
    bound in ./trellis.toml (or --config) and with --model ROLE=provider:model.
    """
    _tolerant_streams()


# -- trellis check -------------------------------------------------------------------------


@command
def check(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET", show_default=False)],
    models: ModelOption = None,
    config: ConfigOption = None,
) -> None:
    """Validate a flow and list its inputs and steps in the order they run.

    For each step: what it reads (flow inputs and other steps), its output type and its
    options (when / branch, map, loop, model, retry), and the model roles the flow uses
    with what each is bound to in ./trellis.toml (or --config) and --model. Nothing is
    run and no model is called. Exit code 0 when the flow is valid (and, when a config or
    --model is given, every role it uses is bound), 2 with the problem otherwise.

    Example: `trellis check examples/feedback_triage.py:flow -c examples/trellis.toml`
    """
    from rich.console import Console

    from trellis.cli.check import describe_flow, render_flow
    from trellis.cli.settings import apply_model_overrides, load_config
    from trellis.cli.target import load_flow

    flow, parsed = load_flow(target)
    loaded, config_path = load_config(config)
    bound = apply_model_overrides(loaded, models or [])
    source = str(config_path) if config_path else ("--model" if models else None)
    info = describe_flow(flow, bound, source)
    render_flow(Console(), info, str(parsed))
    unbound = [r for r in info.roles if r.binding is None]
    if unbound and source is not None:
        names = ", ".join(r.name for r in unbound)
        where = f"in {config_path}" if config_path else "(no trellis.toml here, no --config)"
        raise CliError(
            f"model role(s) {names} used by the flow are not bound {where}; bind them "
            f"with --model ROLE=provider:model or under [models] in trellis.toml"
        )
    return None


# -- trellis run ---------------------------------------------------------------------------


@command
def run(
    target: Annotated[str, typer.Argument(help=TARGET_HELP, metavar="TARGET", show_default=False)],
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON",
            help=(
                "Run once with these flow inputs, a JSON object: "
                """--input '{"feedback": "The app keeps crashing"}'."""
            ),
            show_default=False,
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            "-f",
            metavar="FILE.jsonl",
            help=(
                "Run once per line of this JSONL file (one JSON object of flow inputs per "
                "line; blank lines are skipped). Every line is checked before anything runs."
            ),
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE.jsonl",
            help=(
                "With --input-file: write one JSON line per item, in input order (index, "
                "run_id, status, inputs, outputs, skipped, error, usage). '-' writes to "
                "stdout. Without it, per-item results are not saved."
            ),
            show_default=False,
        ),
    ] = None,
    models: ModelOption = None,
    config: ConfigOption = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", "-n", min=1, help="With --input-file: how many items run at once."
        ),
    ] = 8,
    budget_usd: BudgetUsdOption = None,
    budget_tokens: BudgetTokensOption = None,
    budget_calls: BudgetCallsOption = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-seconds",
            metavar="S",
            help="Wall-time limit for each run (each item); a slower run fails cleanly.",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
    as_json: Annotated[
        bool,
        json_flag(
            "Print JSON instead of tables: the full run result with --input, the "
            "batch summary with --input-file."
        ),
    ] = False,
    no_progress: NoProgressOption = False,
    store: StoreOption = None,
    no_store: Annotated[
        bool,
        typer.Option("--no-store", help="Record nothing: the run lives in memory only."),
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            metavar="ID",
            help=(
                "The run's id (with --input-file: the batch's id). An id that completed "
                "prints its recorded result without running anything; an incomplete one "
                "resumes. Default: a new id."
            ),
            show_default=False,
        ),
    ] = None,
    rerun_changed: RerunChangedOption = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help=(
                "Reuse LLM replies from the response cache (kept in the store), and cache new "
                "ones: an identical request (model, parameters, messages, output schema) costs "
                "nothing."
            ),
        ),
    ] = False,
    cache_ttl: Annotated[
        float | None,
        typer.Option(
            "--cache-ttl",
            metavar="SECONDS",
            help="With --cache (implied): cached replies expire after this many seconds.",
            show_default=False,
        ),
    ] = None,
    lease_ttl: LeaseTtlOption = None,
    executor: ExecutorOption = None,
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            metavar="STEP",
            help=(
                "Print STEP's tokens (on stderr) as the model sends them; single runs only. "
                "A step inside a sub-flow by its path: SUBFLOW_STEP/STEP. Streams with "
                "streaming providers (openai/anthropic with stream=true, sim)."
            ),
            show_default=False,
        ),
    ] = None,
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help=(
                "Export OpenTelemetry traces (run, step and LLM-attempt spans) over OTLP/HTTP, "
                "configured by the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT...). "
                "Needs trellis-flows[otel]."
            ),
        ),
    ] = False,
    record_prompts: Annotated[
        bool,
        typer.Option(
            "--record-prompts",
            help=(
                "Record each LLM attempt's messages and reply with the run (trellis show "
                "--prompts and the web UI show them; a resume keeps recording them). Off: "
                "only step inputs and outputs, and replies that failed to validate."
            ),
        ),
    ] = False,
) -> int:
    """Run a flow once (`--input`) or over a JSONL file of items (`--input-file`).

    Examples:

    `trellis run examples/feedback_triage.py:flow --input '{"feedback": "Love it"}'`

    `trellis run examples/feedback_triage.py:flow --input-file examples/data/feedback.jsonl
    --output results.jsonl --config examples/trellis.toml`

    A batch prints a summary: items done / failed / waiting, the route each step took,
    retries by failure mode, tokens, cost per model, latency. Exit code: 0 when every item
    is done, 1 when any item failed, 3 when the run (or an item, none failed) waits for a
    person (it prints the question and the `trellis approve` / `trellis reply` command that
    answers it), 2 for a usage, configuration or store error (a run leased by another
    process, a step changed since it was recorded...).

    Every run is recorded in the store (default .trellis/trellis.db; `trellis runs`,
    `trellis show ID`): steps and LLM calls as they finish. A batch is one run (its id is
    printed; give your own with --run-id) whose items are runs; `trellis resume ID`
    finishes an interrupted one, running only the items that did not finish.
    """
    from trellis.cli.commands import execute_run
    from trellis.cli.fastrun import run_options

    options = run_options(
        input_json=input_json,
        input_file=input_file,
        output=output,
        models=models,
        config=config,
        concurrency=concurrency,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        budget_calls=budget_calls,
        max_seconds=max_seconds,
        quiet=quiet,
        as_json=as_json,
        no_progress=no_progress,
        store=store,
        no_store=no_store,
        run_id=run_id,
        rerun_changed=rerun_changed,
        cache=cache,
        cache_ttl=cache_ttl,
        lease_ttl=lease_ttl,
        executor=executor,
        stream=stream,
        otel=otel,
        record_prompts=record_prompts,
    )
    return execute_run(target, options)


def _imported(module: str, name: str) -> Callable[[], Any]:
    """A loader of ``module.name``: the module is imported when the command is added."""

    def load() -> Any:
        return getattr(importlib.import_module(module), name)

    return load


#: Each command's name and a loader of its function (of its typer application for a group
#: of commands), in the order ``trellis --help`` lists them (``trellis.cli.roothelp``).
COMMANDS: dict[str, Callable[[], Any]] = {
    "check": lambda: check,
    "run": lambda: run,
    "mock-server": _imported("trellis.cli.mock", "mock_server"),
    "eval": _imported("trellis.cli.eval", "eval_command"),
    "fork": _imported("trellis.cli.history", "fork"),
    "diff": _imported("trellis.cli.history", "diff"),
    "resume": _imported("trellis.cli.resume", "resume"),
    "approve": _imported("trellis.cli.human", "approve"),
    "reply": _imported("trellis.cli.human", "reply"),
    "runs": _imported("trellis.cli.inspect", "runs"),
    "show": _imported("trellis.cli.inspect", "show"),
    "ui": _imported("trellis.cli.ui", "ui"),
    "cache": _imported("trellis.cli.cache", "cache_app"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The ``trellis`` typer application: every command, or only the command ``only``."""
    application = typer.Typer(
        name="trellis",
        help=APP_HELP,  # trellis --help prints it without typer: cli/roothelp.py
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    application.callback()(_root)
    for name, load in COMMANDS.items():
        if only is not None and name != only:
            continue
        function = load()
        if isinstance(function, typer.Typer):
            application.add_typer(function, name=name)
        else:
            application.command(name)(function)
    return application


def __getattr__(name: str) -> Any:
    if name == "app":
        application = build_app()
        globals()["app"] = application  # built once
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "app"})


def invoked_command(args: Sequence[str]) -> str | None:
    """The command ``trellis ARGS`` invokes when ARGS start with a command's name."""
    return args[0] if args and args[0] in COMMANDS else None


def main() -> None:
    """Entry point of the ``trellis`` console script."""
    from trellis.cli.leases import release_leases_on_sigterm

    release_leases_on_sigterm()  # SIGTERM stops a run as Ctrl-C does
    build_app(invoked_command(sys.argv[1:]))()
