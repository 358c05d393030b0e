"""The ``trellis`` group of ``bench/run.py``: the engine's own cost against plain Python.

- the chains (:data:`CHAINS`): ``n`` trivial steps by ``engine.run`` on a reused engine
  against the same functions called (awaited) directly in a loop, in µs per step;
- the fan-outs (:data:`FANOUTS`): a mapped step of ``n`` 50 ms sleeps against
  ``asyncio.gather`` of the same sleeps, as a ratio and in µs per branch, and how the
  per-branch cost grows from the small width to the large one;
- the limited fan-out: ``concurrency=limit`` against the ideal makespan (an
  ``asyncio.Semaphore`` reference recorded with it);
- the fan-out of simulated LLM calls (``sim:``) against ``asyncio.gather`` of sleeps.

The runners are in ``bench/workloads.py``; every figure interleaves its repetitions with
its baseline's (:func:`common.interleave`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import workloads as wl
from common import US, Goal, Runner, figure, interleave, median, ratio_figure, unit_figure

import trellis as tl

CHAIN_GOAL = Goal("<=", 25.0)
FANOUT_GOAL = Goal("<=", 1.5)
LIMITED_GOAL = Goal("<=", 1.05)


@dataclass(frozen=True, slots=True)
class Chain:
    """One chain figure: its steps sync or async, and the loop that calls them directly."""

    name: str
    label: str
    is_async: bool
    direct: Callable[[list[Any]], Runner]
    baseline_what: str
    goal: Goal | None


CHAINS = (
    Chain(
        "chain_overhead_us_per_step",
        "sync steps",
        False,
        wl.direct_chain_runner,
        "the same functions called directly in a loop",
        CHAIN_GOAL,
    ),
    Chain(
        "chain_overhead_us_per_step_async",
        "async steps",
        True,
        wl.direct_async_chain_runner,
        "the same coroutine functions awaited directly in a loop",
        None,
    ),
)


@dataclass(frozen=True, slots=True)
class Fanout:
    """One fan-out width: ``key`` is its full size (in the figure names), ``size`` reads
    the width actually run from the sizes."""

    key: str
    size: Callable[[Any], int]


#: Small first: ``fanout_branch_cost_growth`` is the last one's cost over the first one's.
FANOUTS = (Fanout("1000", attrgetter("fanout_small")), Fanout("10000", attrgetter("fanout_large")))


def gather_figure(
    samples: dict[str, list[float]],
    subject: str,
    n: int,
    reps: int,
    goal: Goal | None,
    **extra: Any,
) -> dict[str, Any]:
    """The makespan of ``samples[subject]`` over ``asyncio.gather`` of ``n`` 50 ms sleeps
    (``samples["asyncio"]``): the fan-outs (Trellis here, LangGraph too), the sim fan-out."""
    return ratio_figure(
        samples,
        subject,
        "asyncio",
        baseline_what=f"asyncio.gather of {n} sleep(0.05)",
        goal=goal,
        reps=reps,
        n=n,
        makespan_s=median(samples[subject]),
        **extra,
    )


def ideal_limited_s(n: int, limit: int) -> float:
    """The makespan of ``n`` 50 ms calls ``limit`` at a time, with no overhead at all."""
    return n / limit * wl.CALL_S


def limited_figure(
    samples: dict[str, list[float]], subject: str, n: int, limit: int, reps: int, **extra: Any
) -> dict[str, Any]:
    """``limited_ratio_vs_ideal`` of ``samples[subject]`` (Trellis here, LangGraph too)."""
    ideal = ideal_limited_s(n, limit)
    return figure(
        value=median(samples[subject]) / ideal,
        unit="x",
        baseline=ideal,
        baseline_unit="s",
        baseline_what=f"ideal makespan {n}/{limit} x 50 ms",
        goal=LIMITED_GOAL,
        reps=reps,
        n=n,
        concurrency=limit,
        makespan_s=median(samples[subject]),
        **extra,
    )


async def chain_figure(
    engine: tl.Engine, chain: Chain, sizes: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    say(f"chain ({chain.label})")
    n, reps = sizes.chain, sizes.chain_reps
    functions = wl.chain_functions(n, is_async=chain.is_async)
    flow = wl.chain_flow(functions)
    s = await interleave(
        reps,
        {"direct": chain.direct(functions), "trellis": wl.trellis_chain_runner(engine, flow, n)},
    )
    return unit_figure(
        s,
        "trellis",
        "direct",
        unit="us/step",
        per=n,
        scale=US,
        baseline_what=chain.baseline_what,
        goal=chain.goal,
        reps=reps,
        n=n,
        run_ms=median(s["trellis"]) * 1e3,
    )


async def fanout_figures(
    engine: tl.Engine, sizes: Any, say: Callable[[str], None]
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    flow = wl.fanout_flow()
    per_branch: list[tuple[float, float]] = []
    for fanout in FANOUTS:
        n = fanout.size(sizes)
        say(f"fan-out of {n}")
        s = await interleave(
            sizes.reps,
            {
                "asyncio": wl.asyncio_gather_runner(n),
                "trellis": wl.trellis_fanout_runner(engine, flow, n),
            },
        )
        t, b = median(s["trellis"]), median(s["asyncio"])
        figures[f"fanout_{fanout.key}_ratio_vs_asyncio"] = gather_figure(
            s, "trellis", n, sizes.reps, FANOUT_GOAL
        )
        t_branch, b_branch = ((x - wl.CALL_S) / n * US for x in (t, b))
        per_branch.append((t_branch, b_branch))
        figures[f"fanout_{fanout.key}_us_per_branch"] = figure(
            value=t_branch,
            unit="us/branch",
            baseline=b_branch,
            baseline_unit="us/branch",
            baseline_what="asyncio.gather: (makespan - 50 ms) / n",
            goal=None,
            reps=sizes.reps,
            n=n,
            overhead_vs_asyncio_us_per_branch=(t - b) / n * US,
        )
    (t1, b1), (t2, b2) = per_branch[0], per_branch[-1]
    small, large = FANOUTS[0].size(sizes), FANOUTS[-1].size(sizes)
    figures["fanout_branch_cost_growth"] = figure(
        value=t2 / t1,
        unit="x",
        baseline=b2 / b1,
        baseline_unit="x",
        baseline_what="the same growth for asyncio.gather",
        goal=None,
        reps=sizes.reps,
        n=large,
        note=(
            f"us/branch at n={large} divided by us/branch at "
            f"n={small}; ~1 means per-branch cost does not grow with width"
        ),
    )
    return figures


async def limited(engine: tl.Engine, sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    n, limit = sizes.limited, sizes.limit
    say(f"limited: {n} calls, concurrency={limit}")
    s = await interleave(
        sizes.reps,
        {
            "asyncio": wl.asyncio_semaphore_runner(n, limit),
            "trellis": wl.trellis_fanout_runner(engine, wl.fanout_flow(concurrency=limit), n),
        },
    )
    b = median(s["asyncio"])
    return limited_figure(
        s,
        "trellis",
        n,
        limit,
        sizes.reps,
        asyncio_semaphore_s=b,
        asyncio_semaphore_ratio_vs_ideal=b / ideal_limited_s(n, limit),
    )


async def sim_fanout(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    n = sizes.sim
    say(f"fan-out of {n} simulator calls")
    async with tl.Engine(models={"small": wl.SIM_BINDING}) as engine:
        s = await interleave(
            sizes.reps,
            {
                "asyncio": wl.asyncio_gather_runner(n),
                "trellis": wl.trellis_sim_fanout_runner(engine, wl.sim_fanout_flow(), n),
            },
        )
    t, b = median(s["trellis"]), median(s["asyncio"])
    return gather_figure(
        s,
        "trellis",
        n,
        sizes.reps,
        None,
        model=wl.SIM_BINDING,
        overhead_vs_asyncio_us_per_call=(t - b) / n * US,
    )


async def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The chains, fan-outs and limited run on one reused engine, then the sim fan-out."""
    figures: dict[str, Any] = {}
    async with tl.Engine() as engine:
        for chain in CHAINS:
            figures[chain.name] = await chain_figure(engine, chain, sizes, say)
        figures.update(await fanout_figures(engine, sizes, say))
        figures["limited_ratio_vs_ideal"] = await limited(engine, sizes, say)
    figures["sim_fanout_1000_ratio_vs_asyncio"] = await sim_fanout(sizes, say)
    return figures
