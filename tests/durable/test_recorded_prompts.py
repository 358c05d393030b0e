"""``Engine(record_prompts=True)``: every live attempt keeps the messages it sent and the
reply it got (GenAI message parts), in the run's result and in the store; a resume keeps
them and pays nothing again. Off by default: nothing of the conversation is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import trellis as tl
from trellis.engine.executor import EngineRecipe
from trellis.store import SQLiteStore


class Label(BaseModel):
    label: str


def labelling_flow(crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("label", inputs={"text": str})

    @flow.step
    async def label(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(f"Label this: {text}", output=Label, model="m")

    @flow.step
    def after(label: Label) -> str:
        if crash.get("after"):
            raise RuntimeError("crashed after the LLM call")
        return label.label

    return flow


def reask_model() -> tl.TestModel:
    """A reply that is not JSON, then a valid one (after the re-ask)."""
    return tl.TestModel("I think it is spam.", {"label": "spam"}, {"label": "spam"})


async def _run(store: Path, model: tl.Model, crash: dict[str, bool], **engine: Any) -> Any:
    async with tl.Engine(models={"m": model}, store=f"sqlite:///{store}", **engine) as e:
        return await e.run(labelling_flow(crash), {"text": "buy now"}, run_id="r1")


def _stored_attempts(store: Path) -> list[dict[str, Any]]:
    opened = SQLiteStore(str(store))
    try:
        rows = [row for row in opened.load_calls("r1") if row.attempts != "[]"]
        return [a for row in rows for a in json.loads(row.attempts)]
    finally:
        opened.close()


async def test_each_attempt_keeps_what_it_sent_and_what_it_got(tmp_path: Path) -> None:
    model = reask_model()
    result = await _run(tmp_path / "s.db", model, {}, record_prompts=True)
    assert result.status == "done"
    first, second = result.calls
    assert first.outcome == "malformed" and second.outcome == "ok"
    assert first.prompt == [
        {"role": "user", "parts": [{"type": "text", "content": "Label this: buy now"}]}
    ]
    assert first.output == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "I think it is spam."}],
            "finish_reason": "stop",
        }
    ]
    # The re-ask is a new request: the conversation so far, then the correction.
    assert [m["role"] for m in second.prompt] == ["user", "assistant", "user"]
    assert second.prompt[1]["parts"][0]["content"] == "I think it is spam."
    assert "not valid JSON" in second.prompt[2]["parts"][0]["content"]
    assert json.loads(second.output[0]["parts"][0]["content"]) == {"label": "spam"}
    # What the model received is exactly what was recorded.
    assert [m.content for m in model.calls[1].messages] == [
        p["parts"][0]["content"] for p in second.prompt
    ]
    stored = _stored_attempts(tmp_path / "s.db")
    assert [a["prompt"] for a in stored] == [first.prompt, second.prompt]
    assert [a["output"] for a in stored] == [first.output, second.output]


async def test_nothing_of_the_conversation_is_stored_by_default(tmp_path: Path) -> None:
    result = await _run(tmp_path / "s.db", reask_model(), {})
    assert all(c.prompt is None and c.output is None for c in result.calls)
    stored = _stored_attempts(tmp_path / "s.db")
    assert len(stored) == 2 and not any("prompt" in a or "output" in a for a in stored)
    assert "prompt" not in result.calls[0].to_dict()


async def test_a_resumed_run_shows_the_recorded_prompts_without_asking_again(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.db"
    crashed = await _run(store, reask_model(), {"after": True}, record_prompts=True)
    assert crashed.status == "failed"
    again = tl.TestModel()  # no replies: any request would fail the test
    resumed = await _run(store, again, {}, record_prompts=True)
    assert resumed.status == "done" and again.calls == []
    assert [c.source for c in resumed.calls] == ["journal", "journal"]
    assert [c.prompt for c in resumed.calls] == [c.prompt for c in crashed.calls]
    assert resumed.calls[1].output == crashed.calls[1].output


async def test_an_agent_turn_records_the_tool_calls_and_their_results(tmp_path: Path) -> None:
    flow = tl.Flow("agent", inputs={"city": str})

    @tl.tool
    def weather(city: str) -> str:
        return f"{city}: -3 C"

    @flow.step
    async def report(city: str, llm: tl.LLM) -> str:
        return await llm.agent(f"Weather in {city}?", tools=[weather], model="m")  # type: ignore[no-any-return]

    ask = tl.ToolCall("c1", "weather", '{"city": "Oslo"}')
    model = tl.TestModel(
        tl.ModelResponse(
            text="", usage=tl.Usage(5, 2), finish_reason="tool_calls", tool_calls=(ask,)
        ),
        "It is cold.",
    )
    async with tl.Engine(models={"m": model}, record_prompts=True) as e:
        result = await e.run(flow, {"city": "Oslo"})
    assert result.status == "done"
    first, second = result.calls
    assert first.output == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "c1",
                    "name": "weather",
                    "arguments": '{"city": "Oslo"}',
                }
            ],
            "finish_reason": "tool_calls",
        }
    ]
    assert second.prompt[-1] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "c1", "response": "Oslo: -3 C"}],
    }
    assert second.prompt[-2]["parts"][-1]["name"] == "weather"


def test_an_executors_worker_engine_records_prompts_like_its_driver() -> None:
    driver = tl.Engine(models={"m": "sim:small"}, record_prompts=True)
    recipe: EngineRecipe = driver.recipe
    assert recipe.record_prompts
    assert tl.Engine.from_recipe(recipe).services.record_prompts
    assert not tl.Engine.from_recipe(tl.Engine().recipe).services.record_prompts
