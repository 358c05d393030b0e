"""Requests and replies built on the hot path (``trellis.models.base.new_request`` /
``new_response``) are exactly what the dataclass constructors make, and the function
model's replies and token estimates are unchanged."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from pydantic import BaseModel

from trellis.models import base
from trellis.models.base import Message, ModelRequest, ModelResponse, ToolSpec, Usage
from trellis.models.function import FunctionModel
from trellis.models.tokens import estimate_request_tokens, estimate_tokens, schema_json


def _hook(piece: str) -> None:
    pass


FIELDS = {
    "messages": (Message("system", "be brief"), Message("user", "hello")),
    "model": "gpt-x",
    "output_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    "schema_name": "Out",
    "temperature": 0.3,
    "max_tokens": 77,
    "seed": 5,
    "tools": (ToolSpec(name="t", description="a tool", parameters={"type": "object"}),),
    "tool_choice": "auto",
    "on_text": _hook,
}


def test_the_fast_twins_have_exactly_the_dataclasses_fields() -> None:
    """A field added to a dataclass must be added to its fast builder too."""
    assert set(base._RequestFields.__slots__) == {f.name for f in dataclasses.fields(ModelRequest)}
    assert set(base._ResponseFields.__slots__) == {
        f.name for f in dataclasses.fields(ModelResponse)
    }


def test_new_request_is_the_constructors_request() -> None:
    made = base.new_request(**FIELDS)  # type: ignore[arg-type]
    expected = ModelRequest(**FIELDS)  # type: ignore[arg-type]
    assert type(made) is ModelRequest
    assert made == expected and repr(made) == repr(expected)
    for f in dataclasses.fields(ModelRequest):
        assert getattr(made, f.name) == getattr(expected, f.name), f.name
    assert made.extra == {} and made.extra is not expected.extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.model = "other"  # type: ignore[misc]
    assert dataclasses.replace(made, model="y").model == "y"
    assert copy.copy(made) == made
    plain = dataclasses.replace(made, on_text=None)
    assert pickle.loads(pickle.dumps(plain)) == plain
    assert base.new_request(**FIELDS).extra is not made.extra  # type: ignore[arg-type]


def test_new_response_is_the_constructors_response() -> None:
    made = base.new_response("hi", Usage(3, 1), "m")
    expected = ModelResponse("hi", Usage(3, 1), model="m")
    assert type(made) is ModelResponse
    assert made == expected and hash(made) == hash(expected) and repr(made) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.text = "x"  # type: ignore[misc]


def test_estimate_request_tokens_counts_messages_schema_and_framing() -> None:
    request = ModelRequest(**FIELDS)  # type: ignore[arg-type]
    chars = len("be brief") + len("hello") + len(schema_json(FIELDS["output_schema"]))  # type: ignore[arg-type]
    per_message = estimate_request_tokens(ModelRequest(messages=(), model="m"))
    assert per_message == 0
    one = estimate_request_tokens(ModelRequest(messages=(Message("user", ""),), model="m"))
    assert estimate_request_tokens(request) == (chars + 3) // 4 + 2 * one


class Out(BaseModel):
    a: int


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        ({"a": 1}, '{"a": 1}'),
        ([1, 2], "[1, 2]"),
        (Out(a=2), '{"a":2}'),
    ],
)
async def test_function_model_replies_and_usage(reply: object, text: str) -> None:
    request = ModelRequest(messages=(Message("user", "q"),), model="m")

    async def later(r: ModelRequest) -> object:
        return reply

    for fn in (lambda r: reply, later):
        model = FunctionModel(fn)  # type: ignore[arg-type]
        response = await model.complete(request)
        assert response == ModelResponse(
            text,
            Usage(estimate_request_tokens(request), max(1, estimate_tokens(text))),
            model=model.name,
        )
        assert model.calls == [request]


async def test_function_model_passes_a_model_response_through() -> None:
    given = ModelResponse("x", Usage(9, 9), finish_reason="length")
    model = FunctionModel(lambda r: given)
    assert await model.complete(ModelRequest(messages=(), model="m")) is given
