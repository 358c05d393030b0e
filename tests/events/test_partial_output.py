"""Partial structured output: a reply's JSON split anywhere validates as far as it goes."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from trellis.engine.partial import PartialParser, partial_model


class Point(BaseModel):
    x: int
    y: float


class Report(BaseModel):
    title: str
    count: int
    tags: list[str]
    urgent: bool
    where: Point


reports = st.builds(
    Report,
    title=st.text(max_size=20),
    count=st.integers(-(10**6), 10**6),
    tags=st.lists(st.text(max_size=5), max_size=4),
    urgent=st.booleans(),
    where=st.builds(Point, x=st.integers(-999, 999), y=st.floats(-1e6, 1e6, allow_nan=False)),
)


def _is_prefix_of(value: object, final: object) -> bool:
    """A partial field is the final one or, for a string (or list) cut mid-way, a prefix
    of it; a number, a bool or a nested object is never shown cut."""
    if value == final:
        return True
    if isinstance(value, str) and isinstance(final, str):
        return final.startswith(value)
    if isinstance(value, list) and isinstance(final, list):
        return len(value) <= len(final) and all(
            _is_prefix_of(v, f) for v, f in zip(value, final, strict=False)
        )
    return False


@given(report=reports, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_every_partial_is_valid_and_agrees_with_the_final_value(
    report: Report, cuts: list[int]
) -> None:
    text = report.model_dump_json()
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    parser = PartialParser(Report)
    shown = [value for piece in pieces if (value := parser.feed(piece)) is not None]
    partial_type = partial_model(Report)
    for value in shown:
        assert isinstance(value, partial_type)  # the partial model: validated
        for name in value.model_fields_set:
            field = getattr(value, name)
            if field is not None:
                final = getattr(report, name)
                assert _is_prefix_of(
                    field.model_dump() if isinstance(field, BaseModel) else field,
                    final.model_dump() if isinstance(final, BaseModel) else final,
                ), (name, field, final)
    assert shown, text  # the whole JSON shows at least once, at the end
    assert shown[-1].model_dump() == json.loads(text)


def test_a_nested_object_missing_fields_is_left_out_until_it_validates() -> None:
    parser = PartialParser(Report)
    value = parser.feed('{"title": "t", "count": 3, "where": {"x": 1')
    assert value is not None
    assert value.title == "t" and value.count == 3 and value.where is None  # type: ignore[attr-defined]
    value = parser.feed(', "y": 2}')
    assert value is not None and value.where == Point(x=1, y=2)  # type: ignore[attr-defined]


def test_only_models_have_a_partial_form_and_garbage_shows_nothing() -> None:
    assert not PartialParser(list[int]).enabled
    assert PartialParser(list[int]).feed("[1, 2") is None
    assert PartialParser(Report).feed("not json") is None
    assert PartialParser(Report).feed("[1, 2]") is None


def test_a_number_the_text_ends_in_waits_for_its_delimiter() -> None:
    parser = PartialParser(Report)
    assert parser.feed('{"title": "ab') is not None
    assert parser.feed('c", "count": 12') is not None  # the title grew; count may be cut
    value = parser.feed("5")
    assert value is None  # still maybe cut: nothing new to show
    value = parser.feed(", ")
    assert value is not None and value.count == 125  # type: ignore[attr-defined]


@given(reports, st.data())
def test_the_fast_partial_model_is_what_model_construct_builds(
    report: Report, data: st.DataObject
) -> None:
    """Each partial is built without ``model_construct``'s per-call work: it must be the
    very instance ``model_construct`` would build (fields, which were set, dump, repr)."""
    text = report.model_dump_json()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(text) - 1), max_size=6)))
    parser = PartialParser(Report)
    model = partial_model(Report)
    for start, stop in itertools.pairwise([0, *cuts, len(text)]):
        value = parser.feed(text[start:stop])
        if value is None:
            continue
        expected = model.model_construct(**{k: getattr(value, k) for k in value.model_fields_set})
        assert type(value) is model
        assert value == expected
        assert value.model_fields_set == expected.model_fields_set
        assert value.model_dump() == expected.model_dump()
        assert repr(value) == repr(expected)
