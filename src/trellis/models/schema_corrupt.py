"""Valid values made invalid: the simulator's ``invalid_json`` and ``invalid_tool_args``
faults. :func:`corrupt_value` turns a value valid for a JSON schema into one that parses as
JSON but fails the schema."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from trellis.models.schema_refs import Schema, SchemaError, resolve

__all__ = ["corrupt_value"]


def _json_types(root: Schema, schema: Schema, depth: int = 0) -> set[str] | None:
    """The JSON types a value of ``schema`` may have, or None when anything might do."""
    if depth > 16:
        return None
    schema = resolve(root, schema)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        return {_type_of_value(v) for v in values}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        out: set[str] = set()
        for b in branches:
            t = _json_types(root, b, depth + 1)
            if t is None:
                return None
            out |= t
        return out
    t = schema.get("type")
    if isinstance(t, str):
        return {"number", "integer"} if t in ("number", "integer") else {t}
    if isinstance(t, list):
        types = {str(x) for x in t}
        if types & {"number", "integer"}:
            types |= {"number", "integer"}
        return types
    if "properties" in schema or "additionalProperties" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return None


def _type_of_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("object", {"unexpected": "value"}),
    ("array", ["unexpected"]),
    ("string", "not a valid value"),
)


def _wrong_value(root: Schema, schema: Schema) -> tuple[bool, Any]:
    try:
        types = _json_types(root, schema)
    except SchemaError:
        return False, None
    if types is None:
        return False, None
    for t, v in _WRONG_VALUES:
        if t not in types:
            return True, v
    return False, None


def corrupt_value(schema: Mapping[str, Any], value: Any, rng: random.Random) -> Any:
    """A JSON value like ``value`` that fails ``schema``: a required field removed, or a
    field (or the whole value) given a value of the wrong JSON type.

    Best effort: a schema that accepts anything cannot be violated, and then a value of
    a wrong type for the root is still returned when one exists.
    """
    root = resolve(schema, schema)
    if isinstance(value, dict):
        required = [r for r in root.get("required") or () if r in value]
        props: Mapping[str, Any] = root.get("properties") or {}
        retypable: list[tuple[str, Any]] = []
        for key in value:
            if key in props:
                ok, wrong = _wrong_value(schema, props[key])
                if ok:
                    retypable.append((key, wrong))
        out = dict(value)
        if required and (not retypable or rng.random() < 0.5):
            del out[rng.choice(required)]
            return out
        if retypable:
            key, wrong = rng.choice(retypable)
            out[key] = wrong
            return out
    ok, wrong = _wrong_value(schema, root)
    if ok:
        return wrong
    return {"unexpected": value} if not isinstance(value, dict) else ["unexpected"]
