"""Property tests: random DAGs run every step once, after its dependencies, with the values a
plain sequential evaluation gives; maps keep input order; ``compatible()`` laws."""

from __future__ import annotations

import asyncio
import enum
import inspect
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import trellis as tl
from trellis.flow.types import compatible

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- random DAGs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPlan:
    deps: tuple[int, ...]  # indices of earlier steps
    reads_input: bool
    is_async: bool
    yields: int  # how many times an async step yields to the loop before returning


@st.composite
def dags(draw: st.DrawFn) -> list[StepPlan]:
    n = draw(st.integers(min_value=1, max_value=12))
    plans: list[StepPlan] = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4))) if i else set()
        plans.append(
            StepPlan(
                deps=tuple(sorted(deps)),
                reads_input=draw(st.booleans()),
                is_async=draw(st.booleans()),
                yields=draw(st.integers(0, 3)),
            )
        )
    return plans


def step_value(i: int, x: int, dep_values: Sequence[int], reads_input: bool) -> int:
    return (
        (i + 1) * 7 + sum((k + 2) * v for k, v in enumerate(dep_values)) + (x if reads_input else 0)
    )


def reference(plans: list[StepPlan], x: int) -> dict[str, int]:
    values: list[int] = []
    for i, plan in enumerate(plans):
        values.append(step_value(i, x, [values[d] for d in plan.deps], plan.reads_input))
    return {f"s{i}": v for i, v in enumerate(values)}


def build_flow(plans: list[StepPlan], log: list[tuple[str, str]]) -> tl.Flow:
    flow = tl.Flow("dag", inputs={"x": int})
    for i, plan in enumerate(plans):
        name = f"s{i}"
        params = [f"s{d}" for d in plan.deps] + (["x"] if plan.reads_input else [])

        def compute(kw: dict[str, Any], i: int = i, plan: StepPlan = plan) -> int:
            assert set(kw) == {f"s{d}" for d in plan.deps} | ({"x"} if plan.reads_input else set())
            return step_value(i, kw.get("x", 0), [kw[f"s{d}"] for d in plan.deps], plan.reads_input)

        fn: Any
        if plan.is_async:

            async def fn(
                name: str = name, plan: StepPlan = plan, compute: Any = compute, **kw: Any
            ) -> int:
                log.append(("start", name))
                for _ in range(plan.yields):
                    await asyncio.sleep(0)
                value = compute(kw)
                log.append(("end", name))
                return value

        else:

            def fn(name: str = name, compute: Any = compute, **kw: Any) -> int:
                log.append(("start", name))
                value = compute(kw)
                log.append(("end", name))
                return value

        # What the engine sees: exactly the data parameters, all ints.
        fn.__signature__ = inspect.Signature(
            [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=int) for p in params],
            return_annotation=int,
        )
        fn.__annotations__ = {**dict.fromkeys(params, int), "return": int}
        flow.step(name=name)(fn)
    return flow


@SETTINGS
@given(plans=dags(), x=st.integers(-100, 100))
def test_random_dags_run_each_step_once_after_its_deps(plans: list[StepPlan], x: int) -> None:
    log: list[tuple[str, str]] = []
    flow = build_flow(plans, log)
    result = asyncio.run(flow.run({"x": x}))

    assert result.ok, result.error
    assert result.outputs == reference(plans, x)

    starts = [name for kind, name in log if kind == "start"]
    assert sorted(starts) == sorted(f"s{i}" for i in range(len(plans))), "each step exactly once"
    position = {(kind, name): n for n, (kind, name) in enumerate(log)}
    for i, plan in enumerate(plans):
        for d in plan.deps:
            assert position[("end", f"s{d}")] < position[("start", f"s{i}")]
    for record in result.steps.values():
        assert record.status == "done"
        assert record.attempts == 1


@SETTINGS
@given(plans=dags(), x=st.integers(-5, 5), limit=st.integers(1, 3))
def test_random_dags_under_a_concurrency_limit(plans: list[StepPlan], x: int, limit: int) -> None:
    log: list[tuple[str, str]] = []
    flow = build_flow(plans, log)
    flow.concurrency = limit
    result = asyncio.run(flow.run({"x": x}))
    assert result.outputs == reference(plans, x)


@SETTINGS
@given(plans=dags(), failing=st.sets(st.integers(0, 11), max_size=3), x=st.integers(0, 3))
def test_failures_cancel_exactly_the_transitive_dependents(
    plans: list[StepPlan], failing: set[int], x: int
) -> None:
    log: list[tuple[str, str]] = []
    flow = tl.Flow("dag", inputs={"x": int})
    base = build_flow(plans, log)
    for i, spec in enumerate(base.steps.values()):
        if i in failing:
            original = spec.fn

            def broken(**kw: Any) -> Any:
                raise ValueError("planned failure")

            if spec.is_async:

                async def abroken(**kw: Any) -> Any:
                    await asyncio.sleep(0)
                    raise ValueError("planned failure")

                abroken.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
                abroken.__annotations__ = dict(original.__annotations__)
                flow.step(name=spec.name)(abroken)
                continue
            broken.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
            broken.__annotations__ = dict(original.__annotations__)
            flow.step(name=spec.name)(broken)
        else:
            flow.step(name=spec.name)(spec.fn)

    result = asyncio.run(flow.run({"x": x}))

    expected: list[str] = []
    for i, plan in enumerate(plans):
        if any(expected[d] != "done" for d in plan.deps):
            expected.append("cancelled")
        elif i in failing:
            expected.append("failed")
        else:
            expected.append("done")
    assert [result.steps[f"s{i}"].status for i in range(len(plans))] == expected
    assert result.ok == all(s == "done" for s in expected)
    values = reference(plans, x)
    for i, status in enumerate(expected):
        if status == "done":
            assert result[f"s{i}"] == values[f"s{i}"]


# -- maps -----------------------------------------------------------------------------------------


@SETTINGS
@given(
    items=st.lists(st.integers(-1000, 1000), max_size=25),
    delays=st.lists(st.integers(0, 6), min_size=25, max_size=25),
    limit=st.one_of(st.none(), st.integers(1, 4)),
)
def test_map_keeps_input_order(items: list[int], delays: list[int], limit: int | None) -> None:
    finished: list[int] = []
    flow = tl.Flow("map", inputs={"items": list[int]}, concurrency=limit)

    @flow.step
    def source(items: list[int]) -> list[int]:
        return list(items)

    @flow.step(map_over="source")
    async def each(source: int, ctx: tl.RunContext) -> tuple[int, int]:
        assert ctx.index is not None
        for _ in range(delays[ctx.index]):
            await asyncio.sleep(0)
        finished.append(ctx.index)
        return (ctx.index, source * 3)

    result = asyncio.run(flow.run({"items": items}))
    assert result["each"] == [(i, v * 3) for i, v in enumerate(items)]
    assert sorted(finished) == list(range(len(items)))
    assert result.steps["each"].elements == len(items)


@SETTINGS
@given(
    items=st.lists(st.integers(0, 50), max_size=20),
    bad=st.sets(st.integers(0, 19)),
)
def test_collected_failures_sit_at_their_indices(items: list[int], bad: set[int]) -> None:
    flow = tl.Flow("map", inputs={"items": list[int]})

    @flow.step
    def source(items: list[int]) -> list[int]:
        return list(items)

    @flow.step(map_over="source", on_error="collect")
    async def each(source: int, ctx: tl.RunContext) -> int:
        await asyncio.sleep(0)
        if ctx.index in bad:
            raise ValueError(f"bad {ctx.index}")
        return source + 1

    result = asyncio.run(flow.run({"items": items}))
    out = result["each"]
    assert len(out) == len(items)
    for i, value in enumerate(out):
        if i in bad:
            assert isinstance(value, tl.ElementFailure)
            assert value.index == i
            assert value.message == f"bad {i}"
        else:
            assert value == items[i] + 1
    assert result.steps["each"].element_failures == len([i for i in bad if i < len(items)])


# -- compatible() -------------------------------------------------------------------------------


class Sentiment(BaseModel):
    label: str


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Box:
    value: int


class Point(typing.NamedTuple):
    x: int
    y: int


BASE_TYPES: list[Any] = [
    int,
    str,
    float,
    bool,
    bytes,
    type(None),
    Sentiment,
    Color,
    Box,
    Point,
    Literal["a", "b"],
    Literal[1, 2],
    Any,
]


def _wrap(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        inner.map(lambda t: Optional[t]),  # noqa: UP045
        inner.map(lambda t: Sequence[t]),  # type: ignore[valid-type]
        st.tuples(inner, inner).map(lambda ts: tuple[ts[0], ts[1]]),  # type: ignore[valid-type]
    )


types = st.recursive(st.sampled_from(BASE_TYPES), _wrap, max_leaves=4)


@SETTINGS
@given(t=types)
def test_compatible_is_reflexive(t: Any) -> None:
    assert compatible(t, t)


@SETTINGS
@given(t=types)
def test_list_fits_sequence_and_iterable(t: Any) -> None:
    assert compatible(list[t], Sequence[t])  # type: ignore[valid-type]
    assert compatible(list[t], Iterable[t])  # type: ignore[valid-type]
    assert compatible(tuple[t, ...], Sequence[t])  # type: ignore[valid-type]


@SETTINGS
@given(t=types)
def test_anything_fits_optional_of_itself_and_any(t: Any) -> None:
    assert compatible(t, Optional[t])  # noqa: UP045
    assert compatible(t, Any)
    assert compatible(Any, t)
    assert compatible(t, object)


@SETTINGS
@given(t=types, u=types)
def test_containers_are_covariant_in_their_items(t: Any, u: Any) -> None:
    if compatible(t, u):
        assert compatible(list[t], list[u])  # type: ignore[valid-type]
        assert compatible(list[t], Sequence[u])  # type: ignore[valid-type]
        assert compatible(dict[str, t], dict[str, u])  # type: ignore[valid-type]


@SETTINGS
@given(t=types.filter(lambda t: t is not Any))
def test_a_list_is_never_a_scalar(t: Any) -> None:
    for scalar in (int, str, float, Sentiment):
        assert not compatible(list[t], scalar)  # type: ignore[valid-type]


@SETTINGS
@given(t=types, u=types)
def test_a_union_fits_when_all_members_fit(t: Any, u: Any) -> None:
    union = typing.Union[t, u]  # noqa: UP007
    assert compatible(t, union)
    assert compatible(u, union)
    assert compatible(union, typing.Union[u, t])  # noqa: UP007
