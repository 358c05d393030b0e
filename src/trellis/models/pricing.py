"""Prices per million tokens, and the cost of a call.

The built-in table covers the simulator's models and a few well-known hosted models; it is
a convenience, not a source of truth: override or extend it with your contract's prices
(``[prices]`` in ``trellis.toml``, or ``PriceTable({...})``). A model with no price has an
*unknown* cost (``None``), reported as such, never silently zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trellis.errors import ConfigurationError
from trellis.models.base import Usage

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens, plus an optional flat USD per request
    (for models billed per call, such as a hosted endpoint with a per-request fee)."""

    input: float
    output: float
    request: float = 0.0

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0 or self.request < 0:
            raise ConfigurationError(f"a price cannot be negative: {self}")

    def cost(self, usage: Usage) -> float:
        per_token = (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6
        return per_token + self.request


DEFAULT_PRICES: Mapping[str, Price] = {
    # The simulator's models, priced like the small / large tiers they stand for.
    "sim:small": Price(0.15, 0.60),
    "sim:medium": Price(0.80, 3.20),
    "sim:large": Price(2.50, 10.00),
    # Hosted models (list prices; override with your own).
    "openai:gpt-4o-mini": Price(0.15, 0.60),
    "openai:gpt-4o": Price(2.50, 10.00),
    "openai:gpt-4.1-mini": Price(0.40, 1.60),
    "openai:gpt-4.1": Price(2.00, 8.00),
    "anthropic:claude-3-5-haiku-latest": Price(0.80, 4.00),
    "anthropic:claude-sonnet-4-0": Price(3.00, 15.00),
}


class PriceTable:
    """Looks up the price of ``provider:model``; user overrides win over the defaults."""

    def __init__(
        self,
        overrides: Mapping[str, Price | Mapping[str, float]] | None = None,
        *,
        defaults: Mapping[str, Price] = DEFAULT_PRICES,
    ) -> None:
        self._prices: dict[str, Price] = dict(defaults)
        for name, price in (overrides or {}).items():
            self._prices[name] = _as_price(name, price)

    def price(self, model: str) -> Price | None:
        return self._prices.get(model)

    def cost(self, model: str, usage: Usage) -> float | None:
        price = self._prices.get(model)
        return None if price is None else price.cost(usage)

    def with_overrides(self, overrides: Mapping[str, Price | Mapping[str, float]]) -> PriceTable:
        return PriceTable(overrides, defaults=self._prices)


def _as_price(name: str, price: Price | Mapping[str, float]) -> Price:
    if isinstance(price, Price):
        return price
    try:
        if set(price) == {"request"}:
            return Price(0.0, 0.0, float(price["request"]))
        return Price(
            float(price["input"]), float(price["output"]), float(price.get("request", 0.0))
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"price for {name!r} must give 'input' and 'output' USD per million tokens "
            f"(and optionally 'request' USD per request), got {price!r}"
        ) from exc
