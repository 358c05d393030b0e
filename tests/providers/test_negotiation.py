"""Parameter negotiation: a rejected parameter is dropped or renamed once, remembered per
binding for the process, and recorded where users see it. Over real HTTP against the mock
server's profiles (gpt-5, claude-5, mistral) and the scripted server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console
from typer.testing import CliRunner

import trellis as tl
from trellis.cli import app
from trellis.cli.render import render_result, summary_renderables
from trellis.engine.summary import summarize
from trellis.errors import BadRequestError, ModelError
from trellis.mockserver import MockServer
from trellis.models.base import ToolSpec
from trellis.models.pricing import PriceTable
from trellis.providers import AnthropicModel, OpenAIModel
from trellis.providers.negotiation import rejected_parameters, reset_negotiations
from trellis.providers.openai import default_max_tokens_param
from trellis.store import SQLiteStore

from .conftest import Reply, ScriptedServer, completion, message, openai_error, request

RENAMED = "max_tokens sent as max_completion_tokens: the server rejected max_tokens (HTTP 400)"
NO_TEMPERATURE = "temperature not sent: the server rejected temperature (HTTP 400)"


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    reset_negotiations()
    yield
    reset_negotiations()


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with MockServer(seed=5) as server:
        yield server


def openai(server: MockServer, model: str = "gpt-5-mini", **options: Any) -> OpenAIModel:
    return OpenAIModel(model, {"base_url": server.openai_base_url, **options})


def anthropic(server: MockServer, model: str = "claude-opus-5", **options: Any) -> AnthropicModel:
    return AnthropicModel(model, {"base_url": server.anthropic_base_url, **options})


# -- reading the rejection -------------------------------------------------------------------


SENT = {"model": "m", "messages": [], "max_tokens": 5, "temperature": 0.2, "stream_options": {}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            openai_error(
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.",
                code="unsupported_parameter",
                param="max_tokens",
            ),
            ("max_tokens",),
        ),
        (
            openai_error(
                "Unsupported value: 'temperature' does not support 0.2 with this model.",
                code="unsupported_value",
                param="temperature",
            ),
            ("temperature",),
        ),
        (  # Mistral's 422
            {
                "object": "error",
                "message": {
                    "detail": [
                        {
                            "type": "extra_forbidden",
                            "loc": ["body", "stream_options", "include_usage"],
                            "msg": "Extra inputs are not permitted",
                            "input": True,
                        }
                    ]
                },
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
            ("stream_options",),
        ),
        (  # FastAPI / vLLM style
            {"detail": [{"type": "extra_forbidden", "loc": ["body", "temperature"], "msg": "x"}]},
            ("temperature",),
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "`temperature` is deprecated for this model.",
                },
            },
            ("temperature",),
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "temperature: Extra inputs are not permitted",
                },
            },
            ("temperature",),
        ),
        (  # Fireworks
            {
                "error": {
                    "object": "error",
                    "type": "invalid_request_error",
                    "message": "Extra inputs are not permitted, field: 'stream_options'",
                }
            },
            ("stream_options",),
        ),
        (  # Azure AI inference
            {
                "error": {
                    "code": "Invalid input",
                    "status": 422,
                    "message": "Validation error at #/stream_options: Extra inputs are not "
                    "permitted",
                }
            },
            ("stream_options",),
        ),
        (  # pydantic v1 behind FastAPI, as Python text
            {
                "error": {
                    "message": "[{'loc': ('body', 'temperature'), 'msg': 'extra fields not "
                    "permitted', 'type': 'value_error.extra'}]"
                }
            },
            ("temperature",),
        ),
        (
            {
                "detail": [
                    {
                        "loc": ["body", "seed"],
                        "msg": "extra fields not permitted",
                        "type": "value_error.extra",
                    }
                ]
            },
            (),  # seed was not sent
        ),
        # A 400 that names no parameter, or one we did not send at the top level.
        (openai_error("Invalid 'messages': expected a non-empty array."), ()),
        (openai_error("Unsupported parameter: 'top_k'.", code="unsupported_parameter"), ()),
        (
            {
                "object": "error",
                "message": {
                    "detail": [
                        {"type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": ""},
                        {
                            "type": "extra_forbidden",
                            "loc": ["body", "messages", 0, "user", "name"],
                            "msg": "",
                        },
                    ]
                },
                "type": "invalid_request_error",
            },
            ("stream_options", "messages"),  # messages is not negotiable: the error stands
        ),
    ],
)
def test_rejected_parameters(body: Any, expected: tuple[str, ...]) -> None:
    assert rejected_parameters(json.dumps(body), SENT) == expected


# -- max_tokens vs max_completion_tokens ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.openai.com/v1", "max_completion_tokens"),
        ("https://my-team.openai.azure.com/openai/deployments/x", "max_completion_tokens"),
        ("http://localhost:11434/v1", "max_tokens"),
        ("http://127.0.0.1:8080/v1", "max_tokens"),
        ("https://api.mistral.ai/v1", "max_tokens"),
    ],
)
def test_max_tokens_field_defaults_by_base_url(url: str, expected: str) -> None:
    assert default_max_tokens_param(url) == expected
    model = OpenAIModel("gpt-5", {"base_url": url, "api_key": "sk-test-000000"})
    payload, _ = model.build_payload(request(max_tokens=7), None)
    assert payload[expected] == 7
    assert len({"max_tokens", "max_completion_tokens"} & set(payload)) == 1


def test_the_binding_option_overrides_the_default() -> None:
    model = OpenAIModel(
        "gpt-5",
        {"base_url": "https://api.openai.com/v1", "api_key": "sk-test-000000"},
    )
    assert model.max_tokens_param == "max_completion_tokens"
    local = OpenAIModel(
        "m", {"base_url": "http://localhost:1/v1", "max_tokens_param": "max_completion_tokens"}
    )
    assert local.max_tokens_param == "max_completion_tokens"


# -- against the gpt-5 profile ---------------------------------------------------------------------


async def test_gpt5_max_tokens_is_renamed_once(mock: MockServer) -> None:
    model = openai(mock)
    try:
        first = await model.complete(request(model="gpt-5-mini", max_tokens=60))
        second = await model.complete(request(model="gpt-5-mini", max_tokens=60))
    finally:
        await model.aclose()
    assert first.text and second.text
    assert first.adjustments == second.adjustments == (RENAMED,)
    assert mock.stats.by_status == {400: 1, 200: 2}


async def test_gpt5_temperature_is_dropped(mock: MockServer) -> None:
    model = openai(mock, "o3-mini")
    try:
        reply = await model.complete(request(model="o3-mini", temperature=0.2))
        default = await model.complete(request(model="o3-mini"))
    finally:
        await model.aclose()
    assert reply.adjustments == (NO_TEMPERATURE,)
    assert default.adjustments == ()  # nothing to adjust: nothing noted
    assert mock.stats.by_status == {400: 1, 200: 2}


async def test_each_parameter_is_learned_once(mock: MockServer) -> None:
    model = openai(mock)
    try:
        replies = [
            await model.complete(request(model="gpt-5-mini", max_tokens=60, temperature=0.3))
            for _ in range(3)
        ]
    finally:
        await model.aclose()
    assert all(r.adjustments == (NO_TEMPERATURE, RENAMED) for r in replies)
    assert mock.stats.by_status == {400: 2, 200: 3}  # one rejection per parameter, ever


async def test_concurrent_requests_share_one_probe(mock: MockServer) -> None:
    model = openai(mock)
    try:
        replies = await asyncio.gather(
            *(
                model.complete(request(f"item {i}", model="gpt-5-mini", max_tokens=60))
                for i in range(20)
            )
        )
    finally:
        await model.aclose()
    assert all(r.adjustments == (RENAMED,) for r in replies)
    assert mock.stats.by_status == {400: 1, 200: 20}


async def test_the_memory_is_shared_by_instances_of_a_binding(mock: MockServer) -> None:
    for _ in range(3):
        model = openai(mock)
        try:
            await model.complete(request(model="gpt-5-mini", max_tokens=60))
        finally:
            await model.aclose()
    assert mock.stats.by_status == {400: 1, 200: 3}
    other = openai(mock, "gpt-4o-mini")  # another binding learns for itself
    try:
        reply = await other.complete(request(model="gpt-4o-mini", max_tokens=60))
    finally:
        await other.aclose()
    assert reply.adjustments == ()


# -- against the mistral and claude-5 profiles ---------------------------------------------------


async def test_mistral_stream_options_is_dropped(mock: MockServer) -> None:
    model = openai(mock, "mistral-small-latest", stream=True)
    try:
        first = await model.complete(request(model="mistral-small-latest"))
        second = await model.complete(request(model="mistral-small-latest"))
    finally:
        await model.aclose()
    note = "stream_options not sent: the server rejected stream_options (HTTP 422)"
    assert first.adjustments == second.adjustments == (note,)
    assert first.text and first.usage.output_tokens > 0  # estimated without the usage chunk
    assert mock.stats.by_status == {422: 1, 200: 2}


async def test_claude5_temperature_is_dropped(mock: MockServer) -> None:
    model = anthropic(mock)
    try:
        first = await model.complete(request(model="claude-opus-5", temperature=0.4))
        second = await model.complete(request(model="claude-opus-5", temperature=0.4))
    finally:
        await model.aclose()
    assert first.adjustments == second.adjustments == (NO_TEMPERATURE,)
    assert mock.stats.by_status == {400: 1, 200: 2}


async def test_anthropic_temperature_is_clamped(server: ScriptedServer) -> None:
    server.add(Reply(json=message()), Reply(json=message()))
    model = AnthropicModel("claude-x", {"base_url": server.url})
    try:
        hot = await model.complete(request(temperature=1.7))
        cold = await model.complete(request(temperature=0.3))
    finally:
        await model.aclose()
    assert server.requests[0].body["temperature"] == 1.0
    assert hot.adjustments == ("temperature 1.7 clamped to 1",)
    assert server.requests[1].body["temperature"] == 0.3
    assert cold.adjustments == ()


async def test_anthropic_version_without_sampling_sends_no_temperature(
    server: ScriptedServer,
) -> None:
    server.add(Reply(json=message()))
    model = AnthropicModel("claude-x", {"base_url": server.url, "anthropic_version": "2026-10-21"})
    try:
        reply = await model.complete(request(temperature=0.5))
    finally:
        await model.aclose()
    assert "temperature" not in server.requests[0].body
    assert server.requests[0].headers["anthropic-version"] == "2026-10-21"
    assert reply.adjustments == (
        "temperature not sent: anthropic-version 2026-10-21 has no sampling parameters",
    )


# -- what is not negotiated ----------------------------------------------------------------------


async def test_a_400_naming_no_parameter_fails_fast(server: ScriptedServer) -> None:
    server.add(Reply(400, json=openai_error("Invalid 'messages': expected an array.")))
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    with pytest.raises(BadRequestError, match="Invalid 'messages'"):
        await model.complete(request(max_tokens=5, temperature=0.5))
    await model.aclose()
    assert len(server.requests) == 1


async def test_a_non_negotiable_parameter_fails_fast(server: ScriptedServer) -> None:
    server.add(
        Reply(
            400,
            json=openai_error(
                "Unsupported parameter: 'tools'.", code="unsupported_parameter", param="tools"
            ),
        )
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    spec = ToolSpec("lookup", "", {"type": "object", "properties": {}})
    with pytest.raises(BadRequestError, match="tools"):
        await model.complete(request(tools=(spec,), temperature=0.5))
    await model.aclose()
    assert len(server.requests) == 1


async def test_never_a_second_identical_failure(server: ScriptedServer) -> None:
    """Both spellings rejected: the second is dropped, not renamed back; then the field is
    gone. A third rejection of a field already adjusted stands."""
    unsupported = "Unsupported parameter: '{0}' is not supported with this model."
    server.add(
        Reply(
            400,
            json=openai_error(
                unsupported.format("max_tokens"), code="unsupported_parameter", param="max_tokens"
            ),
        ),
        Reply(
            400,
            json=openai_error(
                unsupported.format("max_completion_tokens"),
                code="unsupported_parameter",
                param="max_completion_tokens",
            ),
        ),
        Reply(json=completion("fine")),
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    try:
        reply = await model.complete(request(max_tokens=5))
    finally:
        await model.aclose()
    assert reply.text == "fine"
    sent = [set(r.body) & {"max_tokens", "max_completion_tokens"} for r in server.requests]
    assert sent == [{"max_tokens"}, {"max_completion_tokens"}, set()]
    assert reply.adjustments == (
        RENAMED,
        "max_completion_tokens not sent: the server rejected max_completion_tokens (HTTP 400)",
    )


async def test_an_error_after_an_adjustment_carries_it(server: ScriptedServer) -> None:
    server.add(
        Reply(
            400,
            json=openai_error(
                "Unsupported value: 'temperature' does not support 0.2 with this model.",
                code="unsupported_value",
                param="temperature",
            ),
        ),
        Reply(503, json=openai_error("overloaded", "server_error")),
    )
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    with pytest.raises(ModelError) as info:
        await model.complete(request(temperature=0.2))
    await model.aclose()
    assert info.value.adjustments == (NO_TEMPERATURE,)
    assert "temperature" not in server.requests[1].body


# -- end to end: a flow, the journal, the CLI ---------------------------------------------------


class Verdict(BaseModel):
    label: str
    score: float


def verdict_flow() -> tl.Flow:
    flow = tl.Flow("verdict", inputs={"text": str})

    @flow.step
    async def judge(text: str, llm: tl.LLM) -> Verdict:
        return await llm.generate(text, output=Verdict, max_tokens=200)

    return flow


async def test_a_flow_on_gpt5_completes_with_one_rejected_request(
    mock: MockServer, tmp_path: Path
) -> None:
    binding = f"openai:gpt-5-mini?base_url={mock.openai_base_url}"
    flow = verdict_flow()
    items = [{"text": f"review {i}"} for i in range(12)]
    results: list[tl.RunResult] = []
    with SQLiteStore(tmp_path / "t.db") as store:
        async with tl.Engine(models={"default": binding}, store=store) as engine:
            async for _, result in engine.run_many(flow, items, concurrency=6):
                results.append(result)
            recorded = await engine.run(flow, {"text": "again"}, run_id="one")
    assert all(r.ok for r in results), [r.error for r in results]
    assert mock.stats.by_status == {400: 1, 200: 13}
    calls = [c for r in results for c in r.calls]
    assert len(calls) == 12 and all(c.outcome == "ok" for c in calls)
    assert all(c.adjustments == [RENAMED] for c in calls)
    assert recorded.calls[0].to_dict()["adjustments"] == [RENAMED]

    # The journal keeps it: a resumed / replayed run shows the same adjustment.
    with SQLiteStore(tmp_path / "t.db") as store:
        async with tl.Engine(models={"default": binding}, store=store) as engine:
            replayed = await engine.run(flow, {"text": "again"}, run_id="one")
    assert replayed.calls[0].adjustments == [RENAMED]
    assert mock.stats.by_status == {400: 1, 200: 13}  # nothing sent again

    # The CLI: one warning line in the run and in the batch summary.
    console = Console(record=True, width=200)
    render_result(console, recorded)
    summary = summarize(results, prices=PriceTable())
    assert summary.adjustments == (f"openai:gpt-5-mini: {RENAMED}",)
    for part in summary_renderables(summary, "batch"):
        console.print(part)
    text = console.export_text()
    assert text.count(f"warning: openai:gpt-5-mini: {RENAMED}") == 2

    # trellis show, as text and as JSON.
    store_url = f"sqlite:///{tmp_path / 't.db'}"
    shown = CliRunner().invoke(app, ["show", "one", "--store", store_url], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"adjusted: openai:gpt-5-mini: {RENAMED}" in shown.stdout
    as_json = CliRunner().invoke(app, ["show", "one", "--store", store_url, "--json"])
    assert json.loads(as_json.stdout)["calls"][0]["adjustments"] == [RENAMED]
