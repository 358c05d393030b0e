"""Flow definition: everything wrong with a flow is found when it is built, with a location."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Literal, Optional, TypedDict

import pytest
from pydantic import BaseModel

import trellis as tl


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


class Topics(BaseModel):
    topics: list[str]


class Route(enum.Enum):
    DIRECT = "direct"
    RESEARCH = "research"


class Point(TypedDict):
    x: int
    y: int


def definition_error(build: Callable[[], Any]) -> tl.FlowDefinitionError:
    """Run ``build`` (which defines and validates a flow) and return the error it raised."""
    with pytest.raises(tl.FlowDefinitionError) as info:
        build()
    return info.value


# -- names ------------------------------------------------------------------------------------


def test_unknown_input_names_step_param_and_suggests() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"feedback": str})

        @flow.step
        def sentiment(feedbak: str) -> str:
            return feedbak

        flow.validate()

    err = definition_error(build)
    assert err.step == "sentiment"
    assert err.param == "feedbak"
    assert "did you mean 'feedback'" in str(err)


def test_unknown_input_suggests_a_step_name_too() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"text": str})

        @flow.step
        def summary(text: str) -> str:
            return text

        @flow.step
        def report(summry: str) -> str:
            return summry

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("report", "summry")
    assert "did you mean 'summary'" in str(err)


def test_unknown_name_read_by_when_condition() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"text": str})

        @flow.step(when=lambda lenght: lenght > 3)
        def a(text: str) -> str:
            return text

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("a", "lenght")


def test_without_declared_inputs_unknown_names_are_inputs() -> None:
    flow = tl.Flow("f")

    @flow.step
    def a(anything: str) -> str:
        return anything

    flow.validate()
    assert set(flow.compile().inputs) == {"anything"}


def test_llm_param_without_annotation_gets_a_hint() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"text": str})

        @flow.step
        async def a(text: str, llm) -> str:  # type: ignore[no-untyped-def]
            return text

        flow.validate()

    err = definition_error(build)
    assert err.param == "llm"
    assert "tl.LLM" in str(err)


def test_self_read() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"x": int})

        @flow.step
        def refine(x: int, refine: int) -> int:
            return x

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("refine", "refine")
    assert "max_rounds" in str(err)


def test_cycle_message_shows_the_path() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"x": int})

        @flow.step
        def a(x: int, c: int) -> int:
            return x

        @flow.step
        def b(a: int) -> int:
            return a

        @flow.step
        def c(b: int) -> int:
            return b

        @flow.step
        def outside(x: int) -> int:
            return x

        flow.validate()

    err = definition_error(build)
    message = str(err)
    assert "cycle" in message
    path = message.split("cycle: ", 1)[1].split(";", 1)[0].split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"}
    assert len(path) == 4
    assert "outside" not in message
    assert err.step in {"a", "b", "c"}


def test_cycle_reachable_from_a_downstream_step_still_names_only_the_cycle() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def a_tail(p: int) -> int:  # reads the cycle, is not part of it
            return p

        @flow.step
        def p(q: int) -> int:
            return q

        @flow.step
        def q(p: int) -> int:
            return p

        flow.validate()

    message = str(definition_error(build))
    path = message.split("cycle: ", 1)[1].split(";", 1)[0].split(" -> ")
    assert set(path) == {"p", "q"}


def test_duplicate_step_name() -> None:
    flow = tl.Flow("f")

    @flow.step
    def a(x: int) -> int:
        return x

    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step(name="a")
        def other(x: int) -> int:
            return x

    assert info.value.step == "a"
    assert "already has a step named 'a'" in str(info.value)


def test_step_named_like_a_declared_input() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"text": str})

        @flow.step
        def text(x: int) -> str:
            return ""

        flow.validate()

    assert definition_error(build).step == "text"


def test_empty_flow_and_bad_options() -> None:
    with pytest.raises(tl.FlowDefinitionError):
        tl.Flow("empty").validate()
    with pytest.raises(tl.FlowDefinitionError):
        tl.Flow("")
    with pytest.raises(tl.FlowDefinitionError):
        tl.Flow("f", concurrency=0)


# -- types ------------------------------------------------------------------------------------


def _two_step_flow(produced: Any, expected: Any) -> tl.Flow:
    flow = tl.Flow("f")

    def source() -> Any:
        return None

    source.__annotations__ = {"return": produced}

    def reader(source: Any) -> None:
        return None

    reader.__annotations__ = {"source": expected, "return": None}
    flow.step(source)
    flow.step(reader)
    return flow


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (Sentiment, Topics),
        (list[str], list[int]),
        (str, int),
        (int, str),
        (float, int),
        (Optional[int], int),  # noqa: UP045 - the old spelling must be understood too
        (int | None, int),
        (Literal["a", "c"], Literal["a", "b"]),
        (Literal["a"], int),
        (dict[str, int], dict[str, str]),
        (list[Sentiment], list[Topics]),
        (tuple[int, str], tuple[int, ...]),
        (set[int], list[int]),
        (Route, Literal["direct"]),
    ],
    ids=repr,
)
def test_produced_type_that_cannot_satisfy_the_param(produced: Any, expected: Any) -> None:
    err = definition_error(lambda: _two_step_flow(produced, expected).validate())
    assert (err.step, err.param) == ("reader", "source")
    assert "expects" in str(err)


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (int, float),
        (bool, int),
        (Literal["a"], Literal["a", "b"]),
        (Literal["a", "b"], str),
        (Sentiment, Optional[Sentiment]),  # noqa: UP045
        (Sentiment, Sentiment | None),
        (list[int], list[float]),
        (list[str], Any),
        (Any, int),
        (list[Sentiment], list[Sentiment]),
        (dict[str, int], Mapping[str, int]),
        (Route, Route),
        (Route, Literal["direct", "research"]),
        (None, Optional[int]),  # noqa: UP045
    ],
    ids=repr,
)
def test_compatible_types_are_accepted(produced: Any, expected: Any) -> None:
    _two_step_flow(produced, expected).validate()


def test_typed_dict_passed_between_steps() -> None:
    _two_step_flow(Point, Point).validate()


def test_input_annotated_differently_by_two_steps() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def a(count: int) -> int:
            return count

        @flow.step
        def b(count: str) -> str:
            return count

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("b", "count")
    assert "int" in str(err)
    assert "str" in str(err)


def test_input_read_with_a_type_contradicting_its_declaration() -> None:
    def build() -> None:
        flow = tl.Flow("f", inputs={"count": int})

        @flow.step
        def a(count: list[str]) -> int:
            return 0

        flow.validate()

    assert (definition_error(build).step, definition_error(build).param) == ("a", "count")


def test_input_read_with_compatible_annotations() -> None:
    flow = tl.Flow("f", inputs={"count": int})

    @flow.step
    def a(count: int) -> int:
        return count

    @flow.step
    def b(count: float) -> float:
        return count

    flow.validate()


def test_unresolvable_forward_ref_annotation() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def a(x: NotDefinedAnywhere) -> int:  # type: ignore[name-defined]  # noqa: F821
            return 0

    err = definition_error(build)
    assert err.step == "a"
    assert "NotDefinedAnywhere" in str(err)


def test_unresolvable_annotation_names_the_param() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def a(y: int, x: NotDefinedAnywhere) -> int:  # type: ignore[name-defined]  # noqa: F821
            return 0

    err = definition_error(build)
    assert (err.step, err.param) == ("a", "x")


# -- map, loop, branch options -------------------------------------------------------------------


@pytest.mark.parametrize(
    "produced",
    [
        str,
        int,
        Sentiment,
        dict[str, int],
        Mapping[str, int],
        Callable[[int], int],
    ],
    ids=repr,
)
def test_map_over_a_non_list_producer(produced: Any) -> None:
    def build() -> None:
        flow = tl.Flow("f")

        def items() -> Any:
            return None

        items.__annotations__ = {"return": produced}
        flow.step(items)

        @flow.step(map_over="items")
        def each(items: Any) -> int:
            return 0

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("each", "items")
    assert "not a list" in str(err)


def test_map_over_checks_the_element_type() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def items() -> list[str]:
            return []

        @flow.step(map_over="items")
        def each(items: int) -> int:
            return items

        flow.validate()

    err = definition_error(build)
    assert (err.step, err.param) == ("each", "items")


def test_map_over_a_collected_map_needs_to_accept_failures() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def items() -> list[str]:
            return []

        @flow.step(map_over="items", on_error="collect")
        def first(items: str) -> str:
            return items

        @flow.step(map_over="first")
        def second(first: str) -> str:
            return first

        flow.validate()

    assert definition_error(build).step == "second"

    flow = tl.Flow("ok")

    @flow.step
    def items() -> list[str]:
        return []

    @flow.step(map_over="items", on_error="collect")
    def first(items: str) -> str:
        return items

    @flow.step(map_over="first")
    def second(first: str | tl.ElementFailure) -> str:
        return str(first)

    flow.validate()


def test_map_over_naming_a_non_param() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step(map_over="itemz")
        def each(items: list[str]) -> int:
            return 0

    assert info.value.step == "each"
    assert info.value.param == "itemz"
    assert "items" in str(info.value)


def test_map_over_an_injected_param_is_not_a_data_param() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError):

        @flow.step(map_over="llm")
        async def each(items: list[str], llm: tl.LLM) -> int:
            return 0


def test_on_error_collect_without_map() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step(on_error="collect")
        def a(x: int) -> int:
            return x

    assert info.value.step == "a"


def test_map_over_a_declared_flow_input() -> None:
    flow = tl.Flow("f", inputs={"names": list[str]})

    @flow.step(map_over="names")
    def upper(names: str) -> str:
        return names.upper()

    result = flow.run_sync({"names": ["a", "b"]})
    assert result["upper"] == ["A", "B"]


def test_map_over_an_undeclared_flow_input() -> None:
    flow = tl.Flow("f")

    @flow.step(map_over="names")
    def upper(names: str) -> str:
        return names.upper()

    result = flow.run_sync({"names": ["a", "b"]})
    assert result["upper"] == ["A", "B"]


def test_until_without_max_rounds() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step(until=lambda out: True)
        def a(x: int) -> int:
            return x

    assert info.value.step == "a"
    assert "max_rounds" in str(info.value)


def test_round_param_without_max_rounds() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step
        async def a(x: int, round: tl.Round[int]) -> int:
            return x

    assert info.value.step == "a"
    assert "max_rounds" in str(info.value)


def test_max_rounds_must_be_positive_and_not_mapped() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError):

        @flow.step(max_rounds=0)
        def a(x: int) -> int:
            return x

    with pytest.raises(tl.FlowDefinitionError):

        @flow.step(max_rounds=2, map_over="xs")
        def b(xs: int) -> int:
            return xs


def test_sync_step_asking_for_llm_is_rejected_at_definition() -> None:
    """A plain function cannot await ``llm.generate``: reject it when it is declared,
    with a message telling how to fix it (rather than failing at run time)."""
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step
        def classify(text: str, llm: tl.LLM) -> str:
            return text

    assert info.value.step == "classify"
    assert "async def classify" in str(info.value)


def test_sync_step_may_ask_for_run_context() -> None:
    flow = tl.Flow("f")

    @flow.step
    def where(ctx: tl.RunContext) -> str:
        return f"{ctx.flow}/{ctx.step}"

    assert flow.run_sync()["where"] == "f/where"


def test_branch_label_not_returned_by_the_literal_router() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def route(x: int) -> Literal["direct", "research"]:
            return "direct"

        @flow.step(when=tl.branch("route", "reserch"))
        def research(x: int) -> int:
            return x

        flow.validate()

    err = definition_error(build)
    assert err.step == "research"
    assert "'reserch'" in str(err)
    assert "'research'" in str(err)


def test_branch_label_not_returned_by_the_enum_router() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def route(x: int) -> Route:
            return Route.DIRECT

        @flow.step(when=tl.branch("route", "reasoning"))
        def deep(x: int) -> int:
            return x

        flow.validate()

    assert definition_error(build).step == "deep"


def test_branch_labels_by_enum_member_or_value_are_accepted() -> None:
    flow = tl.Flow("f")

    @flow.step
    def route(x: int) -> Route:
        return Route.DIRECT

    @flow.step(when=tl.branch("route", Route.RESEARCH))
    def a(x: int) -> int:
        return x

    @flow.step(when=tl.branch("route", "direct"))
    def b(x: int) -> int:
        return x

    flow.validate()


def test_branch_on_a_router_that_is_not_a_step() -> None:
    def build() -> None:
        flow = tl.Flow("f")

        @flow.step
        def route(x: int) -> Literal["a"]:
            return "a"

        @flow.step(when=tl.branch("rout", "a"))
        def b(x: int) -> int:
            return x

        flow.validate()

    err = definition_error(build)
    assert err.step == "b"
    assert "route" in str(err)


def test_branch_needs_a_label() -> None:
    with pytest.raises(tl.FlowDefinitionError):
        tl.branch("route")


@pytest.mark.parametrize("kind", ["args", "kwargs", "positional_only"])
def test_star_args_and_kwargs_are_rejected(kind: str) -> None:
    flow = tl.Flow("f")
    if kind == "args":

        def fn(x: int, *rest: int) -> int:
            return x

        bad = "rest"
    elif kind == "kwargs":

        def fn(x: int, **more: int) -> int:  # type: ignore[misc]
            return x

        bad = "more"
    else:

        def fn(x: int, /) -> int:  # type: ignore[misc]
            return x

        bad = "x"
    with pytest.raises(tl.FlowDefinitionError) as info:
        flow.step(fn)
    assert (info.value.step, info.value.param) == ("fn", bad)


def test_when_condition_with_star_kwargs_is_rejected() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError) as info:

        @flow.step(when=lambda **kw: True)
        def a(x: int) -> int:
            return x

    assert info.value.step == "a"


def test_when_must_be_callable() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError):
        flow.step(when=True)(lambda x: x)  # type: ignore[arg-type]


def test_bad_step_names_and_retry() -> None:
    flow = tl.Flow("f")
    with pytest.raises(tl.FlowDefinitionError):
        flow.step(name="not an identifier")(lambda x: x)
    with pytest.raises(tl.FlowDefinitionError):

        @flow.step(retry={"reasks": 3})  # type: ignore[arg-type]
        def a(x: int) -> int:
            return x


def test_errors_are_found_once_more_steps_are_added() -> None:
    flow = tl.Flow("f", inputs={"x": int})

    @flow.step
    def a(x: int) -> int:
        return x

    flow.validate()

    @flow.step
    def b(a: str) -> str:
        return a

    err = definition_error(flow.validate)
    assert (err.step, err.param) == ("b", "a")
