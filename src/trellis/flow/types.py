"""Type checks: can a produced type satisfy a parameter's annotation, and value validators.

``compatible(produced, expected)`` is deliberately conservative in one direction only: it
answers ``False`` when it can prove a mismatch (``str`` into ``int``, ``Sentiment`` into
``Topics``, ``list[str]`` into ``list[int]``) and ``True`` when it cannot decide, so that a
flow is never rejected for a construct the checker does not understand.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter

__all__ = ["compatible", "describe", "is_optional", "make_validator"]

_NONE = type(None)
_SEQUENCE_ORIGINS = {list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection, set, frozenset}


def describe(tp: Any) -> str:
    """A readable name for a type: ``list[Topic]``, ``Sentiment | None``."""
    if tp is Any:
        return "Any"
    if isinstance(tp, type) and not get_args(tp):
        return tp.__qualname__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def is_optional(tp: Any) -> bool:
    return tp is None or tp is _NONE or (_is_union(tp) and _NONE in get_args(tp))


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def compatible(produced: Any, expected: Any) -> bool:
    """Whether every value of type ``produced`` is acceptable for ``expected`` (best effort)."""
    produced = _strip_annotated(produced)
    expected = _strip_annotated(expected)
    if expected is Any or produced is Any or expected is object:
        return True
    if produced is None:
        produced = _NONE
    if expected is None:
        expected = _NONE
    if isinstance(expected, TypeVar_) or isinstance(produced, TypeVar_):
        return True
    if _is_union(produced):
        return all(compatible(p, expected) for p in get_args(produced))
    if _is_union(expected):
        return any(compatible(produced, e) for e in get_args(expected))

    p_origin, e_origin = get_origin(produced), get_origin(expected)
    if p_origin is Literal:
        return all(_literal_fits(v, expected) for v in get_args(produced))
    if e_origin is Literal:
        if isinstance(produced, type) and issubclass(produced, enum.Enum):
            values = set(get_args(expected))
            return all(m in values or m.value in values for m in produced)
        return not isinstance(produced, type)

    if p_origin is None and e_origin is None:
        if not (isinstance(produced, type) and isinstance(expected, type)):
            return True
        if expected is float and produced is int:
            return True
        if expected is complex and produced in (int, float):
            return True
        return issubclass(produced, expected)

    # Generic containers: compare origins, then arguments.
    p_base = p_origin or produced
    e_base = e_origin or expected
    if not (isinstance(p_base, type) and isinstance(e_base, type)):
        return True
    if not issubclass(p_base, e_base):
        return False
    p_args, e_args = get_args(produced), get_args(expected)
    if not p_args or not e_args:
        return True
    if e_base in _SEQUENCE_ORIGINS and e_base is not tuple:
        p_items = _item_types(p_base, p_args)
        return all(compatible(p, e_args[0]) for p in p_items)
    if e_base is dict or e_base is cabc.Mapping:
        pairs = zip(p_args, e_args, strict=False)
        return len(p_args) == 2 and all(compatible(p, e) for p, e in pairs)
    if e_base is tuple and p_base is tuple:
        if len(e_args) == 2 and e_args[1] is Ellipsis:
            return all(compatible(p, e_args[0]) for p in _item_types(p_base, p_args))
        if len(p_args) == len(e_args) and Ellipsis not in p_args:
            return all(compatible(p, e) for p, e in zip(p_args, e_args, strict=False))
    return True


TypeVar_ = typing.TypeVar


def _item_types(base: type, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if base is tuple:
        return tuple(a for a in args if a is not Ellipsis)
    return args[:1]


def _literal_fits(value: Any, expected: Any) -> bool:
    if get_origin(expected) is Literal:
        return value in get_args(expected)
    if _is_union(expected):
        return any(_literal_fits(value, e) for e in get_args(expected))
    return compatible(type(value), expected)


def make_validator(tp: Any) -> Callable[[Any], Any] | None:
    """A strict validator for a step's return annotation, or ``None`` for ``Any``.

    Strict: a ``str`` is not coerced to ``int`` and a ``dict`` is not turned into a model;
    a step must return what it says it returns.
    """
    tp = _strip_annotated(tp) if get_origin(tp) is not typing.Annotated else tp
    if tp is Any or tp is object:
        return None
    if tp is None or tp is _NONE:

        def check_none(value: Any) -> Any:
            if value is not None:
                raise TypeError(f"expected None, got {type(value).__name__}")
            return value

        return check_none
    if isinstance(tp, type) and tp in (int, str, bool, float, bytes) and not get_args(tp):
        exact = tp

        def check_scalar(value: Any) -> Any:
            cls = type(value)
            if cls is exact or (exact is float and cls is int):
                return value
            if isinstance(value, exact) and not (exact is int and cls is bool):
                return value
            raise TypeError(f"expected {exact.__name__}, got {cls.__name__}")

        return check_scalar
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or dataclasses.is_dataclass(tp)):
        model_cls = tp

        def check_instance(value: Any) -> Any:
            if isinstance(value, model_cls):
                return value
            raise TypeError(f"expected {model_cls.__qualname__}, got {type(value).__name__}")

        return check_instance
    adapter: TypeAdapter[Any] = TypeAdapter(tp)

    def check(value: Any) -> Any:
        return adapter.validate_python(value, strict=True)

    return check


def input_adapter(tp: Any) -> TypeAdapter[Any] | None:
    """A lax validator for flow inputs (which often arrive as JSON): ``{}`` -> model."""
    if tp is Any or tp is object:
        return None
    return TypeAdapter(tp)
