"""FunctionModel and TestModel: function-backed and scripted models for tests."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import BaseModel

from trellis.errors import OverloadedError, RateLimitError
from trellis.models.base import Message, Model, ModelRequest, ModelResponse, Usage
from trellis.models.function import FunctionModel, TestModel, TestModelExhaustedError
from trellis.models.tokens import estimate_request_tokens


class Answer(BaseModel):
    value: int
    note: str = "ok"


def _req(prompt: str = "What is 6 times 7?") -> ModelRequest:
    return ModelRequest(messages=(Message("user", prompt),), model="test")


async def test_sync_function_returning_text() -> None:
    model = FunctionModel(lambda r: f"echo: {r.messages[-1].content}")
    assert isinstance(model, Model)
    assert model.name == "function:test"
    req = _req("hi there")
    reply = await model.complete(req)
    assert reply.text == "echo: hi there"
    assert reply.finish_reason == "stop"
    assert reply.model == "function:test"
    assert reply.usage == Usage(estimate_request_tokens(req), math.ceil(len(reply.text) / 4))
    assert model.calls == [req]


async def test_async_function_returning_dict_list_and_model() -> None:
    async def fn(request: ModelRequest) -> dict[str, object]:
        return {"value": 42, "prompt": request.prompt_text()}

    model = FunctionModel(fn, name="function:answers")
    reply = await model.complete(_req("q"))
    assert json.loads(reply.text) == {"value": 42, "prompt": "q"}
    assert reply.model == "function:answers"

    lists = FunctionModel(lambda r: [1, 2, 3])
    assert json.loads((await lists.complete(_req())).text) == [1, 2, 3]

    models = FunctionModel(lambda r: Answer(value=42))
    text = (await models.complete(_req())).text
    assert Answer.model_validate_json(text) == Answer(value=42)


async def test_model_response_passes_through() -> None:
    response = ModelResponse(text="", usage=Usage(10, 2), finish_reason="refusal", refusal="no")
    model = FunctionModel(lambda r: response)
    assert await model.complete(_req()) is response


async def test_model_error_propagates_unchanged() -> None:
    error = RateLimitError("slow down", retry_after=2.5, status_code=429)

    def fn(request: ModelRequest) -> str:
        raise error

    model = FunctionModel(fn)
    with pytest.raises(RateLimitError) as info:
        await model.complete(_req())
    assert info.value is error
    assert len(model.calls) == 1


async def test_bad_return_type() -> None:
    model = FunctionModel(lambda r: 42)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="int"):
        await model.complete(_req())


async def test_test_model_scripted_replies() -> None:
    canned = ModelResponse(text="done", usage=Usage(1, 1))
    model = TestModel(
        "plain",
        {"value": 1},
        Answer(value=2),
        RateLimitError("429", retry_after=1.0),
        OverloadedError,
        canned,
    )
    assert model.name == "test:model"
    assert model.remaining == 6
    assert (await model.complete(_req())).text == "plain"
    assert json.loads((await model.complete(_req())).text) == {"value": 1}
    assert Answer.model_validate_json((await model.complete(_req())).text).value == 2
    with pytest.raises(RateLimitError) as rl:
        await model.complete(_req())
    assert rl.value.retry_after == 1.0
    with pytest.raises(OverloadedError):
        await model.complete(_req())
    assert await model.complete(_req()) is canned
    assert model.remaining == 0
    assert len(model.calls) == 6


async def test_test_model_exhausted() -> None:
    model = TestModel("only one", name="test:tiny")
    await model.complete(_req())
    with pytest.raises(TestModelExhaustedError) as info:
        await model.complete(_req("the second question"))
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    assert "test:tiny" in message
    assert "1 reply" in message
    assert "#2" in message
    assert "the second question" in message
    with pytest.raises(AssertionError):
        await TestModel().complete(_req())
