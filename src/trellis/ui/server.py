"""Serving the UI with uvicorn: in the foreground (``trellis ui``) or on a background
thread (tests, ``make screenshots``, the benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from trellis.errors import ConfigurationError
from trellis.ui.app import UiSettings, create_app

__all__ = ["BackgroundServer", "serve"]


def _config(settings: UiSettings, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def serve(settings: UiSettings, port: int) -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.Server(_config(settings, port)).run()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """The UI on a daemon thread: ``with BackgroundServer(settings) as url: ...``."""

    def __init__(self, settings: UiSettings, port: int = 0) -> None:
        self.port = port or free_port(settings.host)
        self.url = f"http://{settings.host}:{self.port}"
        self._server = uvicorn.Server(_config(settings, self.port))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigurationError(f"the UI server did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
