"""The offline simulator (SimModel, SimOptions) and schema-valid sample generation."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    conint,
    constr,
)

from trellis.errors import (
    BadRequestError,
    ConfigurationError,
    FailureMode,
    ModelTimeoutError,
    OverloadedError,
    RateLimitError,
)
from trellis.models.base import Message, ModelRequest, ModelResponse
from trellis.models.schema_sample import corrupt_value, sample_prose, sample_value
from trellis.models.sim import REFUSAL_MESSAGE, SimModel, SimOptions
from trellis.models.tokens import estimate_request_tokens, estimate_tokens

# --------------------------------------------------------------------------- models


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3


class Route(BaseModel):
    label: Literal["billing", "tech", "sales"]
    confidence: float
    reason: str


class Address(BaseModel):
    street: str
    city: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


class Person(BaseModel):
    name: str
    age: Annotated[int, Field(ge=0, le=120)]
    email: str | None = None
    address: Address
    previous: list[Address] = []
    favourite: Color
    priority: Priority = Priority.LOW


class Bounded(BaseModel):
    tags: list[str] = Field(min_length=2, max_length=3)
    scores: list[Annotated[float, Field(ge=0, le=1)]] = Field(max_length=2)
    small: conint(ge=-5, le=5)  # type: ignore[valid-type]
    even: Annotated[int, Field(ge=10, le=20, multiple_of=2)]
    ratio: Annotated[float, Field(gt=0, lt=1)]
    tiny: Annotated[float, Field(gt=0.5, lt=0.5001)]
    positive: Annotated[float, Field(gt=0)]
    negative: Annotated[int, Field(lt=0)]
    step: Annotated[float, Field(ge=0, le=1, multiple_of=0.25)]
    code: constr(min_length=3, max_length=4)  # type: ignore[valid-type]
    word: Annotated[str, Field(max_length=1)]
    long_text: Annotated[str, Field(min_length=80)]


class Containers(BaseModel):
    counts: dict[str, int]
    flags: dict[Literal["a", "b", "c"], bool]
    pair: tuple[int, str]
    rest: tuple[float, ...]
    unique: set[Literal["x", "y", "z"]]
    frozen: frozenset[int]
    nested: list[list[int]] = Field(min_length=1)


class Formats(BaseModel):
    when: dt.datetime
    day: dt.date
    at: dt.time
    took: dt.timedelta
    ident: uuid.UUID
    link: AnyUrl
    blob: bytes
    code: Annotated[str, Field(pattern=r"^[A-Z]{2,3}-\d{3}(x|y)?$")]


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: Annotated[int, Field(ge=1, le=9)]


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Unions(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")
    either: int | str
    maybe: Priority | None
    maybe_list: list[Color] | None = None
    anything: Any = None
    const: Literal["fixed"]


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    probability: float
    score: float
    rating: int


MODELS: list[type[BaseModel]] = [
    Route,
    Person,
    Bounded,
    Containers,
    Formats,
    Unions,
    Tree,
    Strict,
]


def _req(
    prompt: str = "hello",
    *,
    schema: dict[str, Any] | None = None,
    system: str | None = None,
    max_tokens: int | None = None,
) -> ModelRequest:
    messages = (Message("system", system),) if system else ()
    return ModelRequest(
        messages=(*messages, Message("user", prompt)),
        model="small",
        output_schema=schema,
        max_tokens=max_tokens,
    )


SCHEMAS = {m: m.model_json_schema() for m in MODELS}
ROUTE = SCHEMAS[Route]


# --------------------------------------------------------------------------- schema_sample


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    seed=st.integers(min_value=0, max_value=2**32),
    hint=st.text(max_size=60),
)
def test_samples_validate(model: type[BaseModel], seed: int, hint: str) -> None:
    value = sample_value(SCHEMAS[model], random.Random(seed), hint_text=hint)
    model.model_validate_json(json.dumps(value))


@settings(max_examples=150, deadline=None)
@given(model=st.sampled_from(MODELS), seed=st.integers(min_value=0, max_value=2**32))
def test_corrupt_value_fails_validation(model: type[BaseModel], seed: int) -> None:
    schema = SCHEMAS[model]
    value = sample_value(schema, random.Random(seed))
    bad = corrupt_value(schema, value, random.Random(seed))
    json.loads(json.dumps(bad))
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(bad))


def test_sample_is_deterministic() -> None:
    schema = SCHEMAS[Person]
    a = sample_value(schema, random.Random(7), hint_text="Ada Lovelace from London")
    b = sample_value(schema, random.Random(7), hint_text="Ada Lovelace from London")
    c = sample_value(schema, random.Random(8), hint_text="Ada Lovelace from London")
    assert a == b
    assert a != c


def test_strings_use_hint_words() -> None:
    hint = "Summarise the quarterly revenue forecast for the Zanzibar subsidiary"
    texts = [sample_value({"type": "string"}, random.Random(i), hint_text=hint) for i in range(30)]
    joined = " ".join(texts).lower()
    assert "zanzibar" in joined
    assert "revenue" in joined


def test_unbounded_numbers() -> None:
    rng = random.Random(0)
    conf = [sample_value(SCHEMAS[Strict], rng)["probability"] for _ in range(200)]
    assert all(0.0 <= c <= 1.0 for c in conf)
    assert min(conf) < 0.1 and max(conf) > 0.9
    ints = [sample_value({"type": "integer"}, rng) for _ in range(50)]
    assert all(isinstance(i, int) and not isinstance(i, bool) for i in ints)


def test_array_length_defaults_and_bounds() -> None:
    rng = random.Random(1)
    lengths = {len(sample_value({"type": "array", "items": {}}, rng)) for _ in range(200)}
    assert lengths == {1, 2, 3, 4}
    bounded = {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 6}
    assert all(5 <= len(sample_value(bounded, rng)) <= 6 for _ in range(50))
    assert sample_value({"type": "array", "items": {}, "maxItems": 0}, rng) == []


def test_optional_mostly_present() -> None:
    schema = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    values = [sample_value(schema, random.Random(i)) for i in range(200)]
    nulls = values.count(None)
    assert 5 < nulls < 80


def test_recursive_schema_terminates() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/Node"}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(ValueError):
        sample_value(schema, random.Random(0))
    with pytest.raises(ValueError):
        sample_value({"$ref": "#/$defs/Missing"}, random.Random(0))


def test_all_of_and_type_lists() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": ["string", "null"]}}, "required": ["b"]},
        ]
    }
    for i in range(20):
        v = sample_value(schema, random.Random(i))
        assert isinstance(v["a"], int)
        assert v["b"] is None or isinstance(v["b"], str)


def test_sample_prose() -> None:
    text = sample_prose(random.Random(3), "gardening tomatoes", sentences=3)
    assert text.count(".") >= 3
    assert text[0].isupper()


# --------------------------------------------------------------------------- options


def test_options_parse_strings() -> None:
    opts = SimOptions.parse(
        {
            "seed": "42",
            "latency_ms": "50-400",
            "rate_limit": "0.25",
            "retry_after_s": "none",
            "output_tokens_per_second": "80",
        }
    )
    assert opts.seed == 42
    assert opts.latency_ms == (50.0, 400.0)
    assert opts.latency_bounds_ms == (50.0, 400.0)
    assert opts.rate_limit == 0.25
    assert opts.retry_after_s is None
    assert opts.output_tokens_per_second == 80.0
    assert SimOptions.parse({"latency_ms": "200"}).latency_ms == 200.0
    assert SimOptions.parse({"latency_ms": 30}).latency_bounds_ms == (30.0, 30.0)
    assert SimOptions.parse({"malformed-json": "0.5"}).malformed_json == 0.5


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"rate_limt": "0.1"}, "rate_limt"),
        ({"rate_limit": "2"}, "rate_limit"),
        ({"timeout": "often"}, "timeout"),
        ({"latency_ms": "400-50"}, "latency_ms"),
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_option_is_configuration_error(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SimOptions.parse(options)
    message = str(info.value)
    assert named in message
    assert "valid options" in message and "malformed_json" in message
    assert "\n" not in message


def test_unknown_option_suggests() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'rate_limit'"):
        SimModel("small", {"rate_limt": 0.1})


def test_names() -> None:
    assert SimModel().name == "sim:small"
    assert SimModel("small").name == "sim:small"
    assert SimModel("sim:large").name == "sim:large"
    with pytest.raises(ConfigurationError):
        SimModel("sim:")


# --------------------------------------------------------------------------- determinism


async def _replies(model: SimModel, prompts: list[str], **kw: Any) -> list[ModelResponse]:
    return [await model.complete(_req(p, **kw)) for p in prompts]


async def test_deterministic_for_seed() -> None:
    prompts = [f"Question number {i} about lighthouses" for i in range(10)]
    a = await _replies(SimModel("small", SimOptions(seed=1)), prompts, schema=ROUTE)
    b = await _replies(SimModel("small", SimOptions(seed=1)), prompts, schema=ROUTE)
    c = await _replies(SimModel("small", SimOptions(seed=2)), prompts, schema=ROUTE)
    assert a == b
    assert [r.text for r in a] != [r.text for r in c]
    plain_a = await _replies(SimModel("small"), prompts)
    plain_b = await _replies(SimModel("small"), prompts)
    assert plain_a == plain_b


async def test_repeat_draws_again_and_fresh_instance_replays() -> None:
    req = _req("same request every time", schema=ROUTE)
    model = SimModel("small", SimOptions(seed=5, rate_limit=0.5))

    async def outcomes(m: SimModel) -> list[str]:
        out = []
        for _ in range(20):
            try:
                out.append((await m.complete(req)).text)
            except RateLimitError:
                out.append("rate_limit")
        return out

    first = await outcomes(model)
    assert "rate_limit" in first and len(set(first)) > 2  # faults do not repeat forever
    assert await outcomes(SimModel("small", SimOptions(seed=5, rate_limit=0.5))) == first
    model.reset()
    assert await outcomes(model) == first


async def test_reply_content_independent_of_fault_rates() -> None:
    prompts = [f"p{i}" for i in range(20)]
    clean = await _replies(SimModel("small"), prompts, schema=ROUTE)
    faulty = SimModel("small", SimOptions(refusal=0.5))
    for prompt, expected in zip(prompts, clean, strict=True):
        reply = await faulty.complete(_req(prompt, schema=ROUTE))
        if reply.finish_reason == "stop":
            assert reply.text == expected.text


# --------------------------------------------------------------------------- faults


async def test_rate_limit_always() -> None:
    model = SimModel("small", SimOptions(rate_limit=1.0))
    for i in range(5):
        with pytest.raises(RateLimitError) as info:
            await model.complete(_req(f"x{i}"))
        err = info.value
        assert err.retry_after == 1.0
        assert err.status_code == 429
        assert err.model == "sim:small"
        assert err.mode is FailureMode.RATE_LIMIT
    silent = SimModel("small", SimOptions(rate_limit=1.0, retry_after_s=None))
    with pytest.raises(RateLimitError) as info:
        await silent.complete(_req())
    assert info.value.retry_after is None


async def test_fault_rate_is_respected() -> None:
    model = SimModel("small", SimOptions(rate_limit=0.3, seed=11))
    faults = 0
    for i in range(500):
        try:
            await model.complete(_req(f"request {i}"))
        except RateLimitError:
            faults += 1
    assert 0.24 <= faults / 500 <= 0.36


async def test_combined_rates_partition() -> None:
    opts = SimOptions(seed=3, timeout=0.2, overloaded=0.2, refusal=0.2, invalid_json=0.2)
    model = SimModel("small", opts)
    seen: Counter[str] = Counter()
    for i in range(500):
        try:
            reply = await model.complete(_req(f"r{i}", schema=ROUTE))
        except ModelTimeoutError:
            seen["timeout"] += 1
        except OverloadedError:
            seen["overloaded"] += 1
        else:
            if reply.finish_reason == "refusal":
                seen["refusal"] += 1
            else:
                try:
                    Route.model_validate_json(reply.text)
                    seen["ok"] += 1
                except ValidationError:
                    seen["invalid"] += 1
    for key in ("timeout", "overloaded", "refusal", "invalid", "ok"):
        assert 60 <= seen[key] <= 140, seen


async def test_timeout_and_overloaded() -> None:
    with pytest.raises(ModelTimeoutError) as t:
        await SimModel("small", SimOptions(timeout=1)).complete(_req())
    assert t.value.mode is FailureMode.TIMEOUT
    with pytest.raises(OverloadedError) as o:
        await SimModel("small", SimOptions(overloaded=1)).complete(_req())
    assert o.value.status_code == 503
    assert o.value.mode is FailureMode.OVERLOADED


async def test_refusal() -> None:
    reply = await SimModel("small", SimOptions(refusal=1)).complete(_req(schema=ROUTE))
    assert reply.finish_reason == "refusal"
    assert reply.refusal == REFUSAL_MESSAGE
    assert reply.text == ""
    assert reply.usage.output_tokens >= 1


async def test_truncation() -> None:
    clean = SimModel("small")
    cut = SimModel("small", SimOptions(truncation=1))
    for i in range(10):
        full = await clean.complete(_req(f"t{i}", schema=ROUTE))
        half = await cut.complete(_req(f"t{i}", schema=ROUTE))
        assert half.finish_reason == "length"
        assert full.text.startswith(half.text) and len(half.text) < len(full.text)
        with pytest.raises(json.JSONDecodeError):
            json.loads(half.text)
        text_full = await clean.complete(_req(f"plain {i}"))
        text_half = await cut.complete(_req(f"plain {i}"))
        assert text_half.finish_reason == "length"
        assert len(text_half.text) < len(text_full.text)


async def test_malformed_json() -> None:
    model = SimModel("small", SimOptions(malformed_json=1))
    for i in range(40):
        reply = await model.complete(_req(f"m{i}", schema=ROUTE))
        assert reply.finish_reason == "stop"
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply.text)
    plain = await model.complete(_req("no schema, no JSON fault"))
    assert plain.finish_reason == "stop" and plain.text


async def test_invalid_json() -> None:
    model = SimModel("small", SimOptions(invalid_json=1))
    for i, schema_model in enumerate(MODELS * 3):
        reply = await model.complete(_req(f"i{i}", schema=SCHEMAS[schema_model]))
        json.loads(reply.text)
        with pytest.raises(ValidationError):
            schema_model.model_validate_json(reply.text)


async def test_bad_schema_is_bad_request() -> None:
    with pytest.raises(BadRequestError):
        await SimModel().complete(_req(schema={"$ref": "#/$defs/Nope"}))


# --------------------------------------------------------------------------- latency


async def test_latency_sleeps() -> None:
    model = SimModel("small", SimOptions.parse({"latency_ms": "50"}))
    start = time.perf_counter()
    await model.complete(_req())
    assert 0.045 <= time.perf_counter() - start < 1.0


async def test_latency_range_and_token_speed() -> None:
    model = SimModel("small", SimOptions(latency_ms=(10, 30)))
    start = time.perf_counter()
    await model.complete(_req())
    assert 0.009 <= time.perf_counter() - start < 1.0
    slow = SimModel("small", SimOptions(output_tokens_per_second=1000))
    start = time.perf_counter()
    reply = await slow.complete(_req("write something", schema=ROUTE))
    assert time.perf_counter() - start >= reply.usage.output_tokens / 1000 * 0.9


async def test_latency_before_errors() -> None:
    model = SimModel("small", SimOptions(latency_ms=30, rate_limit=1))
    start = time.perf_counter()
    with pytest.raises(RateLimitError):
        await model.complete(_req())
    assert time.perf_counter() - start >= 0.025


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize("schema_model", MODELS, ids=lambda m: m.__name__)
async def test_structured_replies_validate(schema_model: type[BaseModel]) -> None:
    model = SimModel("small", SimOptions(seed=9))
    for i in range(15):
        reply = await model.complete(
            _req(f"Describe item {i} of the catalogue", schema=SCHEMAS[schema_model])
        )
        assert reply.finish_reason == "stop"
        assert reply.model == "sim:small"
        schema_model.model_validate_json(reply.text)


async def test_replies_vary_with_prompt() -> None:
    model = SimModel("small")
    labels: Counter[str] = Counter()
    confidences = []
    for i in range(300):
        reply = await model.complete(
            _req(f"Customer message #{i}: please help", system="Route the ticket.", schema=ROUTE)
        )
        route = Route.model_validate_json(reply.text)
        labels[route.label] += 1
        confidences.append(route.confidence)
    assert set(labels) == {"billing", "tech", "sales"}
    assert min(labels.values()) >= 60
    assert min(confidences) < 0.1 and max(confidences) > 0.9
    assert sum(c < 0.5 for c in confidences) > 100
    assert sum(c >= 0.5 for c in confidences) > 100
    assert len(set(confidences)) > 150


async def test_plain_text_reply() -> None:
    reply = await SimModel().complete(_req("Tell me about the migration of arctic terns"))
    assert reply.finish_reason == "stop"
    assert 1 <= reply.text.count(".") <= 3
    words = {"migration", "arctic", "terns", "tell"}
    assert any(w in reply.text.lower() for w in words)


async def test_max_tokens() -> None:
    model = SimModel()
    for i in range(20):
        reply = await model.complete(_req(f"Explain topic {i} at length", max_tokens=6))
        assert reply.finish_reason == "stop"
        assert reply.usage.output_tokens <= 6
        assert len(reply.text) <= 24
    structured = await model.complete(_req("x", schema=SCHEMAS[Person], max_tokens=5))
    assert structured.finish_reason == "length"
    assert len(structured.text) <= 20


async def test_usage() -> None:
    req = _req("abcd" * 10, system="You are terse.", schema=ROUTE)
    reply = await SimModel().complete(req)
    chars = len("abcd" * 10) + len("You are terse.") + len(json.dumps(ROUTE))
    assert reply.usage.input_tokens == math.ceil(chars / 4) + 2 * 3
    assert reply.usage.input_tokens == estimate_request_tokens(req)
    assert reply.usage.output_tokens == max(1, math.ceil(len(reply.text) / 4))
    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2


@given(st.text(alphabet=st.sampled_from("ab {}\"\n\t:,.0"), max_size=40))
def test_a_streamed_reply_is_cut_into_words_that_rejoin_to_it(text: str) -> None:
    """The pieces the simulator streams: a word with the space after it (leading space
    on its own), none empty, joining back to the reply."""
    from trellis.models.sim import _stream_pieces

    pieces = _stream_pieces(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert pieces == [m.group() for m in re.finditer(r"\S*\s*", text) if m.group()]
