"""Partial structured output: the fields of a step's output model as its JSON arrives.

A streaming provider sends a structured reply as pieces of JSON text. :class:`PartialParser`
accumulates them and, after each piece, parses the text so far leniently (an unfinished
string, list or object is closed where it stops) and validates the result against a
*partial model* of the output type: the same fields, every one optional (default None).
A field whose value does not validate yet (say, a nested object still missing required
fields) is left out, and so is a number the text ends in (it may be cut), so what is exposed is
always valid as far as it goes.

Only Pydantic models have a partial form; for other output types there is none and
nothing is exposed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model
from pydantic_core import from_json

__all__ = ["PartialParser", "partial_model"]

_NUMBER_ENDS = frozenset("0123456789.-")  # a text ending so may end in a cut number
_NUMBER_CHARS = "0123456789.eE+-"


@functools.cache
def partial_model(tp: type[BaseModel]) -> type[BaseModel]:
    """``tp`` with every field optional (default None): what a partial reply validates as."""
    fields: dict[str, Any] = {
        name: (info.annotation | None, None)  # type: ignore[operator]
        for name, info in tp.model_fields.items()
    }
    return create_model(f"Partial{tp.__name__}", __base__=BaseModel, **fields)


class PartialParser:
    """Feed a structured reply's text piece by piece; get its partial model so far.

    Fields are validated one by one, each only when its parsed value changed: a field
    keeps its last valid value while the text shows an invalid one (a list whose last
    element is still being written), and is left out until it first validates."""

    __slots__ = ("_build", "_model", "_parsed", "_parts", "_valid", "_validators", "_values")

    def __init__(self, tp: Any) -> None:
        self._model = partial_model(tp) if _is_model(tp) else None
        self._validators = _field_validators(tp) if self._model is not None else {}
        self._build = _constructor(self._model) if self._model is not None else None
        self._parts: list[str] = []
        self._parsed: Any = None  # the lenient parse of the text so far
        self._valid: dict[str, Any] = {}  # field -> the parsed value last validated
        self._values: dict[str, Any] = {}  # field -> its validated value

    @property
    def enabled(self) -> bool:
        return self._model is not None

    def feed(self, piece: str) -> BaseModel | None:
        """Add ``piece``; the partial model when it shows more than the last one did."""
        self._parts.append(piece)
        if self._model is None:
            return None
        # A number at the very end may be cut mid-way ("12" of "125"): not shown until the
        # next delimiter proves it whole (strings are shown as far as they go).
        text = "".join(self._parts)
        if text[-1:] in _NUMBER_ENDS:
            text = text.rstrip(_NUMBER_CHARS)
        try:
            data = from_json(text, allow_partial="trailing-strings")
        except ValueError:
            return None  # not JSON yet (or not JSON at all): nothing to show
        if not isinstance(data, dict) or data == self._parsed:
            return None  # not an object, or nothing new (whitespace, a key being written)
        self._parsed = data
        valid, values, validators = self._valid, self._values, self._validators
        changed = False
        for name, raw in data.items():
            validate = validators.get(name)
            if validate is None or (name in valid and valid[name] == raw):
                continue
            try:
                value = validate(raw)
            except ValidationError:
                continue  # not valid yet: the last valid value (or nothing) stands
            valid[name] = raw
            values[name] = value
            changed = True
        if not changed or self._build is None:
            return None
        return self._build(values)


@functools.cache
def _field_validators(tp: type[BaseModel]) -> dict[str, Callable[[Any], Any]]:
    """One validator per field of ``tp`` (its type and constraints): the compiled
    validator's ``validate_python``, called without ``TypeAdapter``'s per-call wrapper."""
    adapters: dict[str, TypeAdapter[Any]] = {
        name: TypeAdapter(Annotated[info.annotation, info])  # type: ignore[arg-type]
        for name, info in tp.model_fields.items()
    }
    return {name: adapter.validator.validate_python for name, adapter in adapters.items()}


@functools.cache
def _constructor(model: type[BaseModel]) -> Callable[[dict[str, Any]], BaseModel]:
    """``model.model_construct(**values)`` for a partial model, without its per-call work
    (aliases, defaults, post-init hooks: a partial model has none of them; every field
    defaults to None). It is called for every piece of a streamed structured reply."""
    defaults = dict.fromkeys(model.model_fields)
    plain = (
        not model.__pydantic_root_model__
        and not model.__pydantic_post_init__
        and model.model_config.get("extra") != "allow"
        and all(f.alias is None and f.validation_alias is None for f in model.model_fields.values())
    )
    if not plain:
        return lambda values: model.model_construct(**values)
    new = model.__new__
    setattr_ = object.__setattr__

    def build(values: dict[str, Any]) -> BaseModel:
        instance = new(model)
        setattr_(instance, "__dict__", {**defaults, **values})
        setattr_(instance, "__pydantic_fields_set__", set(values))
        setattr_(instance, "__pydantic_extra__", None)
        setattr_(instance, "__pydantic_private__", None)
        return instance

    return build


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
