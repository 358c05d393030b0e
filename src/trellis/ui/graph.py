"""The flow's graph of one run, drawn as SVG: steps in layers by depth, each coloured by
its status, the edges the run took drawn solid, skipped steps with the decision that
skipped them (in the node's tooltip and under its name)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["STATUS_COLOURS", "GraphNode", "layers", "render_svg"]

#: Fill and text colour of a step's node per status (the same in the page's legend).
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "done": ("#dcfce7", "#166534"),
    "failed": ("#fee2e2", "#991b1b"),
    "waiting": ("#fef3c7", "#92400e"),
    "running": ("#dbeafe", "#1e40af"),
    "skipped": ("#f3f4f6", "#6b7280"),
    "cancelled": ("#f3f4f6", "#6b7280"),
    "pending": ("#ffffff", "#9ca3af"),
}
_BORDERS = {
    "done": "#16a34a",
    "failed": "#dc2626",
    "waiting": "#d97706",
    "running": "#2563eb",
    "skipped": "#d1d5db",
    "cancelled": "#9ca3af",
    "pending": "#d1d5db",
}

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 168, 44, 28, 40, 16
BEND_ROOM = 110  # beside the nodes: edges that skip rows bend round them
MAX_PER_ROW = 6  # a wide fan-out wraps onto more rows


@dataclass(frozen=True, slots=True)
class GraphNode:
    name: str
    status: str
    note: str = ""  # the skip decision, the failure: one line under the name


def layers(order: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Steps in rows by depth (the longest path from a source); without recorded edges,
    one step a row in execution order."""
    if not edges:
        return [[name] for name in order]
    depth: dict[str, int] = {}
    for name in order:  # order is topological: upstream steps come first
        ups = [depth[u] for u in edges.get(name, ()) if u in depth]
        depth[name] = 1 + max(ups) if ups else 0
    rows: list[list[str]] = []
    for name in order:
        while len(rows) <= depth[name]:
            rows.append([])
        rows[depth[name]].append(name)
    wrapped: list[list[str]] = []
    for row in rows:
        wrapped.extend(row[i : i + MAX_PER_ROW] for i in range(0, len(row), MAX_PER_ROW))
    return wrapped


def _label(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(
    nodes: Sequence[GraphNode], edges: Mapping[str, Sequence[str]], link: str = "#step-"
) -> str:
    """The graph as one ``<svg>`` element; each node links to ``link + name``."""
    by_name = {n.name: n for n in nodes}
    order = [n.name for n in nodes]
    rows = layers(order, edges)
    width_cols = max((len(r) for r in rows), default=1)
    width = PAD * 2 + width_cols * NODE_W + (width_cols - 1) * GAP_X + 2 * BEND_ROOM
    height = PAD * 2 + len(rows) * NODE_H + max(0, len(rows) - 1) * GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    for r, row in enumerate(rows):
        row_w = len(row) * NODE_W + (len(row) - 1) * GAP_X
        x0 = (width - row_w) / 2
        for c, name in enumerate(row):
            pos[name] = (x0 + c * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="the flow\'s steps">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="context-stroke"/></marker></defs>',
    ]
    chain = not edges
    links = (
        [(order[i], order[i + 1]) for i in range(len(order) - 1)]
        if chain
        else [(u, name) for name in order for u in edges.get(name, ()) if u in pos]
    )
    for up, down in links:
        x1, y1 = pos[up]
        x2, y2 = pos[down]
        sx, sy = x1 + NODE_W / 2, y1 + NODE_H
        ex, ey = x2 + NODE_W / 2, y2
        skips_rows = ey - sy > GAP_Y + 1 and abs(sx - ex) < NODE_W
        if ey <= sy or skips_rows:
            # Same row (a wrapped fan-out) or past the rows between: go round their right
            # side, further out the more rows it skips, so it never hides behind a node.
            bend = NODE_W / 2 + 18 + 10 * min(6, (ey - sy) // (NODE_H + GAP_Y))
            sx, sy = x1 + NODE_W, y1 + NODE_H / 2
            ex, ey = x2 + NODE_W, y2 + NODE_H / 2
            path = (
                f"M{sx:.1f},{sy:.1f} C{sx + bend:.1f},{sy:.1f} {ex + bend:.1f},{ey:.1f} "
                f"{ex + 2:.1f},{ey:.1f}"
            )
        else:
            mid = (sy + ey) / 2
            path = (
                f"M{sx:.1f},{sy:.1f} C{sx:.1f},{mid:.1f} {ex:.1f},{mid:.1f} {ex:.1f},{ey - 2:.1f}"
            )
        taken = by_name[up].status == "done" and by_name[down].status in (
            "done",
            "failed",
            "waiting",
            "running",
        )
        cls = "edge taken" if taken else "edge"
        parts.append(f'<path class="{cls}" d="{path}" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = pos[node.name]
        fill, ink = STATUS_COLOURS.get(node.status, STATUS_COLOURS["pending"])
        border = _BORDERS.get(node.status, "#d1d5db")
        dash = ' stroke-dasharray="4 3"' if node.status in ("skipped", "pending") else ""
        title = escape(f"{node.name}: {node.status}" + (f" — {node.note}" if node.note else ""))
        name_y = y + (17 if node.note else 27)
        parts.append(
            f'<a href="{escape(link + node.name)}" class="node {escape(node.status)}">'
            f"<title>{title}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8" '
            f'fill="{fill}" stroke="{border}" stroke-width="1.5"{dash}/>'
            f'<text x="{x + NODE_W / 2:.1f}" y="{name_y:.1f}" fill="{ink}" '
            f'text-anchor="middle" class="name">{escape(_label(node.name, 22))}</text>'
        )
        if node.note:
            parts.append(
                f'<text x="{x + NODE_W / 2:.1f}" y="{y + 33:.1f}" fill="{ink}" '
                f'text-anchor="middle" class="note">{escape(_label(node.note, 30))}</text>'
            )
        parts.append("</a>")
    parts.append("</svg>")
    return "".join(parts)
