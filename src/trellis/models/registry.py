"""Providers by name: how a ``provider:model`` binding becomes a :class:`Model`.

The engine owns one registry (no global state); built-in providers are imported lazily so
that an unused provider costs nothing at import time. Add your own with
``Engine(providers={"mine": factory})`` where ``factory(binding) -> Model``, with
``[providers] mine = "module:factory"`` in ``trellis.toml`` (``Config.providers``), or from
an installed package through the ``trellis.providers`` entry-point group
(``[project.entry-points."trellis.providers"] mine = "my_package.models:make"``). Explicit
factories win over configured ones, which win over entry points and the built-ins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import metadata

from trellis.config import ModelBinding
from trellis.errors import ConfigurationError
from trellis.loading import load_callable
from trellis.models.base import Model

__all__ = ["ENTRY_POINT_GROUP", "ProviderFactory", "ProviderRegistry", "load_factory"]

#: The entry-point group under which installed packages register providers.
ENTRY_POINT_GROUP = "trellis.providers"

ProviderFactory = Callable[[ModelBinding], Model]


def _sim(binding: ModelBinding) -> Model:
    from trellis.models.sim import SimModel, SimOptions

    return SimModel(binding.model, SimOptions.parse(binding.options))


def _replay(binding: ModelBinding) -> Model:
    from trellis.providers.replay import ReplayModel

    return ReplayModel.from_options(binding.model, binding.options)


def _openai(binding: ModelBinding) -> Model:
    from trellis.providers.openai import OpenAIModel, OpenAIOptions

    return OpenAIModel(binding.model, OpenAIOptions.parse(binding.options))


def _anthropic(binding: ModelBinding) -> Model:
    from trellis.providers.anthropic import AnthropicModel, AnthropicOptions

    return AnthropicModel(binding.model, AnthropicOptions.parse(binding.options))


BUILTIN_PROVIDERS: Mapping[str, ProviderFactory] = {
    "sim": _sim,
    "replay": _replay,
    "openai": _openai,
    "anthropic": _anthropic,
}


def load_factory(spec: str, name: str = "") -> ProviderFactory:
    """``module:factory`` or ``path.py:factory`` to the callable (a ConfigurationError
    names the provider and what went wrong)."""
    what = f"provider {name!r} ({spec})" if name else f"provider factory {spec!r}"
    return load_callable(spec, what=what)


def _entry_point(name: str) -> ProviderFactory | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                factory = ep.load()
            except Exception as exc:
                raise ConfigurationError(
                    f"cannot load provider {name!r} from entry point {ep.value}: {exc}"
                ) from exc
            return factory  # type: ignore[no-any-return]
    return None


class ProviderRegistry:
    def __init__(
        self,
        extra: Mapping[str, ProviderFactory] | None = None,
        *,
        specs: Mapping[str, str] | None = None,
    ) -> None:
        self._factories: dict[str, ProviderFactory] = dict(BUILTIN_PROVIDERS)
        self._specs = dict(specs or {})  # configured: loaded on first use
        for name in self._specs:
            self._factories.pop(name, None)
        self._factories.update(extra or {})

    @property
    def names(self) -> list[str]:
        return sorted({*self._factories, *self._specs})

    def create(self, binding: ModelBinding) -> Model:
        factory = self._factories.get(binding.provider)
        if factory is None and binding.provider in self._specs:
            factory = load_factory(self._specs[binding.provider], binding.provider)
            self._factories[binding.provider] = factory
        if factory is None:
            factory = _entry_point(binding.provider)
            if factory is not None:
                self._factories[binding.provider] = factory
        if factory is None:
            raise ConfigurationError(
                f"unknown model provider {binding.provider!r} in {binding.name!r}; known "
                f"providers: {', '.join(self.names)} (add one under [providers] in "
                f"trellis.toml, or through the {ENTRY_POINT_GROUP!r} entry points)"
            )
        model = factory(binding)
        if not isinstance(model, Model):
            raise ConfigurationError(
                f"provider {binding.provider!r} returned {type(model).__name__}, not a tl.Model"
            )
        return model
