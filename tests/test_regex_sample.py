"""Strings for a schema's ``pattern``: the one boundary with the private regex parser,
its fallback, and the generator over this module's own syntax tree."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pytest

from trellis.models import regex_sample
from trellis.models.regex_sample import (
    Alternation,
    CharClass,
    Group,
    Lit,
    Repeat,
    Span,
    Unsupported,
    parse_regex,
    pattern_value,
)
from trellis.models.schema_sample import sample_value


@pytest.fixture(autouse=True)
def _fresh_parse_cache() -> Iterator[None]:
    parse_regex.cache_clear()
    yield
    parse_regex.cache_clear()


def test_the_private_parse_becomes_this_modules_own_tree() -> None:
    regex = parse_regex(r"^a[b-d]{2,3}(x|yz)$")
    assert regex is not None
    assert regex.nodes == (
        Lit("a"),
        Repeat(2, 3, (CharClass((Span("b", "d"),)),)),
        Group((Alternation(((Lit("x"),), (Lit("y"), Lit("z")))),)),
    )  # anchors are dropped; the compiled pattern checks the result
    assert regex.compiled.pattern == r"^a[b-d]{2,3}(x|yz)$"


def test_a_back_reference_is_unsupported_and_gives_no_string() -> None:
    regex = parse_regex(r"(a)\1")
    assert regex is not None and Unsupported("GROUPREF") in regex.nodes
    assert pattern_value(r"(a)\1", random.Random(0)) is None


def test_an_invalid_pattern_gives_none() -> None:
    assert parse_regex("([unclosed") is None


@pytest.mark.parametrize("pattern", [r"^\D{3}$", r"^\S\S$", r"^\W-\W$", r"^[^\d\s]{4}$"])
def test_negated_categories_generate_matching_strings(pattern: str) -> None:
    # Before: \D, \S and \W matched nothing, so no string was ever made for them.
    for seed in range(20):
        value = pattern_value(pattern, random.Random(seed))
        assert value is not None and re.search(pattern, value), (seed, value)


@pytest.mark.parametrize("pattern", [r"^\d{5}(-\d{4})?$", r"^[A-Z]{2}_[a-z0-9]+$", r"^x.y$"])
def test_generated_strings_match(pattern: str) -> None:
    for seed in range(20):
        value = pattern_value(pattern, random.Random(seed))
        assert value is not None and re.search(pattern, value)


def test_without_the_private_parser_the_sampler_falls_back_to_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(regex_sample, "_private_parser", lambda: None)
    assert parse_regex(r"^\d+$") is None
    value = sample_value({"type": "string", "pattern": r"^\d+$"}, random.Random(0))
    assert isinstance(value, str) and value  # ordinary text, the documented fallback


def test_a_private_parser_of_an_unknown_shape_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed:
        @staticmethod
        def parse(pattern: str) -> Any:
            return [("not an opcode", 1)]

    monkeypatch.setattr(regex_sample, "_private_parser", lambda: Changed)
    assert parse_regex(r"^\d+$") is None
    assert pattern_value(r"^\d+$", random.Random(0)) is None
