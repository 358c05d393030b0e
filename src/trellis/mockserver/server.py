"""Running a mock server: on the current event loop, or in a background thread.

::

    async with MockServer(rpm=600, latency_ms="50-200", faults={"rate_limit": 0.1}) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test")
        ...
        print(server.stats.to_dict())

    with MockServerThread(script=[{"fault": "rate_limit", "retry_after": 0.5}]) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test")
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from trellis.mockserver.app import DEFAULT_MODELS, MockState, MockStats, create_app
from trellis.mockserver.faults import FaultPlan, FaultStep, Outage
from trellis.mockserver.limits import AdmissionLimiter

__all__ = ["MockServer", "MockServerThread"]

T = TypeVar("T")
Steps = Sequence[FaultStep | Mapping[str, Any]]


class MockServer:
    """A local OpenAI- and Anthropic-compatible server backed by the simulator.

    ``port=0`` picks a free port. ``latency_ms`` is a fixed delay or a ``(low, high)``
    range (``"50-400"`` too); ``rpm`` / ``tpm`` turn on rate limits (``burst_s``: the
    shortest period they are enforced over, see :mod:`trellis.mockserver.limits`;
    ``per_model``: separate limits per model name); ``faults`` is a
    :class:`~trellis.mockserver.faults.FaultPlan` or per-mode rates, ``script`` a list of
    scripted steps; ``hang_s`` how long a ``timeout`` fault holds a reply; ``api_key``, when
    set, is required (401 otherwise). ``seed`` selects replies, faults and latencies.
    ``profile`` makes every request behave like one real server's (see
    :mod:`trellis.mockserver.profiles`); without it, a model's name may pick one.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float | tuple[float, float] | str = 0.0,
        rpm: int | None = None,
        tpm: int | None = None,
        burst_s: float = 1.0,
        per_model: bool = False,
        faults: FaultPlan | Mapping[str, float] | None = None,
        script: Steps | None = None,
        seed: int = 0,
        hang_s: float = 30.0,
        retry_after_s: float | None = 1.0,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        clock: Callable[[], float] = time.monotonic,
        profile: str | None = None,
    ) -> None:
        if isinstance(faults, FaultPlan):
            plan = faults
        else:
            plan = FaultPlan(faults, seed=seed, hang_s=hang_s, retry_after_s=retry_after_s)
        if script:
            plan.load_script(script, append=True)
        limiter = AdmissionLimiter(rpm, tpm, burst_s=burst_s, per_model=per_model, clock=clock)
        self.state = MockState(
            faults=plan,
            limiter=limiter,
            latency_ms=latency_ms,
            seed=seed,
            api_key=api_key,
            models=models,
            profile=profile,
        )
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._runner is not None else "not started"
        return f"MockServer({where})"

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            create_app(self.state),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        """For ``OPENAI_BASE_URL`` / ``openai.OpenAI(base_url=...)``: ends in ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For ``ANTHROPIC_BASE_URL`` / ``anthropic.Anthropic(base_url=...)``."""
        return self.base_url

    @property
    def stats(self) -> MockStats:
        return self.state.stats

    @property
    def faults(self) -> FaultPlan:
        return self.state.faults

    def load_script(self, steps: Steps, *, append: bool = False) -> None:
        self.state.faults.load_script(steps, append=append)

    def schedule_outage(
        self,
        duration_s: float,
        start_in_s: float = 0.0,
        *,
        from_first_request: bool = False,
        latency_ms: float = 0.0,
    ) -> Outage:
        """Every model request gets 503 (OpenAI) / 529 (Anthropic) for ``duration_s``
        seconds, starting ``start_in_s`` from now (or from the first request)."""
        return self.state.faults.schedule_outage(
            duration_s, start_in_s, from_first_request=from_first_request, latency_ms=latency_ms
        )

    def reset(self) -> None:
        self.state.reset()


class MockServerThread:
    """A :class:`MockServer` on its own event loop in a daemon thread, for sync code.

    Takes the same arguments; use it as a context manager (or :meth:`start` /
    :meth:`stop`). :attr:`stats` returns a copy taken on the server's loop.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._server: MockServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="trellis-mock-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the mock server did not start within 30 s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = MockServer(**self._kwargs)
            await server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def server(self) -> MockServer:
        if self._server is None:
            raise RuntimeError("the mock server is not running")
        return self._server

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the mock server is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def openai_base_url(self) -> str:
        return self.server.openai_base_url

    @property
    def anthropic_base_url(self) -> str:
        return self.server.anthropic_base_url

    @property
    def stats(self) -> MockStats:
        return self._call(lambda: self.server.stats.copy())

    def load_script(self, steps: Steps, *, append: bool = False) -> None:
        self._call(lambda: self.server.load_script(steps, append=append))

    def schedule_outage(self, duration_s: float, start_in_s: float = 0.0, **kw: Any) -> Outage:
        return self._call(lambda: self.server.schedule_outage(duration_s, start_in_s, **kw))

    def reset(self) -> None:
        self._call(self.server.reset)
