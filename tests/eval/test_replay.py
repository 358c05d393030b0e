"""The replay provider: answers from recorded calls with their recorded usage and cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trellis as tl
from trellis.providers.replay import ReplayMissError


def write_records(path: Path, records: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


async def run_all(
    engine: tl.Engine, flow: tl.Flow, items: list[dict[str, str]], **kw: str
) -> list[tl.RunResult]:
    results: dict[int, tl.RunResult] = {}
    async for index, result in engine.run_many(flow, items, **kw):
        results[index] = result
    return [results[i] for i in range(len(items))]


def one_call_flow() -> tl.Flow:
    flow = tl.Flow("ask", inputs={"question": str})

    @flow.step
    async def answer(question: str, llm: tl.LLM) -> str:
        return await llm.generate(question, model="small", system="Be brief.")

    return flow


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    return write_records(
        tmp_path / "rec.jsonl",
        [
            {"model": "m", "prompt": "2+2?", "response": "4",
             "usage": {"input_tokens": 11, "output_tokens": 3}, "cost_usd": 0.25},
            {"model": "m", "prompt": "3+3?", "response": "six"},
            {"model": "other", "prompt": "2+2?", "response": "five"},
        ],
    )  # fmt: skip


async def test_recorded_usage_and_cost_are_honoured(recorded: str) -> None:
    async with tl.Engine(models={"small": f"replay:m?file={recorded}"}) as engine:
        result = await engine.run(one_call_flow(), {"question": "2+2?"})
    assert result.outputs["answer"] == "4"
    [call] = result.calls
    assert (call.input_tokens, call.output_tokens) == (11, 3)
    assert call.cost_usd == pytest.approx(0.25), "the recorded cost, not a price-table cost"
    assert result.usage.cost_usd == pytest.approx(0.25)


async def test_matching_uses_the_model_name(recorded: str) -> None:
    async with tl.Engine(models={"small": f"replay:other?file={recorded}"}) as engine:
        result = await engine.run(one_call_flow(), {"question": "2+2?"})
    assert result.outputs["answer"] == "five"


async def test_unrecorded_usage_is_counted_by_the_tokenizer_and_priced(
    recorded: str, tmp_path: Path
) -> None:
    tok = tmp_path / "tok.py"
    tok.write_text("def count(text):\n    return 10 * len(text.split())\n")
    config = tl.Config(prices={"replay:m": {"input": 1e6, "output": 2e6, "request": 0.5}})
    binding = f"replay:m?file={recorded}&tokenizer={tok}:count"
    async with tl.Engine(config=config, models={"small": binding}) as engine:
        result = await engine.run(one_call_flow(), {"question": "3+3?"})
    [call] = result.calls
    # Prompt text is "Be brief.\n3+3?": 3 words; the reply "six": 1 word.
    assert (call.input_tokens, call.output_tokens) == (30, 10)
    assert call.cost_usd == pytest.approx(30 * 1 + 10 * 2 + 0.5), "per-token + per-request"


async def test_a_miss_is_a_clear_error_quoting_the_prompt(recorded: str) -> None:
    question = "What is the airspeed velocity of an unladen swallow? " * 3
    async with tl.Engine(models={"small": f"replay:m?file={recorded}"}) as engine:
        result = await engine.run(one_call_flow(), {"question": question})
    assert result.status == "failed"
    assert result.error is not None
    assert "no recorded call" in result.error.message
    assert "What is the airspeed velocity" in result.error.message
    assert "fallback=ROLE" in result.error.message


async def test_a_miss_error_is_a_bad_request() -> None:
    model = tl.Engine(models={"x": "sim:small"}).registry.create(
        tl.ModelBinding.parse("replay:m?file=/dev/null")
    )
    with pytest.raises(ReplayMissError, match="'nothing here'"):
        await model.complete(
            tl.ModelRequest(messages=(tl.Message("user", "nothing here"),), model="m")
        )
    assert issubclass(ReplayMissError, tl.BadRequestError)


async def test_a_miss_falls_back_to_a_live_role_priced_as_that_model(recorded: str) -> None:
    models = {"small": f"replay:m?file={recorded}&fallback=live", "live": "sim:large"}
    async with tl.Engine(models=models) as engine:
        hit = await engine.run(one_call_flow(), {"question": "2+2?"})
        miss = await engine.run(one_call_flow(), {"question": "unrecorded question"})
    assert hit.outputs["answer"] == "4"
    assert miss.status == "done"
    [call] = miss.calls
    price = tl.PriceTable().price("sim:large")
    assert price is not None
    expected = price.cost(tl.Usage(call.input_tokens, call.output_tokens))
    assert call.cost_usd == pytest.approx(expected)


def test_bad_options_are_configuration_errors(tmp_path: Path) -> None:
    registry = tl.Engine().registry
    with pytest.raises(tl.ConfigurationError, match="needs file="):
        registry.create(tl.ModelBinding.parse("replay:m"))
    with pytest.raises(tl.ConfigurationError, match="unknown option"):
        registry.create(tl.ModelBinding.parse("replay:m?file=x&colour=red"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "m", "prompt": "p"}\n')
    with pytest.raises(tl.ConfigurationError, match=r"bad.jsonl:1"):
        registry.create(tl.ModelBinding.parse(f"replay:m?file={bad}"))


async def test_replay_store_replays_a_recorded_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    questions = [{"question": f"q{i}"} for i in range(3)]
    async with tl.Engine(models={"small": "sim:small"}, store=url) as engine:
        recorded = await run_all(engine, one_call_flow(), questions, batch_id="prod")
    models = {"small": f"replay:store?url={url}&run=prod"}
    async with tl.Engine(models=models) as engine:
        replayed = await run_all(engine, one_call_flow(), questions)
        changed = await engine.run(one_call_flow(), {"question": "a new question"})
    for old, new in zip(recorded, replayed, strict=True):
        assert new.outputs == old.outputs
        assert new.calls[0].input_tokens == old.calls[0].input_tokens
        assert new.calls[0].cost_usd == pytest.approx(old.calls[0].cost_usd)
    assert changed.status == "failed"
    assert changed.error is not None and "a new question" in changed.error.message
