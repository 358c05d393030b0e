"""``OutputSpec.parse``: pydantic-core's JSON parser first, ``json.loads`` for what it
refuses, so every reply parses (or fails) exactly as with ``json.loads`` alone."""

from __future__ import annotations

import math

from pydantic import BaseModel

from trellis.engine.structured import OutputSpec, ParseFailure
from trellis.errors import FailureMode


class Note(BaseModel):
    text: str
    score: float


SPEC = OutputSpec(Note)


def test_plain_and_fenced_json() -> None:
    assert SPEC.parse('  {"text": "a", "score": 1}  ') == Note(text="a", score=1.0)
    assert SPEC.parse('```json\n{"text": "b", "score": 2.5}\n```') == Note(text="b", score=2.5)


def test_what_only_json_loads_reads_still_parses() -> None:
    """A lone surrogate escape: pydantic-core refuses it, json.loads reads it."""
    parsed = SPEC.parse('{"text": "x\\ud800", "score": 0}')
    assert isinstance(parsed, Note) and parsed.text == "x\ud800"


def test_nan_duplicate_keys_and_a_str_subclass() -> None:
    parsed = SPEC.parse('{"text": "a", "text": "b", "score": NaN}')
    assert isinstance(parsed, Note) and parsed.text == "b" and math.isnan(parsed.score)

    class Text(str):
        pass

    assert SPEC.parse(Text('{"text": "c", "score": 3}')) == Note(text="c", score=3.0)


def test_malformed_reply_keeps_json_loads_message() -> None:
    failure = SPEC.parse('{"text": "a", ')
    assert isinstance(failure, ParseFailure) and failure.mode is FailureMode.MALFORMED
    assert failure.error.startswith("the reply is not valid JSON: Expecting property name")
    deep = SPEC.parse("[" * 100000 + "]" * 100000)
    assert isinstance(deep, ParseFailure) and deep.mode is FailureMode.MALFORMED


def test_invalid_reply_is_invalid() -> None:
    failure = SPEC.parse('{"text": "a"}')
    assert isinstance(failure, ParseFailure) and failure.mode is FailureMode.INVALID
    assert "score" in failure.error
