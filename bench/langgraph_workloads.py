"""The same workloads on LangGraph, for a side-by-side comparison (optional dependency).

- chain: a ``StateGraph`` over ``{"x": int}`` with ``n`` sync nodes in a line, each
  ``{"x": state["x"] + 1}``; ``graph.invoke`` with ``recursion_limit`` raised above ``n``.
- fan-out: ``produce`` writes ``items = list(range(n))``; a conditional edge ``Send``\\ s
  every item to an async ``work`` node that sleeps 50 ms and appends its item to a
  reducer list; ``graph.ainvoke``.
- limited: the fan-out with ``{"max_concurrency": 50}`` in the run config.
"""

from __future__ import annotations

import asyncio
import operator
import time
from importlib import metadata
from typing import Annotated, Any, TypedDict

from common import Runner
from workloads import CALL_S


def version() -> str | None:
    """LangGraph's version when it is importable, else ``None``."""
    try:
        import langgraph.graph  # noqa: F401
    except Exception:
        return None
    try:
        return metadata.version("langgraph")
    except metadata.PackageNotFoundError:
        return "unknown"


class CounterState(TypedDict):
    x: int


class FanoutState(TypedDict):
    n: int
    items: list[int]
    results: Annotated[list[int], operator.add]


class WorkState(TypedDict):
    item: int


NodeFn = Any  # a LangGraph node: state dict -> partial update dict


def _increment_node() -> NodeFn:
    def node(state: CounterState) -> dict[str, int]:
        return {"x": state["x"] + 1}

    return node


def chain_nodes(n: int) -> list[NodeFn]:
    """``n`` distinct node functions (a fresh closure each, as the Trellis chain has)."""
    return [_increment_node() for _ in range(n)]


def chain_graph(nodes: list[NodeFn]) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(CounterState)
    previous = START
    for i, node in enumerate(nodes):
        name = f"n{i}"
        graph.add_node(name, node)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile()


def chain_runner(graph: Any, n: int) -> Runner:
    config = {"recursion_limit": n + 100}

    async def run() -> float:
        t0 = time.perf_counter()
        out = graph.invoke({"x": 0}, config)
        elapsed = time.perf_counter() - t0
        if out["x"] != n:
            raise RuntimeError(f"LangGraph chain gave {out['x']}, expected {n}")
        return elapsed

    return run


def direct_chain_runner(nodes: list[NodeFn]) -> Runner:
    """Baseline: the same node functions applied directly in a loop."""
    n = len(nodes)

    async def run() -> float:
        t0 = time.perf_counter()
        state: dict[str, int] = {"x": 0}
        for node in nodes:
            state = {**state, **node(state)}
        elapsed = time.perf_counter() - t0
        if state["x"] != n:
            raise RuntimeError("direct LangGraph-node chain gave the wrong value")
        return elapsed

    return run


def fanout_graph() -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    def produce(state: FanoutState) -> dict[str, list[int]]:
        return {"items": list(range(state["n"]))}

    async def work(state: WorkState) -> dict[str, list[int]]:
        await asyncio.sleep(CALL_S)
        return {"results": [state["item"]]}

    def fan_out(state: FanoutState) -> list[Any]:  # list[Send]; LangGraph evaluates hints
        return [Send("work", {"item": i}) for i in state["items"]]

    graph = StateGraph(FanoutState)
    graph.add_node("produce", produce)
    graph.add_node("work", work)
    graph.add_edge(START, "produce")
    graph.add_conditional_edges("produce", fan_out, ["work"])
    graph.add_edge("work", END)
    return graph.compile()


def fanout_runner(
    graph: Any, n: int, *, max_concurrency: int | None = None, limit_s: float | None = None
) -> Runner:
    """One ``ainvoke``; with ``limit_s`` a run longer than that raises ``TimeoutError``."""
    config: dict[str, Any] = {"recursion_limit": 100}
    if max_concurrency is not None:
        config["max_concurrency"] = max_concurrency

    async def run() -> float:
        t0 = time.perf_counter()
        async with asyncio.timeout(limit_s):
            out = await graph.ainvoke({"n": n, "items": [], "results": []}, config)
        elapsed = time.perf_counter() - t0
        if len(out["results"]) != n:
            raise RuntimeError(f"LangGraph fan-out gave {len(out['results'])} results, not {n}")
        return elapsed

    return run
