"""What a command was asked to do, once its options are parsed: one object each instead of
signatures of a dozen parameters.

- :class:`Display`: how results are shown (tables, one line, JSON; a progress bar);
- :class:`RunOptions`: every option of ``trellis run``, checked by :meth:`RunOptions.check`;
- :class:`OneRun` / :class:`BatchJob`: one run or one batch, as ``trellis run``,
  ``trellis resume`` and ``trellis approve`` / ``reply`` hand them to
  :func:`trellis.cli.commands.run_once` / :func:`~trellis.cli.commands.run_batch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trellis.cli.errors import CliError
from trellis.flow.policy import Cache

__all__ = ["BatchJob", "Display", "OneRun", "RunOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Display:
    """How a command shows what it did."""

    quiet: bool = False  # errors and a one-line outcome only
    as_json: bool = False  # JSON on stdout instead of tables
    progress: bool = True  # a batch's progress bar (drawn only when stderr is a terminal)
    to_stderr: bool = False  # tables go to stderr (stdout is someone else's)

    @property
    def bar(self) -> bool:
        """Whether a batch draws its progress bar."""
        return self.progress and not (self.quiet or self.as_json)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """``trellis run``'s options."""

    input_json: str | None = None
    input_file: Path | None = None
    output: Path | None = None
    models: Sequence[str] = ()
    config: Path | None = None
    concurrency: int = 8
    budget_usd: float | None = None
    budget_tokens: int | None = None
    budget_calls: int | None = None
    max_seconds: float | None = None
    display: Display = field(default_factory=Display)
    store: str | None = None
    no_store: bool = False
    run_id: str | None = None
    rerun_changed: bool = False
    cache: bool = False
    cache_ttl: float | None = None
    lease_ttl: float | None = None
    executor: str | None = None
    stream_step: str | None = None  # --stream: print this step's tokens as they arrive
    otel: bool = False  # --otel: export traces over OTLP/HTTP (OTEL_* variables)
    record_prompts: bool = False  # --record-prompts: keep each attempt's messages and reply

    def check(self) -> None:
        """The rules between options; a :class:`CliError` for the first one broken."""
        if self.input_json is not None and self.input_file is not None:
            raise CliError("give either --input (one run) or --input-file (a batch), not both")
        if self.output is not None and self.input_file is None:
            raise CliError("--output needs --input-file (with --input, use --json)")
        if self.display.as_json and self.output is not None and str(self.output) == "-":
            raise CliError("--json and --output - would both write to stdout; pick one")
        if self.no_store and self.store is not None:
            raise CliError("give either --store or --no-store, not both")
        if self.no_store and self.run_id is not None:
            raise CliError("--run-id needs a store (runs are only recorded without --no-store)")
        if self.run_id is not None and not self.run_id.strip():
            raise CliError("--run-id is empty")
        if self.stream_step is not None and self.input_file is not None:
            raise CliError("--stream prints one run's tokens: use it with --input, not a batch")
        if self.executor is not None and self.input_json is not None:
            raise CliError(
                "--executor runs a batch's items on workers: use it with --input-file (a "
                "single run, --input, runs in this process)"
            )
        if self.cache_ttl is not None and self.cache_ttl <= 0:
            raise CliError("--cache-ttl must be positive (seconds)")

    @property
    def response_cache(self) -> Cache | None:
        """``--cache`` / ``--cache-ttl`` (which implies it)."""
        if self.cache or self.cache_ttl is not None:
            return Cache(ttl=self.cache_ttl)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class OneRun:
    """One run: its inputs (JSON text; None: a recorded run's), id and how to show it."""

    input_json: str | None = None
    display: Display = field(default_factory=Display)
    run_id: str | None = None
    rerun_changed: bool = False
    meta: Mapping[str, Any] | None = None
    stream_step: str | None = None  # print this step's tokens as they arrive


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchJob:
    """One batch: over ``input_file``, or (None) the recorded batch ``batch_id``."""

    title: str  # how the summary names the flow
    input_file: Path | None = None
    output: Path | None = None  # the JSONL results ("-": stdout)
    concurrency: int = 8
    display: Display = field(default_factory=Display)
    batch_id: str | None = None
    rerun_changed: bool = False
    meta: Mapping[str, Any] | None = None
    #: replaces what is said on stderr about a recorded batch
    note: str | None = None
    #: the input file a resumed batch was started with (``--output`` may not name it)
    recorded_input: Path | None = None
