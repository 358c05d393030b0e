"""The mock server rejects what the real APIs reject, with their status and error body.

One invalid request per rule per dialect (:data:`CASES`), each over real HTTP; every rule of
``validate_openai.RULES`` / ``validate_anthropic.RULES`` must have a case here. The official
``openai`` and ``anthropic`` SDKs must surface each error as their ``BadRequestError``. Valid
neighbours of the invalid requests (answered tool calls, closed strict schemas, a whitespace
block next to real text...) are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anthropic
import httpx
import openai
import pytest

from trellis.mockserver import MockServer, MockServerThread, validate_anthropic, validate_openai

from . import USER, post

Dialect = Literal["openai", "anthropic"]

OBJECT = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
CLOSED = {**OBJECT, "additionalProperties": False}
OPENAI_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": OBJECT}}
ANTHROPIC_TOOL = {"name": "lookup", "input_schema": OBJECT}


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


def _asked(*call_ids: str) -> dict[str, Any]:
    """An OpenAI assistant message calling ``lookup`` once per id."""
    return {"role": "assistant", "content": None, "tool_calls": [_call(i) for i in call_ids]}


def _answer(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "found"}


def _use(use_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": "lookup", "input": {"q": "x"}}


def _result(use_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": use_id, "content": "found"}


def _strict_format(schema: dict[str, Any], name: str = "Answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@dataclass(frozen=True)
class Case:
    """One invalid request, the rule it breaks and what the API answers."""

    dialect: Dialect
    rule: str
    body: dict[str, Any]
    message: str  # the whole error message
    param: str | None = None  # OpenAI's ``param``
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.dialect}-{self.rule}-{CASES.index(self)}"


def openai_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": USER, **fields}


def anthropic_body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": USER, **fields}


CASES = [
    Case(
        "openai",
        "unknown_field",
        openai_body(foo=1),
        "Unrecognized request argument supplied: foo",
    ),
    Case(
        "openai",
        "tool_message_without_call",
        openai_body(messages=[*USER, _answer("call_1")], tools=[OPENAI_TOOL]),
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
        "message with 'tool_calls'.",
        param="messages.[1].role",
    ),
    Case(
        "openai",
        "tool_message_without_call",
        openai_body(messages=[*USER, _asked("call_1"), _answer("call_9")], tools=[OPENAI_TOOL]),
        "Invalid parameter: 'tool_call_id' of 'call_9' not found in 'tool_calls' of previous "
        "message.",
    ),
    Case(
        "openai",
        "unanswered_tool_calls",
        openai_body(
            messages=[*USER, _asked("call_1", "call_2"), _answer("call_1")], tools=[OPENAI_TOOL]
        ),
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        "call_2",
        param="messages.[1].role",
    ),
    Case(
        "openai",
        "invalid_schema_name",
        openai_body(response_format=_strict_format(CLOSED, name="my answer")),
        "Invalid 'response_format.json_schema.name': string does not match pattern. Expected "
        "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
        param="response_format.json_schema.name",
    ),
    Case(
        "openai",
        "invalid_tool_name",
        openai_body(
            tools=[{"type": "function", "function": {"name": "look.up", "parameters": OBJECT}}]
        ),
        "Invalid 'tools[0].function.name': string does not match pattern. Expected a string "
        "that matches the pattern '^[a-zA-Z0-9_-]+$'.",
        param="tools[0].function.name",
    ),
    Case(
        "openai",
        "strict_schema_not_closed",
        openai_body(response_format=_strict_format(OBJECT)),
        "Invalid schema for response_format 'Answer': In context=(), 'additionalProperties' "
        "is required to be supplied and to be false.",
        param="response_format",
    ),
    Case(
        "anthropic",
        "missing_version",
        anthropic_body(),
        "anthropic-version: header is required",
        headers={"anthropic-version": ""},  # sent without it
    ),
    Case(
        "anthropic",
        "unknown_field",
        anthropic_body(response_format={"type": "json_object"}),
        "response_format: Extra inputs are not permitted",
    ),
    Case(
        "anthropic",
        "empty_text_block",
        anthropic_body(messages=[{"role": "user", "content": [{"type": "text", "text": " \n"}]}]),
        "messages: text content blocks must contain non-whitespace text",
    ),
    Case(
        "anthropic",
        "tool_result_without_call",
        anthropic_body(
            messages=[{"role": "user", "content": [_result("toolu_1")]}], tools=[ANTHROPIC_TOOL]
        ),
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
        "toolu_1. Each `tool_result` block must have a corresponding `tool_use` block in the "
        "previous message.",
    ),
    Case(
        "anthropic",
        "tool_result_not_first",
        anthropic_body(
            messages=[
                *USER,
                {"role": "assistant", "content": [_use("toolu_1")]},
                {"role": "user", "content": [{"type": "text", "text": "here"}, _result("toolu_1")]},
            ],
            tools=[ANTHROPIC_TOOL],
        ),
        "messages.2: Did not find 1 `tool_result` block(s) at the beginning of this message. "
        "Messages following `tool_use` blocks must begin with a matching number of "
        "`tool_result` blocks.",
    ),
    Case(
        "anthropic",
        "unanswered_tool_use",
        anthropic_body(
            messages=[
                *USER,
                {"role": "assistant", "content": [_use("toolu_1"), _use("toolu_2")]},
                {"role": "user", "content": [_result("toolu_1")]},
            ],
            tools=[ANTHROPIC_TOOL],
        ),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
        "after: toolu_2. Each `tool_use` block must have a corresponding `tool_result` block "
        "in the next message.",
    ),
    Case(
        "anthropic",
        "invalid_tool_name",
        anthropic_body(tools=[{"name": "look up", "input_schema": OBJECT}]),
        "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
    ),
    Case(
        "anthropic",
        "thinking_with_forced_tool",
        anthropic_body(
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[ANTHROPIC_TOOL],
            tool_choice={"type": "tool", "name": "lookup"},
        ),
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
]

#: Requests next to the invalid ones that the real APIs accept.
VALID = [
    (
        "openai",
        openai_body(
            messages=[*USER, _asked("call_1", "call_2"), _answer("call_2"), _answer("call_1")],
            tools=[OPENAI_TOOL],
        ),
    ),
    ("openai", openai_body(response_format=_strict_format(CLOSED))),
    (
        "openai",
        openai_body(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Answer", "schema": OBJECT, "strict": False},
            }
        ),
    ),
    ("openai", openai_body(stream=True, stream_options={"include_usage": True}, user="u-1")),
    (
        "anthropic",
        anthropic_body(
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "Let me look"}, _use("toolu_1")],
                },
                {"role": "user", "content": [_result("toolu_1"), {"type": "text", "text": "go"}]},
            ],
            tools=[ANTHROPIC_TOOL],
        ),
    ),
    (
        "anthropic",
        anthropic_body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": " "}, {"type": "text", "text": "Hello"}],
                },
            ],
            system="Be brief.",
            metadata={"user_id": "u-1"},
        ),
    ),
    (
        "anthropic",
        anthropic_body(
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[ANTHROPIC_TOOL],
            tool_choice={"type": "auto"},
        ),
    ),
]


def url(server: MockServer | MockServerThread, dialect: Dialect) -> str:
    if dialect == "openai":
        return f"{server.openai_base_url}/chat/completions"
    return f"{server.anthropic_base_url}/v1/messages"


@pytest.fixture
async def server() -> Any:
    async with MockServer(seed=3) as s:
        yield s


def test_every_rule_has_a_case() -> None:
    for dialect, rules in (
        ("openai", validate_openai.RULES),
        ("anthropic", validate_anthropic.RULES),
    ):
        covered = {c.rule for c in CASES if c.dialect == dialect}
        assert {r.name for r in rules} == covered, dialect


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_invalid_request_is_rejected_like_the_real_api(
    server: MockServer, case: Case
) -> None:
    response = await post(url(server, case.dialect), case.body, case.headers)
    assert response.status_code == 400, response.text
    data = response.json()
    if case.dialect == "openai":
        assert data["error"]["message"] == case.message
        assert data["error"]["type"] == "invalid_request_error"
        assert data["error"]["param"] == case.param
        assert set(data["error"]) == {"message", "type", "param", "code"}
    else:
        assert data == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": case.message},
        }
    assert server.stats.by_status == {400: 1}


@pytest.mark.parametrize(("dialect", "body"), VALID, ids=lambda v: v if isinstance(v, str) else "")
async def test_valid_neighbours_are_accepted(
    server: MockServer, dialect: Dialect, body: dict[str, Any]
) -> None:
    response = await post(url(server, dialect), body)
    assert response.status_code == 200, response.text


async def test_the_rules_hold_for_streamed_requests_too(server: MockServer) -> None:
    for case in (c for c in CASES if c.rule == "unknown_field"):
        response = await post(url(server, case.dialect), {**case.body, "stream": True})
        assert response.status_code == 400
        assert case.message in response.text


# -- the official SDKs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def thread() -> Iterator[MockServerThread]:
    with MockServerThread(seed=5) as s:
        yield s


@pytest.mark.parametrize("case", [c for c in CASES if c.dialect == "openai"], ids=lambda c: c.id)
def test_openai_sdk_raises_bad_request(thread: MockServerThread, case: Case) -> None:
    with (
        openai.OpenAI(base_url=thread.openai_base_url, api_key="test", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.post("/chat/completions", body=case.body, cast_to=httpx.Response)
    assert caught.value.status_code == 400
    assert caught.value.message.endswith(case.message)  # "Error code: 400 - <message>"
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == case.message
    assert caught.value.param == case.param
    assert caught.value.type == "invalid_request_error"


def test_openai_sdk_typed_call_with_an_unknown_field(thread: MockServerThread) -> None:
    with (
        openai.OpenAI(base_url=thread.openai_base_url, api_key="test", max_retries=0) as client,
        pytest.raises(openai.BadRequestError, match="Unrecognized request argument") as caught,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, extra_body={"top_k": 5})
    assert caught.value.message.endswith("Unrecognized request argument supplied: top_k")


# The SDK always sends anthropic-version, so missing_version is checked over raw HTTP only.
@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.dialect == "anthropic" and c.rule != "missing_version"],
    ids=lambda c: c.id,
)
def test_anthropic_sdk_raises_bad_request(thread: MockServerThread, case: Case) -> None:
    with (
        anthropic.Anthropic(
            base_url=thread.anthropic_base_url, api_key="test", max_retries=0
        ) as client,
        pytest.raises(anthropic.BadRequestError) as caught,
    ):
        client.post("/v1/messages", body=case.body, cast_to=httpx.Response)
    assert caught.value.status_code == 400
    assert case.message in caught.value.message
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": case.message}


def test_anthropic_sdk_typed_call_with_thinking_and_a_forced_tool(
    thread: MockServerThread,
) -> None:
    with (
        anthropic.Anthropic(
            base_url=thread.anthropic_base_url, api_key="test", max_retries=0
        ) as client,
        pytest.raises(anthropic.BadRequestError, match="Thinking may not be enabled"),
    ):
        client.messages.create(
            model="claude-x",
            max_tokens=2048,
            messages=[{"role": "user", "content": "Look it up"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[{"name": "lookup", "input_schema": OBJECT}],  # type: ignore[list-item]
            tool_choice={"type": "any"},
        )
