"""What the dialects' strict request checks share: the rule type and the schema walker.

A :class:`Rule` is one thing the real API rejects, as a small function of the request body
and headers that returns the :class:`~trellis.mockserver.replies.RequestError` the API
would answer (status, message, ``param``), or ``None`` when the request passes it. Each
dialect lists its rules in order (``validate_openai.RULES``, ``validate_anthropic.RULES``)
and :func:`check` applies them, so a test can iterate over the rules and a request that
breaks one gets exactly that rule's error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trellis.mockserver.replies import RequestError

__all__ = ["NAME_PATTERN", "Rule", "check", "open_objects", "valid_name"]

#: The names both APIs accept for a function / tool / schema.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Check = Callable[[Mapping[str, Any], Mapping[str, str]], RequestError | None]


@dataclass(frozen=True, slots=True)
class Rule:
    """One request the real API rejects: its name (for tests and docs) and its check."""

    name: str
    check: Check


def check(rules: Sequence[Rule], body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Raise the error of the first rule ``body`` / ``headers`` break, if any."""
    for rule in rules:
        error = rule.check(body, headers)
        if error is not None:
            raise error


def valid_name(name: Any) -> bool:
    return isinstance(name, str) and NAME_PATTERN.match(name) is not None


def _children(node: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """The sub-schemas of ``node`` with the context path OpenAI reports for each."""
    for key in ("properties", "$defs", "definitions"):
        sub = node.get(key)
        if isinstance(sub, Mapping):
            for name, child in sub.items():
                yield (key, name), child
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        sub = node.get(key)
        if isinstance(sub, list):
            for i, child in enumerate(sub):
                yield (key, i), child
    items = node.get("items")
    if isinstance(items, Mapping):
        yield ("items",), items


def _is_object(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    return (
        kind == "object"
        or (isinstance(kind, list) and "object" in kind)
        or (kind is None and "properties" in node)
    )


def open_objects(
    schema: Any, context: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every place ``schema`` breaks OpenAI's strict-mode object rules, as (context, what):
    an object without ``additionalProperties: false``, or whose ``required`` misses one of
    its properties (``what`` is then the rest of OpenAI's message)."""
    if not isinstance(schema, Mapping):
        return
    if _is_object(schema):
        if schema.get("additionalProperties") is not False:
            yield context, "'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties")
        if isinstance(props, Mapping):
            required = schema.get("required")
            listed = set(required) if isinstance(required, list) else set()
            missing = [name for name in props if name not in listed]
            if missing:
                yield (
                    context,
                    (
                        "'required' is required to be supplied and to be an array including "
                        f"every key in properties. Missing '{missing[0]}'."
                    ),
                )
    for path, child in _children(schema):
        yield from open_objects(child, (*context, *path))
