"""Plausible English from the words of a prompt: the simulator's prose and short strings.

:func:`hint_words` and :func:`hint_names` pick the content words and the capitalised names
of a text (normally the prompt); :func:`pick_word`, :func:`phrase` and :func:`sentence`
build short text from them and a small built-in vocabulary, using only the given
:class:`random.Random`, so the same rng state and words always give the same text.
:func:`sample_prose` is the free-text "model output" of ``sim:``.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence

__all__ = [
    "hint_names",
    "hint_words",
    "other_word",
    "phrase",
    "pick_word",
    "sample_prose",
    "sentence",
]

_NOUNS = (
    "report", "customer", "order", "system", "team", "result", "request", "update",
    "issue", "account", "product", "service", "process", "data", "review", "plan",
    "feature", "project", "message", "policy", "market", "design", "schedule", "budget",
)  # fmt: skip
_ADJECTIVES = (
    "clear", "important", "recent", "simple", "detailed", "useful", "likely", "stable",
    "quick", "careful", "relevant", "solid", "strong", "minor", "promising", "practical",
)  # fmt: skip
_VERBS = (
    "describes", "supports", "improves", "requires", "explains", "covers", "highlights",
    "affects", "includes", "suggests", "mentions", "shows",
)  # fmt: skip
_TEMPLATES = (
    "The {a} {v} the {j} {b}.",
    "{A} {v} {b} and {c}.",
    "This {n} {v} {a} in a {j} way.",
    "Overall, the {a} looks {j}.",
    "{A} is {j} for the {b}.",
    "We found that {a} {v} the {b}.",
    "The main point is that {a} {v} {b}.",
    "In short, {a} and {b} are {j}.",
)
_STOPWORDS = frozenset(
    """the and for with that this from into onto your you are was were has have had not
    but can could would should will shall may might must its it's they them their there
    here what which who whom whose when where why how all any each few more most other
    some such only own same than too very just also about above below over under again
    then once both does did doing been being our ours out off per via please return
    given following json schema answer reply respond output field fields value values
    using use based one two three""".split()  # noqa: SIM905
)


@functools.lru_cache(maxsize=512)
def hint_words(hint_text: str) -> tuple[str, ...]:
    """The distinct content words of ``hint_text``, lower-cased, in order (at most 64)."""
    out: dict[str, None] = {}
    for w in re.findall(r"[A-Za-z]{3,}", hint_text):
        lw = w.lower()
        if lw not in _STOPWORDS and len(lw) <= 20:
            out[lw] = None
            if len(out) >= 64:
                break
    return tuple(out)


_NAME_RE = re.compile(r"\b[A-Z][a-zA-Z'&.-]+(?:\s+(?:of\s+|de\s+|van\s+)?[A-Z][a-zA-Z'&.-]+)*")


@functools.lru_cache(maxsize=512)
def hint_names(hint_text: str) -> tuple[str, ...]:
    """Capitalised names in ``hint_text`` ("Amara Okonkwo", "Lumen Docs"), in order.

    Entity-like string fields reuse them, the way a real model quotes names from its prompt,
    so that later steps can link what earlier steps extracted.
    """
    out: dict[str, None] = {}
    for match in _NAME_RE.findall(hint_text):
        name = match.strip(" .'&-")
        if len(name) >= 3 and name.lower() not in _STOPWORDS:
            out[name] = None
            if len(out) >= 64:
                break
    return tuple(out)


def pick_word(rng: random.Random, words: Sequence[str]) -> str:
    """One of ``words`` (70% of the time, when there are any), else a stock noun."""
    if words and rng.random() < 0.7:
        return rng.choice(words)
    return rng.choice(_NOUNS)


def other_word(rng: random.Random, words: Sequence[str], avoid: tuple[str, ...]) -> str:
    """A word as :func:`pick_word` draws it, redrawn (up to three times) while in ``avoid``."""
    w = pick_word(rng, words)
    for _ in range(3):
        if w not in avoid:
            break
        w = pick_word(rng, words)
    return w


def sentence(rng: random.Random, words: Sequence[str]) -> str:
    """One short sentence from a template, with words of ``words``."""
    template = rng.choice(_TEMPLATES)
    a = pick_word(rng, words)
    b = other_word(rng, words, (a,))
    c = other_word(rng, words, (a, b))
    s = template.format(
        a=a, A=a, b=b, c=c, n=rng.choice(_NOUNS), v=rng.choice(_VERBS), j=rng.choice(_ADJECTIVES)
    )
    return s[0].upper() + s[1:]


def phrase(rng: random.Random, words: Sequence[str], *, title: bool = False) -> str:
    """One to three distinct words (title-cased with ``title``): a name, a label."""
    n = rng.choice((1, 2, 2, 3))
    parts: list[str] = []
    for _ in range(n):
        parts.append(other_word(rng, words, tuple(parts)))
    if title:
        return " ".join(p.capitalize() for p in parts)
    return " ".join(parts)


def sample_prose(rng: random.Random, hint_text: str = "", *, sentences: int = 2) -> str:
    """``sentences`` short plausible English sentences using words of ``hint_text``."""
    words = hint_words(hint_text)
    return " ".join(sentence(rng, words) for _ in range(max(1, sentences)))
