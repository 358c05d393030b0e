"""The engine's event stream: ordering, back-pressure, resume, batches, no observer no cost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.engine.events import (
    AttemptFinished,
    AttemptReasked,
    AttemptRetried,
    AttemptStarted,
    Emitter,
    Event,
    PartialOutput,
    RunFinished,
    StepFailed,
    StepFinished,
    StepPartFinished,
    StepPartStarted,
    StepSkipped,
    StepStarted,
    TokenDelta,
    WaitingForPerson,
)
from trellis.engine.stream import EventBuffer
from trellis.store import SQLiteStore


class Verdict(BaseModel):
    label: str
    score: int


async def _no_sleep(_: float) -> None:
    return None


def _classifying_flow() -> tl.Flow:
    flow = tl.Flow("verdicts", inputs={"text": str}, model="small")

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(f"classify {text}", output=Verdict)  # type: ignore[no-any-return]

    @flow.step(when=lambda classify: classify.score > 1000)
    def escalate(classify: Verdict) -> str:
        return classify.label

    @flow.step
    def shout(classify: Verdict) -> str:
        return classify.label.upper()

    return flow


async def _events(engine: tl.Engine, flow: tl.Flow, inputs: dict[str, Any]) -> list[Event]:
    return [event async for event in engine.stream(flow, inputs)]


async def test_a_steps_finished_event_follows_its_attempts_and_the_result_is_last() -> None:
    models = {"small": "sim:small?rate_limit=0.6&seed=3"}
    async with tl.Engine(models=models, sleep=_no_sleep, seed=1) as engine:
        stream = engine.stream(_classifying_flow(), {"text": "ok"})
        events = [event async for event in stream]
    kinds = [type(e) for e in events]
    assert kinds[-1] is RunFinished and kinds.count(RunFinished) == 1
    final = events[-1]
    assert isinstance(final, RunFinished) and final.result is stream.result
    assert stream.result.status == "done"
    started = kinds.index(StepStarted)
    finished = next(i for i, e in enumerate(events) if isinstance(e, StepFinished))
    attempt_events = [
        i for i, e in enumerate(events) if isinstance(e, AttemptStarted | AttemptFinished)
    ]
    assert attempt_events and all(started < i < finished for i in attempt_events)
    starts = [e for e in events if isinstance(e, AttemptStarted)]
    ends = [e.record for e in events if isinstance(e, AttemptFinished)]
    assert (
        [s.attempt for s in starts] == [r.attempt for r in ends] == list(range(1, len(starts) + 1))
    )
    assert ends == stream.result.calls  # every attempt, with its usage and cost
    retried = [e for e in events if isinstance(e, AttemptRetried)]
    assert len(retried) == len(ends) - 1 and {e.mode for e in retried} == {"rate_limit"}
    # each retry between the failed attempt's end and the next attempt's start
    for event in retried:
        at = events.index(event)
        assert isinstance(events[at - 1], AttemptFinished)
        assert isinstance(events[at + 1], AttemptStarted)
    skipped = next(e for e in events if isinstance(e, StepSkipped))
    assert skipped.step == "escalate" and skipped.decision is not None
    assert skipped.decision.values["classify"] == stream.result.outputs["classify"]
    # the downstream step starts only after its upstream finished
    names = [(type(e).__name__, getattr(e, "step", None)) for e in events]
    assert names.index(("StepFinished", "classify")) < names.index(("StepStarted", "shout"))


async def test_a_reask_is_an_event_between_the_rejected_attempt_and_the_next() -> None:
    replies = iter(["not json at all", '{"label": "ok"}', '{"label": "ok", "score": 3}'])
    model = tl.FunctionModel(lambda request: next(replies), name="fn")
    flow = tl.Flow("reasked", inputs={"text": str}, model="fn")

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(f"classify {text}", output=Verdict)  # type: ignore[no-any-return]

    async with tl.Engine(models={"fn": model}) as engine:
        events = await _events(engine, flow, {"text": "ok"})
    final = events[-1]
    assert isinstance(final, RunFinished) and final.result.ok
    reasks = [e for e in events if isinstance(e, AttemptReasked)]
    assert [(e.attempt, e.reask, e.mode) for e in reasks] == [
        (1, 1, "malformed"),
        (2, 2, "invalid"),
    ]
    assert "score" in reasks[1].error  # what the model is shown: the missing field
    for event in reasks:
        at = events.index(event)
        assert isinstance(events[at - 1], AttemptFinished)
        assert events[at - 1].record.attempt == event.attempt  # type: ignore[attr-defined]
        assert isinstance(events[at + 1], AttemptStarted)


async def test_each_element_is_a_part_for_an_observer_that_wants_parts() -> None:
    flow = tl.Flow("parts", inputs={"texts": list[str]}, model="small")

    @flow.step(map_over="texts", on_error="collect")
    async def classify(texts: str, llm: tl.LLM) -> Verdict:
        if texts == "bad":
            raise ValueError("no verdict")
        return await llm.generate(f"classify {texts}", output=Verdict)  # type: ignore[no-any-return]

    class Recorder(list[Event]):
        wants_parts = True  # parts are built only for an observer that asks

        def __call__(self, event: Event) -> None:
            self.append(event)

    events = Recorder()
    async with tl.Engine(models={"small": "sim:small"}) as engine:
        await engine.run(flow, {"texts": ["a", "bad", "c"]}, observers=[events])
        streamed = await _events(engine, flow, {"texts": ["a", "bad", "c"]})
    assert not [e for e in streamed if isinstance(e, StepPartStarted | StepPartFinished)]
    started = [e for e in events if isinstance(e, StepPartStarted)]
    ended = {e.index: e for e in events if isinstance(e, StepPartFinished)}
    assert sorted(e.index for e in started) == [0, 1, 2] and set(ended) == {0, 1, 2}
    assert {i: e.status for i, e in ended.items()} == {0: "done", 1: "failed", 2: "done"}
    assert ended[1].error == "ValueError: no verdict"
    kinds = [type(e) for e in events]
    first, last = kinds.index(StepStarted), kinds.index(StepFinished)
    for e in events:
        if isinstance(e, StepPartStarted | StepPartFinished | AttemptStarted):
            assert first < events.index(e) < last
    for e in events:  # an element's attempts come between its part's start and end
        if isinstance(e, AttemptStarted):
            assert (
                events.index(started[[p.index for p in started].index(e.index)])
                < (events.index(e))
                < events.index(ended[e.index])
            )


async def test_streamed_text_arrives_as_deltas_and_partial_models() -> None:
    async with tl.Engine(models={"small": "sim:small"}) as engine:
        events = await _events(engine, _classifying_flow(), {"text": "ok"})
    final = events[-1]
    assert isinstance(final, RunFinished)
    deltas = [e.text for e in events if isinstance(e, TokenDelta)]
    assert len(deltas) > 1
    assert Verdict.model_validate_json("".join(deltas)) == final.result.outputs["classify"]
    partials = [e.value for e in events if isinstance(e, PartialOutput)]
    assert partials and partials[-1].model_dump() == final.result.outputs["classify"].model_dump()
    assert any(p.score is None for p in partials)  # fields arrive one by one


async def test_a_failing_step_emits_its_error_with_the_users_frames() -> None:
    flow = tl.Flow("boom", inputs={"n": int})

    @flow.step
    def divide(n: int) -> float:
        return 1 / n

    async with tl.Engine() as engine:
        events = await _events(engine, flow, {"n": 0})
    [failed] = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.traceback[-1].function == "divide"
    assert isinstance(events[-1], RunFinished) and events[-1].result.status == "failed"


@pytest.mark.serial  # it measures that the run ends while the consumer sleeps
async def test_a_sleeping_consumer_never_holds_the_run_and_loses_nothing_but_merges() -> None:
    width = 40
    flow = tl.Flow("wide", inputs={"texts": list[str]}, model="small")

    @flow.step(map_over="texts")
    async def say(texts: str, llm: tl.LLM) -> str:
        return await llm.generate(f"Write a long answer about {texts}")  # type: ignore[no-any-return]

    ended: list[float] = []

    def note_end(event: Event) -> None:
        if isinstance(event, RunFinished):
            ended.append(time.monotonic())

    async with tl.Engine(models={"small": "sim:small"}, observers=[note_end]) as engine:
        stream = engine.stream(flow, {"texts": [f"topic {i}" for i in range(width)]}, buffer=8)
        events: list[Event] = []
        woke = 0.0
        async for event in stream:
            if not events:
                await asyncio.sleep(0.3)  # a slow consumer: the run goes on meanwhile
                woke = time.monotonic()
            events.append(event)
    assert ended and ended[0] < woke  # the run finished while the consumer slept
    assert stream.buffer.coalesced > 0  # deltas were merged ...
    starts = [e for e in events if isinstance(e, AttemptStarted)]
    ends = [e for e in events if isinstance(e, AttemptFinished)]
    assert len(starts) == len(ends) == width  # ... nothing else was dropped
    assert isinstance(events[-1], RunFinished)
    # each delta names the attempt it belongs to, as its AttemptStarted does
    started = {(e.index, e.round, e.call, e.attempt) for e in starts}
    assert {e.part for e in events if isinstance(e, TokenDelta)} == started
    # merged or not, each element's text arrives whole and in order (deltas of different
    # elements are never merged together)
    for index, said in enumerate(stream.result.outputs["say"]):
        streamed = "".join(e.text for e in events if isinstance(e, TokenDelta) and e.index == index)
        assert streamed == said, index


def test_the_buffer_merges_only_deltas_and_only_past_its_limit() -> None:
    buffer = EventBuffer(limit=2)
    buffer(TokenDelta(run_id="r", step="a", text="x"))
    buffer(TokenDelta(run_id="r", step="a", text="y"))
    buffer(TokenDelta(run_id="r", step="a", text="z"))  # full: kept, later ones merge
    buffer(TokenDelta(run_id="r", step="a", text="?"))  # merged into "z"
    buffer(StepStarted(run_id="r", step="b"))  # never dropped, even when full
    buffer(TokenDelta(run_id="r", step="a", text="!"))  # not merged back past that event
    buffer(TokenDelta(run_id="r", step="a", text="."))  # merged into "!"
    buffer(TokenDelta(run_id="r", step="b", text="1"))  # the first of b past the limit: kept
    taken = buffer.take()
    assert [getattr(e, "text", None) for e in taken] == ["x", "y", "z?", None, "!.", "1"]
    assert buffer.coalesced == 2 and len(buffer) == 0


def test_merged_deltas_keep_their_attempt_and_never_cross_an_attempt_event() -> None:
    """A retried call's second attempt streams after AttemptRetried: its text is never
    glued to the first attempt's, and two elements streaming at once keep their own."""
    buffer = EventBuffer(limit=1)
    first, second, other = (None, None, 1, 1), (None, None, 1, 2), (3, None, 1, 1)
    buffer(StepStarted(run_id="r", step="a"))  # the buffer is full from here on
    buffer.delta("r", "a", "Hel", first)
    buffer.delta("r", "a", "lo", first)  # past the limit: merged into "Hel"
    buffer.delta("r", "a", "Ot", other)  # another element's: a place of its own
    buffer.delta("r", "a", "her", other)
    retried = AttemptRetried(
        run_id="r", step="a", call=1, attempt=1, model="m", mode="timeout", wait_s=0.1
    )
    buffer(retried)
    buffer.delta("r", "a", "Hi", second)
    buffer.delta("r", "a", "!", second)
    taken = buffer.take()
    described = [
        (type(e).__name__, getattr(e, "text", None), getattr(e, "part", None)) for e in taken
    ]
    assert described == [
        ("StepStarted", None, None),
        ("TokenDelta", "Hello", first),
        ("TokenDelta", "Other", other),
        ("AttemptRetried", None, None),
        ("TokenDelta", "Hi!", second),
    ]


async def test_a_resume_streams_only_what_runs_after_the_crash(tmp_path: Path) -> None:
    crash = {"now": True}
    flow = tl.Flow("resumable", inputs={"text": str})

    @flow.step
    def first(text: str) -> str:
        return text + "!"

    @flow.step
    def second(first: str) -> str:
        if crash["now"]:
            raise KeyboardInterrupt  # the process dies mid-run: nothing settles this step
        return first * 2

    store = SQLiteStore(tmp_path / "runs.db")
    try:
        async with tl.Engine(store=store) as engine:
            with pytest.raises(KeyboardInterrupt):
                await engine.run(flow, {"text": "a"}, run_id="r1")
        crash["now"] = False
        async with tl.Engine(store=store) as engine:
            fresh = await _events(engine, flow, {"text": "b"})
            stream = engine.stream(flow, None, run_id="r1")
            resumed = [event async for event in stream]
    finally:
        store.close()
    assert stream.result.status == "done" and stream.result.outputs["second"] == "a!a!"
    started = [e.step for e in resumed if isinstance(e, StepStarted)]
    assert started == ["second"]  # "first" was restored from the journal, not re-run
    assert [e.step for e in fresh if isinstance(e, StepStarted)] == ["first", "second"]


async def test_a_batch_streams_every_items_events_each_ending_with_its_result() -> None:
    flow = tl.Flow("double", inputs={"n": int})

    @flow.step
    def double(n: int) -> int:
        return n * 2

    async with tl.Engine() as engine:
        stream = engine.stream_many(flow, [{"n": i} for i in range(5)], concurrency=2)
        events = [event async for event in stream]
    finals = [e for e in events if isinstance(e, RunFinished)]
    assert len(finals) == 5
    assert [r.outputs["double"] for r in stream.results] == [0, 2, 4, 6, 8]
    for final in finals:
        mine = [e for e in events if e.run_id == final.run_id]
        assert mine[-1] is final and isinstance(mine[0], StepStarted)


async def test_an_observer_that_raises_is_dropped_and_the_run_goes_on() -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    async with tl.Engine(observers=[broken, seen.append]) as engine:
        result = await engine.run(_plain_flow(), {"n": 2})
    assert result.status == "done" and isinstance(seen[-1], RunFinished)


async def test_without_observers_no_event_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[type] = []
    original = StepStarted.__init__

    def counting(self: StepStarted, **kw: Any) -> None:
        built.append(type(self))
        original(self, **kw)

    monkeypatch.setattr(StepStarted, "__init__", counting)
    async with tl.Engine() as engine:
        assert (await engine.run(_plain_flow(), {"n": 2})).status == "done"
        assert built == []
        await engine.run(_plain_flow(), {"n": 2}, observers=[lambda e: None])
    assert built == [StepStarted]


def _plain_flow() -> tl.Flow:
    flow = tl.Flow("plain", inputs={"n": int})

    @flow.step
    def inc(n: int) -> int:
        return n + 1

    return flow


async def test_a_batch_item_with_bad_inputs_still_ends_with_its_result() -> None:
    async with tl.Engine() as engine:
        stream = engine.stream_many(_plain_flow(), [{"n": 1}, {"n": "not a number"}])
        events = [event async for event in stream]
    finals = [e for e in events if isinstance(e, RunFinished)]
    assert sorted(f.result.status for f in finals) == ["done", "failed"]
    assert [r.status for r in stream.results] == ["done", "failed"]


def test_a_lone_buffer_takes_deltas_as_text_and_the_events_are_the_same() -> None:
    """Through ``Emitter.delta`` a lone buffer gets a delta's text (no event is built for
    one it merges); what its consumer takes is what the events themselves would give, and
    any other observer still gets ``TokenDelta`` events."""
    pieces = [("a", "x"), ("a", "y"), ("b", "1"), ("a", "z"), ("b", "2"), ("a", "!")]

    def through(emit_delta: bool) -> list[Any]:
        buffer = EventBuffer(limit=2)
        emitter = Emitter([buffer])
        for n, (step, text) in enumerate(pieces):
            if emit_delta:
                emitter.delta("r", step, text, (None, None, 0, 0))
            else:
                emitter(TokenDelta(run_id="r", step=step, text=text))
            if n == 2:
                emitter(StepStarted(run_id="r", step="c"))
        return [
            (type(e).__name__, getattr(e, "step", None), getattr(e, "text", None))
            for e in buffer.take()
        ]

    assert (
        through(True)
        == through(False)
        == [
            ("TokenDelta", "a", "x"),
            ("TokenDelta", "a", "y"),
            ("TokenDelta", "b", "1"),
            ("StepStarted", "c", None),
            ("TokenDelta", "a", "z!"),
            ("TokenDelta", "b", "2"),
        ]
    )
    seen: list[Event] = []
    both = Emitter([EventBuffer(), seen.append])
    both.delta("r", "a", "x", (None, None, 0, 0))
    assert seen == [TokenDelta(run_id="r", step="a", text="x")]


def test_a_delta_sink_that_raises_is_dropped_like_any_observer() -> None:
    class Broken(EventBuffer):
        def delta(self, run_id: str, step: str, text: str, part: Any, event: Any = None) -> None:
            raise RuntimeError("broken")

    emitter = Emitter([Broken()])
    emitter.delta("r", "a", "x", (None, None, 0, 0))
    emitter.delta("r", "a", "y", (None, None, 0, 0))
    assert [str(e) for e in emitter.errors] == ["broken"]
    assert emitter.observers == []


async def test_a_step_asking_a_person_streams_the_question_then_the_waiting_result(
    tmp_path: Path,
) -> None:
    flow = tl.Flow("asks", inputs={"text": str})

    @flow.step
    async def approve(text: str, human: tl.Human) -> tl.Approval:
        return await human.approve(f"Publish {text!r}?", details={"text": text})

    @flow.step
    def publish(text: str, approve: tl.Approval) -> str:
        return text if approve.approved else "held"

    store = SQLiteStore(tmp_path / "runs.db")
    try:
        async with tl.Engine(store=store) as engine:
            stream = engine.stream(flow, {"text": "notes"}, run_id="w")
            events = [event async for event in stream]
    finally:
        store.close()
    [asked] = [e for e in events if isinstance(e, WaitingForPerson)]
    assert asked.run_id == "w" and asked.step == "approve"
    assert asked.question["prompt"] == "Publish 'notes'?"
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("StepStarted") < kinds.index("WaitingForPerson") < len(kinds) - 1
    assert "publish" not in {getattr(e, "step", None) for e in events if isinstance(e, StepStarted)}
    assert isinstance(events[-1], RunFinished) and events[-1].result.status == "waiting"
    assert stream.result.status == "waiting"
