"""The HTTP client the providers send with: timeouts, and no retries and no redirects
(the engine's retry layer is the only one)."""

from __future__ import annotations

import httpx

__all__ = ["make_client"]


def make_client(
    *,
    timeout: float | None,
    connect_timeout: float | None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that never retries and never follows redirects.

    ``timeout`` bounds reads and writes (seconds between bytes), ``connect_timeout`` the
    TCP/TLS connect; waiting for a free pooled connection is unbounded (the engine's
    per-attempt deadline covers it). ``transport`` replaces the network (tests).
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=None),
        transport=transport if transport is not None else httpx.AsyncHTTPTransport(retries=0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
    )
