"""The same workloads on LangGraph, for a side-by-side comparison (optional dependency).

- chain: a ``StateGraph`` over ``{"x": int}`` with ``n`` sync nodes in a line, each
  ``{"x": state["x"] + 1}``; ``graph.invoke`` with ``recursion_limit`` raised above ``n``.
- fan-out: ``produce`` writes ``items = list(range(n))``; a conditional edge ``Send``\\ s
  every item to an async ``work`` node that sleeps 50 ms and appends its item to a
  reducer list; ``graph.ainvoke``.
- limited: the fan-out with ``{"max_concurrency": 50}`` in the run config.
- durable chain (``durable_workloads.LangGraphDurableChain``): the chain with a
  ``SqliteSaver``, when ``langgraph-checkpoint-sqlite`` imports.

:func:`langgraph_figures` is the side run of ``bench/run.py``: each workload runs
LangGraph, Trellis and the baseline interleaved in one loop, and a failure is recorded
in its figures (``error``), never raised.
"""

from __future__ import annotations

import asyncio
import operator
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from importlib import metadata
from typing import Annotated, Any, TypedDict

import durable_workloads as dwl
import workloads as wl
from common import US, Runner, interleave, median, unit_figure
from durable_workloads import BYTES_GOAL, DURABLE_GOAL
from trellis_workloads import (
    CHAIN_GOAL,
    FANOUT_GOAL,
    FANOUTS,
    gather_figure,
    ideal_limited_s,
    limited_figure,
)
from workloads import CALL_S

import trellis as tl


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


# -- the side-by-side run ---------------------------------------------------------------------

Figures = dict[str, dict[str, Any]]
DURABLE_FIGURES = ("durable_chain_overhead_us_per_step", "checkpoint_bytes_per_step")


async def _guarded(
    names: Sequence[str], results: Figures, work: Callable[[], Awaitable[Figures]]
) -> None:
    """A LangGraph failure is recorded (as ``error`` in each of ``names``), never raised:
    the Trellis figures stand alone."""
    try:
        results.update(await work())
    except Exception as exc:
        for name in names:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        traceback.print_exc(file=sys.stderr)


def _versus(trellis: float, langgraph: float) -> dict[str, Any]:
    """The Trellis figure from the same measurement, and Trellis over LangGraph."""
    return {"trellis": trellis, "ratio_trellis_over_langgraph": trellis / langgraph}


async def chain_figures(sizes: Any, say: Callable[[str], None]) -> Figures:
    n = sizes.chain
    say(f"LangGraph chain of {n}")
    nodes = chain_nodes(n)
    graph = chain_graph(nodes)
    functions = wl.chain_functions(n, is_async=False)
    async with tl.Engine() as engine:
        s = await interleave(
            sizes.reps,
            {
                "direct": direct_chain_runner(nodes),
                "trellis": wl.trellis_chain_runner(engine, wl.chain_flow(functions), n),
                "langgraph": chain_runner(graph, n),
            },
        )
    lg, tr = (median(s[k]) / n * US for k in ("langgraph", "trellis"))
    return {
        "chain_overhead_us_per_step": unit_figure(
            s,
            "langgraph",
            "direct",
            unit="us/step",
            per=n,
            scale=US,
            baseline_what="the same node functions applied directly in a loop",
            goal=CHAIN_GOAL,
            reps=sizes.reps,
            n=n,
            **_versus(tr, lg),
            samples_s=dict(s),
        )
    }


async def fanout_figures(sizes: Any, name: str, n: int, say: Callable[[str], None]) -> Figures:
    note = None
    graph = fanout_graph()
    say(f"LangGraph fan-out of {n}")
    try:  # the LangGraph warm-up doubles as a practicality probe
        await fanout_runner(graph, n, limit_s=sizes.langgraph_limit_s)()
    except TimeoutError:
        smaller = max(1, n // 10)
        note = (
            f"LangGraph fan-out of {n} took over {sizes.langgraph_limit_s:g} s; "
            f"measured at n={smaller} instead"
        )
        say(note)
        n = smaller
        await fanout_runner(graph, n)()
    async with tl.Engine() as engine:
        trellis = wl.trellis_fanout_runner(engine, wl.fanout_flow(), n)
        baseline = wl.asyncio_gather_runner(n)
        await trellis()
        await baseline()
        s = await interleave(
            sizes.reps,
            {"asyncio": baseline, "trellis": trellis, "langgraph": fanout_runner(graph, n)},
            warmup=0,
        )
    lg, tr = (median(s[k]) / median(s["asyncio"]) for k in ("langgraph", "trellis"))
    return {
        name: gather_figure(
            s,
            "langgraph",
            n,
            sizes.reps,
            FANOUT_GOAL,
            trellis_makespan_s=median(s["trellis"]),
            **_versus(tr, lg),
            samples_s=dict(s),
            **({"note": note} if note else {}),
        )
    }


async def limited_figures(sizes: Any, say: Callable[[str], None]) -> Figures:
    n, limit = sizes.limited, sizes.limit
    say(f"LangGraph limited: {n} calls, max_concurrency={limit}")
    graph = fanout_graph()
    async with tl.Engine() as engine:
        s = await interleave(
            sizes.reps,
            {
                "trellis": wl.trellis_fanout_runner(engine, wl.fanout_flow(concurrency=limit), n),
                "langgraph": fanout_runner(
                    graph, n, max_concurrency=limit, limit_s=sizes.langgraph_limit_s
                ),
            },
        )
    ideal = ideal_limited_s(n, limit)
    lg, tr = (median(s[k]) / ideal for k in ("langgraph", "trellis"))
    return {
        "limited_ratio_vs_ideal": limited_figure(
            s, "langgraph", n, limit, sizes.reps, **_versus(tr, lg), samples_s=dict(s)
        )
    }


async def durable_figures(sizes: Any, say: Callable[[str], None]) -> Figures:
    n, reps = sizes.durable, sizes.reps
    say(f"LangGraph SqliteSaver chain of {n}")
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        work = dwl.WorkDir(tmp)
        functions = wl.chain_functions(n, is_async=False)
        trellis = dwl.TrellisDurableChain(work, wl.chain_flow(functions), n)
        plain = dwl.PlainSQLiteChain(work, functions)
        langgraph = dwl.LangGraphDurableChain(work, chain_nodes(n))
        s = await interleave(reps, {"sqlite": plain, "trellis": trellis, "langgraph": langgraph})
    lg, tr = (median(s[k]) / n * US for k in ("langgraph", "trellis"))
    mode: dict[str, Any] = {
        "durability": langgraph.durability,
        "synchronous": "NORMAL",
        **({"note": langgraph.note} if langgraph.note else {}),
    }
    space = {
        "langgraph": dwl.last(langgraph.bytes_per_step, reps),
        "trellis": dwl.last(trellis.bytes_per_step, reps),
        "sqlite": dwl.last(plain.bytes_per_step, reps),
    }
    lgb, trb = median(space["langgraph"]), median(space["trellis"])
    return {
        "durable_chain_overhead_us_per_step": unit_figure(
            s,
            "langgraph",
            "sqlite",
            unit="us/step",
            per=n,
            scale=US,
            baseline_what="plain sqlite3 INSERT + commit per step",
            goal=DURABLE_GOAL,
            reps=reps,
            n=n,
            **_versus(tr, lg),
            samples_s=dict(s),
            **mode,
        ),
        "checkpoint_bytes_per_step": unit_figure(
            space,
            "langgraph",
            "sqlite",
            unit="B/step",
            baseline_what="the plain sqlite3 table per row",
            goal=BYTES_GOAL,
            reps=reps,
            n=n,
            **_versus(trb, lgb),
            stored_bytes_per_step=median(dwl.last(langgraph.row_bytes_per_step, reps)),
            trellis_avg_row_bytes=median(dwl.last(trellis.row_bytes_per_step, reps)),
            **mode,
        ),
    }


async def langgraph_figures(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``langgraph`` section of ``bench/results.json``."""
    found = version()
    if found is None:
        return {"available": False, "reason": "langgraph is not importable"}
    figures: Figures = {}
    out: dict[str, Any] = {
        "available": True,
        "version": found,
        "note": (
            "each workload runs Trellis, LangGraph and the baseline interleaved in one "
            "loop; 'trellis' is the Trellis figure from that same measurement"
        ),
        "figures": figures,
    }
    await _guarded(["chain_overhead_us_per_step"], figures, partial(chain_figures, sizes, say))
    for fanout in FANOUTS:
        name = f"fanout_{fanout.key}_ratio_vs_asyncio"
        work = partial(fanout_figures, sizes, name, fanout.size(sizes), say)
        await _guarded([name], figures, work)
    await _guarded(["limited_ratio_vs_ideal"], figures, partial(limited_figures, sizes, say))
    checkpointer = dwl.langgraph_checkpointer_version()
    out["checkpointer"] = checkpointer
    if checkpointer is None:
        out["checkpointer_note"] = (
            "langgraph-checkpoint-sqlite is not installed: no durable-run comparison"
        )
    else:
        await _guarded(DURABLE_FIGURES, figures, partial(durable_figures, sizes, say))
    return out
