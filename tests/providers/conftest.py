"""A tiny scriptable HTTP server on 127.0.0.1 for the provider tests, plus reply builders.

``server.add(Reply(...), ...)`` queues the replies the next requests get, in order: a
status, headers and a JSON or text body, or an SSE stream (``chunks``: strings written in
order, numbers are pauses in seconds; ``stall`` keeps the stream open until the server
stops). Every request is recorded in ``server.requests`` (method, path, lower-cased
headers, decoded JSON body). A request with nothing queued gets a 500.

Only loopback is used, so the session-wide network guard stays happy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from trellis.models.base import Message, ModelRequest


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    chunks: list[str | float] | None = None
    delay: float = 0.0
    stall: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        reply = self.replies.popleft() if self.replies else Reply(500, body="nothing scripted")
        if reply.delay:
            await self._pause(reply.delay)
        if reply.chunks is not None:
            headers = {"Content-Type": reply.content_type or "text/event-stream", **reply.headers}
            stream = web.StreamResponse(status=reply.status, headers=headers)
            await stream.prepare(request)
            try:
                for chunk in reply.chunks:
                    if isinstance(chunk, str):
                        await stream.write(chunk.encode())
                    else:
                        await self._pause(chunk)
                if reply.stall:
                    await self._closing.wait()
                await stream.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass  # the client gave up on the stream
            return stream
        if reply.json is not None:
            text, ctype = json.dumps(reply.json), "application/json"
        else:
            text, ctype = reply.body or "", reply.content_type or "text/plain"
        headers = {"Content-Type": reply.content_type or ctype, **reply.headers}
        return web.Response(status=reply.status, body=text.encode(), headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


# -- builders -------------------------------------------------------------------------------


def request(
    prompt: str = "Say hi",
    *,
    model: str = "test-model",
    schema: dict[str, Any] | None = None,
    schema_name: str | None = None,
    **kw: Any,
) -> ModelRequest:
    return ModelRequest(
        messages=(Message("user", prompt),),
        model=model,
        output_schema=schema,
        schema_name=schema_name,
        **kw,
    )


def completion(
    content: str | None = "Hello!",
    *,
    finish: str | None = "stop",
    refusal: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] | None = (11, 7),
    model: str = "test-model-2024",
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return body


def openai_error(
    message: str, type_: str = "invalid_request_error", code: str | None = None, param: Any = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}


def message(
    content: list[dict[str, Any]] | None = None,
    *,
    stop: str | None = "end_turn",
    usage: tuple[int, int] = (12, 5),
    model: str = "claude-test",
) -> dict[str, Any]:
    """An Anthropic ``message`` body."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [{"type": "text", "text": "Hello!"}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def sse(payloads: Iterable[Any], *, done: bool = True) -> list[str | float]:
    """OpenAI-style ``data:`` events (dicts are JSON-encoded), then ``[DONE]``."""
    out: list[str | float] = [
        f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads
    ]
    if done:
        out.append("data: [DONE]\n\n")
    return out


def named_sse(events: Iterable[tuple[str, dict[str, Any]]]) -> list[str | float]:
    """Anthropic-style ``event:`` + ``data:`` events."""
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events]


def chunk(
    delta: dict[str, Any] | None = None, *, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion.chunk``; ``usage`` alone gives the final usage chunk."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "test-model-2024",
        "choices": []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body
