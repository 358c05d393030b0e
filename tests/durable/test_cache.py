"""The response cache: opt-in, keyed by the whole request, TTL, a hit costs nothing.

``Engine(cache=...)``, ``Flow(cache=...)`` and ``@flow.step(cache=...)`` turn it on (the
nearest level that says something wins; ``cache=False`` turns an inherited cache off).
Without a store it lives in the engine's memory; with one, in the store, shared by every
engine on the same file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import BadRequestError
from trellis.flow.policy import Cache
from trellis.store import SQLiteStore

from . import PRICED, Counts, durable_engine, priced_model, reply_by_schema


class Answer(BaseModel):
    text: str
    score: int


class Other(BaseModel):
    text: str
    note: str


MODEL_REPLIES = reply_by_schema(
    {
        None: "plain text reply",
        "Answer": {"text": "yes", "score": 3},
        "Other": {"text": "no", "note": "n"},
    }
)


def asking(counts: Counts, **generate: Any) -> tl.Flow:
    """One step making one call with ``generate`` keyword arguments (prompt included)."""
    flow = tl.Flow("asking", inputs={"question": str})
    options = {"prompt": "What?", "output": Answer, "model": "m", **generate}

    @flow.step
    async def ask(question: str, llm: tl.LLM) -> Any:
        counts.hit("ask")
        kw = dict(options)
        return await llm.generate(kw.pop("prompt"), **kw)

    return flow


def models() -> dict[str, tl.FunctionModel]:
    model = priced_model(MODEL_REPLIES)
    return {"m": model, "alias": model, "n": tl.FunctionModel(MODEL_REPLIES, name="function:n")}


def sent(models: dict[str, tl.FunctionModel]) -> int:
    return len(models["m"].calls) + len(models["n"].calls)


async def test_an_identical_request_in_a_second_run_is_a_cache_hit() -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound, config=PRICED, cache=True) as engine:
        first = await engine.run(asking(counts), {"question": "q"})
        second = await engine.run(asking(counts), {"question": "q"})
    assert sent(bound) == 1, "the model was asked once"
    assert counts["ask"] == 2, "the step itself ran both times"
    assert second["ask"] == first["ask"] == Answer(text="yes", score=3)
    assert isinstance(second["ask"], Answer)
    (live,) = first.calls
    (hit,) = second.calls
    assert (live.source, hit.source) == ("live", "cache")
    assert live.cost_usd is not None and live.cost_usd > 0
    assert (hit.cost_usd, hit.input_tokens, hit.output_tokens, hit.outcome) == (0.0, 0, 0, "ok")
    assert (hit.model, hit.role, hit.step) == ("function:test", "m", "ask")
    assert second.usage.cost_usd == 0.0
    assert second.usage.total_tokens == 0
    assert second.usage.calls == 1
    assert second.usage.cost_known


async def test_the_cache_is_opt_in() -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound) as engine:
        await engine.run(asking(counts), {"question": "q"})
        result = await engine.run(asking(counts), {"question": "q"})
    assert sent(bound) == 2
    assert result.calls[0].source == "live"


async def test_a_role_bound_to_the_same_model_hits_the_same_entry() -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound, cache=True) as engine:
        await engine.run(asking(counts, model="m"), {"question": "q"})
        result = await engine.run(asking(counts, model="alias"), {"question": "q"})
    assert sent(bound) == 1
    assert result.calls[0].source == "cache"


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"prompt": "What exactly?"},
        {"prompt": [{"role": "user", "content": "What?"}, {"role": "user", "content": "Now."}]},
        {"system": "Be brief."},
        {"output": Other},
        {"output": None},
        {"model": "n"},
        {"max_tokens": 50},
        {"seed": 7},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_any_difference_in_the_request_is_a_miss(change: dict[str, Any]) -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound, cache=True) as engine:
        await engine.run(asking(counts, temperature=0.2), {"question": "q"})
        changed = await engine.run(
            asking(counts, **{"temperature": 0.2, **change}), {"question": "q"}
        )
        same_again = await engine.run(
            asking(counts, **{"temperature": 0.2, **change}), {"question": "q"}
        )
    assert sent(bound) == 2, "the changed request was sent; repeating it was a hit"
    assert changed.calls[0].source == "live"
    assert same_again.calls[0].source == "cache"


async def test_entries_expire_after_their_ttl() -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound, cache=Cache(ttl=0.2)) as engine:
        await engine.run(asking(counts), {"question": "q"})
        within = await engine.run(asking(counts), {"question": "q"})
        await asyncio.sleep(0.25)
        expired = await engine.run(asking(counts), {"question": "q"})
    assert [within.calls[0].source, expired.calls[0].source] == ["cache", "live"]
    assert sent(bound) == 2


async def test_step_cache_false_overrides_the_engine_cache() -> None:
    counts, bound = Counts(), models()
    flow = tl.Flow("mixed", inputs={"question": str})

    @flow.step(cache=False)
    async def fresh(question: str, llm: tl.LLM) -> str:
        counts.hit("fresh")
        return await llm.generate(f"fresh {question}", model="m")  # type: ignore[no-any-return]

    @flow.step
    async def cached(question: str, llm: tl.LLM) -> str:
        counts.hit("cached")
        return await llm.generate(f"cached {question}", model="m")  # type: ignore[no-any-return]

    async with tl.Engine(models=bound, cache=True) as engine:
        await engine.run(flow, {"question": "q"})
        result = await engine.run(flow, {"question": "q"})
    assert {c.step: c.source for c in result.calls} == {"fresh": "live", "cached": "cache"}
    assert sent(bound) == 3


async def test_flow_and_step_level_caches_without_an_engine_cache() -> None:
    counts, bound = Counts(), models()
    flow = tl.Flow("levels", inputs={"question": str}, cache=True)

    @flow.step
    async def inherits(question: str, llm: tl.LLM) -> str:
        return await llm.generate(f"a {question}", model="m")  # type: ignore[no-any-return]

    @flow.step(cache=False)
    async def opted_out(question: str, llm: tl.LLM) -> str:
        return await llm.generate(f"b {question}", model="m")  # type: ignore[no-any-return]

    plain = tl.Flow("plain", inputs={"question": str})

    @plain.step(cache=Cache(ttl=60))
    async def opted_in(question: str, llm: tl.LLM) -> str:
        return await llm.generate(f"c {question}", model="m")  # type: ignore[no-any-return]

    @plain.step
    async def default(question: str, llm: tl.LLM) -> str:
        return await llm.generate(f"d {question}", model="m")  # type: ignore[no-any-return]

    async with tl.Engine(models=bound) as engine:
        for _ in range(2):
            a = await engine.run(flow, {"question": "q"})
            b = await engine.run(plain, {"question": "q"})
    assert {c.step: c.source for c in a.calls + b.calls} == {
        "inherits": "cache",
        "opted_out": "live",
        "opted_in": "cache",
        "default": "live",
    }
    assert counts == {}
    assert sent(bound) == 6


async def test_failed_calls_are_not_cached() -> None:
    attempts = Counts()

    def flaky(request: tl.ModelRequest) -> Any:
        attempts.hit("call")
        if attempts["call"] == 1:
            raise BadRequestError("rejected once")
        return {"text": "ok", "score": 1}

    model = priced_model(flaky)
    async with tl.Engine(models={"m": model}, cache=True) as engine:
        first = await engine.run(asking(Counts()), {"question": "q"})
        second = await engine.run(asking(Counts()), {"question": "q"})
        third = await engine.run(asking(Counts()), {"question": "q"})
    assert not first.ok
    assert second.ok and second.calls[0].source == "live"
    assert third.calls[0].source == "cache"
    assert attempts["call"] == 2


async def test_a_cache_hit_is_not_charged_to_the_budget() -> None:
    counts, bound = Counts(), models()
    async with tl.Engine(models=bound, config=PRICED, cache=True) as engine:
        await engine.run(asking(counts), {"question": "q"})
        result = await engine.run(
            asking(counts), {"question": "q"}, budget=tl.Budget(max_calls=0, max_usd=0.0)
        )
    assert result.ok, result.error
    assert result.calls[0].source == "cache"


async def test_the_cache_is_shared_through_a_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts = Counts()
    first_models, second_models = models(), models()
    async with durable_engine(path, first_models, cache=True) as engine:
        live = await engine.run(asking(counts), {"question": "q"}, run_id="one")
    async with durable_engine(path, second_models, cache=True) as engine:  # a new process
        hit = await engine.run(asking(counts), {"question": "q"}, run_id="two")
        assert engine.store is not None
        stats = engine.store.cache_stats(now=0.0)
    assert (sent(first_models), sent(second_models)) == (1, 0)
    assert live.calls[0].source == "live"
    assert hit.calls[0].source == "cache"
    assert isinstance(hit["ask"], Answer)
    assert (stats.entries, stats.hits) == (1, 1)
    assert stats.bytes > 0
    # The hit was journaled with the run: its recorded result shows it, and resuming the
    # completed run asks nothing.
    async with durable_engine(path, second_models, cache=True) as engine:
        recorded = await engine.run(asking(counts), None, run_id="two")
    assert recorded["ask"] == hit["ask"].model_dump()  # the step returns Any: plain JSON
    assert [(c.input_tokens, c.cost_usd) for c in recorded.calls] == [(0, 0.0)]
    assert counts["ask"] == 2


async def test_cache_stats_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    bound = models()
    async with durable_engine(path, bound, cache=Cache(ttl=3600)) as engine:
        for question in ("a", "b"):
            await engine.run(asking(Counts(), prompt=question), {"question": question})
        await engine.run(asking(Counts(), prompt="a"), {"question": "a2"})
    assert sent(bound) == 2
    with SQLiteStore(path) as store:
        stats = store.cache_stats(now=0.0)
        assert (stats.entries, stats.hits, stats.expired) == (2, 1, 0)
        assert store.cache_stats(now=float("inf")).expired == 2
        assert store.cache_clear(expired_only=True, now=0.0) == 0
        assert store.cache_clear() == 2
        assert store.cache_stats(now=0.0).entries == 0
    async with durable_engine(path, bound, cache=True) as engine:
        result = await engine.run(asking(Counts(), prompt="a"), {"question": "a3"})
    assert result.calls[0].source == "live", "cleared"
    assert sent(bound) == 3


async def test_no_store_means_a_per_engine_memory_cache() -> None:
    counts = Counts()
    one, two = models(), models()
    async with tl.Engine(models=one, cache=True) as engine:
        await engine.run(asking(counts), {"question": "q"})
    async with tl.Engine(models=two, cache=True) as engine:
        result = await engine.run(asking(counts), {"question": "q"})
    assert result.calls[0].source == "live"
    assert (sent(one), sent(two)) == (1, 1)
