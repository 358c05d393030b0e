"""Structured-output schemas: object roots for both APIs, OpenAI strict-mode rewriting."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from trellis.providers._schema import object_root, schema_name, to_strict, unwrap_reply


class Address(BaseModel):
    city: str = Field(description="City name", min_length=1)
    zip: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Person(BaseModel):
    name: Annotated[str, Field(max_length=50)]
    home: Address = Field(description="Where they live")
    pets: list[Annotated[Cat | Dog, Field(discriminator="kind")]] = []
    website: str | None = Field(default=None, json_schema_extra={"format": "uri"})


def walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(walk(value))
    return out


def test_strict_schema_closes_objects_and_requires_everything() -> None:
    strict = to_strict(Person.model_json_schema())
    assert strict is not None
    for node in walk(strict):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
        for banned in ("default", "minLength", "maxLength", "discriminator", "oneOf"):
            assert banned not in node
        if "$ref" in node:
            assert set(node) == {"$ref"}
    assert strict["required"] == ["name", "home", "pets", "website"]
    assert "format" not in str(strict["properties"]["website"])
    assert "anyOf" in strict["properties"]["pets"]["items"]


def test_strict_schema_does_not_touch_the_original() -> None:
    schema = Person.model_json_schema()
    before = repr(schema)
    to_strict(schema)
    assert repr(schema) == before


def test_schemas_that_cannot_be_strict() -> None:
    assert to_strict(TypeAdapter(dict[str, int]).json_schema()) is None
    wrapped, _ = object_root(TypeAdapter(tuple[int, str]).json_schema())
    assert to_strict(wrapped) is None  # prefixItems
    assert to_strict({"type": "object", "properties": {"x": {}}}) is None  # Any
    assert to_strict({"type": "object", "properties": {"x": {"not": {"type": "null"}}}}) is None


def test_object_root_wraps_everything_else() -> None:
    schema = TypeAdapter(list[Address]).json_schema()
    wrapped, was_wrapped = object_root(schema)
    assert was_wrapped
    assert wrapped["required"] == ["value"]
    assert wrapped["$defs"] == schema["$defs"]
    assert "$defs" not in wrapped["properties"]["value"]
    assert to_strict(wrapped) is not None
    same, was = object_root(Address.model_json_schema())
    assert not was and same == Address.model_json_schema()
    union, was = object_root(TypeAdapter(Cat | Dog).json_schema())
    assert was and "anyOf" in union["properties"]["value"]


def test_unwrap_reply() -> None:
    assert unwrap_reply('{"value": [1, "é"]}') == '[1, "é"]'
    assert unwrap_reply('{"value": 1, "other": 2}') == '{"value": 1, "other": 2}'
    assert unwrap_reply('{"value": [1, ') == '{"value": [1, '  # left for the engine


def test_schema_name() -> None:
    assert schema_name("list[Item]") == "list_Item_"
    assert schema_name(None) == "output"
    assert len(schema_name("x" * 100)) == 64
