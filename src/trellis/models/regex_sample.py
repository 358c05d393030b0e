"""Strings that match a JSON schema's ``pattern``: a small generator for simple regexes.

The standard library has no public regex parser, and the private one (``re._parser``)
may change in any Python release, so this module parses patterns itself
(:func:`parse_regex`, into its own small syntax tree, :data:`Node`). ``re.compile`` first
decides whether a pattern is valid at all; then the parser reads the subset below, and
everything else in the pattern becomes :class:`Unsupported`, for which
:func:`pattern_value` makes no string: the sampler then writes ordinary text for the
field, as it does for a pattern it cannot satisfy.

Supported: literals and escapes (``\\n``, ``\\x41``, ``\\u00e9``, escaped punctuation),
``.``, classes (ranges, negation, ``\\d \\w \\s`` and their negations), repeats (``* + ?
{m} {m,} {,n} {m,n}``, lazy and possessive; at most three beyond the minimum are made),
groups (plain, ``(?:...)``, named, atomic), alternation; anchors, ``\\b`` and lookarounds
are skipped (the result is checked against the compiled pattern, so a string that breaks
them is drawn again, at most four times). Back-references, conditionals and inline flags
are not.
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


# --------------------------------------------------------------------------- parsing

#: The most repeats of one element a string is made with (``x{100000}`` makes none).
_MAX_REPEAT = 1000

#: What the regex engine takes as "no upper bound" (``x*``, ``x{2,}``).
_UNBOUNDED = 2**32 - 1

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_CATEGORY_ESCAPES: dict[str, Cat] = {
    "d": Cat("digit"),
    "D": Cat("digit", negated=True),
    "w": Cat("word"),
    "W": Cat("word", negated=True),
    "s": Cat("space"),
    "S": Cat("space", negated=True),
}
_ANCHOR_ESCAPES = frozenset("bBAZ")
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_REPEAT = re.compile(r"\{(\d*)(,?)(\d*)\}")


@functools.lru_cache(maxsize=256)
def parse_regex(pattern: str) -> Regex | None:
    """``pattern`` as this module's syntax tree, or None when it is not a valid regex.
    What the parser does not read becomes :class:`Unsupported` (see the module docs)."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    try:
        nodes = _Parser(pattern).parse()
    except (ValueError, IndexError):  # a construct read wrongly: no string, never a crash
        nodes = (Unsupported("pattern"),)
    return Regex(nodes, compiled)


class _Parser:
    """A recursive-descent reader of a pattern ``re.compile`` accepted."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.at = 0

    def parse(self) -> tuple[Node, ...]:
        nodes = self._alternation()
        if self.at < len(self.text):  # an unbalanced ")" cannot pass re.compile
            return (Unsupported(f"text at {self.at}"),)
        return nodes

    def _peek(self, ahead: int = 0) -> str:
        at = self.at + ahead
        return self.text[at] if at < len(self.text) else ""

    def _take(self) -> str:
        char = self._peek()
        self.at += 1
        return char

    def _alternation(self) -> tuple[Node, ...]:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.at += 1
            branches.append(self._sequence())
        return branches[0] if len(branches) == 1 else (Alternation(tuple(branches)),)

    def _sequence(self) -> tuple[Node, ...]:
        out: list[Node] = []
        while self._peek() not in ("", "|", ")"):
            atom = self._atom()
            repeat = self._repeat()
            if atom is None:  # an anchor or a lookaround: nothing to make (nor to repeat)
                continue
            out.append(atom if repeat is None else Repeat(repeat[0], repeat[1], (atom,)))
        return tuple(out)

    def _repeat(self) -> tuple[int, int] | None:
        char = self._peek()
        bounds: tuple[int, int] | None = None
        if char in ("*", "+", "?"):
            self.at += 1
            bounds = {"*": (0, _UNBOUNDED), "+": (1, _UNBOUNDED), "?": (0, 1)}[char]
        elif char == "{":
            match = _REPEAT.match(self.text, self.at)
            if match is None or not (match[1] or match[3]):
                return None  # a literal "{": the atom that reads it comes next
            low, comma, high = match.groups()
            self.at = match.end()
            minimum = int(low) if low else 0
            bounds = (minimum, int(high) if high else _UNBOUNDED if comma else minimum)
        if bounds is not None and self._peek() in ("?", "+"):  # lazy, possessive
            self.at += 1
        return bounds

    def _atom(self) -> Node | None:
        char = self._take()
        if char == "(":
            return self._group()
        if char == "[":
            return self._class()
        if char == ".":
            return AnyChar()
        if char in ("^", "$"):
            return None
        if char == "\\":
            return self._escape()
        return Lit(char)

    def _group(self) -> Node | None:
        skip = False
        if self._peek() == "?":
            self.at += 1
            kind = self._take()
            named = (kind == "P" and self._peek() == "<") or (  # (?P<name>...)
                kind == "<" and self._peek() not in ("=", "!")  # (?<name>...), 3.12+
            )
            if named:
                self.at = self.text.index(">", self.at) + 1
            elif kind in ("=", "!"):  # lookahead
                skip = True
            elif kind == "<":  # lookbehind
                self.at += 1
                skip = True
            elif kind == "#":  # a comment
                self.at = self.text.index(")", self.at) + 1
                return None
            elif kind not in (":", ">"):  # flags, back-references by name, conditionals
                self.at = len(self.text)
                return Unsupported(f"(?{kind}")
        body = self._alternation()
        if self._take() != ")":
            return Unsupported("unclosed group")
        return None if skip else Group(body)

    def _escape(self) -> Node | None:
        char = self._take()
        if char in _CATEGORY_ESCAPES:
            return CharClass((_CATEGORY_ESCAPES[char],))
        if char in _ANCHOR_ESCAPES:
            return None
        if char.isdigit():  # \1: a back-reference (an octal escape is rare in a schema)
            return Unsupported("GROUPREF")
        literal = self._escaped_char(char)
        return Unsupported(f"\\{char}") if literal is None else Lit(literal)

    def _escaped_char(self, char: str) -> str | None:
        """The character an escape (``\\n``, ``\\x41``, ``\\.``) stands for; None if it is
        not one this parser reads."""
        if char in _ESCAPES:
            return _ESCAPES[char]
        if char in _HEX_ESCAPES:
            digits = self.text[self.at : self.at + _HEX_ESCAPES[char]]
            self.at += len(digits)
            return chr(int(digits, 16))
        if char.isalnum() or char == "":
            return None  # \N{...}, \g<...>, a letter with a meaning this parser lacks
        return char

    def _class(self) -> Node:
        negated = self._peek() == "^"
        if negated:
            self.at += 1
        items: list[ClassItem] = []
        first = True
        while True:
            char = self._take()
            if char == "":
                return Unsupported("unclosed class")
            if char == "]" and not first:
                return CharClass(tuple(items), negated)
            first = False
            item: ClassItem
            if char == "\\":
                escaped = self._take()
                if escaped in _CATEGORY_ESCAPES:
                    items.append(_CATEGORY_ESCAPES[escaped])
                    continue
                literal = self._escaped_char(escaped)
                if literal is None:
                    return Unsupported(f"\\{escaped} in a class")
                item = Lit(literal)
            else:
                item = Lit(char)
            if self._peek() == "-" and self._peek(1) not in ("]", ""):
                self.at += 1
                high = self._take()
                if high == "\\":
                    high = self._escaped_char(self._take()) or ""
                if len(high) != 1:
                    return Unsupported("range")
                item = Span(item.char, high)
            items.append(item)


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
    """The printable characters in ``cls``, and its own literals (classes are immutable,
    so this is cached)."""
    own = (item.char for item in cls.items if isinstance(item, Lit))
    return tuple(c for c in dict.fromkeys([*_PRINTABLE, *own]) if _in_class(cls, c))


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
            if node.low > _MAX_REPEAT:
                raise _CannotGenerate(f"a repeat of at least {node.low}")
            n = rng.randint(node.low, min(node.high, node.low + 3))
            out.extend(_gen(node.body, rng) for _ in range(n))
        elif isinstance(node, Group):
            out.append(_gen(node.body, rng))
        elif isinstance(node, Alternation):
            out.append(_gen(rng.choice(node.branches), rng))
        else:
            raise _CannotGenerate(f"unsupported pattern element {node.what}")
    return "".join(out)
