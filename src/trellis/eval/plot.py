"""The cost-quality chart of an eval: cost on x, score on y, one point per variant or
setting, the reference marked. Needs matplotlib (``pip install 'trellis-flows[eval]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trellis.errors import ConfigurationError

__all__ = ["check_plot_path", "write_plot"]

_FORMATS = (".png", ".svg")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigurationError(
            "--plot needs matplotlib: install the 'eval' extra (pip install 'trellis-flows[eval]')"
        ) from exc
    return plt


def check_plot_path(path: Path) -> None:
    """Fail before anything runs: a format we cannot write, or matplotlib missing."""
    if path.suffix.lower() not in _FORMATS:
        raise ConfigurationError(f"--plot {path}: the chart is written as .png or .svg")
    _pyplot()


def write_plot(report: Mapping[str, Any], path: Path, *, title: str | None = None) -> None:
    """Draw ``report`` (the ``eval_report`` object) to ``path`` (.png or .svg)."""
    check_plot_path(path)
    plt = _pyplot()
    reference = report.get("reference")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    by_base: dict[str, list[tuple[float, float, str]]] = {}
    for name, v in report["variants"].items():
        cost = v.get("cost_usd")
        if cost is None:
            continue
        by_base.setdefault(v.get("variant", name), []).append((cost, v["score"], name))
    for base, points in by_base.items():
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        is_ref = any(p[2] == reference for p in points)
        ax.plot(
            xs,
            ys,
            marker="*" if is_ref else "o",
            markersize=14 if is_ref else 6,
            linestyle="-" if len(points) > 1 else "none",
            label=f"{base} (reference)" if is_ref else base,
        )
        if len(points) > 1:
            for x, y, name in (points[0], points[-1]):
                ax.annotate(
                    name.partition("@")[2],
                    (x, y),
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
    ax.set_xlabel("total cost (USD)")
    ax.set_ylabel(f"mean score ({report.get('scorer', '')})")
    ax.set_title(title or f"{report.get('flow', '')}: cost vs quality, {report['items']} items")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
