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
import re
from typing import Any

from pydantic import BaseModel, ValidationError, create_model
from pydantic_core import from_json

__all__ = ["PartialParser", "partial_model"]

_TRAILING_NUMBER = re.compile(r"-?[0-9][0-9.eE+-]*$|-$")


@functools.cache
def partial_model(tp: type[BaseModel]) -> type[BaseModel]:
    """``tp`` with every field optional (default None): what a partial reply validates as."""
    fields: dict[str, Any] = {
        name: (info.annotation | None, None)  # type: ignore[operator]
        for name, info in tp.model_fields.items()
    }
    return create_model(f"Partial{tp.__name__}", __base__=BaseModel, **fields)


class PartialParser:
    """Feed a structured reply's text piece by piece; get its partial model so far."""

    __slots__ = ("_last", "_model", "_parsed", "_parts")

    def __init__(self, tp: Any) -> None:
        self._model = partial_model(tp) if _is_model(tp) else None
        self._parts: list[str] = []
        self._last: dict[str, Any] | None = None
        self._parsed: Any = None  # the lenient parse of the text so far

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
        text = _TRAILING_NUMBER.sub("", "".join(self._parts))
        try:
            data = from_json(text, allow_partial="trailing-strings")
        except ValueError:
            return None  # not JSON yet (or not JSON at all): nothing to show
        if not isinstance(data, dict) or data == self._parsed:
            return None  # not an object, or nothing new (whitespace, a key being written)
        self._parsed = data
        value = self._validated(data)
        if value is None:
            return None
        shown = value.model_dump(exclude_unset=True)
        if not shown or shown == self._last:
            return None
        self._last = shown
        return value

    def _validated(self, data: dict[str, Any]) -> BaseModel | None:
        assert self._model is not None
        known = {k: v for k, v in data.items() if k in self._model.model_fields}
        for _ in range(len(known) + 1):
            try:
                return self._model.model_validate(known)
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
                if not bad & known.keys():
                    return None
                known = {k: v for k, v in known.items() if k not in bad}
        return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
