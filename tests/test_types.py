"""Types at run time: step outputs checked against their annotations, flow inputs validated.

Also the ``compatible()`` table the build-time checks rely on (properties in
``test_engine_properties.py``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Optional, TypedDict

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.flow.types import compatible, describe, is_optional


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


class Topics(BaseModel):
    topics: list[str]


@dataclasses.dataclass
class Box:
    value: int


class Point(TypedDict):
    x: int
    y: int


class Database:
    """An arbitrary object a flow may be given (a client, a connection...)."""

    def lookup(self, key: str) -> str:
        return key.upper()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def run_returning(value: Any, annotation: Any) -> tl.RunResult:
    """Run a one-step flow whose step returns ``value`` and is annotated ``-> annotation``."""
    flow = tl.Flow("out")

    def produce() -> Any:
        return value

    produce.__annotations__ = {"return": annotation}
    flow.step(produce)
    return flow.run_sync()


# -- step outputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        (3, float),
        (3.5, float),
        (True, bool),
        ("x", str),
        (Sentiment(label="positive", confidence=0.9), Sentiment),
        (Box(1), Box),
        ([1, 2], list[int]),
        (None, None),
        (None, Optional[int]),  # noqa: UP045
        ("b", Literal["a", "b"]),
        (Color.RED, Color),
        ({"a": 1}, dict[str, int]),
        (object(), Any),
    ],
    ids=lambda v: "object()" if type(v) is object else repr(v),  # same id in every worker
)
def test_output_matching_its_annotation_is_accepted(value: Any, annotation: Any) -> None:
    result = run_returning(value, annotation)
    assert result.ok, result.error
    assert result["produce"] == value or result["produce"] is value


def test_int_for_float_keeps_the_value() -> None:
    result = run_returning(3, float)
    assert result["produce"] == 3


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        ("3", int),
        (3, str),
        (True, int),
        (1.5, int),
        (True, float),
        ({"label": "positive", "confidence": 0.9}, Sentiment),
        (Topics(topics=[]), Sentiment),
        ({"value": 1}, Box),
        (["1"], list[int]),
        ("c", Literal["a", "b"]),
        ("red", Color),
        (None, int),
        (1, None),
    ],
    ids=repr,
)
def test_output_of_the_wrong_type_fails_the_step(value: Any, annotation: Any) -> None:
    result = run_returning(value, annotation)
    assert result.status == "failed"
    record = result.steps["produce"]
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.type == "OutputTypeError"
    assert record.error.step == "produce"
    assert "'produce'" in record.error.message
    with pytest.raises(KeyError):
        result["produce"]


def test_dicts_returned_for_a_list_of_models_are_an_error() -> None:
    result = run_returning([{"label": "positive", "confidence": 0.9}], list[Sentiment])
    assert result.steps["produce"].error is not None
    assert result.steps["produce"].error.type == "OutputTypeError"


def test_dict_returned_for_an_optional_model_is_an_error() -> None:
    result = run_returning({"label": "positive", "confidence": 0.9}, Sentiment | None)
    assert result.steps["produce"].error is not None
    assert result.steps["produce"].error.type == "OutputTypeError"


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        ({"x": 1, "y": 2}, Point),
        ([{"x": 1, "y": 2}], list[Point]),
        ({"x": 1, "y": 2}, Point | None),
    ],
    ids=["Point", "list[Point]", "Point | None"],
)
def test_typed_dict_output_is_accepted(value: Any, annotation: Any) -> None:
    result = run_returning(value, annotation)
    assert result.ok, result.error


def test_typed_dict_output_of_the_wrong_shape_fails() -> None:
    result = run_returning({"x": "one"}, Point)
    assert result.steps["produce"].error is not None
    assert result.steps["produce"].error.type == "OutputTypeError"


def test_step_returning_an_iterator_annotation_builds() -> None:
    flow = tl.Flow("it")

    @flow.step
    def numbers() -> Iterator[int]:
        return iter([1, 2])

    flow.validate()


async def test_async_step_output_is_validated_too() -> None:
    flow = tl.Flow("f")

    @flow.step
    async def produce() -> int:
        return "not an int"  # type: ignore[return-value]

    result = await flow.run()
    assert result.steps["produce"].error is not None
    assert result.steps["produce"].error.type == "OutputTypeError"


# -- flow inputs --------------------------------------------------------------------------------


def _input_flow() -> tl.Flow:
    flow = tl.Flow("inputs", inputs={"feedback": str, "sentiment": Sentiment, "n": int})

    @flow.step
    def echo(feedback: str, sentiment: Sentiment, n: int) -> tuple[str, Sentiment, int]:
        return (feedback, sentiment, n)

    return flow


async def test_missing_input_is_an_input_error() -> None:
    with pytest.raises(tl.InputError, match="missing input 'n'"):
        await _input_flow().run(
            {"feedback": "x", "sentiment": Sentiment(label="neutral", confidence=0.5)}
        )


async def test_unknown_input_is_an_input_error() -> None:
    inputs = {
        "feedback": "x",
        "sentiment": Sentiment(label="neutral", confidence=0.5),
        "n": 1,
        "feedbak": "typo",
    }
    with pytest.raises(tl.InputError, match="feedbak"):
        await _input_flow().run(inputs)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n", "not a number"),
        ("sentiment", {"label": "angry", "confidence": 0.5}),
        ("sentiment", "positive"),
        ("feedback", ["a", "list"]),
    ],
)
async def test_input_of_the_wrong_type_is_an_input_error(name: str, value: Any) -> None:
    inputs: dict[str, Any] = {
        "feedback": "x",
        "sentiment": Sentiment(label="neutral", confidence=0.5),
        "n": 1,
    }
    inputs[name] = value
    with pytest.raises(tl.InputError, match=name):
        await _input_flow().run(inputs)


async def test_json_like_inputs_are_coerced() -> None:
    result = await _input_flow().run(
        {"feedback": "x", "sentiment": {"label": "negative", "confidence": "0.25"}, "n": "7"}
    )
    feedback, sentiment, n = result["echo"]
    assert feedback == "x"
    assert isinstance(sentiment, Sentiment)
    assert sentiment == Sentiment(label="negative", confidence=0.25)
    assert n == 7
    assert result.inputs["sentiment"] == sentiment


async def test_optional_input_with_a_default() -> None:
    flow = tl.Flow("f", inputs={"text": str, "limit": int})

    @flow.step
    def cut(text: str, limit: int = 3) -> str:
        return text[:limit]

    assert (await flow.run({"text": "abcdef"}))["cut"] == "abc"
    assert (await flow.run({"text": "abcdef", "limit": 2}))["cut"] == "ab"


async def test_input_of_an_arbitrary_class() -> None:
    flow = tl.Flow("f")

    @flow.step
    def use(db: Database, key: str) -> str:
        return db.lookup(key)

    result = await flow.run({"db": Database(), "key": "k"})
    assert result["use"] == "K"


async def test_input_errors_are_raised_before_any_step_runs() -> None:
    ran: list[str] = []
    flow = tl.Flow("f", inputs={"a": int, "b": int})

    @flow.step
    def first(a: int) -> int:
        ran.append("first")
        return a

    @flow.step
    def second(b: int) -> int:
        ran.append("second")
        return b

    with pytest.raises(tl.InputError):
        await flow.run({"a": 1, "b": "x"})
    assert ran == []


# -- compatible() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (int, float),
        (int, complex),
        (bool, int),
        (list[int], Sequence[int]),
        (list[int], Iterable[int]),
        (tuple[int, ...], Sequence[int]),
        (tuple[int, str], Sequence[int | str]),
        (tuple[int, str], tuple[int, str]),
        (Literal["a"], str),
        (Literal["a"], Literal["a", "b"]),
        (Literal["a"], Literal["a"] | None),
        (Color, Literal["red", "blue"]),
        (int, int | str),
        (int | str, int | str | None),
        (Sentiment, Optional[Sentiment]),  # noqa: UP045
        (dict[str, list[int]], dict[str, Sequence[float]]),
        (Any, Sentiment),
        (Sentiment, Any),
        (Sentiment, object),
        (str, Sequence[str]),
    ],
    ids=repr,
)
def test_compatible(produced: Any, expected: Any) -> None:
    assert compatible(produced, expected)


@pytest.mark.parametrize(
    ("produced", "expected"),
    [
        (str, int),
        (float, int),
        (int, bool),
        (Sentiment, Topics),
        (list[str], list[int]),
        (list[int], tuple[int, ...]),
        (Sequence[int], list[int]),
        (int | None, int),
        (int | str, int),
        (Literal["a", "c"], Literal["a", "b"]),
        (Literal[1], str),
        (Color, Literal["red"]),
        (tuple[int, str], tuple[int, ...]),
        (tuple[int, str], tuple[int, int]),
        (dict[str, int], dict[str, str]),
        (set[int], Sequence[int]),
        (str, list[str]),
    ],
    ids=repr,
)
def test_incompatible(produced: Any, expected: Any) -> None:
    assert not compatible(produced, expected)


def test_describe_and_is_optional() -> None:
    assert describe(int) == "int"
    assert describe(Sentiment) == "Sentiment"
    assert describe(Any) == "Any"
    assert describe(list[Sentiment]).startswith("list[")
    assert "Sentiment" in describe(list[Sentiment])
    assert "None" in describe(Sentiment | None)
    assert "NoneType" not in describe(Sentiment | None)
    assert is_optional(int | None)
    assert is_optional(Optional[Sentiment])  # noqa: UP045
    assert is_optional(None)
    assert not is_optional(int)
    assert not is_optional(int | str)
