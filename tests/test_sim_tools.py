"""The offline simulator as a tool-calling agent (SimModel with ``request.tools``)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from trellis.errors import BadRequestError, RateLimitError
from trellis.models.base import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from trellis.models.sim import SimModel, SimOptions, plan_tool_calls, target_rounds
from trellis.models.tokens import estimate_request_tokens, estimate_tokens, estimate_tool_tokens

# --------------------------------------------------------------------------- tools


class WeatherArgs(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"] = "celsius"
    days: Annotated[int, Field(ge=1, le=14)] = 1


class SearchArgs(BaseModel):
    query: str = Field(min_length=1)
    max_results: Annotated[int, Field(ge=1, le=20)] = 5
    sites: list[str] = Field(default_factory=list, max_length=3)


class Attendee(BaseModel):
    name: str
    email: str | None = None


class EventArgs(BaseModel):
    title: str
    start: dt.datetime
    attendees: list[Attendee] = Field(min_length=1, max_length=4)


class Answer(BaseModel):
    summary: str
    confidence: Annotated[float, Field(ge=0, le=1)]
    sources: list[str]


ARGS: dict[str, type[BaseModel]] = {
    "get_weather": WeatherArgs,
    "search_web": SearchArgs,
    "create_event": EventArgs,
}
DESCRIPTIONS = {
    "get_weather": "Current weather forecast for a city",
    "search_web": "Search the internet for pages about a query",
    "create_event": "Create a calendar meeting with attendees",
}
TOOLS = tuple(
    ToolSpec(name, DESCRIPTIONS[name], model.model_json_schema()) for name, model in ARGS.items()
)
TOOL_NAMES = {t.name for t in TOOLS}

PROMPTS = [
    f"Task {i}: {topic}"
    for i, topic in enumerate(
        [
            "What's the weather in Paris this weekend?",
            "Find pages about Lumen Docs pricing.",
            "Set up a meeting with Amara Okonkwo about the launch.",
            "Compare the forecast for Oslo and Rome.",
            "Look up the history of the Hanseatic League.",
            "Book a call with Priya Nair and Tomás Ruiz on Friday.",
            "Is it going to rain in Lisbon tomorrow?",
            "Research recent articles on battery recycling.",
        ]
        * 4
    )
]


def _req(messages: list[Message], **kw: Any) -> ModelRequest:
    kw.setdefault("tools", TOOLS)
    return ModelRequest(messages=tuple(messages), model="small", **kw)


def _result(call: ToolCall) -> Message:
    return Message("tool", f"{call.name} says: sunny, 21 degrees, Lumen Docs", tool_call_id=call.id)


async def _run_agent(
    sim: SimModel, prompt: str, *, max_steps: int = 8, **kw: Any
) -> tuple[list[Message], list[ModelResponse]]:
    """Drive the agent loop the way a caller would, until a reply without tool calls."""
    messages = [Message("user", prompt)]
    replies: list[ModelResponse] = []
    for _ in range(max_steps):
        reply = await sim.complete(_req(messages, **kw))
        replies.append(reply)
        if not reply.tool_calls:
            return messages, replies
        messages.append(Message("assistant", reply.text, tool_calls=reply.tool_calls))
        messages.extend(_result(call) for call in reply.tool_calls)
    raise AssertionError(f"no final answer after {max_steps} replies")


def _calls(reply: ModelResponse) -> list[tuple[str, str, str]]:
    return [(c.id, c.name, c.arguments) for c in reply.tool_calls]


# --------------------------------------------------------------------------- the agent loop


async def test_same_request_same_tool_calls() -> None:
    for prompt in PROMPTS[:8]:
        request = _req([Message("user", prompt)])
        a, b = await SimModel().complete(request), await SimModel().complete(request)
        assert a.finish_reason == "tool_calls" and a.text == ""
        assert _calls(a) == _calls(b)
        assert all(c.id.startswith("call_") and len(c.id) == 29 for c in a.tool_calls)
    sim = SimModel()
    first = await sim.complete(_req([Message("user", PROMPTS[0])]))
    sim.reset()
    assert _calls(await sim.complete(_req([Message("user", PROMPTS[0])]))) == _calls(first)


async def test_seed_changes_the_path() -> None:
    paths = set()
    for seed in range(6):
        _, replies = await _run_agent(SimModel(options={"seed": seed}), PROMPTS[0])
        paths.add(tuple(tuple(c[:2] for c in _calls(r)) for r in replies))
    assert len(paths) > 1


async def test_loop_ends_with_an_answer_after_target_rounds() -> None:
    seen_rounds: Counter[int] = Counter()
    for prompt in PROMPTS:
        messages, replies = await _run_agent(SimModel(), prompt)
        rounds = target_rounds(_req([Message("user", prompt)]))
        assert 1 <= rounds <= 3
        seen_rounds[rounds] += 1
        assert len(replies) == rounds + 1
        assert all(r.finish_reason == "tool_calls" for r in replies[:-1])
        final = replies[-1]
        assert final.finish_reason == "stop" and final.tool_calls == () and final.text
        # grounded: the prose quotes the latest tool results
        assert final.text.startswith("According to ")
        assert "sunny, 21 degrees" in final.text
        ids = [c.id for r in replies for c in r.tool_calls]
        assert len(ids) == len(set(ids))
        # the target is a property of the task, the same at every step of the conversation
        assert target_rounds(_req(messages)) == rounds
    assert set(seen_rounds) == {1, 2, 3}


async def test_resumed_conversation_continues_identically() -> None:
    for prompt in PROMPTS[:8]:
        messages, replies = await _run_agent(SimModel(), prompt)
        # every prefix that ends a round, given to a fresh model (a resumed process)
        cut = 1
        for reply in replies:
            resumed = await SimModel().complete(_req(messages[:cut]))
            assert _calls(resumed) == _calls(reply)
            assert resumed.text == reply.text
            cut += 1 + len(reply.tool_calls)


async def test_parallel_calls_for_some_inputs() -> None:
    sizes: Counter[int] = Counter()
    for prompt in PROMPTS:
        _, replies = await _run_agent(SimModel(), prompt)
        for reply in replies[:-1]:
            sizes[len(reply.tool_calls)] += 1
            names = [c.name for c in reply.tool_calls]
            assert len(names) == len(set(names)), "parallel calls use distinct tools"
    assert set(sizes) == {1, 2}
    # with a single tool there is nothing to call in parallel
    for prompt in PROMPTS[:8]:
        _, replies = await _run_agent(SimModel(), prompt, tools=TOOLS[:1])
        assert all(len(r.tool_calls) == 1 for r in replies[:-1])


async def test_tools_matching_the_prompt_are_preferred() -> None:
    cases = {
        "What is the weather forecast in Paris?": "get_weather",
        "Please search the internet for Lumen Docs.": "search_web",
        "Create a meeting with Amara Okonkwo.": "create_event",
    }
    for prompt, tool in cases.items():
        for seed in range(4):
            reply = await SimModel(options={"seed": seed}).complete(_req([Message("user", prompt)]))
            assert reply.tool_calls[0].name == tool


async def test_arguments_validate_against_the_tool_schema() -> None:
    checked: Counter[str] = Counter()
    for prompt in PROMPTS:
        _, replies = await _run_agent(SimModel(), prompt)
        for reply in replies[:-1]:
            for call in reply.tool_calls:
                ARGS[call.name].model_validate_json(call.arguments)
                checked[call.name] += 1
    assert set(checked) == TOOL_NAMES


async def test_arguments_reuse_names_from_the_prompt() -> None:
    names: set[str] = set()
    prompt = "Create a meeting with Amara Okonkwo and Priya Nair."
    for seed in range(10):
        request = _req([Message("user", prompt)], tool_choice="create_event")
        reply = await SimModel(options={"seed": seed}).complete(request)
        event = EventArgs.model_validate_json(reply.tool_calls[0].arguments)
        names.update(a.name for a in event.attendees)
    assert names & {"Amara Okonkwo", "Priya Nair"}


async def test_final_structured_answer_validates() -> None:
    schema = Answer.model_json_schema()
    for prompt in PROMPTS[:8]:
        _, replies = await _run_agent(SimModel(), prompt, output_schema=schema)
        assert all(r.tool_calls for r in replies[:-1])
        final = replies[-1]
        assert final.finish_reason == "stop"
        Answer.model_validate_json(final.text)


# --------------------------------------------------------------------------- tool_choice


async def test_tool_choice_none_answers_at_once() -> None:
    reply = await SimModel().complete(_req([Message("user", PROMPTS[0])], tool_choice="none"))
    assert reply.tool_calls == () and reply.finish_reason == "stop" and reply.text
    assert plan_tool_calls(_req([Message("user", PROMPTS[0])], tool_choice="none")) == ()


async def test_tool_choice_required_always_calls() -> None:
    for prompt in PROMPTS[:8]:
        messages, replies = await _run_agent(SimModel(), prompt)
        # after the task's own rounds, "auto" answers but "required" still calls a tool
        assert replies[-1].tool_calls == ()
        reply = await SimModel().complete(_req(messages, tool_choice="required"))
        assert reply.finish_reason == "tool_calls" and reply.tool_calls
        for call in reply.tool_calls:
            ARGS[call.name].model_validate_json(call.arguments)


async def test_named_tool_choice_calls_that_tool_once() -> None:
    for prompt in PROMPTS[:8]:
        messages = [Message("user", prompt)]
        for _ in range(4):  # every round, past the task's own rounds too
            reply = await SimModel().complete(_req(messages, tool_choice="search_web"))
            assert [c.name for c in reply.tool_calls] == ["search_web"]
            SearchArgs.model_validate_json(reply.tool_calls[0].arguments)
            messages.append(Message("assistant", "", tool_calls=reply.tool_calls))
            messages.append(_result(reply.tool_calls[0]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tool_choice": "send_email"}, "not one of the tools"),
        ({"tool_choice": "required", "tools": ()}, "needs tools"),
        ({"tools": (TOOLS[0], TOOLS[0])}, "unique"),
    ],
)
async def test_bad_tool_choice_is_bad_request(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequestError, match=match) as info:
        await SimModel().complete(_req([Message("user", "hi")], **kw))
    assert info.value.status_code == 400


async def test_malformed_conversation_is_bad_request() -> None:
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    user = Message("user", "weather in Paris?")
    orphan = [user, Message("tool", "sunny", tool_call_id="call_9")]
    unanswered = [user, Message("assistant", "", tool_calls=(call,))]
    interrupted = [*unanswered, Message("user", "and Rome?")]
    for messages in (orphan, unanswered, interrupted):
        with pytest.raises(BadRequestError):
            await SimModel().complete(_req(messages))
    ok = [*unanswered, Message("tool", "sunny", tool_call_id="call_1")]
    assert (await SimModel().complete(_req(ok, tool_choice="none"))).finish_reason == "stop"


async def test_final_answer_without_tools_is_grounded_and_lenient() -> None:
    messages, _ = await _run_agent(SimModel(), PROMPTS[3])
    reply = await SimModel().complete(_req(messages, tools=()))  # tools dropped for the answer
    assert reply.finish_reason == "stop" and "sunny, 21 degrees" in reply.text
    # without tools the conversation is not policed (a wrapper may check it itself)
    orphan = [Message("user", "hi"), Message("tool", "Oslo: snow", tool_call_id=None)]
    reply = await SimModel().complete(_req(orphan, tools=()))
    assert reply.text.startswith("According to the tool, Oslo: snow.")


async def test_follow_up_question_starts_a_new_task() -> None:
    messages, _ = await _run_agent(SimModel(), PROMPTS[0])
    answer = await SimModel().complete(_req(messages))
    messages += [Message("assistant", answer.text), Message("user", "And next week?")]
    reply = await SimModel().complete(_req(messages))
    assert reply.finish_reason == "tool_calls"
    ids = {c.id for m in messages for c in m.tool_calls}
    assert not ids & {c.id for c in reply.tool_calls}


# --------------------------------------------------------------------------- faults


def _broken_kind(call: ToolCall) -> str | None:
    if call.name not in ARGS:
        return "unknown_tool"
    try:
        json.loads(call.arguments)
    except ValueError:
        return "not_json"
    try:
        ARGS[call.name].model_validate_json(call.arguments)
    except ValidationError:
        return "schema"
    return None


async def test_invalid_tool_args_fault() -> None:
    sim = SimModel(options={"invalid_tool_args": 1.0})
    kinds: Counter[str] = Counter()
    for prompt in PROMPTS:
        reply = await sim.complete(_req([Message("user", prompt)]))
        assert reply.finish_reason == "tool_calls"
        broken = [k for k in map(_broken_kind, reply.tool_calls) if k is not None]
        assert len(broken) == 1
        kinds[broken[0]] += 1
    assert set(kinds) == {"not_json", "schema"}


async def test_unknown_tool_fault() -> None:
    sim = SimModel(options={"unknown_tool": 1.0})
    for prompt in PROMPTS[:8]:
        reply = await sim.complete(_req([Message("user", prompt)]))
        assert reply.finish_reason == "tool_calls"
        kinds = [_broken_kind(c) for c in reply.tool_calls]
        assert kinds.count("unknown_tool") == 1 and kinds.count(None) == len(kinds) - 1
        assert all(c.id.startswith("call_") for c in reply.tool_calls)


async def test_tool_faults_only_hit_tool_call_replies() -> None:
    faulty = {"invalid_tool_args": 1.0, "unknown_tool": 1.0}
    schema = Answer.model_json_schema()
    for kw in ({"tools": ()}, {"tools": (), "output_schema": schema}, {"tool_choice": "none"}):
        request = _req([Message("user", PROMPTS[1])], **kw)
        plain = await SimModel().complete(request)
        assert await SimModel(options=faulty).complete(request) == plain
    # the final answer of an agent loop is not touched either
    messages, replies = await _run_agent(SimModel(), PROMPTS[1])
    assert await SimModel(options=faulty).complete(_req(messages)) == replies[-1]


async def test_unfaulted_tool_calls_do_not_depend_on_fault_rates() -> None:
    rates = {"invalid_tool_args": 0.3, "unknown_tool": 0.3, "rate_limit": 0.0}
    faulted = 0
    for prompt in PROMPTS:
        request = _req([Message("user", prompt)])
        clean = await SimModel().complete(request)
        reply = await SimModel(options=rates).complete(request)
        if any(_broken_kind(c) for c in reply.tool_calls):
            faulted += 1
            assert [c.id for c in reply.tool_calls] == [c.id for c in clean.tool_calls]
        else:
            assert reply == clean
    assert 0 < faulted < len(PROMPTS)


async def test_existing_faults_apply_to_tool_turns() -> None:
    request = _req([Message("user", PROMPTS[0])])
    with pytest.raises(RateLimitError):
        await SimModel(options={"rate_limit": 1.0}).complete(request)
    refused = await SimModel(options={"refusal": 1.0}).complete(request)
    assert refused.finish_reason == "refusal" and refused.tool_calls == ()
    cut = await SimModel(options={"truncation": 1.0}).complete(request)
    assert cut.finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(cut.tool_calls[-1].arguments)
    # schema-only faults never hit a tool-call reply, even with an output schema
    schema = Answer.model_json_schema()
    opts = {"malformed_json": 1.0, "invalid_json": 1.0}
    structured = _req([Message("user", PROMPTS[0])], output_schema=schema)
    assert await SimModel(options=opts).complete(structured) == await SimModel().complete(
        structured
    )


async def test_max_tokens_cuts_tool_arguments() -> None:
    reply = await SimModel().complete(_req([Message("user", PROMPTS[2])], max_tokens=3))
    assert reply.finish_reason == "length"
    assert sum(len(c.arguments) for c in reply.tool_calls) <= 12


def test_tool_fault_options_parse() -> None:
    opts = SimOptions.parse({"invalid-tool-args": "0.25", "unknown_tool": "0.5"})
    assert (opts.invalid_tool_args, opts.unknown_tool) == (0.25, 0.5)
    assert opts.fault_rates()["unknown_tool"] == 0.5


# --------------------------------------------------------------------------- usage


async def test_usage_counts_tools_and_arguments() -> None:
    messages, replies = await _run_agent(SimModel(), PROMPTS[0])
    first = replies[0]
    request = _req(messages[:1])
    tool_tokens = estimate_tool_tokens(request)
    assert tool_tokens >= sum(estimate_tokens(json.dumps(t.parameters)) for t in TOOLS) // 2
    assert first.usage.input_tokens == estimate_request_tokens(request) + tool_tokens
    assert first.usage.output_tokens == sum(
        estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in first.tool_calls
    )
    # later requests also pay for the calls already in the conversation
    full = _req(messages)
    assert estimate_tool_tokens(full) > tool_tokens
    assert replies[-1].usage.input_tokens == estimate_request_tokens(full) + estimate_tool_tokens(
        full
    )
    plain = ModelRequest(messages=(Message("user", PROMPTS[0]),), model="small")
    assert estimate_tool_tokens(plain) == 0


async def test_call_log_still_records_tool_turns(tmp_path: Any) -> None:
    log = tmp_path / "calls.jsonl"
    _, replies = await _run_agent(SimModel(options={"call_log": str(log)}), PROMPTS[0])
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(lines) == len(replies)
    assert len({x["request"] for x in lines}) == len(lines)
