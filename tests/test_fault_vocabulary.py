"""One fault vocabulary: the sim's faults and the mock server's faults are the names of
``trellis.models.faults``, and each becomes the engine failure mode the table states, as
the sim raises it and as the provider clients read the mock server's rendering of it."""

from __future__ import annotations

import random
from typing import Any, get_args

import pytest

import trellis as tl
from trellis.errors import FailureMode, ModelError, QuotaExceededError
from trellis.mockserver import FAULT_MODES as MOCK_MODES
from trellis.mockserver import MockServer
from trellis.mockserver.faults import FaultPlan, FaultStep
from trellis.models.base import Message, ModelRequest
from trellis.models.faults import (
    CONTENT_FAULTS,
    ERROR_FAULTS,
    FAULTS,
    MOCK_FAULTS,
    RAISED_FAULTS,
    SIM_FAULTS,
    Fault,
    content_fault,
    draw_fault,
    error_fault,
    fault_named,
    malformed_json,
)
from trellis.models.sim import FAULT_MODES as SIM_MODES
from trellis.models.sim import SimModel, SimOptions
from trellis.providers.anthropic import AnthropicModel
from trellis.providers.openai import OpenAIModel

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}},
    "required": ["label"],
    "additionalProperties": False,
}


def _request(schema: dict[str, Any] | None = None) -> ModelRequest:
    return ModelRequest(
        messages=(Message("user", "Summarise the quarterly report from Acme Corp"),),
        output_schema=schema,
        schema_name="Label" if schema else None,
        max_tokens=200,
        model="m",
    )


def test_the_table_describes_every_fault_in_order() -> None:
    assert tuple(FAULTS) == get_args(Fault)
    assert all(kind.name == name for name, kind in FAULTS.items())


def test_each_producer_injects_a_subset_of_the_one_vocabulary() -> None:
    assert SIM_MODES == SIM_FAULTS and MOCK_MODES == MOCK_FAULTS
    assert set(SIM_FAULTS) | set(MOCK_FAULTS) == set(FAULTS)
    # Every sim fault is a SimOptions rate of the same name.
    assert set(SimOptions().fault_rates()) == set(SIM_FAULTS)
    assert all(hasattr(SimOptions(), fault) for fault in SIM_FAULTS)


def test_a_sim_only_fault_is_refused_by_the_mock_server_by_name() -> None:
    with pytest.raises(ValueError, match=r"unknown_tool.*not one the mock server injects"):
        FaultStep(fault="unknown_tool")
    with pytest.raises(ValueError, match=r"unknown fault mode 'unknown_tool' \(a sim: fault"):
        FaultPlan({"unknown_tool": 0.5})


def test_fault_named_reads_dashes_and_knows_only_the_allowed() -> None:
    assert fault_named("rate-limit", SIM_FAULTS) == "rate_limit"
    assert fault_named("stream_cut", SIM_FAULTS) is None
    assert fault_named("stream_cut", MOCK_FAULTS) == "stream_cut"


def test_draw_fault_keeps_order_scales_and_skips_faults_that_do_not_apply() -> None:
    rates: list[tuple[Fault, float]] = [("rate_limit", 0.8), ("malformed_json", 0.8)]
    # Scaled to 0.5 each when both apply; rate_limit alone when there is no output.
    assert draw_fault(0.49, rates, ("output",)) == "rate_limit"
    assert draw_fault(0.51, rates, ("output",)) == "malformed_json"
    assert draw_fault(0.79, rates) == "rate_limit"
    assert draw_fault(0.81, rates) is None
    assert draw_fault(0.5, [("stream_cut", 1.0)]) is None
    assert draw_fault(0.5, [("stream_cut", 1.0)], ("stream",)) == "stream_cut"
    assert draw_fault(0.5, [("unknown_tool", 1.0)], ("output",)) is None
    assert draw_fault(0.5, []) is None


@pytest.mark.parametrize("variant", [0.0, 0.5, 0.8, 0.9])
def test_malformed_json_never_parses(variant: float) -> None:
    import json

    for text in ('{"label": "a"}', "[1, 2, 3]", '"x"'):
        with pytest.raises(json.JSONDecodeError):
            json.loads(malformed_json(text, variant))


_RAISED_BY_SIM = [
    "rate_limit", "timeout", "overloaded", "server_error", "quota", "context_length", "auth",
    "connection",
]  # fmt: skip


def test_every_sim_fault_is_raised_or_returned() -> None:
    returned = {"refusal", "truncation", "malformed_json", "invalid_json"}
    tool_call = {"invalid_tool_args", "unknown_tool"}
    assert set(SIM_FAULTS) == set(_RAISED_BY_SIM) | returned | tool_call
    assert set(_RAISED_BY_SIM) == RAISED_FAULTS and returned == CONTENT_FAULTS


def test_each_fault_is_delivered_one_way() -> None:
    """The delivery groups (a provider's error, the transport's, the content, a tool call,
    a stream) split the vocabulary: each fault is in exactly one."""
    groups = [
        ERROR_FAULTS,
        RAISED_FAULTS - ERROR_FAULTS,
        CONTENT_FAULTS,
        {f for f in FAULTS if FAULTS[f].needs in ("tool_calls", "stream")},
    ]
    assert sum(len(g) for g in groups) == len(FAULTS)
    assert set().union(*groups) == set(FAULTS)
    assert all(error_fault(f) == (f if f in ERROR_FAULTS else None) for f in FAULTS)
    assert all(content_fault(f) == (f if f in CONTENT_FAULTS else None) for f in FAULTS)
    assert error_fault(None) is None and content_fault(None) is None


@pytest.mark.parametrize("fault", _RAISED_BY_SIM)
async def test_a_raised_sim_fault_has_the_tables_failure_mode(fault: Fault) -> None:
    model = SimModel("sim:small", {fault: 1.0})
    with pytest.raises(ModelError) as caught:
        await model.complete(_request())
    assert caught.value.mode is FAULTS[fault].mode


@pytest.mark.parametrize(("fault", "finish"), [("refusal", "refusal"), ("truncation", "length")])
async def test_a_returned_sim_fault_has_the_finish_reason_of_its_mode(
    fault: Fault, finish: str
) -> None:
    reply = await SimModel("sim:small", {fault: 1.0}).complete(_request(SCHEMA))
    assert reply.finish_reason == finish
    expected = {"refusal": FailureMode.REFUSAL, "length": FailureMode.TRUNCATED}[finish]
    assert FAULTS[fault].mode is expected


_RAISED_BY_MOCK = [*sorted(ERROR_FAULTS), "timeout", "stream_error", "stream_cut"]


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", _RAISED_BY_MOCK)
async def test_the_clients_read_each_mock_fault_as_the_tables_failure_mode(
    dialect: str, fault: Fault
) -> None:
    stream = FAULTS[fault].needs == "stream"
    step: dict[str, Any] = {"fault": fault}
    if fault == "timeout":
        step["hang_s"] = 2.0
    async with MockServer(script=[step]) as server:
        options: dict[str, Any] = {"api_key": "test", "stream": stream, "timeout": 0.3}
        model: OpenAIModel | AnthropicModel
        if dialect == "openai":
            model = OpenAIModel("gpt-4o-mini", {**options, "base_url": server.openai_base_url})
        else:
            base = server.anthropic_base_url
            model = AnthropicModel("claude-x", {**options, "base_url": base})
        try:
            with pytest.raises(ModelError) as caught:
                await model.complete(_request())
        finally:
            await model.aclose()
    assert caught.value.mode is FAULTS[fault].mode, caught.value


def test_the_sim_and_the_mock_draw_faults_the_same_way() -> None:
    """Same rates, same uniform draws: the same faults (the one draw_fault)."""
    rates: dict[Fault, float] = {"rate_limit": 0.3, "overloaded": 0.2}
    plan = FaultPlan(rates, seed=3)
    draws = random.Random("trellis-mock-faults:3")
    for _ in range(200):
        step, _scripted = plan.next(structured=False, stream=False)
        expected = draw_fault(draws.random(), rates.items())
        assert (step.fault if step else None) == expected


async def _run_with(binding: str) -> Any:
    flow = tl.Flow("vocab", inputs={"text": str})

    @flow.step
    async def answer(text: str, llm: tl.LLM) -> str:
        return await llm.generate(text, model="small")

    async def no_wait(seconds: float) -> None:
        pass

    async with tl.Engine(models={"small": binding}, sleep=no_wait, seed=0) as engine:
        return await engine.run(flow, {"text": "Summarise the report"})


async def test_the_engine_retries_a_sim_connection_fault_like_a_timeout() -> None:
    result = await _run_with("sim:small?connection=0.6&seed=3")
    assert result.status == "done"
    outcomes = [call.outcome for call in result.calls]
    assert "connection" in outcomes and outcomes[-1] == "ok"


async def test_a_sim_quota_fault_fails_the_run_with_the_quota_error() -> None:
    result = await _run_with("sim:small?quota=1")
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.type, result.error.mode) == (QuotaExceededError.__name__, "quota")
    assert [call.outcome for call in result.calls] == ["quota"]
