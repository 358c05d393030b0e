"""Policies a flow declares: how LLM calls are retried, and what a run may spend."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from trellis.errors import ConfigurationError

__all__ = ["Budget", "Cache", "RetryPolicy", "resolve_cache"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a step's LLM calls (and optionally its own code) are retried, by failure mode.

    Transient failures are retried by *time*: a call keeps retrying them for at most
    ``retry_deadline`` seconds (120), counted as the failed attempts' latency plus every
    wait before a retry (backoff, retry-after, a model's open circuit breaker). Defaults:

    - rate limit: wait exactly the provider's retry-after (capped at ``max_retry_after``),
      else capped exponential backoff with full jitter.
    - timeout (``timeout`` seconds per attempt, default 60) and connection failures
      (DNS, refused, reset): backoff, same request.
    - overloaded / 5xx: backoff, same request. With a fallback model left in the chain,
      at most ``overloaded_attempts`` attempts (2) on a model before moving to the
      fallback (at once while the model's circuit breaker is open).
    - ``max_attempts``: an optional cap on the transient attempts on one model (None: the
      deadline alone decides). A wait never outlives the retry deadline or the run's
      ``Budget.max_seconds``; a set budget is still checked before every attempt.
    - malformed / schema-invalid output: the validation error is fed back to the model,
      up to ``reasks`` times (2).
    - refusal, truncation, context overflow: never resent identically; next fallback model,
      else the step fails.
    - bad request: fail at once. Auth and quota fail at once *and stop the model*: the
      engine sends it nothing more (both also fail the whole run).

    ``retry_on`` lists exception types raised by the step's *own code* that make the whole
    step run again, up to ``step_attempts`` times in all.
    """

    max_attempts: int | None = None
    reasks: int = 2
    overloaded_attempts: int = 2
    timeout: float | None = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    retry_on: tuple[type[BaseException], ...] = ()
    step_attempts: int = 3
    retry_deadline: float | None = 120.0

    def __post_init__(self) -> None:
        for name in ("max_attempts", "overloaded_attempts", "step_attempts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"RetryPolicy.{name} must be at least 1")
        if self.reasks < 0:
            raise ConfigurationError("RetryPolicy.reasks cannot be negative")
        for name in ("timeout", "retry_deadline"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"RetryPolicy.{name} must be positive or None")
        if self.retry_deadline is None and self.max_attempts is None:
            raise ConfigurationError(
                "RetryPolicy needs a retry_deadline or a max_attempts: with neither, "
                "a failing model would be retried forever"
            )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): full jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)


@dataclass(frozen=True, slots=True, kw_only=True)
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


@dataclass(frozen=True, slots=True, kw_only=True)
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
