"""A step whose code or prompt changed since the run recorded it is detected at resume.

Two versions of the same flow (same name, same step names) differ in one step. Resuming a
run recorded by version 1 with version 2 raises :class:`StepChangedError` naming the step,
unless ``rerun_changed=True``: then the changed step and everything downstream run again,
while unrelated upstream and sibling steps are restored.

Shape of both versions::

    text -> facts -> summary -> headline -> publish (crashes in the first run)
              \\-> keywords (a sibling of summary)
"""

from __future__ import annotations

from pathlib import Path

import pytest

import trellis as tl
from trellis.errors import StepChangedError
from trellis.store import SQLiteStore

from . import Counts, durable_engine, priced_model

INPUTS = {"text": "Tea is a drink."}


def echo_model() -> tl.FunctionModel:
    return priced_model(lambda request: f"<{request.prompt_text()}>")


def version1(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("changing", inputs={"text": str})

    @flow.step
    async def facts(text: str, llm: tl.LLM) -> str:
        counts.hit("facts")
        return await llm.generate(f"facts of {text}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def summary(facts: str, llm: tl.LLM) -> str:
        counts.hit("summary")
        return await llm.generate(f"Summarise briefly: {facts}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def headline(summary: str, llm: tl.LLM) -> str:
        counts.hit("headline")
        return await llm.generate(f"headline for {summary}", model="m")  # type: ignore[no-any-return]

    @flow.step
    def keywords(facts: str) -> list[str]:
        counts.hit("keywords")
        return sorted(set(facts.split()))

    @flow.step
    def publish(headline: str, keywords: list[str]) -> str:
        counts.hit("publish")
        if crash["publish"]:
            raise RuntimeError("publishing failed")
        return f"{headline} {keywords}"

    return flow


def version2(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    """Version 1 with another prompt in ``summary``."""
    flow = tl.Flow("changing", inputs={"text": str})

    @flow.step
    async def facts(text: str, llm: tl.LLM) -> str:
        counts.hit("facts")
        return await llm.generate(f"facts of {text}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def summary(facts: str, llm: tl.LLM) -> str:
        counts.hit("summary")
        return await llm.generate(f"Summarise in one line: {facts}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def headline(summary: str, llm: tl.LLM) -> str:
        counts.hit("headline")
        return await llm.generate(f"headline for {summary}", model="m")  # type: ignore[no-any-return]

    @flow.step
    def keywords(facts: str) -> list[str]:
        counts.hit("keywords")
        return sorted(set(facts.split()))

    @flow.step
    def publish(headline: str, keywords: list[str]) -> str:
        counts.hit("publish")
        if crash["publish"]:
            raise RuntimeError("publishing failed")
        return f"{headline} {keywords}"

    return flow


def version3(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    """Version 1 with a changed post-processing in ``summary`` (same LLM request)."""
    flow = tl.Flow("changing", inputs={"text": str})

    @flow.step
    async def facts(text: str, llm: tl.LLM) -> str:
        counts.hit("facts")
        return await llm.generate(f"facts of {text}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def summary(facts: str, llm: tl.LLM) -> str:
        counts.hit("summary")
        reply = await llm.generate(f"Summarise briefly: {facts}", model="m")
        return reply.upper()  # type: ignore[no-any-return]

    @flow.step
    async def headline(summary: str, llm: tl.LLM) -> str:
        counts.hit("headline")
        return await llm.generate(f"headline for {summary}", model="m")  # type: ignore[no-any-return]

    @flow.step
    def keywords(facts: str) -> list[str]:
        counts.hit("keywords")
        return sorted(set(facts.split()))

    @flow.step
    def publish(headline: str, keywords: list[str]) -> str:
        counts.hit("publish")
        if crash["publish"]:
            raise RuntimeError("publishing failed")
        return f"{headline} {keywords}"

    return flow


async def recorded_by_version1(path: Path, model: tl.FunctionModel) -> tl.RunResult:
    counts = Counts()
    async with durable_engine(path, {"m": model}) as engine:
        result = await engine.run(version1(counts, {"publish": True}), INPUTS, run_id="v")
    assert result.steps["publish"].status == "failed"
    assert counts == dict.fromkeys(["facts", "summary", "headline", "keywords", "publish"], 1)
    assert len(model.calls) == 3
    return result


async def test_a_changed_step_is_detected_at_resume(tmp_path: Path) -> None:
    model = echo_model()
    await recorded_by_version1(tmp_path / "t.db", model)
    counts = Counts()
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        with pytest.raises(StepChangedError, match="step 'summary' changed") as info:
            await engine.run(version2(counts, {"publish": False}), None, run_id="v")
    assert info.value.step == "summary"
    assert "rerun_changed" in str(info.value)
    assert not counts, "nothing ran"
    assert len(model.calls) == 3
    with SQLiteStore(tmp_path / "t.db") as store:
        row = store.get_run("v")
        assert row is not None and row.lease_owner is None, "still resumable"
        assert row.status == "failed"


async def test_the_same_code_resumes_without_complaint(tmp_path: Path) -> None:
    model = echo_model()
    await recorded_by_version1(tmp_path / "t.db", model)
    counts = Counts()
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(version1(counts, {"publish": False}), None, run_id="v")
    assert result.ok
    assert counts == {"publish": 1}
    assert len(model.calls) == 3


async def test_rerun_changed_reruns_the_step_and_what_depends_on_it(tmp_path: Path) -> None:
    model = echo_model()
    first = await recorded_by_version1(tmp_path / "t.db", model)
    counts = Counts()
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(
            version2(counts, {"publish": False}), None, run_id="v", rerun_changed=True
        )
    assert result.ok, result.error
    assert counts == {"summary": 1, "headline": 1, "publish": 1}, "facts, keywords restored"
    assert len(model.calls) == 3 + 2, "summary and headline asked again with new prompts"
    assert result["facts"] == first["facts"]
    assert result["summary"].startswith("<Summarise in one line:")
    assert "Summarise in one line" in result["headline"]
    sources = {c.step: c.source for c in result.calls}
    assert sources == {"facts": "journal", "summary": "live", "headline": "live"}
    # The new definitions are what is recorded now: resuming again is a recorded result.
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        again = await engine.run(version2(counts, {"publish": True}), None, run_id="v")
    assert again.outputs == result.outputs
    assert counts == {"summary": 1, "headline": 1, "publish": 1}


async def test_a_changed_step_rerun_with_an_identical_request_replays_its_call(
    tmp_path: Path,
) -> None:
    """Only the code after the call changed: the step runs again, its identical LLM request
    is served from the journal, and downstream steps see the new output."""
    model = echo_model()
    await recorded_by_version1(tmp_path / "t.db", model)
    counts = Counts()
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        with pytest.raises(StepChangedError, match="'summary'"):
            await engine.run(version3(counts, {"publish": False}), None, run_id="v")
        result = await engine.run(
            version3(counts, {"publish": False}), None, run_id="v", rerun_changed=True
        )
    assert result.ok
    assert counts == {"summary": 1, "headline": 1, "publish": 1}
    assert result["summary"] == result["summary"].upper()
    assert len(model.calls) == 4, "summary's identical request replayed; headline's is new"
    assert {c.step: c.source for c in result.calls}["summary"] == "journal"


async def test_a_changed_prompt_in_an_unfinished_step_asks_the_model_again(
    tmp_path: Path,
) -> None:
    """A journaled call is reused only for the same request: a new prompt is a miss."""
    crash = {"after_call": True}
    prompts = {"text": "Translate: {}"}
    model = echo_model()
    flow = tl.Flow("prompted", inputs={"text": str})

    @flow.step
    async def translate(text: str, llm: tl.LLM) -> str:
        reply = await llm.generate(prompts["text"].format(text), model="m")
        if crash["after_call"]:
            raise RuntimeError("crash after the call")
        return reply  # type: ignore[no-any-return]

    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        assert not (await engine.run(flow, {"text": "hi"}, run_id="p")).ok
        crash["after_call"] = False
        prompts["text"] = "Translate to French: {}"
        result = await engine.run(flow, None, run_id="p")
    assert result["translate"] == "<Translate to French: hi>"
    assert len(model.calls) == 2
    assert [c.source for c in result.calls] == ["live"]


async def test_a_step_added_since_the_run_was_recorded_just_runs(tmp_path: Path) -> None:
    model = echo_model()
    await recorded_by_version1(tmp_path / "t.db", model)
    counts = Counts()
    flow = version1(counts, {"publish": False})

    @flow.step
    def word_count(facts: str) -> int:
        counts.hit("word_count")
        return len(facts.split())

    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        result = await engine.run(flow, None, run_id="v")
    assert result.ok
    assert counts == {"word_count": 1, "publish": 1}
    assert len(model.calls) == 3


def bump(double: int) -> int:
    """Registered by ``with_options`` with different step options."""
    return double + 1


def with_options(counts: Counts, role: str, crash: bool) -> tl.Flow:
    flow = tl.Flow("options", inputs={"n": int})

    @flow.step
    def double(n: int) -> int:
        counts.hit("double")
        return n * 2

    flow.step(model=role)(bump)  # the same function, another step option

    @flow.step
    def last(bump: int) -> int:
        counts.hit("last")
        if crash:
            raise RuntimeError("crash")
        return bump

    return flow


async def test_changed_step_options_are_detected(tmp_path: Path) -> None:
    counts = Counts()
    async with durable_engine(tmp_path / "t.db") as engine:
        assert not (await engine.run(with_options(counts, "small", True), {"n": 2}, run_id="o")).ok
        with pytest.raises(StepChangedError) as info:
            await engine.run(with_options(counts, "large", False), None, run_id="o")
        assert info.value.step == "bump"
        result = await engine.run(with_options(counts, "small", False), None, run_id="o")
    assert result.ok and result["last"] == 5
    assert counts == {"double": 1, "last": 2}


async def test_a_completed_run_returns_its_record_even_if_the_code_changed(
    tmp_path: Path,
) -> None:
    """A completed run id is a recorded result: nothing executes, nothing is compared."""
    model = echo_model()
    counts = Counts()
    async with durable_engine(tmp_path / "t.db", {"m": model}) as engine:
        done = await engine.run(version1(counts, {"publish": False}), INPUTS, run_id="done")
        again = await engine.run(version2(counts, {"publish": False}), None, run_id="done")
    assert again.outputs == done.outputs
    assert len(model.calls) == 3
    assert counts["summary"] == 1
