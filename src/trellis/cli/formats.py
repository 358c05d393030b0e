"""The CLI's formatters of money and durations: :mod:`trellis.formats` (the lowest layer,
so that the CLI, ``trellis.eval``, ``trellis.history`` views and the web UI all write a
cost the same way), re-exported here for the CLI's modules."""

from __future__ import annotations

from trellis.formats import fmt_cost, fmt_seconds, fmt_usd

__all__ = ["fmt_cost", "fmt_seconds", "fmt_usd"]
