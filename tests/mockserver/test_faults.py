"""Fault injection: the plan, each fault's wire format in both dialects, scripts, the
control API, and the ``trellis mock-server`` command."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from cli.helpers import invoke
from trellis.mockserver import FAULT_MODES, FaultPlan, MockServer
from trellis.mockserver.faults import load_script, parse_rates

from . import ANTHROPIC_VERSION, USER, anthropic_events, openai_chunks, post, sse_events

Dialect = Literal["openai", "anthropic"]


class Verdict(BaseModel):
    label: Literal["approve", "reject"]
    score: float
    reasons: list[str]


# Closed, as OpenAI's strict mode (which the mock server enforces) requires.
VERDICT_SCHEMA = {**Verdict.model_json_schema(), "additionalProperties": False}


def request_for(
    server: MockServer, dialect: Dialect, *, structured: bool = False, stream: bool = False
) -> tuple[str, dict[str, Any]]:
    if dialect == "openai":
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": USER, "stream": stream}
        if structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "Verdict", "schema": VERDICT_SCHEMA, "strict": True},
            }
        return f"{server.openai_base_url}/chat/completions", body
    body = {"model": "claude", "max_tokens": 400, "messages": USER, "stream": stream}
    if structured:
        body["tools"] = [{"name": "verdict", "input_schema": VERDICT_SCHEMA}]
        body["tool_choice"] = {"type": "tool", "name": "verdict"}
    return f"{server.anthropic_base_url}/v1/messages", body


async def faulted(
    mode: str, dialect: Dialect, *, structured: bool = False, stream: bool = False, **step: Any
) -> httpx.Response:
    async with MockServer(script=[{"fault": mode, **step}]) as server:
        url, body = request_for(server, dialect, structured=structured, stream=stream)
        response = await post(url, body)
        assert server.stats.faults == {mode: 1}
        assert server.stats.scripted == 1
        return response


# -- the plan ------------------------------------------------------------------------------


def test_parse_rates() -> None:
    assert parse_rates(["rate_limit=0.1", "stream-cut=1"]) == {"rate_limit": 0.1, "stream_cut": 1.0}
    with pytest.raises(ValueError, match="unknown fault mode 'nope'; valid modes: rate_limit"):
        parse_rates(["nope=0.1"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        parse_rates(["timeout=2"])
    with pytest.raises(ValueError, match="MODE=RATE"):
        parse_rates(["timeout"])
    with pytest.raises(ValueError, match="not a number"):
        parse_rates(["timeout=often"])


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"fault": "boom"}, "script step 0: fault: unknown fault mode"),
        ({"ok": True, "fault": "auth"}, "one of ok / fault / status"),
        ({"status": 99}, "status"),
        ({"fault": "auth", "colour": "red"}, "colour"),
        ("rate_limit", "expected a JSON object"),
    ],
)
def test_bad_script_steps_are_explained(step: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FaultPlan(script=[step])


def test_load_script_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"steps": [{"fault": "overloaded"}, {"ok": True}]}))
    steps = load_script(path)
    assert [s.label for s in steps] == ["overloaded", "ok"]
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_script(path)
    path.write_text('{"fault": "auth"}')
    with pytest.raises(ValueError, match="JSON list of steps"):
        load_script(path)


def test_script_first_then_rates() -> None:
    plan = FaultPlan({"overloaded": 1.0}, script=[{"ok": True}, {"fault": "auth"}])
    seen = []
    for _ in range(3):
        step, scripted = plan.next(structured=False, stream=False)
        seen.append((step.label if step else None, scripted))
    assert seen == [("ok", True), ("auth", True), ("overloaded", False)]
    assert plan.pending == 0


def test_drawn_faults_are_deterministic_and_follow_the_rates() -> None:
    def draws(seed: int) -> list[str | None]:
        plan = FaultPlan({"rate_limit": 0.2, "server_error": 0.1}, seed=seed)
        steps = [plan.next(structured=False, stream=False)[0] for _ in range(2000)]
        return [step.fault if step else None for step in steps]

    first = draws(1)
    assert first == draws(1)
    assert first != draws(2)
    assert 0.17 < first.count("rate_limit") / 2000 < 0.23
    assert 0.08 < first.count("server_error") / 2000 < 0.12


def test_only_applicable_modes_are_drawn() -> None:
    plan = FaultPlan({"malformed_json": 1.0, "stream_cut": 1.0})
    assert plan.next(structured=False, stream=False) == (None, False)
    step, _ = plan.next(structured=True, stream=False)
    assert step is not None and step.fault == "malformed_json"
    step, _ = plan.next(structured=False, stream=True)
    assert step is not None and step.fault == "stream_cut"
    # Rates adding up to more than 1 are scaled: every request gets a fault.
    crowded = FaultPlan(dict.fromkeys(FAULT_MODES, 0.5))
    assert all(crowded.next(structured=True, stream=True)[0] for _ in range(200))


async def test_rates_over_http_are_reproducible() -> None:
    async def statuses() -> list[int]:
        async with MockServer(faults={"rate_limit": 0.3, "overloaded": 0.2}, seed=5) as s:
            url, body = request_for(s, "openai")
            async with httpx.AsyncClient() as client:
                codes = [(await client.post(url, json=body)).status_code for _ in range(30)]
            assert s.stats.faults["rate_limit"] == codes.count(429)
            assert s.stats.faults["overloaded"] == codes.count(503)
            return codes

    first = await statuses()
    assert first == await statuses()
    assert {200, 429, 503} == set(first)


# -- each fault on the wire ----------------------------------------------------------------


def openai_error(response: httpx.Response, status: int, type_: str, code: str | None) -> str:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, code)
    message: str = error["message"]
    return message


def anthropic_error(response: httpx.Response, status: int, type_: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    message: str = body["error"]["message"]
    return message


async def test_rate_limit_fault() -> None:
    r = await faulted("rate_limit", "openai")
    openai_error(r, 429, "requests", "rate_limit_exceeded")
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("1", "1000")
    r = await faulted("rate_limit", "anthropic", retry_after=0.5)
    anthropic_error(r, 429, "rate_limit_error")
    assert r.headers["retry-after"] == "0.5"
    r = await faulted("rate_limit", "openai", retry_after=None)
    assert r.status_code == 429 and "retry-after" not in r.headers


async def test_quota_fault() -> None:
    r = await faulted("quota", "openai")
    assert "quota" in openai_error(r, 429, "insufficient_quota", "insufficient_quota")
    assert "retry-after" not in r.headers
    r = await faulted("quota", "anthropic")
    assert "credit balance" in anthropic_error(r, 402, "billing_error")


async def test_overloaded_and_server_error_faults() -> None:
    openai_error(await faulted("overloaded", "openai"), 503, "server_error", None)
    anthropic_error(await faulted("overloaded", "anthropic"), 529, "overloaded_error")
    r = await faulted("overloaded", "anthropic", retry_after=2)
    assert r.headers["retry-after"] == "2"
    openai_error(await faulted("server_error", "openai"), 500, "server_error", None)
    anthropic_error(await faulted("server_error", "anthropic"), 500, "api_error")


async def test_context_length_fault() -> None:
    r = await faulted("context_length", "openai")
    message = openai_error(r, 400, "invalid_request_error", "context_length_exceeded")
    assert re.search(r"maximum context length is \d+ tokens", message)
    assert r.json()["error"]["param"] == "messages"
    r = await faulted("context_length", "anthropic")
    message = anthropic_error(r, 400, "invalid_request_error")
    assert re.fullmatch(r"prompt is too long: \d+ tokens > \d+ maximum", message)


async def test_auth_fault() -> None:
    openai_error(await faulted("auth", "openai"), 401, "invalid_request_error", "invalid_api_key")
    anthropic_error(await faulted("auth", "anthropic"), 401, "authentication_error")


async def test_error_message_can_be_scripted() -> None:
    r = await faulted("server_error", "openai", message="boom")
    assert r.json()["error"]["message"] == "boom"


async def test_refusal_fault() -> None:
    message = (await faulted("refusal", "openai")).json()["choices"][0]
    assert message["finish_reason"] == "stop"
    assert message["message"]["content"] is None
    assert message["message"]["refusal"]
    body = (await faulted("refusal", "anthropic")).json()
    assert body["stop_reason"] == "refusal"
    chunks, done = openai_chunks((await faulted("refusal", "openai", stream=True)).text)
    assert done
    assert "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks)


async def test_truncation_fault() -> None:
    choice = (await faulted("truncation", "openai", structured=True)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(ValidationError):
        Verdict.model_validate_json(choice["message"]["content"])
    assert (await faulted("truncation", "anthropic")).json()["stop_reason"] == "max_tokens"
    events = anthropic_events((await faulted("truncation", "anthropic", stream=True)).text)
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


async def test_malformed_json_fault() -> None:
    content = (await faulted("malformed_json", "openai", structured=True)).json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(content["choices"][0]["message"]["content"])
    body = (await faulted("malformed_json", "anthropic", structured=True)).json()
    # Broken JSON cannot be a tool_use input: it comes back as text.
    assert [b["type"] for b in body["content"]] == ["text"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(body["content"][0]["text"])


async def test_invalid_json_fault() -> None:
    content = (await faulted("invalid_json", "openai", structured=True)).json()
    text = content["choices"][0]["message"]["content"]
    json.loads(text)
    with pytest.raises(ValidationError):
        Verdict.model_validate_json(text)
    body = (await faulted("invalid_json", "anthropic", structured=True)).json()
    [block] = body["content"]
    assert block["type"] == "tool_use"
    with pytest.raises(ValidationError):
        Verdict.model_validate(block["input"])


async def test_stream_error_fault() -> None:
    r = await faulted("stream_error", "openai", stream=True)
    assert r.status_code == 200
    chunks, done = openai_chunks(r.text)
    assert not done
    assert chunks[-1] == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert all("choices" in c for c in chunks[:-1]) and len(chunks) > 1
    r = await faulted("stream_error", "anthropic", stream=True, after_events=2)
    assert r.status_code == 200
    events = anthropic_events(r.text)
    assert [n for n, _ in events] == ["message_start", "content_block_start", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


async def test_stream_cut_fault() -> None:
    r = await faulted("stream_cut", "openai", stream=True)
    chunks, done = openai_chunks(r.text)
    assert r.status_code == 200 and not done and chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    events = anthropic_events((await faulted("stream_cut", "anthropic", stream=True)).text)
    names = [n for n, _ in events]
    assert names[0] == "message_start"
    assert "message_stop" not in names and "message_delta" not in names


async def test_stream_faults_on_a_plain_request() -> None:
    anthropic_error(await faulted("stream_error", "anthropic"), 529, "overloaded_error")
    r = await faulted("stream_cut", "openai")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


async def test_timeout_fault_outlasts_the_client() -> None:
    async with MockServer(script=[{"fault": "timeout"}] * 2, hang_s=10) as s:
        url, body = request_for(s, "openai")
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url, json=body)
            # A stream sends its first events, then stalls.
            url, body = request_for(s, "anthropic", stream=True)
            lines: list[str] = []
            with pytest.raises(httpx.ReadTimeout):
                async with client.stream(
                    "POST", url, json=body, headers=ANTHROPIC_VERSION
                ) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        lines.append(line)
        assert "event: message_start" in lines
        assert time.monotonic() - started < 3


async def test_timeout_fault_with_a_short_hang_still_answers() -> None:
    async with MockServer(script=[{"fault": "timeout", "hang_s": 0.2}]) as s:
        url, body = request_for(s, "openai")
        started = time.monotonic()
        response = await post(url, body)
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.2


# -- scripts and the control API -----------------------------------------------------------


async def test_scripted_sequence_then_normal_behaviour() -> None:
    script: list[dict[str, Any]] = [
        {"fault": "rate_limit", "retry_after": 0.5},
        {"status": 413, "body": "<html><body>Request Entity Too Large</body></html>"},
        {"status": 502, "headers": {"x-served-by": "edge"}},
        {"status": 200, "body": {"choices": [{"finish_reason": "brand_new_reason"}]}},
        {"ok": True, "latency_ms": 50},
    ]
    async with MockServer(script=script) as s:
        url, body = request_for(s, "openai")
        async with httpx.AsyncClient() as client:
            responses = [await client.post(url, json=body) for _ in range(6)]
        limited, html, bad_gateway, raw, ok, normal = responses
        assert limited.status_code == 429
        assert (limited.headers["retry-after"], limited.headers["retry-after-ms"]) == ("0.5", "500")
        assert html.status_code == 413
        assert html.headers["content-type"].startswith("text/html")
        assert "Request Entity Too Large" in html.text
        assert bad_gateway.status_code == 502
        assert bad_gateway.headers["x-served-by"] == "edge"
        assert bad_gateway.json()["error"]["type"] == "server_error"
        assert raw.json() == {"choices": [{"finish_reason": "brand_new_reason"}]}
        assert ok.status_code == normal.status_code == 200
        stats = s.stats.to_dict()
        assert stats["scripted"] == 5
        assert stats["faults"] == {"rate_limit": 1, "http_413": 1, "http_502": 1, "http_200": 1}
        assert stats["by_status"] == {"200": 3, "413": 1, "429": 1, "502": 1}


async def test_status_without_body_gets_the_dialect_error() -> None:
    async with MockServer(script=[{"status": 413}, {"status": 529}]) as s:
        url, body = request_for(s, "anthropic")
        anthropic_error(await post(url, body), 413, "request_too_large")
        anthropic_error(await post(url, body), 529, "overloaded_error")


async def test_control_api() -> None:
    async with MockServer() as s:
        control = f"{s.base_url}/_mock"
        url, body = request_for(s, "openai")
        async with httpx.AsyncClient() as client:
            loaded = await client.post(f"{control}/script", json=[{"fault": "overloaded"}])
            assert loaded.json() == {"pending": 1}
            more = {"steps": [{"fault": "auth"}], "append": True}
            assert (await client.post(f"{control}/script", json=more)).json() == {"pending": 2}
            bad = await client.post(f"{control}/script", json=[{"fault": "nope"}])
            assert bad.status_code == 400 and "unknown fault mode" in bad.json()["error"]
            assert (await client.post(url, json=body)).status_code == 503
            assert (await client.post(url, json=body)).status_code == 401
            assert (await client.post(url, json=body)).status_code == 200
            rates = await client.post(f"{control}/faults", json={"server_error": 1.0})
            assert rates.json() == {"rates": {"server_error": 1.0}}
            assert (await client.post(url, json=body)).status_code == 500
            bad = await client.post(f"{control}/faults", json={"server_error": 3})
            assert bad.status_code == 400
            stats = (await client.get(f"{control}/stats")).json()
            assert stats["requests"] == 4
            assert stats["faults"] == {"overloaded": 1, "auth": 1, "server_error": 1}
            assert stats["scripted"] == 2 and stats["script_pending"] == 0
            assert stats["responses_429"] == 0
            await client.post(f"{control}/faults", json={})
            await client.post(f"{control}/reset")
            assert (await client.get(f"{control}/stats")).json()["requests"] == 0


def test_thread_server_for_sync_code() -> None:
    from trellis.mockserver import MockServerThread

    with MockServerThread(seed=1) as server:
        server.load_script([{"fault": "overloaded"}])
        url = f"{server.openai_base_url}/chat/completions"
        body = {"model": "m", "messages": USER}
        assert httpx.post(url, json=body).status_code == 503
        assert httpx.post(url, json=body).status_code == 200
        stats = server.stats
        assert stats.requests == 2 and stats.faults == {"overloaded": 1}
        server.reset()
        assert server.stats.requests == 0


# -- the command ---------------------------------------------------------------------------


def test_cli_help() -> None:
    result = invoke("mock-server", "--help")
    assert result.exit_code == 0
    for option in ("--port", "--latency-ms", "--rpm", "--tpm", "--seed", "--fault", "--script"):
        assert option in result.output
    assert "mock-server" in invoke("--help").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "explode=0.1"], "unknown fault mode 'explode'"),
        (["--fault", "rate_limit=7"], "between 0 and 1"),
        (["--latency-ms", "fast"], "latency"),
        (["--script", "/nonexistent/faults.json"], "cannot read"),
    ],
)
def test_cli_usage_errors(args: list[str], message: str) -> None:
    result = invoke("mock-server", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_cli_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("mock-server", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2
    assert "error: cannot listen on 127.0.0.1:" in result.output


def test_cli_without_aiohttp_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("trellis.mockserver")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    result = invoke("mock-server", "--port", "0")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: the mock server needs aiohttp: pip install 'trellis-flows[mock]'"
    )


def _wait_for(read: Callable[[], str], prefix: str) -> str:
    for _ in range(10):
        line = read()
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
        assert line, "the server exited before printing its URLs"
    raise AssertionError(f"no {prefix} line")


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_cli_starts_serves_and_stops(tmp_path: Path) -> None:
    script = tmp_path / "faults.json"
    script.write_text(json.dumps([{"fault": "rate_limit", "retry_after": 0.25}]))
    command = [sys.executable, "-c", "from trellis.cli import main; main()", "mock-server"]
    options = ["--port", "0", "--script", str(script), "--rpm", "600", "--seed", "3"]
    proc = subprocess.Popen(
        command + options,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        openai_url = _wait_for(proc.stdout.readline, "OPENAI_BASE_URL=")
        anthropic_url = _wait_for(proc.stdout.readline, "ANTHROPIC_BASE_URL=")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", openai_url)
        assert openai_url == f"{anthropic_url}/v1"
        body = {"model": "m", "messages": USER}
        limited = httpx.post(f"{openai_url}/chat/completions", json=body, timeout=10)
        assert limited.status_code == 429
        assert limited.headers["retry-after-ms"] == "250"
        ok = httpx.post(f"{openai_url}/chat/completions", json=body, timeout=10)
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-limit-requests"] == "600"
        message = {"model": "m", "max_tokens": 50, "messages": USER, "stream": True}
        streamed = httpx.post(
            f"{anthropic_url}/v1/messages", json=message, headers=ANTHROPIC_VERSION, timeout=10
        )
        assert sse_events(streamed.text)[-1][0] == "message_stop"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "served 3 requests; 429s: 1 (rate limiter: 0); faults: rate_limit=1" in err
