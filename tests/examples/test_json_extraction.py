"""examples/json_extraction.py: validated extraction, bounded re-asks, failures that explain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

import trellis as tl

# Seed 1 gives this batch both outcomes: most records recover by re-asking, a few
# exhaust their re-asks.
FAULTY = "sim:small?malformed_json=0.3&invalid_json=0.3&seed=1"
MISSING_KIND = {"order_id": "A-55902", "amount": 24.5, "currency": "USD"}  # no 'kind'


@pytest.fixture
def je(load_example: Callable[[str], ModuleType]) -> ModuleType:
    return load_example("json_extraction")


@pytest.fixture
def records(
    read_jsonl: Callable[[Path], list[dict[str, Any]]], examples_dir: Path
) -> list[dict[str, Any]]:
    return read_jsonl(examples_dir / "data" / "records.jsonl")


def reasks_of(je: ModuleType) -> int:
    policy = je.flow.steps["extract"].retry
    assert policy is not None
    reasks: int = policy.reasks
    return reasks


def test_the_model_rejects_bad_fields(je: ModuleType) -> None:
    ok = je.OrderRecord(kind="order", order_id=None, email="Jo@Example.com", amount=0)
    assert ok.email == "jo@example.com"
    with pytest.raises(ValidationError, match="not an email address"):
        je.OrderRecord(kind="order", order_id="1", email="jo at example")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        je.OrderRecord(kind="order", order_id="1", amount=-5)
    with pytest.raises(ValidationError, match="order_id"):
        je.OrderRecord(kind="order")  # required, even though it may be null
    with pytest.raises(ValidationError, match="currency"):
        je.OrderRecord(kind="order", order_id="1", currency="dollars")


async def test_faulty_model_is_reasked_and_every_success_is_valid(
    je: ModuleType, records: list[dict[str, Any]]
) -> None:
    reasks = reasks_of(je)
    total = tl.Stats()
    outcomes: list[tl.RunResult] = []
    async with tl.Engine(models={"small": FAULTY}) as engine:
        async for _, result in engine.run_many(je.flow, records, concurrency=8):
            outcomes.append(result)
            total.merge(result.usage)
    done = [r for r in outcomes if r.ok]
    failed = [r for r in outcomes if not r.ok]
    assert len(done) >= len(records) // 2 and failed  # both paths are exercised

    for result in done:
        record = result["extract"]
        assert isinstance(record, je.OrderRecord)
        assert je.OrderRecord.model_validate(record.model_dump()) == record
        assert result["review"].record == record
        assert 1 <= result.usage.attempts <= reasks + 1
        assert [c.outcome for c in result.calls][-1] == "ok"
    for result in failed:
        assert result.error is not None
        assert (result.error.type, result.error.step) == ("OutputValidationError", "extract")
        assert result.steps["review"].status == "cancelled"
        assert result.usage.calls == 0 and result.usage.attempts == reasks + 1
        assert all(c.outcome in ("malformed", "invalid") for c in result.calls)

    # Re-asks are counted, not hidden.
    assert total.failures["malformed"] > 0 and total.failures["invalid"] > 0
    assert total.attempts > total.calls == len(done)
    assert total.attempts == total.calls + total.failures["malformed"] + total.failures["invalid"]


async def test_missing_required_field_fails_after_every_reask(je: ModuleType) -> None:
    reasks = reasks_of(je)
    model = tl.FunctionModel(lambda request: MISSING_KIND)
    async with tl.Engine(models={"small": model}) as engine:
        result = await engine.run(je.flow, {"text": "order #A-55902, $24.50"})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "OutputValidationError"
    assert result.error.step == "extract"
    assert result.steps["extract"].status == "failed"
    assert result.steps["review"].status == "cancelled"

    assert len(model.calls) == reasks + 1
    assert [c.outcome for c in result.calls] == ["invalid"] * (reasks + 1)
    for request in model.calls[1:]:  # each re-ask feeds the validation error back
        assert request.messages[-2].role == "assistant"
        assert "kind" in request.messages[-1].content
    with pytest.raises(KeyError, match="extract"):
        result["extract"]


async def test_output_validation_error_carries_every_attempt(je: ModuleType) -> None:
    """The exception itself, as the step sees it: every bad reply with its error."""
    reasks = reasks_of(je)
    caught: list[tl.OutputValidationError] = []
    probe = tl.Flow("extract-probe", inputs={"text": str})

    extract = je.flow.steps["extract"]

    @probe.step(retry=extract.retry, model=extract.model)
    async def attempt(text: str, llm: tl.LLM) -> str:
        try:
            await je.extract(text, llm)
        except tl.OutputValidationError as exc:
            caught.append(exc)
            raise
        return "unreachable"

    model = tl.FunctionModel(lambda request: MISSING_KIND)
    async with tl.Engine(models={"small": model}) as engine:
        result = await engine.run(probe, {"text": "order #A-55902, $24.50"})
    assert result.error is not None and result.error.step == "attempt"
    (error,) = caught
    assert error.mode is tl.FailureMode.INVALID
    assert len(error.attempts) == reasks + 1
    for reply in error.attempts:
        assert reply.mode is tl.FailureMode.INVALID
        assert "kind" in reply.error
        assert '"order_id": "A-55902"' in reply.text
