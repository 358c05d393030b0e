"""``trellis run`` without typer: the common command lines parsed with the standard library.

Building the typer application (and importing typer and its click) took a good part of a
one-item run's start-up, so the console script (:func:`trellis.cli.main`) first hands
``trellis run ARGS`` to :func:`parse_run`. It accepts only the forms it is sure of: the
TARGET once, and the options of :data:`RUN_OPTIONS` as ``--name VALUE``, ``--name=VALUE``
or ``-x VALUE`` (flags bare), each at most once (``--model`` repeatable), with values
typer takes as they are (numbers in plain decimal, within their minimum; paths that do
not exist yet, or that this process can read). Anything else
(``--help``, an unknown option, a missing, empty or dash-led value, a number typer may
read otherwise, ``--``, ``-qf`` or ``-ifile``, an option twice, text that is not UTF-8,
shell completion) returns ``None`` and typer parses the command line as before: its
messages and exit codes stay its own. What :func:`parse_run` accepts, typer parses to the
same :class:`~trellis.cli.jobs.RunOptions` (``tests/cli/test_fastrun.py`` generates
command lines to hold them to it), and :func:`run` runs it as the typer command does:
the same set-up (SIGTERM, tolerant streams), the same :func:`execute_run`, the same
``error:`` line and exit code for a :class:`~trellis.cli.errors.CliError`, the same exit
code for Ctrl-C (130) and a closed pipe (1).

:data:`RUN_OPTIONS` is the run command's options as ``trellis.cli.app.run`` declares them
(name, short flag, kind, minimum, default); ``tests/cli/test_fastrun.py`` compares the two,
so an option added or changed there fails until it is here too. This module imports only
the standard library (``tests/cli/test_startup_modules.py``).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from trellis.cli.jobs import RunOptions

__all__ = ["RUN_OPTIONS", "Opt", "parse_run", "run", "run_options"]


class Opt:
    """One option of ``trellis run``: its parameter in ``trellis.cli.app.run`` and how
    typer declares it. (A plain class: a ``NamedTuple`` or dataclass costs start-up.)"""

    __slots__ = ("default", "dest", "kind", "long", "min", "multiple", "short")

    def __init__(
        self,
        dest: str,  # the parameter's name in ``trellis.cli.app.run``
        long: str,
        short: str | None,
        kind: str,  # "flag", "str", "path", "int" or "float"
        default: Any = None,
        multiple: bool = False,  # repeatable (a list)
        min: int | None = None,  # the least value typer accepts (numbers)
    ) -> None:
        self.dest = dest
        self.long = long
        self.short = short
        self.kind = kind
        self.default = default
        self.multiple = multiple
        self.min = min

    def _key(self) -> tuple[Any, ...]:
        return (self.dest, self.long, self.short, self.kind, self.default, self.multiple, self.min)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opt) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Opt({})".format(", ".join(map(repr, self._key())))


#: ``trellis run``'s options, in the order ``trellis.cli.app.run`` declares them.
RUN_OPTIONS: tuple[Opt, ...] = (
    Opt("input_json", "--input", "-i", "str"),
    Opt("input_file", "--input-file", "-f", "path"),
    Opt("output", "--output", "-o", "path"),
    Opt("models", "--model", "-m", "str", multiple=True),
    Opt("config", "--config", "-c", "path"),
    Opt("concurrency", "--concurrency", "-n", "int", default=8, min=1),
    Opt("budget_usd", "--budget-usd", None, "float", min=0),
    Opt("budget_tokens", "--budget-tokens", None, "int", min=0),
    Opt("budget_calls", "--budget-calls", None, "int", min=0),
    Opt("max_seconds", "--max-seconds", None, "float"),
    Opt("quiet", "--quiet", "-q", "flag", default=False),
    Opt("as_json", "--json", None, "flag", default=False),
    Opt("no_progress", "--no-progress", None, "flag", default=False),
    Opt("store", "--store", None, "str"),
    Opt("no_store", "--no-store", None, "flag", default=False),
    Opt("run_id", "--run-id", None, "str"),
    Opt("rerun_changed", "--rerun-changed", None, "flag", default=False),
    Opt("cache", "--cache", None, "flag", default=False),
    Opt("cache_ttl", "--cache-ttl", None, "float"),
    Opt("lease_ttl", "--lease-ttl", None, "float"),
    Opt("executor", "--executor", None, "str"),
    Opt("stream", "--stream", None, "str"),
    Opt("otel", "--otel", None, "flag", default=False),
    Opt("record_prompts", "--record-prompts", None, "flag", default=False),
)

_BY_NAME: dict[str, Opt] = {
    name: opt for opt in RUN_OPTIONS for name in (opt.long, opt.short) if name is not None
}


def _digits(text: str, most: int) -> bool:
    """1 to ``most`` ASCII digits: the numbers taken here are plain decimals (typer's
    pydantic reads them as ``int()`` / ``float()`` do; signs, exponents, ``_``, spaces,
    ``inf``, other scripts' digits... go to typer)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _value(opt: Opt, text: str) -> Any:
    """``text`` as typer converts it for ``opt``, or ``None`` when not sure."""
    if not text or (text.startswith("-") and (text != "-" or opt.kind != "path")):
        return None
    number: int | float
    if opt.kind == "int":
        if not _digits(text, 18):
            return None
        number = int(text)
    elif opt.kind == "float":
        whole, point, fraction = text.partition(".")
        if not _digits(whole, 15) or (point and not _digits(fraction, 15)):
            return None
        number = float(text)
    elif opt.kind == "path":
        return _path(text)
    else:
        return text
    if opt.min is not None and number < opt.min:
        return None
    return number


def _path(text: str) -> Path | None:
    """A path option's value as typer takes it (a path that need not exist, file or
    folder, readable when it exists); ``None``, for typer's error, when it exists and this
    process cannot read it."""
    try:
        os.stat(text)
    except OSError:
        return Path(text)
    except ValueError:  # a NUL in the text: typer's to deal with
        return None
    return Path(text) if os.access(text, os.R_OK) else None


def _utf8(args: Sequence[str]) -> bool:
    try:
        for arg in args:
            arg.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes argv could not decode
        return False
    return True


def parse_run(args: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """``trellis run ARGS`` (``args`` after ``run``) as the target and the keyword
    arguments of ``trellis.cli.app.run``; ``None`` when typer should parse it."""
    if not _utf8(args) or any(k.endswith("_COMPLETE") for k in os.environ):
        return None  # (shell completion: typer answers it)
    target: str | None = None
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if target is not None or arg == "-":
                return None  # an extra argument (typer's error), or "-" as the target
            target = arg
            continue
        name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = _BY_NAME.get(name)
        if opt is None:
            return None  # --help, -h, --, unknown, combined (-qf) or attached (-ifile)
        if opt.dest in values and not opt.multiple:
            return None
        if opt.kind == "flag":
            if eq:
                return None  # --quiet=yes: typer's error
            values[opt.dest] = True
            continue
        if eq:
            text = attached
        elif i < len(args):
            text = args[i]
            i += 1
        else:
            return None  # the value is missing
        value = _value(opt, text)
        if value is None:
            return None
        if opt.multiple:
            values.setdefault(opt.dest, []).append(value)
        else:
            values[opt.dest] = value
    if target is None:
        return None
    return target, {opt.dest: values.get(opt.dest, opt.default) for opt in RUN_OPTIONS}


def run_options(
    *,
    input_json: str | None,
    input_file: Path | None,
    output: Path | None,
    models: Sequence[str] | None,
    config: Path | None,
    concurrency: int,
    budget_usd: float | None,
    budget_tokens: int | None,
    budget_calls: int | None,
    max_seconds: float | None,
    quiet: bool,
    as_json: bool,
    no_progress: bool,
    store: str | None,
    no_store: bool,
    run_id: str | None,
    rerun_changed: bool,
    cache: bool,
    cache_ttl: float | None,
    lease_ttl: float | None,
    executor: str | None,
    stream: str | None,
    otel: bool,
    record_prompts: bool,
) -> RunOptions:
    """The :class:`~trellis.cli.jobs.RunOptions` of ``trellis run``'s parameters (the
    typer command builds its own with this too)."""
    from trellis.cli.jobs import Display, RunOptions

    return RunOptions(
        input_json=input_json,
        input_file=input_file,
        output=output,
        models=tuple(models or ()),
        config=config,
        concurrency=concurrency,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        budget_calls=budget_calls,
        max_seconds=max_seconds,
        display=Display(quiet=quiet, as_json=as_json, progress=not no_progress),
        store=store,
        no_store=no_store,
        run_id=run_id,
        rerun_changed=rerun_changed,
        cache=cache,
        cache_ttl=cache_ttl,
        lease_ttl=lease_ttl,
        executor=executor,
        stream_step=stream,
        otel=otel,
        record_prompts=record_prompts,
    )


def _execute(target: str, params: dict[str, Any]) -> int:
    """The typer command's body (``trellis.cli.errors.command`` around
    ``trellis.cli.app.run``) and what the typer application does around it."""
    from trellis.cli.echo import tolerant_streams
    from trellis.cli.errors import CliError, report

    try:
        tolerant_streams()  # the application's callback (``trellis.cli.app._root``)
        from trellis.cli.commands import execute_run

        try:
            return execute_run(target, run_options(**params)) or 0
        except CliError as exc:
            report(exc)
            return exc.code
    except KeyboardInterrupt:
        return 130  # typer's: Ctrl-C outside a run's own handling
    except EOFError:
        return _aborted()
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        from typing import TextIO, cast

        from typer._click.utils import PacifyFlushWrapper

        sys.stdout = cast(TextIO, PacifyFlushWrapper(sys.stdout))
        sys.stderr = cast(TextIO, PacifyFlushWrapper(sys.stderr))
        return 1


def _aborted() -> int:
    """What typer prints for an ``EOFError`` (an empty line, then "Aborted")."""
    from typer import _click, core

    _click.echo(file=sys.stderr)
    if core.HAS_RICH:
        from typer import rich_utils

        rich_utils.rich_abort_error()
    else:
        _click.echo("Aborted!", file=sys.stderr)
    return 1


def run(target: str, params: dict[str, Any]) -> NoReturn:
    """Run ``trellis run TARGET`` with the parameters :func:`parse_run` gave, as the
    console script's typer path does (``trellis.cli.app.main``), and exit."""
    from trellis.cli.leases import release_leases_on_sigterm

    release_leases_on_sigterm()  # SIGTERM stops a run as Ctrl-C does
    raise SystemExit(_execute(target, params))
