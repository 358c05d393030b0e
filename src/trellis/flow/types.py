"""Type checks: can a produced type satisfy a parameter's annotation, and value validators.

``compatible(produced, expected)`` is deliberately conservative in one direction only: it
answers ``False`` when it can prove a mismatch (``str`` into ``int``, ``Sentiment`` into
``Topics``, ``list[str]`` into ``list[int]``) and ``True`` when it cannot decide, so that a
flow is never rejected for a construct the checker does not understand.
"""

from __future__ import annotations

import collections.abc as cabc
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ConfigDict, PydanticSchemaGenerationError, TypeAdapter

__all__ = ["compatible", "describe", "is_optional", "make_validator"]

_NONE = type(None)
_SEQUENCE_ORIGINS = {list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection, set, frozenset}


def describe(tp: Any) -> str:
    """A readable name for a type, as the user wrote it: ``list[Topic]``, ``Sentiment | None``.

    Classes are named by their qualified name only, never by their module (the CLI imports
    a flow file under an internal module name, which must not appear in messages).
    """
    if tp is Any:
        return "Any"
    if tp is None or tp is _NONE:
        return "None"
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Annotated:
        return describe(args[0])
    if _is_union(tp):
        return " | ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        name = getattr(origin, "__qualname__", None) or str(origin).replace("typing.", "")
        if not args:
            return str(name)
        inner = ", ".join("..." if a is Ellipsis else describe(a) for a in args)
        return f"{name}[{inner}]"
    if isinstance(tp, type):
        return tp.__qualname__
    if isinstance(tp, typing.TypeVar):
        return tp.__name__
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
        try:
            return issubclass(produced, expected)
        except TypeError:  # TypedDict, protocols...: cannot decide
            return True

    # Generic containers: compare origins, then arguments.
    p_base = p_origin or produced
    e_base = e_origin or expected
    if not (isinstance(p_base, type) and isinstance(e_base, type)):
        return True
    try:
        if not issubclass(p_base, e_base):
            return False
    except TypeError:
        return True
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
    """A strict checker for a step's return annotation, or ``None`` for ``Any``.

    Strict and non-converting: a ``str`` is not an ``int``, a ``dict`` is not a model, at
    any depth (``list[Sentiment]``, ``Sentiment | None``, ``dict[str, Topic]``). The value
    is returned unchanged. Constructs without a structural check (``Annotated``
    constraints, TypedDict, ...) fall back to a strict Pydantic validation.
    """
    check = _checker(tp)
    if check is None:
        return None

    def validate(value: Any) -> Any:
        check(value)
        return value

    return validate


Check = Callable[[Any], None]


def _checker(tp: Any) -> Check | None:
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return None
    if tp is None or tp is _NONE:
        return _expect(lambda v: v is None, "None")
    origin = get_origin(tp)
    args = get_args(tp)
    if typing.is_typeddict(tp):
        return _typeddict_checker(tp)
    if origin is None and isinstance(tp, type) and not args:
        return _class_checker(tp)
    if _is_union(tp):
        members = [_checker(a) for a in args]
        if any(m is None for m in members):
            return None
        checks = [m for m in members if m is not None]
        name = describe(tp)

        def check_union(value: Any) -> None:
            for member in checks:
                try:
                    member(value)
                    return
                except (TypeError, ValueError):
                    continue
            raise TypeError(f"expected {name}, got {type(value).__name__}")

        return check_union
    if origin is Literal:
        allowed = args
        return _expect(lambda v: any(v == a and type(v) is type(a) for a in allowed), describe(tp))
    if origin in (list, set, frozenset, cabc.Sequence, cabc.Set, cabc.Collection,
                  cabc.Iterable):  # fmt: skip
        runtime = origin if origin in (list, set, frozenset) else cabc.Collection
        item = _checker(args[0]) if args else None
        return _container_checker(runtime, item, describe(tp))
    if origin is tuple:
        return _tuple_checker(args, describe(tp))
    if origin in (dict, cabc.Mapping):
        key = _checker(args[0]) if args else None
        val = _checker(args[1]) if len(args) > 1 else None
        return _mapping_checker(dict if origin is dict else cabc.Mapping, key, val, describe(tp))
    adapter = _adapter(tp)
    if adapter is None:  # nothing Pydantic can check (Iterator[int], a Protocol...)
        return None

    def check_adapter(value: Any) -> None:
        adapter.validate_python(value, strict=True)

    return check_adapter


def _expect(ok: Callable[[Any], bool], expected: str) -> Check:
    def check(value: Any) -> None:
        if not ok(value):
            raise TypeError(f"expected {expected}, got {type(value).__name__} {value!r:.60}")

    return check


def _adapter(tp: Any) -> TypeAdapter[Any] | None:
    """A Pydantic adapter for ``tp``; plain classes are checked with ``isinstance``."""
    try:
        return TypeAdapter(tp)
    except PydanticSchemaGenerationError:
        pass
    except Exception:
        return None
    try:
        return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:
        return None


def _class_checker(cls: type) -> Check | None:
    if getattr(cls, "_is_protocol", False) and not getattr(cls, "_is_runtime_protocol", False):
        return None
    if cls is float:
        return _expect(lambda v: type(v) in (float, int), "float")
    if cls is int:
        return _expect(lambda v: isinstance(v, int) and type(v) is not bool, "int")
    return _expect(lambda v: isinstance(v, cls), cls.__qualname__)


def _typeddict_checker(tp: Any) -> Check:
    fields = {k: _checker(v) for k, v in typing.get_type_hints(tp).items()}
    required: frozenset[str] = getattr(tp, "__required_keys__", frozenset(fields))
    name = describe(tp)

    def check(value: Any) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        missing = sorted(required - value.keys())
        if missing:
            raise TypeError(f"{name} is missing {', '.join(missing)}")
        for key, item in value.items():
            field_check = fields.get(key)
            if key not in fields:
                raise TypeError(f"{name} has no key {key!r}")
            if field_check is not None:
                try:
                    field_check(item)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"key {key!r}: {exc}") from None

    return check


def _container_checker(runtime: type, item: Check | None, name: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, runtime) or isinstance(value, str | bytes):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        if item is not None:
            for n, element in enumerate(typing.cast("cabc.Iterable[Any]", value)):
                try:
                    item(element)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"item {n}: {exc}") from None

    return check


def _tuple_checker(args: tuple[Any, ...], name: str) -> Check:
    if len(args) == 2 and args[1] is Ellipsis:
        return _container_checker(tuple, _checker(args[0]), name)
    items = [_checker(a) for a in args]

    def check(value: Any) -> None:
        if not isinstance(value, tuple) or (args and len(value) != len(items)):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        for n, (item, element) in enumerate(zip(items, value, strict=False)):
            if item is not None:
                try:
                    item(element)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"item {n}: {exc}") from None

    return check


def _mapping_checker(runtime: type, key: Check | None, val: Check | None, name: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, runtime):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        for k, v in typing.cast("cabc.Mapping[Any, Any]", value).items():
            try:
                if key is not None:
                    key(k)
                if val is not None:
                    val(v)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"key {k!r}: {exc}") from None

    return check


def input_adapter(tp: Any) -> TypeAdapter[Any] | None:
    """A lax validator for flow inputs (which often arrive as JSON): ``{}`` -> model."""
    if tp is Any or tp is object:
        return None
    return _adapter(tp)
