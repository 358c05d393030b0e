"""Where the CLI records runs: the ``--store`` option, run metadata, leases, secrets.

- :func:`open_cli_store` opens ``--store`` (else ``$TRELLIS_STORE``, else the embedded
  ``sqlite:///.trellis/trellis.db``); :func:`open_existing_store` is for the commands that
  only read (``runs``, ``show``, ``cache``): they never create a database.
- :class:`RunMeta` is what ``trellis run`` records with every run (the run row's ``meta``) so
  that ``trellis resume`` can rebuild the same command: the flow target, configuration file,
  ``--model`` overrides, budgets, concurrency, output and input paths. It never holds a
  secret: :func:`redact_model_overrides` drops every binding option named like a key, token,
  secret, password or authorization (and credentials inside URLs) before anything is stored.
- Leases are the library's (:mod:`trellis.engine.lease`: the engine holds, renews and
  fences them); here only what the commands add: ``--lease-ttl`` (a finite number of
  seconds above 0, else exit 2), and :func:`wait_for_dead_leases`, which waits out the
  leases of a process of this host that is no longer running (a zombie counts as dead), and
  refuses (one line, exit 2) when the holder is alive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import typer

from trellis.cli.errors import CliError
from trellis.cli.settings import Settings, parse_model_override
from trellis.cli.target import Target
from trellis.engine.lease import owner_is_dead
from trellis.errors import StoreError
from trellis.flow.flow import Flow
from trellis.redact import is_secret_option, redact_options
from trellis.store import DEFAULT_STORE_URL, Store, open_store, parse_store_url
from trellis.store.base import RunRow

__all__ = [
    "DEFAULT_LEASE_TTL",
    "META_VERSION",
    "LeaseTtlOption",
    "RunMeta",
    "StoreOption",
    "build_meta",
    "fail",
    "is_batch",
    "is_secret_option",
    "open_cli_store",
    "open_existing_store",
    "owner_is_dead",
    "read_meta",
    "redact_model_overrides",
    "redact_options",
    "release_leases_on_sigterm",
    "store_url",
    "wait_for_dead_leases",
]

#: Version of the CLI's ``meta`` record (``"cli": 1`` in the run row's meta).
META_VERSION = 1
DEFAULT_LEASE_TTL = 30.0

STORE_HELP = (
    "Where runs are recorded: `sqlite:///path/to/trellis.db` (relative), "
    "`sqlite:////abs/path.db`, a file path ending in .db, `postgresql://user@host:port/db` "
    "(shared by many processes and machines; the password is never recorded: use "
    "PGPASSWORD or ~/.pgpass), or `memory:` (this process only). "
    "Default: $TRELLIS_STORE, else sqlite:///.trellis/trellis.db in the working directory."
)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", metavar="URL", help=STORE_HELP, show_default=False),
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


def fail(error: CliError) -> typer.Exit:
    """Report ``error`` as one ``error: ...`` line on stderr; the Exit to raise."""
    typer.echo(f"error: {error.message}", err=True)
    return typer.Exit(error.code)


# -- opening stores ----------------------------------------------------------------------


def store_url(url: str | None) -> str:
    """The store a command uses: ``--store``, else ``$TRELLIS_STORE``, else the default."""
    return url or os.environ.get("TRELLIS_STORE") or DEFAULT_STORE_URL


def open_cli_store(url: str | None) -> Store:
    """Open (creating if needed) the store; a bad URL or database is one CliError."""
    spec = store_url(url)
    try:
        return open_store(spec)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # e.g. its folder cannot be created
        raise CliError(f"cannot open the store {spec!r}: {exc.strerror or exc}") from None


def _sqlite_file(spec: str) -> Path | None:
    """The database file a SQLite store URL names (None: not a SQLite file store)."""
    try:
        location = parse_store_url(spec)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    path = location.path
    return Path(path) if path and path != ":memory:" else None


def open_existing_store(url: str | None) -> Store | None:
    """The store if it exists, for commands that only read; ``None`` when its SQLite file
    does not exist (nothing was recorded there), so that reading never creates one."""
    spec = store_url(url)
    path = _sqlite_file(spec)
    if path is not None and not path.exists():
        # Still check the URL's options (on an in-memory database with the same options).
        query = urlsplit(spec).query if "://" in spec else ""
        open_cli_store("sqlite:///:memory:" + (f"?{query}" if query else "")).close()
        return None
    return open_cli_store(spec)


def redact_model_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--model ROLE=provider:model?...`` values rebuilt without their secret options;
    returns them and the ``role.option`` names that were left out."""
    safe: list[str] = []
    redacted: list[str] = []
    for text in overrides:
        role, binding = parse_model_override(text)
        kept, dropped = redact_options(binding.options)
        spec = f"{role}={binding.provider}:{binding.model}"
        if kept:
            spec += "?" + urlencode({k: str(v) for k, v in kept.items()})
        safe.append(spec)
        redacted.extend(f"{role}.{name}" for name in dropped)
    return safe, redacted


# -- what a run records to be resumed ------------------------------------------------------


@dataclass(slots=True)
class RunMeta:
    """The ``meta`` the CLI records with a run (a batch: with its parent run)."""

    kind: str  # "run" or "batch"
    target: str  # TARGET as given on the command line
    target_file: str | None  # the flow file's absolute path (None: a module target)
    target_attribute: str | None  # the flow's name in the file or module
    cwd: str  # the working directory (module targets are imported from there)
    config: str | None  # absolute path of the configuration file used, if any
    models: list[str] = field(default_factory=list)  # --model overrides, secrets removed
    redacted: list[str] = field(default_factory=list)  # "role.option" left out of models
    concurrency: int | None = None
    budget_usd: float | None = None
    budget_tokens: int | None = None
    budget_calls: int | None = None
    max_seconds: float | None = None
    cache: bool = False
    cache_ttl: float | None = None
    lease_ttl: float = DEFAULT_LEASE_TTL
    output: str | None = None  # absolute path, "-" for stdout, or None
    input_file: str | None = None  # absolute path
    steps: list[str] = field(default_factory=list)  # the flow's steps in execution order

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cli"] = META_VERSION
        if self.kind == "batch":
            data["batch"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunMeta:
        if not isinstance(data.get("target"), str):
            raise CliError("the run's metadata names no flow target")
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("kind", "batch" if data.get("batch") else "run")
        values.setdefault("cwd", os.getcwd())
        values.setdefault("target_file", None)
        values.setdefault("target_attribute", None)
        values.setdefault("config", None)
        try:
            return cls(**values)
        except TypeError as exc:
            raise CliError(f"the run's metadata is not readable: {exc}") from None


def build_meta(
    *,
    kind: str,
    target_text: str,
    target: Target,
    flow: Flow,
    settings: Settings,
    models: Sequence[str],
    concurrency: int | None,
    budget_usd: float | None,
    budget_tokens: int | None,
    budget_calls: int | None,
    max_seconds: float | None,
    output: Path | None,
    input_file: Path | None,
) -> RunMeta:
    """What ``trellis run`` records so that ``trellis resume`` can rebuild the command."""
    safe_models, redacted = redact_model_overrides(models)
    cache = settings.cache
    return RunMeta(
        kind=kind,
        target=target_text,
        target_file=str(Path(target.source).resolve()) if target.is_file else None,
        target_attribute=target.attribute,
        cwd=os.getcwd(),
        config=str(settings.config_path.resolve()) if settings.config_path else None,
        models=safe_models,
        redacted=redacted,
        concurrency=concurrency,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        budget_calls=budget_calls,
        max_seconds=max_seconds,
        cache=cache is not None,
        cache_ttl=cache.ttl if cache is not None else None,
        lease_ttl=settings.lease_ttl,
        output=None if output is None else "-" if str(output) == "-" else str(output.resolve()),
        input_file=str(input_file.resolve()) if input_file is not None else None,
        steps=[step.name for step in flow.compile().steps],
    )


def read_meta(row: RunRow) -> dict[str, Any]:
    """The run row's ``meta`` as a dict ({} when there is none or it is not an object)."""
    if not row.meta:
        return {}
    try:
        data = json.loads(row.meta)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def is_batch(store: Store, row: RunRow) -> bool:
    """Whether a recorded run is a batch's parent run."""
    if row.parent_id is not None:
        return False
    return bool(read_meta(row).get("batch")) or bool(store.list_runs(parent_id=row.run_id, limit=1))


# -- leases --------------------------------------------------------------------------------


def release_leases_on_sigterm() -> None:
    """Make SIGTERM stop a command as Ctrl-C does: the run is cancelled, its leases are
    released (the next ``trellis resume`` need not wait for them to expire) and what
    finished is written. Without this, SIGTERM kills the process and its leases stay."""
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)


def _terminate_like_interrupt(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)  # asyncio's own while a run is going on
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job): interrupt all the same
        raise KeyboardInterrupt


def wait_for_dead_leases(
    store: Store,
    rows: Iterable[RunRow],
    *,
    echo: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Before resuming ``rows``: wait for the leases a dead process of this host left on
    them to expire; raise :class:`CliError` if one is held by a live (or unknown) process."""
    now = time.time()
    until = 0.0
    dead: set[str] = set()
    for row in rows:
        owner, expires = row.lease_owner, row.lease_expires
        if owner is None or expires is None or expires <= now:
            continue
        state = owner_is_dead(owner)
        if state is True:
            until = max(until, expires)
            dead.add(owner)
            continue
        where = "" if state is False else " (or it died on another host)"
        raise CliError(
            f"run {row.run_id} is being executed by {owner}{where}; its lease expires in "
            f"{expires - now:.0f}s if that process stopped; try again later"
        )
    if until > now:
        pids = ", ".join(sorted(o.split(":")[-2] for o in dead))
        echo(
            f"waiting {until - now:.1f}s for the lease(s) of stopped process {pids} to expire "
            "(--lease-ttl sets how long a lease lasts)"
        )
        sleep(until - time.time() + 0.05)
