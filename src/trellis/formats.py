"""How Trellis writes money and durations for people: one formatter each, so that a cost
reads the same in every CLI table, tree and one-line outcome, eval report and web UI page.

A cost is *known* when every attempt's model had a price. Otherwise it reads
``unknown (N calls unpriced)`` when nothing priced was spent, and ``≥ $X (N calls
unpriced)`` when the priced attempts cost ``$X`` (a lower bound); where the number of
unpriced calls is not recorded, just ``unknown``. Never ``≥ $0``.
"""

from __future__ import annotations

__all__ = ["fmt_cost", "fmt_seconds", "fmt_usd"]


def fmt_usd(value: float) -> str:
    """A known amount of US dollars: ``$0``, ``$0.000120``, ``$1.2345``."""
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.6f}"
    return f"${value:,.4f}"


def fmt_cost(usd: float | None, unpriced: int = 0) -> str:
    """A cost that may be unknown: ``usd`` is what the priced attempts cost (``None``: not
    known at all), ``unpriced`` how many attempts had no price."""
    if usd is None:
        return "unknown" if not unpriced else f"unknown ({_unpriced(unpriced)})"
    if not unpriced:
        return fmt_usd(usd)
    if usd == 0:
        return f"unknown ({_unpriced(unpriced)})"
    return f"≥ {fmt_usd(usd)} ({_unpriced(unpriced)})"


def _unpriced(n: int) -> str:
    return f"{n} call{'s' if n != 1 else ''} unpriced"


def fmt_seconds(value: float) -> str:
    """A duration: ``450ms``, ``2.35s``, ``3m07.5s``."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{int(value // 60)}m{value % 60:04.1f}s"
