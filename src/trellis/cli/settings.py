"""From command-line options to an engine: configuration file, ``--model`` overrides, budgets,
and where runs are recorded (the store, the response cache, the lease TTL)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trellis.cli.errors import CliError
from trellis.cli.stores import project_config
from trellis.config import Config, ModelBinding, RoleBinding
from trellis.errors import ConfigurationError
from trellis.flow.policy import Budget, Cache
from trellis.store.base import Store

if TYPE_CHECKING:
    from trellis.engine.engine import Engine
    from trellis.flow.flow import Flow

__all__ = [
    "DEFAULT_CONFIG",
    "Settings",
    "apply_model_overrides",
    "batch_budget",
    "load_config",
    "make_settings",
    "parse_model_override",
]

DEFAULT_CONFIG = "trellis.toml"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs besides the flow and its inputs."""

    config: Config
    config_path: Path | None  # the file the configuration came from, if any
    batch_budget: Budget | None  # over the whole command (all items)
    run_budget: Budget | None  # per run (item)
    store: Store | None = None  # where runs are recorded (None: --no-store)
    cache: Cache | None = None  # --cache: the engine-level response cache
    lease_ttl: float = 30.0  # seconds before a killed process's claim on a run expires
    executor: str | None = None  # --executor: where a batch's items run (None: here)
    tracing: Any = None  # --otel: the tracer the engine's runs are traced with
    record_prompts: bool = False  # --record-prompts: attempts keep their messages and reply

    def engine(self) -> Engine:
        """A new engine. Every bound role's provider and options are checked first, so a
        typo in a binding is one error now rather than a failure in every item later."""
        from trellis.engine.engine import Engine  # the engine loads with its first use

        executor = None
        try:
            if self.executor:  # Ray's executor loads only when --executor asks for it
                from trellis.cluster import executor_from_spec

                executor = executor_from_spec(self.executor)
            engine = Engine(
                config=self.config,
                budget=self.batch_budget,
                store=self.store,
                cache=self.cache,
                lease_ttl=self.lease_ttl,
                executor=executor,
                tracing=self.tracing,
                record_prompts=self.record_prompts,
            )
        except ConfigurationError as exc:  # --executor: unknown, or the store not shareable
            raise CliError(str(exc)) from None
        for role, binding in sorted(self.config.roles.items()):
            try:
                engine.model(binding.binding)
            except ConfigurationError as exc:
                raise CliError(f"model role {role!r} ({binding.binding.name}): {exc}") from None
        return engine


def load_config(path: Path | None, *, default: bool = True) -> tuple[Config, Path | None]:
    """``path`` when given (it must exist), else (with ``default``) the project's
    ``trellis.toml``: in the working directory or the nearest folder above it, up to the
    project's root (:func:`~trellis.cli.stores.project_config`), else empty."""
    if path is None:
        if not default:
            return Config(), None
        found = project_config()
        if found is None:
            return Config(), None
        path = found
    elif not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CliError(f"config file {str(path)!r} {what}")
    try:
        return Config.from_toml(path), path
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None


def parse_model_override(text: str) -> tuple[str, ModelBinding]:
    """``ROLE=provider:model[?opt=value&...]`` -> (role, binding)."""
    role, sep, spec = text.partition("=")
    role = role.strip()
    if not sep or not role or not spec.strip():
        raise CliError(
            f"--model {text!r} must look like ROLE=provider:model, e.g. --model small=sim:small "
            "or --model large='sim:large?latency_ms=100-300'"
        )
    if not role.replace("-", "_").isidentifier():
        raise CliError(f"--model {text!r}: role {role!r} is not a valid name")
    try:
        return role, ModelBinding.parse(spec)
    except ConfigurationError as exc:
        raise CliError(f"--model {text!r}: {exc}") from None


def apply_model_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Bind each ``ROLE=spec``; a role already configured keeps its fallbacks."""
    bound: dict[str, RoleBinding] = {}
    for text in overrides:
        role, binding = parse_model_override(text)
        previous = config.roles.get(role)
        bound[role] = RoleBinding(binding=binding, fallbacks=previous.fallbacks if previous else ())
    if not bound:
        return config
    try:
        return config.with_models(bound)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None


def batch_budget(usd: float | None, tokens: int | None, calls: int | None) -> Budget | None:
    """The budget over a whole command, or None when no limit was given."""
    if usd is None and tokens is None and calls is None:
        return None
    try:
        return Budget(max_usd=usd, max_tokens=tokens, max_calls=calls)
    except ConfigurationError as exc:
        raise CliError(str(exc).replace("Budget.max_", "--budget-")) from None


def make_settings(
    flow: Flow,
    *,
    config_path: Path | None,
    models: Sequence[str],
    budget_usd: float | None,
    budget_tokens: int | None,
    budget_calls: int | None,
    max_seconds: float | None,
    store: Store | None = None,
    cache: Cache | None = None,
    lease_ttl: float = 30.0,
    default_config: bool = True,
) -> Settings:
    """``default_config=False``: no ``config_path`` means no configuration file at all (a
    resumed run uses exactly the file its first run used, or none)."""
    if not math.isfinite(lease_ttl) or lease_ttl <= 0:
        raise CliError(f"--lease-ttl must be a finite number of seconds above 0, not {lease_ttl}")
    config, source = load_config(config_path, default=default_config)
    config = apply_model_overrides(config, models)
    batch = batch_budget(budget_usd, budget_tokens, budget_calls)
    run: Budget | None = None
    if max_seconds is not None:
        if max_seconds <= 0:
            raise CliError("--max-seconds must be positive")
        # Keep the flow's own per-run limits; only the wall time comes from the option.
        run = dataclasses.replace(flow.budget or Budget(), max_seconds=max_seconds)
    return Settings(config, source, batch, run, store=store, cache=cache, lease_ttl=lease_ttl)
