"""Strings that match a JSON schema's ``pattern``: a small generator for simple regexes.

The standard library has no public regex parser. :func:`parse_regex` is the one place that
uses the private one (``re._parser``, ``sre_parse`` before Python 3.11): it turns its
output into this module's own small syntax tree (:data:`Node`) at once, so nothing else
depends on the private structure. When the private parser is missing or its output is
not what this module knows, :func:`parse_regex` returns None and :func:`pattern_value`
makes no string: the sampler then writes ordinary text for the field, as it does for a
pattern it cannot satisfy.

Supported: literals, ``.``, classes (ranges, negation, ``\\d \\w \\s`` and their negations),
repeats (at most three beyond the minimum), groups, alternation; anchors and lookarounds
are skipped (the result is checked against the compiled pattern, so a string that breaks
them is drawn again, at most four times). Back-references and conditionals are not.
"""

from __future__ import annotations

import functools
import importlib
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Node", "Regex", "parse_regex", "pattern_value"]

_PRINTABLE = string.ascii_letters + string.digits + " -_.,:/@#"

Category = Literal["digit", "word", "space", "other"]
_CATEGORIES: tuple[Category, ...] = ("digit", "word", "space")


@dataclass(frozen=True, slots=True)
class Lit:
    char: str


@dataclass(frozen=True, slots=True)
class NotLit:
    char: str


@dataclass(frozen=True, slots=True)
class AnyChar:
    pass


@dataclass(frozen=True, slots=True)
class Cat:
    """``\\d``, ``\\w``, ``\\s`` (``negated``: ``\\D``...); ``other`` matches nothing."""

    kind: Category
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    low: str
    high: str


ClassItem = Lit | Span | Cat


@dataclass(frozen=True, slots=True)
class CharClass:
    items: tuple[ClassItem, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Repeat:
    low: int
    high: int
    body: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Group:
    body: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alternation:
    branches: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An element this generator cannot produce (a back-reference...): generating fails
    when it is reached."""

    what: str


Node = Lit | NotLit | AnyChar | CharClass | Repeat | Group | Alternation | Unsupported


@dataclass(frozen=True, slots=True)
class Regex:
    """A parsed pattern: the syntax tree to generate from, and the compiled pattern to
    check the result against."""

    nodes: tuple[Node, ...]
    compiled: re.Pattern[str]


class _CannotGenerate(Exception):
    pass


# --------------------------------------------------------------------------- the boundary


@functools.lru_cache(maxsize=256)
def parse_regex(pattern: str) -> Regex | None:
    """``pattern`` as this module's syntax tree, or None: not a valid regex, no private
    parser in this Python, or parser output of an unknown shape (see the module docs)."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    parser = _private_parser()
    if parser is None:
        return None
    try:
        return Regex(_nodes(parser.parse(pattern)), compiled)
    except Exception:  # the private structure changed: fall back, never crash the sampler
        return None


def _private_parser() -> Any:
    for name in ("re._parser", "sre_parse"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _nodes(tree: Any) -> tuple[Node, ...]:
    out: list[Node] = []
    for op, av in tree:
        kind = op.name
        if kind == "LITERAL":
            out.append(Lit(chr(av)))
        elif kind == "NOT_LITERAL":
            out.append(NotLit(chr(av)))
        elif kind == "ANY":
            out.append(AnyChar())
        elif kind == "IN":
            negated = any(item_op.name == "NEGATE" for item_op, _ in av)
            items = tuple(_class_item(o, a) for o, a in av if o.name != "NEGATE")
            out.append(CharClass(items, negated))
        elif kind == "CATEGORY":
            out.append(CharClass((_category(av),)))
        elif kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = av
            out.append(Repeat(int(low), int(high), _nodes(sub)))
        elif kind == "SUBPATTERN":
            out.append(Group(_nodes(av[-1])))
        elif kind == "ATOMIC_GROUP":
            out.append(Group(_nodes(av)))
        elif kind == "BRANCH":
            out.append(Alternation(tuple(_nodes(branch) for branch in av[1])))
        elif kind in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            out.append(Unsupported(kind))
    return tuple(out)


def _class_item(op: Any, av: Any) -> ClassItem:
    kind = op.name
    if kind == "LITERAL":
        return Lit(chr(av))
    if kind == "RANGE":
        return Span(chr(av[0]), chr(av[1]))
    if kind == "CATEGORY":
        return _category(av)
    return Cat("other")


def _category(av: Any) -> Cat:
    name = str(av.name)  # CATEGORY_DIGIT, CATEGORY_NOT_WORD, ...
    for kind in _CATEGORIES:
        if name.endswith(kind.upper()):
            return Cat(kind, negated="_NOT_" in name)
    return Cat("other")


# --------------------------------------------------------------------------- generating


def pattern_value(pattern: str, rng: random.Random) -> str | None:
    """A string matching a simple regular expression, or None when it cannot make one."""
    regex = parse_regex(pattern)
    if regex is None:
        return None
    for _ in range(4):
        try:
            s = _gen(regex.nodes, rng)
        except _CannotGenerate:
            return None
        if regex.compiled.search(s):
            return s
    return None


def _matches(item: ClassItem, ch: str) -> bool:
    if isinstance(item, Lit):
        return ch == item.char
    if isinstance(item, Span):
        return item.low <= ch <= item.high
    if item.kind == "digit":
        return ch.isdigit() != item.negated
    if item.kind == "word":
        return (ch.isalnum() or ch == "_") != item.negated
    if item.kind == "space":
        return ch.isspace() != item.negated
    return False


def _in_class(cls: CharClass, ch: str) -> bool:
    return any(_matches(item, ch) for item in cls.items) != cls.negated


@functools.lru_cache(maxsize=1024)
def _candidates(cls: CharClass) -> tuple[str, ...]:
    """The printable characters in ``cls`` (classes are immutable, so this is cached)."""
    return tuple(c for c in _PRINTABLE if _in_class(cls, c))


def _class_char(cls: CharClass, rng: random.Random) -> str:
    if not cls.negated and cls.items and rng.random() < 0.9:
        item = rng.choice(cls.items)
        if isinstance(item, Lit):
            return item.char
        if isinstance(item, Span):
            return chr(rng.randint(ord(item.low), ord(item.high)))
    candidates = _candidates(cls)
    if not candidates:
        raise _CannotGenerate("empty character class")
    return rng.choice(candidates)


def _gen(nodes: Sequence[Node], rng: random.Random) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, Lit):
            out.append(node.char)
        elif isinstance(node, NotLit):
            out.append(rng.choice([c for c in string.ascii_letters if c != node.char]))
        elif isinstance(node, AnyChar):
            out.append(rng.choice(string.ascii_lowercase))
        elif isinstance(node, CharClass):
            out.append(_class_char(node, rng))
        elif isinstance(node, Repeat):
            n = rng.randint(node.low, min(node.high, node.low + 3))
            out.extend(_gen(node.body, rng) for _ in range(n))
        elif isinstance(node, Group):
            out.append(_gen(node.body, rng))
        elif isinstance(node, Alternation):
            out.append(_gen(rng.choice(node.branches), rng))
        else:
            raise _CannotGenerate(f"unsupported pattern element {node.what}")
    return "".join(out)
