"""A tool-calling agent inside a step: model -> tool calls -> results -> model, bounded.

Each turn is one model call through the same machinery as ``llm.generate`` (retries by
failure mode, budgets, accounting, journal, cache). The tool calls of a turn run
concurrently. Arguments are validated before a tool runs: an invalid call or an unknown
tool goes back to the model as an error and is never executed. A tool that raises goes
back to the model as an error too, until it has failed more than its ``retries``; then the
step fails. Every tool result is journaled, so a resumed agent replays finished turns and
never re-runs a finished tool call. The loop ends with the typed final answer, or with
:class:`AgentTurnLimitError` after ``max_turns``; either way the transcript is kept in the
step's record (``StepRecord.turns``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic_core import to_json

from trellis.engine.scope import StepScope
from trellis.engine.structured import ParseFailure, output_spec
from trellis.engine.tasks import gather_or_cancel
from trellis.errors import AgentTurnLimitError, ConfigurationError, StepError
from trellis.flow.tools import Tool, ToolArgumentsError
from trellis.models.base import Message, ToolCall, ToolSpec
from trellis.tracebacks import user_frames

__all__ = ["AgentReply", "TurnTaker", "run_agent"]


@dataclass(slots=True)
class AgentReply:
    """A model turn in an agent loop: tool calls to make, or the final reply's text."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class TurnTaker(Protocol):
    """What the agent loop needs from the LLM handle (``EngineLLM``): where it runs, and
    one model turn through the durable call path."""

    @property
    def scope(self) -> StepScope: ...

    async def complete_turn(
        self,
        messages: list[Message],
        *,
        output: Any = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fallbacks: Sequence[str] | None = None,
        timeout: float | None = None,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str | None = None,
    ) -> Any: ...


async def run_agent(
    llm: TurnTaker,
    messages: list[Message],
    *,
    tools: list[Tool],
    output: Any,
    model: str | None,
    max_turns: int,
    temperature: float | None,
    max_tokens: int | None,
    fallbacks: Any,
    timeout: float | None,
) -> Any:
    scope = llm.scope
    step = scope.record.name
    if max_turns < 1:
        raise ConfigurationError(f"step {step!r}: max_turns must be at least 1")
    by_name: dict[str, Tool] = {}
    for t in tools:
        if t.name in by_name:
            raise ConfigurationError(f"step {step!r}: two tools are named {t.name!r}")
        by_name[t.name] = t
    specs = [t.spec for t in tools]
    spec = output_spec(output) if output is not None else None
    if not specs:  # no tools: one model turn, like generate, kept in the transcript
        value = await llm.complete_turn(
            messages,
            output=output,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            fallbacks=fallbacks,
            timeout=timeout,
        )
        text = value if isinstance(value, str) else to_json(value).decode()
        scope.record.turns.append(
            {"agent": 1, "turn": 1, "index": scope.index, "round": scope.round,
             "reply": text, "tool_calls": []}
        )  # fmt: skip
        return value
    convo = list(messages)
    failures: dict[str, int] = {}
    transcript = scope.record.turns
    agent_no = len({t.get("agent") for t in transcript}) + 1
    for turn in range(1, max_turns + 1):
        scope.run.guard.count_turn()
        first_record = len(scope.records)
        reply: AgentReply = await llm.complete_turn(
            convo,
            output=output,
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            fallbacks=fallbacks,
            timeout=timeout,
            tools=specs,
            tool_choice="auto",
        )
        entry: dict[str, Any] = {
            "agent": agent_no,
            "turn": turn,
            "index": scope.index,
            "round": scope.round,
            "reply": reply.text,
            "tool_calls": [],
        }
        made = scope.records[first_record:]
        entry["input_tokens"] = sum(r.input_tokens for r in made)
        entry["output_tokens"] = sum(r.output_tokens for r in made)
        costs = [r.cost_usd for r in made]
        entry["cost_usd"] = None if None in costs else sum(c or 0.0 for c in costs)
        transcript.append(entry)
        if not reply.tool_calls:
            if spec is None:
                return reply.text
            parsed = spec.parse(reply.text)
            if isinstance(parsed, ParseFailure):  # validated during the call; defensive
                raise StepError(f"step {step!r}: agent's final answer: {parsed.error}", step=step)
            return parsed
        convo.append(Message("assistant", reply.text, tool_calls=tuple(reply.tool_calls)))
        results = await _all_or_nothing(
            [
                _run_tool(llm, by_name, call, turn, failures, entry["tool_calls"])
                for call in reply.tool_calls
            ]
        )
        for call, (content, failed) in zip(reply.tool_calls, results, strict=True):
            convo.append(Message("tool", content, tool_call_id=call.id, is_error=failed))
    raise AgentTurnLimitError(
        f"step {step!r}: the agent did not give its final answer within {max_turns} turns "
        "(its transcript is kept in the step's record)",
        step=step,
    )


async def _all_or_nothing(
    calls: list[Coroutine[Any, Any, tuple[str, bool]]],
) -> list[tuple[str, bool]]:
    """Run a turn's tool calls concurrently; if one fails the step, stop the others."""
    if len(calls) == 1:
        return [await calls[0]]
    return await gather_or_cancel([asyncio.ensure_future(c) for c in calls])


async def _run_tool(
    llm: TurnTaker,
    tools: dict[str, Tool],
    call: ToolCall,
    turn: int,
    failures: dict[str, int],
    log: list[dict[str, Any]],
) -> tuple[str, bool]:
    """Run one tool call (or replay it); return what goes back to the model, and whether
    it is an error (the tool raised, or was not run)."""
    scope = llm.scope
    journal = scope.run.journal
    entry: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": call.arguments}
    log.append(entry)
    key = f"{scope.record.name}|{scope.index}|{scope.round}|{scope.attempt}|tool|{turn}|{call.id}"
    digest = hashlib.blake2b(f"{call.name}\x1f{call.arguments}".encode(), digest_size=12)
    request = digest.hexdigest()
    if journal is not None:
        replay = journal.lookup(key, request, dict[str, Any])
        if replay is not None:
            if replay.value.get("raised"):  # a failure counts against the tool's retries
                failures[call.name] = failures.get(call.name, 0) + 1
            entry.update(replay.value, source="journal")
            return _tool_reply(replay.value)
    perf = scope.run.services.clock.perf
    started = perf()
    outcome = await _execute(tools, call, failures, scope.record.name)
    entry.update(outcome, latency_s=round(perf() - started, 6), source="live")
    if journal is not None:
        journal.save_call(key, request, outcome, [])
    return _tool_reply(outcome)


def _tool_reply(outcome: dict[str, Any]) -> tuple[str, bool]:
    """A tool outcome (``{"result": ...}`` or ``{"error": ...}``) as (content, is_error)."""
    if "error" in outcome and "result" not in outcome:
        return str(outcome.get("error") or ""), True
    return str(outcome.get("result") or ""), False


async def _execute(
    tools: dict[str, Tool], call: ToolCall, failures: dict[str, int], step: str
) -> dict[str, Any]:
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return {"error": f"error: there is no tool {call.name!r}; tools: {known}"}
    try:
        arguments = tool.validate(call.arguments)
    except ToolArgumentsError as exc:
        return {"error": f"error: {exc}; the tool was not run"}
    try:
        value = await tool.call(arguments)
    except Exception as exc:
        failures[tool.name] = failures.get(tool.name, 0) + 1
        if failures[tool.name] > tool.retries:
            raise StepError(
                f"tool {tool.name!r} failed {failures[tool.name]} times (retries="
                f"{tool.retries}); last: {type(exc).__name__}: {exc}",
                step=step,
            ) from exc
        # The model is told what was raised; the transcript also keeps where, in the
        # user's code (trimmed to user frames), for `trellis show`, --json and the UI.
        return {
            "error": f"error: tool {tool.name!r} raised {type(exc).__name__}: {exc}",
            "raised": True,
            "traceback": [frame.to_dict() for frame in user_frames(exc)],
        }
    text = value if isinstance(value, str) else to_json(value, fallback=repr).decode()
    return {"result": text}
