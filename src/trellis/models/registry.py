"""Providers by name: how a ``provider:model`` binding becomes a :class:`Model`.

The engine owns one registry (no global state); built-in providers are imported lazily so
that an unused provider costs nothing at import time. Add your own with
``Engine(providers={"mine": factory})`` where ``factory(binding) -> Model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trellis.config import ModelBinding
from trellis.errors import ConfigurationError
from trellis.models.base import Model

__all__ = ["ProviderFactory", "ProviderRegistry"]

ProviderFactory = Callable[[ModelBinding], Model]


def _sim(binding: ModelBinding) -> Model:
    from trellis.models.sim import SimModel, SimOptions

    return SimModel(binding.model, SimOptions.parse(binding.options))


def _replay(binding: ModelBinding) -> Model:
    from trellis.models.replay import ReplayModel

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


class ProviderRegistry:
    def __init__(self, extra: Mapping[str, ProviderFactory] | None = None) -> None:
        self._factories = {**BUILTIN_PROVIDERS, **(extra or {})}

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, binding: ModelBinding) -> Model:
        factory = self._factories.get(binding.provider)
        if factory is None:
            raise ConfigurationError(
                f"unknown model provider {binding.provider!r} in {binding.name!r}; known "
                f"providers: {', '.join(self.names)}"
            )
        return factory(binding)
