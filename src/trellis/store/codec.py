"""JSON in and out of the store. Never pickle: a value JSON cannot hold is an error.

Values are encoded with Pydantic (models, dataclasses, enums, dates, ...). Text that JSON
cannot carry as UTF-8 (a lone surrogate) is written with ASCII escapes, so it round-trips.
Decoding validates against the type the value had (a step's return annotation, an
``output=`` type), which turns stored JSON back into models and dataclasses.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from trellis.errors import SerializationError, StoreError

__all__ = ["decode", "encode"]

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def encode(value: Any, what: str = "value") -> str:
    try:
        return to_json(value).decode()
    except PydanticSerializationError as exc:
        if "surrogates not allowed" in str(exc):
            try:
                return json.dumps(to_jsonable_python(value), ensure_ascii=True)
            except (PydanticSerializationError, TypeError, ValueError) as inner:
                raise SerializationError(f"cannot record {what} as JSON: {inner}") from inner
        raise SerializationError(
            f"cannot record {what} as JSON: {exc}; return Pydantic models, dataclasses or "
            "plain JSON types from steps (Trellis never pickles)"
        ) from exc


def decode(text: str | None, tp: Any = Any, what: str = "value") -> Any:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"corrupt record: {what} is not valid JSON ({exc})") from exc
    if tp is Any or tp is object:
        return data
    try:
        adapter = _ADAPTERS.get(tp)
    except TypeError:
        adapter = None
    if adapter is None:
        try:
            adapter = TypeAdapter(tp)
        except Exception:  # a type Pydantic cannot describe: keep the JSON value
            return data
        with contextlib.suppress(TypeError):
            _ADAPTERS[tp] = adapter
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise StoreError(
            f"corrupt record: {what} does not match its type: "
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from exc
