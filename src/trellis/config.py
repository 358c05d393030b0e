"""Configuration: model roles bound to ``provider:model``, prices, and where they come from.

Flows name model *roles* ("small", "large", any name); configuration binds each role to a
concrete model, so a flow never hard-codes a vendor::

    # trellis.toml
    [models]
    small = "sim:small"
    large = { model = "sim:large", latency_ms = "200-800" }
    careful = { model = "sim:small", fallbacks = ["large"], rate_limit = 0.05 }

    [prices]                      # USD per million tokens, overriding the built-in table
    "sim:large" = { input = 2.5, output = 10.0 }

A binding string may carry provider options as a query string:
``sim:small?latency_ms=50-400&rate_limit=0.1&seed=3``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from trellis.errors import ConfigurationError
from trellis.models.pricing import Price, PriceTable

__all__ = ["Config", "ModelBinding", "RoleBinding"]


@dataclass(frozen=True, slots=True)
class ModelBinding:
    """A concrete model: provider, the provider's model name, and provider options."""

    provider: str
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``provider:model``, the key for prices and accounting."""
        return f"{self.provider}:{self.model}"

    @classmethod
    def parse(cls, spec: str, **options: Any) -> ModelBinding:
        """Parse ``provider:model[?opt=value&...]``; keyword options win over the query."""
        text = spec.strip()
        query = ""
        if "?" in text:
            text, query = text.split("?", 1)
        provider, sep, model = text.partition(":")
        if not sep or not provider or not model:
            raise ConfigurationError(
                f"model binding {spec!r} must look like 'provider:model' (e.g. 'sim:small', "
                "'openai:gpt-4o-mini')"
            )
        opts: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
        opts.update(options)
        return cls(provider.strip(), model.strip(), opts)

    def with_options(self, **options: Any) -> ModelBinding:
        return ModelBinding(self.provider, self.model, {**self.options, **options})

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + "?" + "&".join(f"{k}={v}" for k, v in self.options.items())


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleBinding:
    """What a role resolves to: a model, then fallbacks (roles or bindings) tried in order."""

    binding: ModelBinding
    fallbacks: tuple[str, ...] = ()


def _role_from_value(role: str, value: Any) -> RoleBinding:
    if isinstance(value, RoleBinding):
        return value
    if isinstance(value, ModelBinding):
        return RoleBinding(binding=value)
    if isinstance(value, str):
        return RoleBinding(binding=ModelBinding.parse(value))
    if isinstance(value, Mapping):
        options = dict(value)
        spec = options.pop("model", None)
        if not isinstance(spec, str):
            raise ConfigurationError(
                f"model role {role!r}: a table needs 'model = \"provider:model\"', got {value!r}"
            )
        fallbacks = options.pop("fallbacks", ())
        if isinstance(fallbacks, str):
            fallbacks = (fallbacks,)
        if not isinstance(fallbacks, list | tuple) or not all(
            isinstance(f, str) for f in fallbacks
        ):
            raise ConfigurationError(f"model role {role!r}: fallbacks must be a list of names")
        return RoleBinding(binding=ModelBinding.parse(spec, **options), fallbacks=tuple(fallbacks))
    raise ConfigurationError(
        f"model role {role!r} must be bound to 'provider:model' or a table, got {value!r}"
    )


class Config:
    """Model roles, prices and custom providers. Immutable; ``with_models`` returns a new one.

    ``providers`` maps a provider name to the ``module:factory`` (or ``path.py:factory``)
    that builds its models (``factory(binding) -> tl.Model``), as ``[providers]`` in
    ``trellis.toml``: ``mine = "my_package.models:make"`` makes ``mine:some-model`` a
    binding. Loaded when a binding first uses it."""

    def __init__(
        self,
        models: Mapping[str, str | ModelBinding | RoleBinding | Mapping[str, Any]] | None = None,
        *,
        prices: Mapping[str, Price | Mapping[str, float]] | None = None,
        providers: Mapping[str, str] | None = None,
    ) -> None:
        self.roles: dict[str, RoleBinding] = {
            role: _role_from_value(role, value) for role, value in (models or {}).items()
        }
        self.prices = PriceTable(prices)
        self.providers: dict[str, str] = _providers(providers or {})
        self._check_fallbacks()

    def _check_fallbacks(self) -> None:
        for role, rb in self.roles.items():
            for fb in rb.fallbacks:
                if fb not in self.roles and ":" not in fb:
                    raise ConfigurationError(
                        f"model role {role!r} falls back to {fb!r}, which is neither a bound "
                        f"role ({', '.join(sorted(self.roles)) or 'none'}) nor 'provider:model'"
                    )

    def with_models(
        self, models: Mapping[str, str | ModelBinding | RoleBinding | Mapping[str, Any]]
    ) -> Config:
        new = Config.__new__(Config)
        new.roles = {**self.roles, **{r: _role_from_value(r, v) for r, v in models.items()}}
        new.prices = self.prices
        new.providers = dict(self.providers)
        new._check_fallbacks()
        return new

    def with_prices(self, prices: Mapping[str, Price | Mapping[str, float]]) -> Config:
        new = Config.__new__(Config)
        new.roles = dict(self.roles)
        new.prices = self.prices.with_overrides(prices)
        new.providers = dict(self.providers)
        return new

    def resolve(self, role_or_spec: str) -> RoleBinding:
        """A role name, or a direct ``provider:model`` spec, to what it is bound to."""
        rb = self.roles.get(role_or_spec)
        if rb is not None:
            return rb
        if ":" in role_or_spec:
            return RoleBinding(binding=ModelBinding.parse(role_or_spec))
        bound = ", ".join(sorted(self.roles)) or "none"
        raise ConfigurationError(
            f"model role {role_or_spec!r} is not bound (bound roles: {bound}); bind it with "
            f"--model {role_or_spec}=provider:model or under [models] in trellis.toml"
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigurationError(f"config file {str(p)!r} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
        config = cls.from_dict(data, source=str(p))
        # A provider given as a file (``path.py:factory``) is relative to this file's folder,
        # as [store] is: the same wherever the command runs from.
        config.providers = {
            name: _relative_provider(spec, p.parent) for name, spec in config.providers.items()
        }
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Config:
        # [store] names where the CLI records runs (trellis.cli.stores); not a model setting.
        unknown = set(data) - {"models", "prices", "providers", "store"}
        if unknown:
            raise ConfigurationError(
                f"{source}: unknown section(s) {sorted(unknown)}; "
                "known: models, prices, providers, store"
            )
        models = data.get("models", {})
        prices = data.get("prices", {})
        providers = data.get("providers", {})
        if not all(isinstance(t, Mapping) for t in (models, prices, providers)):
            raise ConfigurationError(f"{source}: [models], [prices] and [providers] must be tables")
        return cls(models, prices=prices, providers=providers)


def _relative_provider(spec: str, folder: Path) -> str:
    source, sep, attribute = spec.rpartition(":")
    if source.endswith(".py") and not Path(source).is_absolute():
        return f"{folder / source}{sep}{attribute}"
    return spec


def _providers(specs: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in specs.items():
        if not isinstance(spec, str) or ":" not in spec:
            raise ConfigurationError(
                f"[providers] {name} must be 'module:factory' or 'path.py:factory', got {spec!r}"
            )
        out[str(name)] = spec
    return out
