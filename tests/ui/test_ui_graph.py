"""The run graph's layout and SVG."""

from __future__ import annotations

import re

from trellis.ui.graph import MAX_PER_ROW, GraphNode, layers, render_svg


def test_steps_are_layered_by_depth() -> None:
    edges = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert layers(["a", "b", "c", "d"], edges) == [["a"], ["b", "c"], ["d"]]


def test_without_edges_the_steps_form_a_chain_in_order() -> None:
    assert layers(["x", "y"], {}) == [["x"], ["y"]]
    svg = render_svg([GraphNode("x", "done"), GraphNode("y", "pending")], {})
    assert svg.count("<path class=") == 1


def test_a_wide_fan_out_wraps_onto_more_rows() -> None:
    names = ["src", *[f"m{i}" for i in range(MAX_PER_ROW + 2)]]
    edges = {"src": [], **{n: ["src"] for n in names[1:]}}
    rows = layers(names, edges)
    assert [len(r) for r in rows] == [1, MAX_PER_ROW, 2]


def test_an_edge_past_a_row_bends_round_the_nodes_between() -> None:
    nodes = [GraphNode(n, "done") for n in ("a", "b", "c")]
    svg = render_svg(nodes, {"a": [], "b": ["a"], "c": ["a", "b"]})
    paths = re.findall(r'd="M([\d.]+),([\d.]+) C([\d.]+)', svg)
    a_to_c = [p for p in paths if float(p[2]) > float(p[0]) + 1]  # control point to the right
    assert len(a_to_c) == 1


def test_names_and_notes_are_escaped() -> None:
    svg = render_svg([GraphNode("<b>", "skipped", note="x < 1 & y")], {})
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "x &lt; 1 &amp; y" in svg
