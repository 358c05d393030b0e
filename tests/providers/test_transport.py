"""The providers' transports over real loopback HTTP: the aiohttp transport
(:mod:`trellis.providers._aiohttp_transport`) and httpx's own behave alike (streaming,
timeouts, error mapping, limits, no redirects), and ``http_client`` picks between them.

The servers here are raw asyncio (``RawServer``): each test scripts the bytes, stalls and
resets itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import importlib.util
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from trellis.errors import (
    ConfigurationError,
    ConnectionFailedError,
    ModelTimeoutError,
    OverloadedError,
)
from trellis.providers._aiohttp_transport import AiohttpTransport
from trellis.providers._client import make_client
from trellis.providers.openai import OpenAIModel, OpenAIOptions

from .conftest import chunk, completion, request, sse

CHOICES = ["aiohttp", "httpx"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback TCP server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.open = 0
        self.peak = 0
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.connections += 1
        self.peak = max(self.peak, self.open)
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[list[bytes], bytes]:
        """One request's header lines and body (by ``Content-Length``)."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")[:-2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests += 1
        return lines, body


def response(
    body: bytes, *, status: str = "200 OK", headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    ctype = "" if headers and "Content-Type" in headers else "Content-Type: application/json\r\n"
    return f"HTTP/1.1 {status}\r\n{ctype}{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


OK = json.dumps(completion("Hello!")).encode()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def model(url: str, choice: str, **options: Any) -> OpenAIModel:
    return OpenAIModel("m", {"base_url": f"{url}/v1", "http_client": choice, **options})


@pytest.fixture
async def closing() -> AsyncIterator[list[OpenAIModel]]:
    models: list[OpenAIModel] = []
    yield models
    for m in models:
        await m.aclose()


# -- choosing the transport -----------------------------------------------------------------


async def test_http_client_picks_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice, kind in (
        ("aiohttp", AiohttpTransport),
        ("auto", AiohttpTransport),
        ("httpx", httpx.AsyncHTTPTransport),
    ):
        async with make_client(timeout=5.0, connect_timeout=1.0, http_client=choice) as client:
            assert isinstance(client._transport, kind), choice

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a)
    )
    async with make_client(timeout=5.0, connect_timeout=1.0) as client:  # auto falls back
        assert isinstance(client._transport, httpx.AsyncHTTPTransport)
    with pytest.raises(ConfigurationError, match="pip install aiohttp"):
        make_client(timeout=5.0, connect_timeout=1.0, http_client="aiohttp")


def test_http_client_option() -> None:
    assert OpenAIOptions.parse({}).http_client == "auto"
    assert OpenAIOptions.parse({"http-client": "httpx"}).http_client == "httpx"
    with pytest.raises(ConfigurationError, match="http_client"):
        OpenAIOptions.parse({"http_client": "requests"})


@pytest.mark.parametrize("choice", CHOICES)
async def test_limits_are_honoured(choice: str) -> None:
    """``max_connections=2``: ten concurrent requests share two connections."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(response(OK))
            await writer.drain()

    async with RawServer(handler) as server:
        client = make_client(
            timeout=5.0, connect_timeout=1.0, max_connections=2, http_client=choice
        )
        async with client:
            replies = await asyncio.gather(
                *(client.post(f"{server.url}/v1/chat/completions", json={}) for _ in range(10))
            )
    assert [r.status_code for r in replies] == [200] * 10
    assert server.requests == 10
    assert server.peak <= 2 and server.connections <= 2, (server.peak, server.connections)


# -- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", CHOICES)
async def test_json_reply_and_headers(choice: str, closing: list[OpenAIModel]) -> None:
    seen: list[list[bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            lines, body = await server.read_request(reader)
            seen.append(lines)
            assert json.loads(body)["messages"][0]["content"] == "Say hi"
            writer.write(response(gzip.compress(OK), headers={"Content-Encoding": "gzip"}))
            await writer.drain()

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice, api_key="k-123"))
        first = await m.complete(request())
        second = await m.complete(request())
    assert first.text == second.text == "Hello!"
    assert server.connections == 1  # kept alive
    names = [line.split(b":")[0].lower() for line in seen[0][1:]]
    assert len(names) == len(set(names)), names  # no header sent twice
    assert seen[0][0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"authorization: bearer k-123" in [line.lower() for line in seen[0]]


@pytest.mark.parametrize("choice", CHOICES)
async def test_cookies_persist_across_requests(choice: str) -> None:
    cookies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            lines, _ = await server.read_request(reader)
            cookies.extend(line for line in lines if line.lower().startswith(b"cookie:"))
            writer.write(response(OK, headers={"Set-Cookie": "lb=node-7; Path=/"}))
            await writer.drain()

    async with (
        RawServer(handler) as server,
        make_client(timeout=5.0, connect_timeout=1.0, http_client=choice) as client,
    ):
        await client.post(f"{server.url}/v1/chat/completions", json={})
        await client.post(f"{server.url}/v1/chat/completions", json={})
    assert [c.lower() for c in cookies] == [b"cookie: lb=node-7"]


@pytest.mark.parametrize("choice", CHOICES)
async def test_redirects_are_not_followed(choice: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(response(b"", status="307 Temporary Redirect", headers={"Location": "/x"}))
        await writer.drain()

    async with (
        RawServer(handler) as server,
        make_client(timeout=5.0, connect_timeout=1.0, http_client=choice) as client,
    ):
        reply = await client.post(f"{server.url}/v1/chat/completions", json={})
    assert reply.status_code == 307 and server.requests == 1


@pytest.mark.parametrize("choice", CHOICES)
async def test_streaming_delivers_events_as_they_arrive(
    choice: str, closing: list[OpenAIModel]
) -> None:
    """The server sends the rest of the stream only once the client has read the first
    event: a transport that buffered the body would hang here."""
    first_read = asyncio.Event()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    def chunked(text: str) -> bytes:
        data = text.encode()
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        events = sse([chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo!"})])
        writer.write(head + chunked(str(events[0])))
        await writer.drain()
        await asyncio.wait_for(first_read.wait(), 5)
        tail = sse(
            [chunk({}, finish="stop"), chunk(usage={"prompt_tokens": 3, "completion_tokens": 2})]
        )
        for event in [*events[1:-1], *tail]:
            writer.write(chunked(str(event)))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    lines = []
    async with (
        RawServer(handler) as server,
        make_client(timeout=5.0, connect_timeout=1.0, http_client=choice) as client,
        client.stream("POST", f"{server.url}/v1/chat/completions", json={}) as r,
    ):
        async for line in r.aiter_lines():
            lines.append(line)
            first_read.set()
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in lines
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    assert text == "Hello!" and lines[-2:] == ["data: [DONE]", ""]


@pytest.mark.parametrize("choice", CHOICES)
async def test_provider_streaming(choice: str, closing: list[OpenAIModel]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        body = "".join(
            str(e)
            for e in sse(
                [
                    chunk({"role": "assistant", "content": "Hi"}),
                    chunk({}, finish="stop"),
                    chunk(usage={"prompt_tokens": 4, "completion_tokens": 1}),
                ]
            )
        ).encode()
        writer.write(response(body, headers={"Content-Type": "text/event-stream"}))
        await writer.drain()

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice, stream=True))
        reply = await m.complete(request())
    assert reply.text == "Hi" and (reply.usage.input_tokens, reply.usage.output_tokens) == (4, 1)


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", CHOICES)
async def test_stream_stalls_mid_body(choice: str, closing: list[OpenAIModel]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9999\r\n\r\n"
            + str(sse([chunk({"content": "Hel"})], done=False)[0]).encode()
        )
        await writer.drain()
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice, stream=True, stream_idle_timeout=0.3))
        start = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="stalled"):
            await m.complete(request())
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("where", ["before the status line", "mid-body"])
async def test_read_timeout(choice: str, where: str, closing: list[OpenAIModel]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if where == "mid-body":
            writer.write(response(OK)[:-20])  # all but the last 20 bytes of the body
            await writer.drain()
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice, timeout=0.3))
        start = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="ReadTimeout"):
            await m.complete(request())
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("choice", CHOICES)
async def test_connect_timeout(choice: str, closing: list[OpenAIModel]) -> None:
    """A listener whose backlog is full: the kernel drops the SYN, the connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        closing.append(m := model(f"http://127.0.0.1:{port}", choice, connect_timeout=0.3))
        start = time.monotonic()
        with pytest.raises(ModelTimeoutError, match="ConnectTimeout"):
            await m.complete(request())
        assert time.monotonic() - start < 3
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("choice", CHOICES)
async def test_connection_refused(choice: str, closing: list[OpenAIModel]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    closing.append(m := model(f"http://127.0.0.1:{port}", choice))
    with pytest.raises(ConnectionFailedError, match=f"could not connect to 127.0.0.1:{port}$"):
        await m.complete(request())


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("how", ["reset mid-body", "reset before reply", "closed before reply"])
async def test_connection_dropped(choice: str, how: str, closing: list[OpenAIModel]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if how == "reset mid-body":
            writer.write(response(OK)[:-20])
            await writer.drain()
            await asyncio.sleep(0.05)
        if how.startswith("reset"):
            reset(writer)

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice))
        with pytest.raises(OverloadedError) as info:
            await m.complete(request())
    assert server.requests == 1  # never retried
    assert "127.0.0.1" in str(info.value)


async def test_dropped_transport_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """A client dropped without ``aclose`` closes its pool without aiohttp's reports."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(response(OK))
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server:
        m = model(server.url, "aiohttp")
        assert (await m.complete(request())).text == "Hello!"
        with caplog.at_level(logging.ERROR):
            del m
            gc.collect()
            await asyncio.sleep(0.05)
    assert "Unclosed" not in caplog.text


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("framing", ["chunked", "over 1 MiB"])
async def test_streamed_json_reply(choice: str, framing: str, closing: list[OpenAIModel]) -> None:
    """Replies the aiohttp transport does not read at once (no ``Content-Length``, or a
    large one) arrive whole through the stream."""
    body = json.dumps(completion("x" * (2 << 20) if framing != "chunked" else "Hello!")).encode()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if framing == "chunked":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for part in (body[:10], body[10:]):
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(response(body))
        await writer.drain()

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, choice))
        reply = await m.complete(request())
    assert reply.text == ("Hello!" if framing == "chunked" else "x" * (2 << 20))


# -- the direct path (aiohttp without httpx's request / response objects) -------------------


async def test_direct_path_keeps_cookies_and_error_bodies(closing: list[OpenAIModel]) -> None:
    """A non-streamed request over aiohttp skips httpx, yet a cookie the server sets is sent
    back (httpx's jar takes over) and a status error's body is mapped as before."""
    from trellis.errors import BadRequestError

    cookies: list[bytes] = []
    replies = [
        response(OK, headers={"Set-Cookie": "lb=node-7; Path=/"}),
        response(
            b'{"error": {"message": "bad thing", "type": "invalid_request_error"}}',
            status="400 Bad Request",
        ),
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while replies:
            lines, _ = await server.read_request(reader)
            cookies.extend(line for line in lines if line.lower().startswith(b"cookie:"))
            writer.write(replies.pop(0))
            await writer.drain()

    async with RawServer(handler) as server:
        closing.append(m := model(server.url, "aiohttp"))
        assert (await m.complete(request())).text == "Hello!"
        with pytest.raises(BadRequestError, match="bad thing"):
            await m.complete(request())
    assert [c.lower() for c in cookies] == [b"cookie: lb=node-7"]


def test_json_helpers_match_the_stdlib() -> None:
    from trellis.providers._client import decode_json, json_body

    payload = {"messages": [{"content": "é \u2028 NaN"}], "temperature": 0.5, "n": 2**70}
    assert (
        json_body(payload)
        == json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    )
    with pytest.raises(ValueError):
        json_body({"temperature": float("nan")})
    for raw in (b'{"a": 1}', b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"), '"\\ud800"'):
        assert decode_json(raw) == json.loads(raw)
    with pytest.raises(ValueError):
        decode_json(b"{not json")
