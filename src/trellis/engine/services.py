"""What a run borrows from its engine: models, prices, circuit breakers, the response cache,
the clock, ``sleep`` and the jitter's random source.

An :class:`~trellis.engine.engine.Engine` builds one :class:`Services` and hands it to every
:class:`~trellis.engine.runner.Run`, so a run (and the LLM handles of its steps) never holds
the engine itself: ``engine -> runner -> llm -> agent`` point one way only. Everything here
is shared by all runs of the engine: model clients (connection pools, rate limits), one
circuit breaker per model binding, and the response cache.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from trellis.config import Config, ModelBinding, RoleBinding
from trellis.engine.breaker import BreakerSettings, CircuitBreaker
from trellis.engine.clock import SYSTEM_CLOCK, Clock
from trellis.flow.policy import Cache
from trellis.models.base import Model
from trellis.models.pricing import PriceTable
from trellis.models.registry import ProviderRegistry
from trellis.redact import redact_options
from trellis.store import MemoryStore, Store
from trellis.store.codec import decode, encode

__all__ = ["ModelChains", "ResponseCache", "Services"]

_CACHE_PREFIX = "llm-reply/v1/"


def _identity(binding: ModelBinding, model: Model) -> str:
    options = sorted((k, str(v)) for k, v in redact_options(binding.options)[0].items())
    return f"{model.name}|{binding.provider}:{binding.model}|{options}"


class ModelChains:
    """Model instances by binding (created once, shared by every run) and the chain a role
    resolves to: its model, then its fallbacks."""

    def __init__(
        self,
        config: Config,
        registry: ProviderRegistry,
        instances: Mapping[str, Model],
        breaker: BreakerSettings,
    ) -> None:
        self.config = config
        self.registry = registry
        self.breaker_settings = breaker
        self.models: dict[str, Model] = dict(instances)
        self._identities: dict[int, str] = {}
        self._chains: dict[tuple[str, tuple[str, ...] | None], list[Model]] = {}
        self._breakers: dict[int, CircuitBreaker] = {}
        #: Told of every model instance created from here on (a Ray worker shares its
        #: rate limits with the other workers through it).
        self.on_create: Callable[[Model], None] | None = None

    def model(self, binding: ModelBinding) -> Model:
        """The one instance of ``binding``'s model, created on first use."""
        key = str(binding)
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = self.registry.create(binding)
            bind = getattr(model, "bind_engine", None)
            if callable(bind):  # a model that calls other roles (replay's fallback=ROLE)
                bind(lambda role: self.chain(role)[0], self.config.prices.cost)
            if self.on_create is not None:
                self.on_create(model)
        self._identities.setdefault(id(model), _identity(binding, model))
        return model

    def chain(self, role: str, fallbacks: Sequence[str] | None = None) -> list[Model]:
        """The model for ``role`` followed by its fallbacks (deduplicated)."""
        key = (role, tuple(fallbacks) if fallbacks is not None else None)
        chain = self._chains.get(key)
        if chain is None:
            primary: RoleBinding = self.config.resolve(role)
            names = primary.fallbacks if fallbacks is None else tuple(fallbacks)
            chain = [self.model(primary.binding)]
            for name in names:
                model = self.model(self.config.resolve(name).binding)
                if model not in chain:
                    chain.append(model)
            self._chains[key] = chain
        return chain

    def breaker(self, model: Model) -> CircuitBreaker:
        """``model``'s circuit breaker, shared by every run of the engine."""
        breaker = self._breakers.get(id(model))
        if breaker is None:
            breaker = self._breakers[id(model)] = CircuitBreaker(
                model.name, self.breaker_settings, remote=model.remote
            )
        return breaker

    def identity(self, model: Model) -> str:
        """What distinguishes ``model``'s replies in the response cache: provider, model
        and the binding's options (endpoint, seed...), never its secrets."""
        return self._identities.get(id(model), model.name)


class ResponseCache:
    """LLM replies by request digest, in the engine's store (or in memory without one);
    entries expire by ``clock``'s wall time (``Clock.now``)."""

    def __init__(self, store: Store | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._store = store
        self._memory: Store | None = None
        self._now = clock.now

    def _backend(self) -> Store:
        if self._store is not None:
            return self._store
        if self._memory is None:
            self._memory = MemoryStore()
        return self._memory

    def lookup(self, digest: str, output_type: Any) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry, decoded as ``output_type``; else ``(False,
        None)``."""
        text = self._backend().cache_get(_CACHE_PREFIX + digest, self._now())
        if text is None:
            return False, None
        return True, decode(text, output_type if output_type is not None else Any, "a cache entry")

    def put(self, digest: str, value: Any, cache: Cache) -> None:
        """Keep ``value`` under ``digest`` for ``cache.ttl`` seconds (forever without one)."""
        now = self._now()
        expires = now + cache.ttl if cache.ttl is not None else None
        self._backend().cache_put(
            _CACHE_PREFIX + digest, encode(value, "a cached reply"), now, expires
        )


class Services:
    """The engine's services a run uses; one per engine, shared by all its runs.

    - ``models``: model instances, role chains and per-model circuit breakers;
    - ``prices``: USD per token, for budgets and accounting;
    - ``cache``: the response cache, and ``default_cache``, the engine's cache policy;
    - ``clock``: where the run reads the time (:class:`~trellis.engine.clock.Clock`:
      ``now()`` for timestamps, ``monotonic()`` for deadlines, ``perf()`` for durations
      and latencies), injectable for tests;
    - ``sleep``: how waits (backoff, retry-after) are slept, injectable for tests;
    - ``rng``: the random source of backoff jitter (seeded by ``Engine(seed=)``);
    - ``record_prompts``: every live attempt keeps the messages sent and the reply.
    """

    __slots__ = (
        "cache",
        "clock",
        "default_cache",
        "models",
        "prices",
        "record_prompts",
        "rng",
        "sleep",
    )

    def __init__(
        self,
        *,
        models: ModelChains,
        prices: PriceTable,
        cache: ResponseCache,
        default_cache: Cache | bool | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        record_prompts: bool = False,
    ) -> None:
        self.models = models
        self.record_prompts = record_prompts
        self.prices = prices
        self.cache = cache
        self.default_cache = default_cache
        self.clock = clock
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
