"""Error classes: a 4xx status decides over the body's label (Ollama's ``api_error`` 401s,
against its mock profile), and a connection that cannot be made is its own failure mode,
retried with backoff and reported as "could not connect to HOST:PORT"."""

from __future__ import annotations

import socket

import httpx
import pytest

import trellis as tl
from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectionFailedError,
    FailureMode,
    OverloadedError,
)
from trellis.mockserver import MockServer
from trellis.providers import AnthropicModel, OpenAIModel
from trellis.providers._errors import ErrorBody, classify_error
from trellis.providers._keys import Redactor

from .conftest import Reply, ScriptedServer, request

SECRET = "sk-test-0123456789abcdef"


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


# -- the status decides --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "label", "expected"),
    [
        (401, "api_error", AuthenticationError),
        (403, "api_error", AuthenticationError),
        (404, "api_error", BadRequestError),
        (400, "overloaded_error", BadRequestError),
        (422, "server_error", BadRequestError),
        (500, "api_error", OverloadedError),
        (None, "api_error", OverloadedError),  # mid-stream: the label is all there is
        (None, "authentication_error", AuthenticationError),
    ],
)
def test_a_4xx_status_beats_the_label(
    status: int | None, label: str, expected: type[Exception]
) -> None:
    error = classify_error(status, ErrorBody("x", label), model="m", redact=Redactor())
    assert type(error) is expected


async def test_ollamas_api_error_401_is_an_authentication_error() -> None:
    async with MockServer(profile="ollama", api_key="right-key") as server:
        model = OpenAIModel("qwen3", {"base_url": server.openai_base_url, "api_key": "wrong-key"})
        try:
            with pytest.raises(AuthenticationError, match="HTTP 401 api_error: unauthorized"):
                await model.complete(request(model="qwen3"))
        finally:
            await model.aclose()


async def test_an_auth_failure_fails_the_run_fast() -> None:
    async with MockServer(profile="ollama", api_key="right-key") as server:
        binding = f"openai:qwen3?base_url={server.openai_base_url}&api_key=wrong-key"
        flow = tl.Flow("ask", inputs={"q": str})

        @flow.step
        async def answer(q: str, llm: tl.LLM) -> str:
            return await llm.generate(q)

        async with tl.Engine(models={"default": binding}) as engine:
            result = await engine.run(flow, {"q": "hi"})
    assert not result.ok
    assert [c.outcome for c in result.calls] == [FailureMode.AUTH.value]
    assert server.stats.requests == 1  # never retried as an "overload"
    assert "wrong-key" not in str(result.to_dict())


async def test_a_403_labelled_api_error_is_auth(server: ScriptedServer) -> None:
    server.add(Reply(403, json={"error": {"message": "forbidden", "type": "api_error"}}))
    model = OpenAIModel("m", {"base_url": f"{server.url}/v1"})
    with pytest.raises(AuthenticationError):
        await model.complete(request())
    await model.aclose()


# -- connection failures --------------------------------------------------------------------


async def test_a_refused_connection_names_host_and_port() -> None:
    port = closed_port()
    model = OpenAIModel("m", {"base_url": f"http://127.0.0.1:{port}/v1", "api_key": SECRET})
    with pytest.raises(ConnectionFailedError) as info:
        await model.complete(request())
    await model.aclose()
    assert str(info.value) == f"openai:m: could not connect to 127.0.0.1:{port}"
    assert info.value.mode is FailureMode.CONNECTION
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_anthropic_refused_connection_too() -> None:
    port = closed_port()
    model = AnthropicModel("claude-x", {"base_url": f"http://localhost:{port}", "api_key": SECRET})
    with pytest.raises(ConnectionFailedError, match=f"could not connect to localhost:{port}$"):
        await model.complete(request())
    await model.aclose()


async def test_a_dns_failure_is_a_connection_failure() -> None:
    def no_such_host(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=req)

    model = OpenAIModel(
        "m",
        {"base_url": "https://llm.example.invalid/v1?token=abc", "api_key": SECRET},
        transport=httpx.MockTransport(no_such_host),
    )
    with pytest.raises(ConnectionFailedError) as info:
        await model.complete(request())
    assert str(info.value) == "openai:m: could not connect to llm.example.invalid:443"
    assert "abc" not in str(info.value) and SECRET not in str(info.value)


async def test_the_engine_retries_a_refused_connection_with_backoff() -> None:
    port = closed_port()
    flow = tl.Flow("ask", inputs={"q": str})

    @flow.step(retry=tl.RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02))
    async def answer(q: str, llm: tl.LLM) -> str:
        return await llm.generate(q)

    binding = f"openai:m?base_url=http://127.0.0.1:{port}/v1"
    async with tl.Engine(models={"default": binding}) as engine:
        result = await engine.run(flow, {"q": "hi"})
    assert not result.ok
    attempts = [c for c in result.calls if c.step == "answer"]
    assert {c.outcome for c in attempts} == {"connection"}
    assert len(attempts) >= 3  # retried, not failed fast
    assert all(c.wait_s > 0 for c in attempts if c.attempt > 1)
    assert all(f"could not connect to 127.0.0.1:{port}" in (c.error or "") for c in attempts)
    assert not any("overload" in (c.error or "").lower() for c in attempts)
