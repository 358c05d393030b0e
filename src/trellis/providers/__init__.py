"""HTTP model providers: ``openai:`` (Chat Completions and compatible servers) and
``anthropic:`` (Messages API), with a shared client-side rate limiter.

The provider classes are imported lazily, so ``import trellis.providers`` costs nothing
until one is used::

    from trellis.providers import OpenAIModel
    model = OpenAIModel("gpt-4o-mini", {"base_url": "http://localhost:8000/v1", "rpm": 600})

In a flow, bind a role instead: ``tl.Engine(models={"small": "openai:gpt-4o-mini"})``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trellis.providers.anthropic import AnthropicModel, AnthropicOptions
    from trellis.providers.openai import OpenAIModel, OpenAIOptions
    from trellis.providers.ratelimit import Permit, RequestPacer

__all__ = [
    "AnthropicModel",
    "AnthropicOptions",
    "OpenAIModel",
    "OpenAIOptions",
    "Permit",
    "RequestPacer",
]

_WHERE = {
    "AnthropicModel": "trellis.providers.anthropic",
    "AnthropicOptions": "trellis.providers.anthropic",
    "OpenAIModel": "trellis.providers.openai",
    "OpenAIOptions": "trellis.providers.openai",
    "Permit": "trellis.providers.ratelimit",
    "RequestPacer": "trellis.providers.ratelimit",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
