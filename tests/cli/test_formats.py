"""The one cost formatter: an unknown cost reads the same everywhere, never ``≥ $0``."""

from __future__ import annotations

import pytest

from trellis.cli.formats import fmt_cost, fmt_seconds, fmt_usd


@pytest.mark.parametrize(
    ("usd", "unpriced", "text"),
    [
        (0.0, 0, "$0"),
        (0.00012, 0, "$0.000120"),
        (1.23456, 0, "$1.2346"),
        (0.0, 3, "unknown (3 calls unpriced)"),
        (0.00072, 2, "≥ $0.000720 (2 calls unpriced)"),
        (0.0, 1, "unknown (1 call unpriced)"),
        (None, 0, "unknown"),
        (None, 4, "unknown (4 calls unpriced)"),
    ],
)
def test_fmt_cost(usd: float | None, unpriced: int, text: str) -> None:
    assert fmt_cost(usd, unpriced) == text
    assert "≥ $0 " not in fmt_cost(usd, unpriced) + " "


def test_fmt_usd_and_seconds() -> None:
    assert (fmt_usd(0), fmt_usd(0.5), fmt_usd(12345.678)) == ("$0", "$0.5000", "$12,345.6780")
    assert (fmt_seconds(0.4567), fmt_seconds(2.345), fmt_seconds(187.5)) == (
        "457ms",
        "2.35s",
        "3m07.5s",
    )
