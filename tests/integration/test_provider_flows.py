"""The feedback-triage example end to end over real HTTP, through both providers.

``small`` is ``openai:`` (Chat Completions) and ``large`` is ``anthropic:`` (Messages API),
both pointed at one in-process mock server on 127.0.0.1: every call goes through httpx,
the provider's structured-output dialect (OpenAI ``response_format`` json_schema,
Anthropic's forced tool call), the error mapping and the engine's retry layer. Then the
same example with scripted faults, and once more through the ``trellis`` command line.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trellis as tl
from trellis.mockserver import MockServer, MockServerThread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "feedback_triage.py"
DATA = ROOT / "examples" / "data" / "feedback.jsonl"
N_ITEMS = 10
SMALL = "openai:mock-small"
LARGE = "anthropic:mock-large"
OPENAI_PATH = "POST /v1/chat/completions"
ANTHROPIC_PATH = "POST /v1/messages"


def load_triage() -> ModuleType:
    """``examples/feedback_triage.py`` as a module (shared with the example tests' cache)."""
    name = "_trellis_example_feedback_triage"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def feedback_items(n: int = N_ITEMS) -> list[dict[str, Any]]:
    with DATA.open(encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    return items[:n]


@pytest.fixture(scope="module")
def triage() -> ModuleType:
    return load_triage()


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(port=0, seed=0) as srv:
        assert srv.host == "127.0.0.1"
        yield srv


def models(server: MockServer, *, stream_small: bool = False) -> dict[str, str]:
    small = f"{SMALL}?base_url={server.openai_base_url}"
    if stream_small:
        small += "&stream=true"
    # Anthropic's base URL has no /v1: the provider appends /v1/messages itself.
    assert not server.anthropic_base_url.endswith("/v1")
    return {"small": small, "large": f"{LARGE}?base_url={server.anthropic_base_url}"}


async def run_items(
    module: ModuleType, bindings: dict[str, str], *, concurrency: int
) -> list[tl.RunResult]:
    items = feedback_items()
    results: dict[int, tl.RunResult] = {}
    async with tl.Engine(models=bindings, seed=0) as engine:
        async for index, result in engine.run_many(module.flow, items, concurrency=concurrency):
            results[index] = result
    assert sorted(results) == list(range(len(items)))
    return [results[i] for i in range(len(items))]


def assert_valid_triage(module: ModuleType, result: tl.RunResult) -> None:
    """Every output is the step's declared model, and the final one round-trips."""
    assert result.ok, result.error
    assert isinstance(result["sentiment"], module.Sentiment)
    assert isinstance(result["topics"], module.Topics)
    assert isinstance(result["action_plan"], module.ActionPlan)
    final = result["triage"]
    assert isinstance(final, module.Triage)
    assert module.Triage.model_validate_json(final.model_dump_json()) == final
    assert final.sentiment == result["sentiment"]
    assert final.plan == result["action_plan"]
    escalated = module.needs_escalation(result["sentiment"], result["action_plan"])
    assert (final.escalation is not None) == escalated
    assert result.steps["escalation"].status == ("done" if escalated else "skipped")


def topics_model(result: tl.RunResult) -> str:
    (call,) = [c for c in result.calls if c.step == "topics" and c.outcome == "ok"]
    return call.model


async def test_feedback_triage_over_openai_and_anthropic(
    triage: ModuleType, server: MockServer
) -> None:
    results = await run_items(triage, models(server), concurrency=4)
    stats = server.stats

    for result in results:
        assert_valid_triage(triage, result)
        # Routing: uncertain sentiment sends topic extraction to the large (Anthropic) role.
        uncertain = result["sentiment"].confidence < triage.ESCALATE_BELOW
        assert topics_model(result) == (LARGE if uncertain else SMALL)
        assert {c.model for c in result.calls if c.step != "topics"} == {SMALL}
        # No price for these names: the cost is unknown, never a silent zero.
        usage = result.usage
        assert usage.attempts == usage.calls == 3
        assert usage.unpriced_attempts == usage.attempts
        assert not usage.cost_known
        assert usage.to_dict()["cost_usd"] is None
        assert all(c.cost_usd is None for c in result.calls)
        assert usage.input_tokens > 0 and usage.output_tokens > 0
        assert not usage.failures

    used = {c.model for r in results for c in r.calls}
    assert used == {SMALL, LARGE}  # both providers, over HTTP
    large_calls = sum(topics_model(r) == LARGE for r in results)
    assert stats.by_endpoint[ANTHROPIC_PATH] == large_calls > 0
    assert stats.by_endpoint[OPENAI_PATH] == 3 * N_ITEMS - large_calls
    assert stats.requests == sum(r.usage.attempts for r in results)
    assert stats.by_status == {200: 3 * N_ITEMS}
    # The tokens the runs account are the ones the server reported.
    assert sum(r.usage.input_tokens for r in results) == stats.input_tokens
    assert sum(r.usage.output_tokens for r in results) == stats.output_tokens


async def test_feedback_triage_survives_scripted_faults(
    triage: ModuleType, server: MockServer
) -> None:
    """One item at a time, so the script meets the requests in a known order: each item
    makes three calls (sentiment, topics, action_plan); a fault hits the first attempt of
    a call and the next step, ``ok``, its retry."""
    ok: dict[str, Any] = {"ok": True}
    server.load_script(
        [
            {"fault": "rate_limit", "retry_after": 0.1},  # item 0, sentiment
            ok,
            {"fault": "overloaded"},  # item 0, topics: OpenAI 503 / Anthropic 529
            ok,
            {"fault": "malformed_json"},  # item 0, action_plan (small): re-asked
            ok,
            {"fault": "stream_cut"},  # item 1, sentiment (small, streamed): no [DONE]
            ok,
        ]
    )
    results = await run_items(triage, models(server, stream_small=True), concurrency=1)
    stats = server.stats

    for result in results:
        assert_valid_triage(triage, result)
    first, second = results[0], results[1]
    assert first.usage.failures == {"rate_limit": 1, "overloaded": 1, "malformed": 1}
    assert second.usage.failures == {"overloaded": 1}
    for result in results[2:]:
        assert not result.usage.failures
        assert result.usage.attempts == 3
    total: dict[str, int] = {}
    for result in results:
        for mode, count in result.usage.failures.items():
            total[mode] = total.get(mode, 0) + count
    assert total == {"rate_limit": 1, "overloaded": 2, "malformed": 1}

    def attempts(result: tl.RunResult, step: str) -> list[tl.CallRecord]:
        return [c for c in result.calls if c.step == step]

    limited, retried = attempts(first, "sentiment")
    assert (limited.outcome, retried.outcome) == ("rate_limit", "ok")
    assert "429" in (limited.error or "")
    assert retried.wait_s == pytest.approx(0.1)  # exactly the server's retry-after
    busy, recovered = attempts(first, "topics")
    assert (busy.outcome, recovered.outcome) == ("overloaded", "ok")
    assert busy.model == recovered.model
    assert ("503" if busy.model == SMALL else "529") in (busy.error or "")
    garbled, reasked = attempts(first, "action_plan")
    assert (garbled.outcome, reasked.outcome) == ("malformed", "ok")
    assert garbled.reply is not None  # the unparseable reply is kept
    cut, whole = attempts(second, "sentiment")
    assert (cut.outcome, whole.outcome) == ("overloaded", "ok")
    assert "[DONE]" in (cut.error or "")  # a streamed reply that ended early

    assert stats.scripted == 8
    assert dict(stats.faults) == {
        "rate_limit": 1,
        "overloaded": 1,
        "malformed_json": 1,
        "stream_cut": 1,
    }
    assert stats.requests == sum(r.usage.attempts for r in results) == 3 * N_ITEMS + 4


def test_trellis_run_cli_against_the_mock_server(tmp_path: Path) -> None:
    """``trellis run ... --no-store --model ...=openai:mock?base_url=...`` in a subprocess,
    against a mock server on its own thread: exits 0 with a finished run."""
    feedback = "The export button crashes the app every time I use it."
    with MockServerThread(port=0, seed=0) as server:
        url = server.openai_base_url
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from trellis.cli import main; main()",
                "run",
                f"{EXAMPLE}:flow",
                "--input",
                json.dumps({"feedback": feedback}),
                "--no-store",
                "--model",
                f"small=openai:mock?base_url={url}",
                "--model",
                f"large=openai:mock?base_url={url}",
                "--json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        stats = server.stats
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "done"
    assert report["inputs"] == {"feedback": feedback}
    triage = load_triage()
    triage.Triage.model_validate(report["outputs"]["triage"])
    assert stats.by_endpoint == {OPENAI_PATH: 3}
    assert stats.by_status == {200: 3}
    assert list(tmp_path.iterdir()) == []  # --no-store: nothing written
