"""The HTTP client: the ``openai:`` provider against raw aiohttp, on one local server.

- ``http_rps_ratio_vs_aiohttp``: requests per second of 5,000 chat-completion requests at
  concurrency 100 (100 workers, 50 requests each) through the real
  :class:`~trellis.providers.openai.OpenAIModel` (``complete``: rate-limit permit, POST,
  headers, JSON decode, reply parsing), over the same with a raw ``aiohttp.ClientSession``
  in the same process (POST the same JSON, ``await response.json()``). Baseline: aiohttp's
  requests per second.
- ``http_cpu_ms_per_request``: CPU time of this (the client) process per request
  (``time.process_time``) on the provider's path; baseline: the same for raw aiohttp.

The server is a minimal HTTP/1.1 keep-alive server on raw asyncio (this file run as a
script), in its own process so that its CPU is not the client's: it reads each request by
its ``Content-Length`` and answers one fixed ``chat.completion`` body. It answers tens of
thousands of requests per second, so the client is what is measured.

Repetitions run in one event loop, interleaved (order rotated), after one warm-up of each
side (connections stay pooled between repetitions, on both sides); a full collection
before each; medians of ``reps``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import AtLeast, Goal, median, ratio_figure, unit_figure

RPS_GOAL = AtLeast(0.4)
CPU_GOAL = Goal("<=", 0.5)
CONCURRENCY = 100

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


# -- the server (its own process) ------------------------------------------------------------


class _Server(asyncio.Protocol):
    """Answers every complete request on a keep-alive connection with :data:`RESPONSE`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(RESPONSE)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


# -- the clients ----------------------------------------------------------------------------

Side = Callable[[], Awaitable[None]]


async def _workers(n: int, one: Side) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    share, extra = divmod(n, CONCURRENCY)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(CONCURRENCY)))


async def http_figures(n: int, reps: int, say: Callable[[str], None]) -> dict[str, Any]:
    import aiohttp

    from trellis.models.base import Message, ModelRequest
    from trellis.providers.openai import OpenAIModel

    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is timed)
        [sys.executable, __file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        base = f"http://127.0.0.1:{port}/v1"
        model = OpenAIModel("openai:bench-model", {"base_url": base, "api_key": "bench"})
        request = ModelRequest(messages=(Message("user", "Say hi"),), model="bench-model")
        payload = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hi"}]}
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        session = aiohttp.ClientSession(connector=connector)
        headers = {"Accept": "application/json", "Authorization": "Bearer bench"}

        async def trellis_one() -> None:
            reply = await model.complete(request)
            if reply.text != "Hello!":
                raise RuntimeError(f"unexpected reply {reply.text!r}")

        async def aiohttp_one() -> None:
            async with session.post(f"{base}/chat/completions", json=payload, headers=headers) as r:
                data = await r.json()
            if data["choices"][0]["message"]["content"] != "Hello!":
                raise RuntimeError("unexpected reply")

        sides: dict[str, Side] = {"trellis": trellis_one, "aiohttp": aiohttp_one}
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        say(f"http: {n} requests at concurrency {CONCURRENCY}, openai: provider vs aiohttp")
        try:
            for name in sides:  # warm-up: connections opened, code paths warm
                await _workers(n, sides[name])
            names = list(sides)
            for rep in range(reps):
                shift = rep % len(names)
                for name in names[shift:] + names[:shift]:
                    gc.collect()
                    c0, t0 = time.process_time(), time.perf_counter()
                    await _workers(n, sides[name])
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
        finally:
            await model.aclose()
            await session.close()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    rps = {name: [n / s for s in samples] for name, samples in wall.items()}
    return {
        "http_rps_ratio_vs_aiohttp": ratio_figure(
            rps,
            "trellis",
            "aiohttp",
            baseline_unit="req/s",
            baseline_what=(
                f"raw aiohttp in the same process, {n} POSTs + json parse at concurrency "
                f"{CONCURRENCY}"
            ),
            goal=RPS_GOAL,
            reps=reps,
            n=n,
            rps=median(rps["trellis"]),
            concurrency=CONCURRENCY,
            samples_rps=rps["trellis"],
            baseline_samples_rps=rps["aiohttp"],
        ),
        "http_cpu_ms_per_request": unit_figure(
            cpu,
            "trellis",
            "aiohttp",
            unit="ms/request",
            baseline_what="client-process CPU per request of raw aiohttp (same requests)",
            goal=CPU_GOAL,
            reps=reps,
            n=n,
            per=n,
            scale=1e3,
            concurrency=CONCURRENCY,
        ),
    }


def group(sizes: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """The ``http`` group of ``bench/run.py`` (``--quick``: 500 requests)."""
    n = 500 if sizes.rss < 10000 else 5000
    return asyncio.run(http_figures(n, sizes.reps, say))


if __name__ == "__main__":
    asyncio.run(_serve())
