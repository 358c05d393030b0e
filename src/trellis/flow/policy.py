"""Policies a flow declares: how LLM calls are retried, and what a run may spend."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from trellis.errors import ConfigurationError

__all__ = ["Budget", "Cache", "RetryPolicy", "resolve_cache"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a step's LLM calls (and optionally its own code) are retried, by failure mode.

    Defaults, per model tried:

    - malformed / schema-invalid output: the validation error is fed back to the model,
      up to ``reasks`` times (2).
    - rate limit: wait exactly the provider's retry-after (capped at ``max_retry_after``),
      else exponential backoff with full jitter; up to ``max_attempts`` attempts (4).
    - timeout (``timeout`` seconds per attempt, default 60): retried like a rate limit.
    - overloaded / 5xx: backoff, at most ``overloaded_attempts`` attempts (2), then the
      next fallback model.
    - refusal, truncation, context overflow: never resent identically; next fallback model,
      else the step fails.
    - auth, bad request, quota: fail at once (quota fails the whole run).

    ``retry_on`` lists exception types raised by the step's *own code* that make the whole
    step run again, up to ``step_attempts`` times in all.
    """

    max_attempts: int = 4
    reasks: int = 2
    overloaded_attempts: int = 2
    timeout: float | None = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    retry_on: tuple[type[BaseException], ...] = ()
    step_attempts: int = 3

    def __post_init__(self) -> None:
        for name in ("max_attempts", "overloaded_attempts", "step_attempts"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"RetryPolicy.{name} must be at least 1")
        if self.reasks < 0:
            raise ConfigurationError("RetryPolicy.reasks cannot be negative")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError("RetryPolicy.timeout must be positive or None")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): full jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one run (or one batch). ``None`` means unlimited.

    A call that *would* exceed a limit is not made: before each LLM call the engine
    reserves the call's estimated cost and tokens (prompt estimate plus ``max_tokens``, or
    ``reserve_output_tokens`` when no ``max_tokens`` is given) against what has been spent
    and what calls still in flight have reserved. The run then stops with
    :class:`~trellis.errors.BudgetExceededError`; completed work stays in the result.
    """

    max_usd: float | None = None
    max_tokens: int | None = None
    max_calls: int | None = None
    max_seconds: float | None = None
    max_turns: int | None = None  # agent turns (model calls of tool-calling loops)
    reserve_output_tokens: int = field(default=256)

    def __post_init__(self) -> None:
        for name in ("max_usd", "max_tokens", "max_calls", "max_seconds", "max_turns"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigurationError(f"Budget.{name} cannot be negative")

    @property
    def unlimited(self) -> bool:
        return (
            self.max_usd is None
            and self.max_tokens is None
            and self.max_calls is None
            and self.max_seconds is None
            and self.max_turns is None
        )


@dataclass(frozen=True, slots=True)
class Cache:
    """Reuse LLM replies across runs. Opt-in: ``cache=tl.Cache(ttl=3600)`` (or ``True``) on a
    step, a flow or the engine (``--cache`` on the CLI); ``cache=False`` on a step turns an
    inherited cache off.

    The key covers the model, every request parameter, the messages and the output schema,
    so only an identical request hits. A hit is recorded (``CallRecord.source == "cache"``)
    and costs nothing. ``ttl`` is in seconds; ``None`` keeps entries until cleared.
    """

    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and self.ttl <= 0:
            raise ConfigurationError("Cache.ttl must be positive (seconds) or None")


def resolve_cache(*levels: Cache | bool | None) -> Cache | None:
    """The first level that says something (step, flow, engine): a Cache, or off."""
    for level in levels:
        if level is None:
            continue
        if level is False:
            return None
        if level is True:
            return Cache()
        return level
    return None
