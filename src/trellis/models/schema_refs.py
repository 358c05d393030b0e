"""Resolving a JSON schema's local ``$ref`` and ``allOf``, for the schema sampler.

:func:`resolve` follows ``$ref`` pointers into the root schema (``#/$defs/Name``; sibling
keywords of a ``$ref`` override the target's) and merges ``allOf`` into one schema.
A schema it cannot walk is a :class:`SchemaError` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Schema", "SchemaError", "pointer", "resolve"]

Schema = Mapping[str, Any]

_ANNOTATION_KEYS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)


class SchemaError(ValueError):
    """A schema the sampler cannot walk: a non-local or dangling ``$ref``, a cycle."""


def pointer(root: Schema, ref: str) -> Schema:
    """The schema a local ``$ref`` (``#/...``) points at in ``root``."""
    if not ref.startswith("#"):
        raise SchemaError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError(f"unresolvable $ref {ref!r}")
    if not isinstance(node, Mapping):
        raise SchemaError(f"$ref {ref!r} does not point at a schema")
    return node


def resolve(root: Schema, schema: Schema) -> Schema:
    """``schema`` with its ``$ref`` chain followed in ``root`` and ``allOf`` merged."""
    hops = 0
    while "$ref" in schema:
        target = pointer(root, schema["$ref"])
        siblings = [k for k in schema if k != "$ref" and k not in _ANNOTATION_KEYS]
        if siblings:
            merged = dict(target)
            merged.update((k, schema[k]) for k in siblings)
            schema = merged
        else:
            schema = target
        hops += 1
        if hops > 32:
            raise SchemaError("$ref cycle")
    if "allOf" in schema:
        schema = _merge_all_of(root, schema)
    return schema


def _merge_all_of(root: Schema, schema: Schema) -> Schema:
    """``allOf``'s parts and the schema's own keywords as one schema: properties and
    required fields joined, lower bounds raised, upper bounds lowered."""
    merged: dict[str, Any] = {}
    props: dict[str, Any] = {}
    required: list[str] = []
    parts = [resolve(root, s) for s in schema["allOf"]]
    parts.append({k: v for k, v in schema.items() if k != "allOf"})
    for part in parts:
        for k, v in part.items():
            if k == "properties":
                props.update(v)
            elif k == "required":
                required.extend(r for r in v if r not in required)
            elif k in ("minimum", "exclusiveMinimum", "minLength", "minItems") and k in merged:
                merged[k] = max(merged[k], v)
            elif k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems") and k in merged:
                merged[k] = min(merged[k], v)
            else:
                merged[k] = v
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged
