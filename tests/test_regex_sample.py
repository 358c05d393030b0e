"""Strings for a schema's ``pattern``: this module's own regex parser (no private
``re._parser``), what it leaves unsupported, and the generator over its syntax tree."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_pattern_becomes_this_modules_own_tree() -> None:
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


def test_the_parser_does_not_use_the_private_regex_parser() -> None:
    from trellis.models import regex_sample

    source = Path(regex_sample.__file__).read_text(encoding="utf-8")
    assert "re._parser" not in source.replace("(``re._parser``)", "")
    assert "sre_parse" not in source and "importlib" not in source


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\w+@\w+\.(com|org)$",
        r"^(?:ab|cd){2}x*?y+?$",
        r"^(?P<year>\d{4})-(?P<month>\d{2})$",
        r"^[a-z\-_]{3,}$",
        r"^[\]\[]{2}$",
        r"^a{,2}b$",
        r"^x{2,}$",
        r"^caf\u00e9\x21\.$",
        r"^(?=\d)\d{3}(?!x)$",
        r"\bword\b",
        r"^[^a-z]{3}$",
        r"^a{b$",  # a literal "{"
        r"^\t\n?$",
        r"^(?>ab)c$",
        r"^[-a]+$",
        r"^[a-]+$",
        r"^(?#a comment)z$",
    ],
)
def test_supported_patterns_generate_matching_strings(pattern: str) -> None:
    for seed in range(20):
        value = pattern_value(pattern, random.Random(seed))
        assert value is not None and re.search(pattern, value), (pattern, seed, value)


@pytest.mark.parametrize(
    "pattern", [r"(?i)abc", r"(?P<a>x)(?P=a)", r"(a)?(?(1)b|c)", r"\N{EN DASH}", r"x{5000}"]
)
def test_what_the_parser_does_not_read_gives_no_string(pattern: str) -> None:
    regex = parse_regex(pattern)
    assert regex is not None
    assert pattern_value(pattern, random.Random(0)) is None
    value = sample_value({"type": "string", "pattern": pattern}, random.Random(0))
    assert isinstance(value, str)  # the sampler falls back to ordinary text


def _walk(nodes: tuple[object, ...]) -> Iterator[object]:
    for node in nodes:
        yield node
        if isinstance(node, Repeat | Group):
            yield from _walk(node.body)
        if isinstance(node, Alternation):
            for branch in node.branches:
                yield from _walk(branch)


_ATOMS = st.sampled_from(
    ["a", "Z", "7", r"\d", r"\w", r"\s", r"\D", ".", "[a-f]", "[^0-9]", r"[\d_]", r"\.", "-"]
)
_REPEATS = st.sampled_from(["", "*", "+", "?", "{2}", "{1,3}", "{2,}", "??"])
_GROUPS = st.sampled_from(["({})", "(?:{})"])  # atomic groups may match nothing


@st.composite
def _patterns(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.booleans()):
            inner = "|".join(draw(st.lists(_patterns(depth + 1), min_size=1, max_size=3)))
            # A group repeats a bounded number of times: nested unbounded repeats make
            # the regex engine itself backtrack for ages, which is not under test here.
            parts.append(draw(_GROUPS).format(inner) + draw(st.sampled_from(["", "?", "{2}"])))
        else:
            parts.append(draw(_ATOMS) + draw(_REPEATS))
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(_patterns(), st.integers(0, 2**16))
def test_generated_patterns_of_the_supported_subset_get_matching_strings(
    body: str, seed: int
) -> None:
    pattern = f"^{body}$"
    value = pattern_value(pattern, random.Random(seed))
    assert value is not None and re.fullmatch(body, value), (pattern, value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab()[]{}^$|?*+.-\\,:<>=!#P0123dwsx")), max_size=16))
def test_any_valid_pattern_parses_without_raising(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error:
        assert parse_regex(pattern) is None
        return
    regex = parse_regex(pattern)
    assert regex is not None
    value = pattern_value(pattern, random.Random(0))
    assert value is None or re.search(pattern, value)
