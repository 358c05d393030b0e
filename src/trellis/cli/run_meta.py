"""What ``trellis run`` records with a run so that ``trellis resume`` can rebuild it.

:class:`RunMeta` is the run row's ``meta`` (a batch: its parent run's): the flow target,
configuration file, ``--model`` overrides, budgets, concurrency, output and input paths
and the flow's step order. It never holds a secret: :func:`redact_model_overrides` drops
every binding option named like a key, token, secret, password or authorization (and
credentials inside URLs) before anything is stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from trellis.cli.errors import CliError
from trellis.cli.jobs import RunOptions
from trellis.cli.leases import DEFAULT_LEASE_TTL
from trellis.cli.settings import Settings, parse_model_override
from trellis.cli.target import Target
from trellis.redact import redact_options
from trellis.store.base import RunRow, Store

__all__ = [
    "META_VERSION",
    "RunMeta",
    "build_meta",
    "meta_of",
    "redact_model_overrides",
]

#: Version of the CLI's ``meta`` record (``"cli": 1`` in the run row's meta).
META_VERSION = 1


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
    record_prompts: bool = False  # --record-prompts (a resume keeps recording them)
    output: str | None = None  # absolute path, "-" for stdout, or None
    input_file: str | None = None  # absolute path

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
    settings: Settings,
    options: RunOptions,
) -> RunMeta:
    """What ``trellis run`` records so that ``trellis resume`` can rebuild the command."""
    safe_models, redacted = redact_model_overrides(options.models)
    cache = settings.cache
    output, input_file = options.output, options.input_file
    return RunMeta(
        kind=kind,
        target=target_text,
        target_file=str(Path(target.source).resolve()) if target.is_file else None,
        target_attribute=target.attribute,
        cwd=os.getcwd(),
        config=str(settings.config_path.resolve()) if settings.config_path else None,
        models=safe_models,
        redacted=redacted,
        concurrency=options.concurrency if input_file is not None else None,
        budget_usd=options.budget_usd,
        budget_tokens=options.budget_tokens,
        budget_calls=options.budget_calls,
        max_seconds=options.max_seconds,
        cache=cache is not None,
        cache_ttl=cache.ttl if cache is not None else None,
        lease_ttl=settings.lease_ttl,
        record_prompts=settings.record_prompts,
        output=None if output is None else "-" if str(output) == "-" else str(output.resolve()),
        input_file=str(input_file.resolve()) if input_file is not None else None,
    )


def meta_of(store: Store, row: RunRow, *, answer: str) -> RunMeta:
    """How ``row`` was started by ``trellis run``; a batch item without its own meta uses
    its batch's (and is resumed as a single run). A run started from Python records no
    flow target: a CliError ending with ``answer``, how to continue it from Python."""
    from trellis.engine.records import recorded_meta  # the read model: resumes only

    data, inherited = recorded_meta(store, row)
    if "target" not in data:
        raise CliError(
            f"run {row.run_id} was not started with `trellis run` (it records no flow "
            f"target); {answer}"
        )
    meta = RunMeta.from_dict(data)
    if inherited:
        meta.kind = "run"
    return meta
