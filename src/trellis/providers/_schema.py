"""JSON schemas as the providers' structured-output features accept them.

Both OpenAI's ``response_format: json_schema`` and Anthropic's tool ``input_schema`` need an
*object* at the root, so :func:`object_root` wraps any other root (a list, a string, a
union) as ``{"value": ...}``; :func:`unwrap_reply` undoes that on the reply text.

OpenAI's strict mode additionally needs every object closed (``additionalProperties:
false``) with all its properties required, and accepts only a subset of JSON Schema.
:func:`to_strict` rewrites a pydantic schema accordingly, dropping annotations and
constraints strict mode rejects (Trellis validates the reply against the full schema
anyway), or returns ``None`` when the schema cannot be made strict (free-form
dictionaries, tuples, ``not`` ...), in which case the caller sends ``strict: false``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

__all__ = ["WRAP_KEY", "object_root", "schema_name", "to_strict", "unwrap_reply"]

#: The property a non-object root is wrapped in.
WRAP_KEY = "value"

_DEFS = ("$defs", "definitions")

#: Keywords OpenAI strict mode accepts.
_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "enum",
        "const",
        "description",
        "title",
        "$defs",
        "definitions",
        "$ref",
        "pattern",
        "format",
        "multipleOf",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
    }
)
#: Annotations and constraints strict mode rejects but that can be dropped: the reply is
#: validated against the original schema afterwards.
_DROPPABLE = frozenset(
    {
        "default",
        "examples",
        "minLength",
        "maxLength",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "readOnly",
        "writeOnly",
        "deprecated",
        "$comment",
        "$schema",
        "$id",
        "contentEncoding",
        "contentMediaType",
        "discriminator",
    }
)
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def schema_name(name: str | None) -> str:
    """A name both APIs accept for a schema / tool (``[A-Za-z0-9_-]{1,64}``), ``output``
    when there is none."""
    return _NAME_CHARS.sub("_", name or "")[:64] or "output"


def object_root(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(schema, False)`` if its root is an object, else ``({"value": root}, True)`` with
    ``$defs`` kept at the new root (so ``#/$defs/...`` references still resolve)."""
    if schema.get("type") == "object" and not any(k in schema for k in ("anyOf", "oneOf")):
        return schema, False
    inner = {k: v for k, v in schema.items() if k not in _DEFS}
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {WRAP_KEY: inner},
        "required": [WRAP_KEY],
        "additionalProperties": False,
    }
    for key in _DEFS:
        if key in schema:
            wrapped[key] = schema[key]
    return wrapped, True


def unwrap_reply(text: str) -> str:
    """The JSON text of ``value`` in a wrapped reply ``{"value": ...}``; the text itself
    when it is not one (malformed JSON is left for the engine to report and re-ask)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and set(data) == {WRAP_KEY}:
        return json.dumps(data[WRAP_KEY], ensure_ascii=False)
    return text


class _NotStrict(Exception):
    pass


def to_strict(schema: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of the object-rooted ``schema`` that OpenAI strict mode accepts, or ``None``.

    Every object gets ``additionalProperties: false`` and all its properties required
    (an optional field must then be given; its default is not lost, Trellis still
    validates with the original type). ``oneOf`` becomes ``anyOf``, a one-element ``allOf``
    is merged, siblings of ``$ref`` and droppable keywords are removed, unsupported string
    formats are dropped.
    """
    try:
        strict: dict[str, Any] = _strict_node(copy.deepcopy(schema))
    except _NotStrict:
        return None
    return strict


def _strict_node(node: Any) -> Any:
    if not isinstance(node, dict):
        if isinstance(node, bool):
            raise _NotStrict  # a boolean schema (true / false)
        return node
    if "$ref" in node:
        return {"$ref": node["$ref"]}
    if "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        node.pop("allOf")
        merged = dict(all_of[0])
        merged.update(node)
        node = merged
        if "$ref" in node:
            return {"$ref": node["$ref"]}
    for key in list(node):
        if key in _STRICT_KEYWORDS:
            continue
        if key in _DROPPABLE:
            node.pop(key)
            continue
        raise _NotStrict
    fmt = node.get("format")
    if fmt is not None and fmt not in _STRICT_FORMATS:
        node.pop("format")
    for key in _DEFS:
        defs = node.get(key)
        if isinstance(defs, dict):
            node[key] = {name: _strict_node(sub) for name, sub in defs.items()}
    types = node.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if is_object or "properties" in node:
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props is None or not isinstance(props, dict):
            raise _NotStrict  # a free-form mapping
        if isinstance(extra, dict) and extra:
            raise _NotStrict
        node["properties"] = {name: _strict_node(sub) for name, sub in props.items()}
        node["required"] = list(props)
        node["additionalProperties"] = False
    items = node.get("items")
    if isinstance(items, dict):
        node["items"] = _strict_node(items)
    elif items is not None:
        raise _NotStrict
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        node["anyOf"] = [_strict_node(sub) for sub in any_of]
    if not any(k in node for k in ("type", "anyOf", "enum", "const")):
        raise _NotStrict  # an unconstrained value (``Any``)
    return node
