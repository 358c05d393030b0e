"""Tools: JSON schema from the signature and docstring, options, bad definitions,
argument validation, sync and async calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import FlowDefinitionError


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Unknowable:
    """Not a type pydantic can describe as JSON."""


@tl.tool
async def book_room(
    guest: str,
    nights: int,
    companions: list[str],
    address: Address,
    room: Literal["single", "double"] = "single",
    note: str | None = None,
    rate: float = 1.5,
    breakfast: bool = False,
) -> str:
    """Book a hotel room for a guest.

    The room is held for 24 hours.

    Args:
        guest: who the room is for
        nights (int): how many nights to stay
        companions: who else comes along
        room: the kind of room

    Returns:
        A booking reference.
    """
    return f"booked {guest} for {nights}"


# --------------------------------------------------------------------------- schema


def test_schema_types_and_required_from_signature() -> None:
    params = book_room.parameters
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert "title" not in params
    props = params["properties"]
    assert list(props) == [
        "guest",
        "nights",
        "companions",
        "address",
        "room",
        "note",
        "rate",
        "breakfast",
    ]
    assert params["required"] == ["guest", "nights", "companions", "address"]
    assert props["guest"]["type"] == "string"
    assert props["nights"]["type"] == "integer"
    assert props["rate"] == {"default": 1.5, "title": "Rate", "type": "number"}
    assert props["breakfast"]["type"] == "boolean"
    assert props["breakfast"]["default"] is False
    assert props["companions"]["type"] == "array"
    assert props["companions"]["items"] == {"type": "string"}


def test_schema_optional_literal_and_nested_model() -> None:
    props = book_room.parameters["properties"]
    assert props["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert props["note"]["default"] is None
    assert props["room"]["enum"] == ["single", "double"]
    assert props["room"]["default"] == "single"
    ref = props["address"]["$ref"]
    assert ref == "#/$defs/Address"
    nested = book_room.parameters["$defs"]["Address"]
    assert nested["required"] == ["city"]
    assert set(nested["properties"]) == {"city", "postcode"}


def test_descriptions_from_docstring() -> None:
    assert book_room.name == "book_room"
    assert book_room.description == "Book a hotel room for a guest."
    props = book_room.parameters["properties"]
    assert props["guest"]["description"] == "who the room is for"
    assert props["nights"]["description"] == "how many nights to stay"  # "(int)" dropped
    assert props["companions"]["description"] == "who else comes along"
    assert props["room"]["description"] == "the kind of room"
    # Not documented in Args: no description; the Returns section is not an argument.
    assert "description" not in props["note"]
    assert "Returns" not in json.dumps(book_room.parameters)


def test_spec_is_what_the_model_receives() -> None:
    spec = book_room.spec
    assert isinstance(spec, tl.ToolSpec)
    assert (spec.name, spec.description) == ("book_room", "Book a hotel room for a guest.")
    assert spec.parameters == book_room.parameters


def test_no_docstring_uses_the_name_and_no_params_is_an_empty_object() -> None:
    def ping() -> str:
        return "pong"

    t = tl.Tool(ping)
    assert t.description == "ping"
    assert t.parameters["properties"] == {}
    assert t.parameters.get("required", []) == []
    assert t.validate("{}") == {}
    assert t.validate("") == {}  # some providers send no arguments at all


def test_unannotated_parameter_accepts_any_json() -> None:
    def echo(value, times: int = 1) -> str:  # type: ignore[no-untyped-def]
        return str(value) * times

    t = tl.Tool(echo)
    assert t.parameters["required"] == ["value"]
    assert t.validate('{"value": {"a": [1, 2]}}') == {"value": {"a": [1, 2]}, "times": 1}


def test_options_name_description_retries() -> None:
    @tl.tool(name="lookup-v2", description="Look things up.", retries=5)
    def lookup(query: str) -> str:
        """Ignored summary."""
        return query

    assert isinstance(lookup, tl.Tool)
    assert lookup.name == "lookup-v2"
    assert lookup.description == "Look things up."
    assert lookup.retries == 5
    assert lookup.spec.name == "lookup-v2"
    assert tl.Tool(lambda_free_function).retries == 2  # the default


def lambda_free_function(x: int) -> int:
    return x


def test_tool_called_with_function_and_options_keeps_the_options() -> None:
    t = tl.tool(lambda_free_function, name="renamed", retries=0)  # type: ignore[call-overload]
    assert (t.name, t.retries) == ("renamed", 0)


# --------------------------------------------------------------------------- bad definitions


def test_var_positional_is_rejected() -> None:
    def bad(*queries: str) -> str:
        return ""

    with pytest.raises(FlowDefinitionError, match=r"tool 'bad'.*'queries'.*plain named"):
        tl.tool(bad)


def test_var_keyword_is_rejected() -> None:
    def bad(query: str, **options: Any) -> str:
        return ""

    with pytest.raises(FlowDefinitionError, match=r"'options'.*plain named"):
        tl.tool(bad)


def test_positional_only_is_rejected() -> None:
    def bad(query: str, /) -> str:
        return ""

    with pytest.raises(FlowDefinitionError, match=r"'query'.*plain named"):
        tl.tool(bad)


def test_unresolvable_annotation_is_rejected() -> None:
    def bad(query: NoSuchType) -> str:  # type: ignore[name-defined]  # noqa: F821
        return ""

    with pytest.raises(FlowDefinitionError, match=r"tool 'bad': cannot resolve its annotations"):
        tl.tool(bad)


def test_annotation_without_json_schema_is_rejected() -> None:
    def bad(thing: Unknowable) -> str:
        return ""

    with pytest.raises(FlowDefinitionError, match=r"tool 'bad': its parameters have no JSON"):
        tl.tool(bad)


def test_leading_underscore_parameter_is_rejected() -> None:
    def bad(_hidden: int) -> str:
        return ""

    with pytest.raises(FlowDefinitionError, match=r"tool 'bad'"):
        tl.tool(bad)


@pytest.mark.parametrize("name", ["has space", "1starts_with_digit", "dot.ted", "x" * 65])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(FlowDefinitionError, match="must match"):
        tl.tool(name=name)(lambda_free_function)


def test_a_lambda_needs_a_name() -> None:
    with pytest.raises(FlowDefinitionError, match="must match"):
        tl.tool(lambda x: x)
    named = tl.tool(name="identity")(lambda x: x)
    assert named.name == "identity"


def test_negative_retries_rejected_and_non_callable_rejected() -> None:
    with pytest.raises(FlowDefinitionError, match="retries cannot be negative"):
        tl.tool(retries=-1)(lambda_free_function)
    with pytest.raises(FlowDefinitionError, match="must be a function"):
        tl.Tool("not a function")  # type: ignore[arg-type]


def test_parameter_named_model_config_is_not_silently_dropped() -> None:
    def configure(model_config: str) -> str:
        return model_config

    try:
        t = tl.Tool(configure)
    except FlowDefinitionError:
        return
    assert "model_config" in t.parameters["properties"]


# --------------------------------------------------------------------------- validation


def test_validate_returns_typed_kwargs_with_defaults() -> None:
    args = book_room.validate(
        json.dumps(
            {"guest": "Ada", "nights": 2, "companions": ["Bob"], "address": {"city": "Paris"}}
        )
    )
    assert args == {
        "guest": "Ada",
        "nights": 2,
        "companions": ["Bob"],
        "address": Address(city="Paris"),
        "room": "single",
        "note": None,
        "rate": 1.5,
        "breakfast": False,
    }
    assert isinstance(args["address"], Address)


GOOD = {"guest": "Ada", "nights": 2, "companions": [], "address": {"city": "Paris"}}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({**GOOD, "pets": 3}, r"pets: Extra inputs are not permitted"),
        ({k: v for k, v in GOOD.items() if k != "nights"}, r"nights: Field required"),
        ({**GOOD, "nights": "two"}, r"nights: Input should be a valid integer"),
        ({**GOOD, "room": "suite"}, r"room: Input should be 'single' or 'double'"),
        ({**GOOD, "address": {"postcode": "75001"}}, r"address\.city: Field required"),
        ({**GOOD, "companions": "Bob"}, r"companions: Input should be a valid array"),
    ],
)
def test_validate_rejects_with_a_clear_message(arguments: dict[str, Any], expected: str) -> None:
    with pytest.raises(tl.ToolArgumentsError, match=r"invalid arguments for tool 'book_room': "):
        book_room.validate(json.dumps(arguments))
    with pytest.raises(tl.ToolArgumentsError, match=expected):
        book_room.validate(json.dumps(arguments))


@pytest.mark.parametrize("text", ['{"guest": "Ada", ', "not json", "[1, 2]", "null"])
def test_validate_rejects_non_object_json(text: str) -> None:
    with pytest.raises(tl.ToolArgumentsError, match=r"\(arguments\)"):
        book_room.validate(text)


def test_validate_reports_a_bounded_list_of_problems() -> None:
    def many(a: int, b: int, c: int, d: int, e: int, f: int, g: int, h: int) -> int:
        return a

    with pytest.raises(tl.ToolArgumentsError) as info:
        tl.Tool(many).validate("{}")
    assert str(info.value).count("Field required") == 6


# --------------------------------------------------------------------------- calling


async def test_sync_and_async_tools_are_called_with_validated_kwargs() -> None:
    seen: list[Any] = []

    def sync_tool(city: str, days: int = 1) -> dict[str, Any]:
        seen.append(("sync", city, days))
        return {"city": city, "days": days}

    async def async_tool(address: Address) -> str:
        await asyncio.sleep(0)
        seen.append(("async", address))
        return address.city

    s, a = tl.Tool(sync_tool), tl.Tool(async_tool)
    assert (s.is_async, a.is_async) == (False, True)
    assert await s.call(s.validate('{"city": "Oslo"}')) == {"city": "Oslo", "days": 1}
    assert await a.call(a.validate('{"address": {"city": "Rome"}}')) == "Rome"
    assert seen == [("sync", "Oslo", 1), ("async", Address(city="Rome"))]


async def test_a_bound_method_is_a_tool() -> None:
    class Catalogue:
        def __init__(self) -> None:
            self.items = {"a1": "lamp"}

        def find(self, sku: str) -> str | None:
            """Find an item by SKU."""
            return self.items.get(sku)

    t = tl.Tool(Catalogue().find)
    assert t.parameters["required"] == ["sku"]
    assert "self" not in t.parameters["properties"]
    assert await t.call(t.validate('{"sku": "a1"}')) == "lamp"
