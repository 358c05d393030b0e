"""The HTTP client the providers send with: timeouts, connection limits, and no retries and
no redirects (the engine's retry layer is the only one).

The client is always an ``httpx.AsyncClient``; what carries its requests (``http_client``)
is aiohttp's connection pool (:mod:`trellis.providers._aiohttp_transport`: several times
less CPU per request than httpcore's under concurrency) or httpx's own transport.
``"auto"`` picks aiohttp when it can be imported, else httpx's.
"""

from __future__ import annotations

import importlib.util
from http.cookiejar import CookieJar
from typing import Any, Literal

import httpx

from trellis.errors import ConfigurationError

__all__ = ["HTTPClientChoice", "ProviderClient", "make_client", "make_transport"]

#: Which transport carries a provider's requests (the ``http_client`` option).
HTTPClientChoice = Literal["auto", "aiohttp", "httpx"]


_URL_CACHE = 64  # distinct URL strings a client keeps parsed


class _ReplyCookies(httpx.Cookies):
    """httpx's cookie jar, skipping the (costly) cookie parsing of replies without any."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class ProviderClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` made cheaper per request, where the profile showed it: a reply
    without ``Set-Cookie`` skips the cookie jar (cookies still persist across requests; the
    stock jar wraps every reply for ``http.cookiejar``: a tenth of a request's CPU), and a
    URL string is parsed once (:meth:`build_request`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reply_cookies = _ReplyCookies(kwargs.get("cookies"))
        self._urls: dict[str, httpx.URL] = {}

    def build_request(
        self, method: str, url: httpx.URL | str, *args: Any, **kwargs: Any
    ) -> httpx.Request:
        """httpx's, with each URL string parsed once (a provider POSTs to one endpoint)."""
        if isinstance(url, str):
            parsed = self._urls.get(url)
            if parsed is None:
                if len(self._urls) >= _URL_CACHE:
                    self._urls.clear()
                parsed = self._urls[url] = httpx.URL(url)
            url = parsed
        return super().build_request(method, url, *args, **kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._reply_cookies

    @cookies.setter
    def cookies(
        self, cookies: httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]
    ) -> None:
        self._reply_cookies = _ReplyCookies(cookies)


def make_transport(choice: HTTPClientChoice, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport ``choice`` names, its pool sized by ``limits``, never retrying.

    ``"aiohttp"`` without aiohttp installed is a :class:`ConfigurationError`; ``"auto"``
    falls back to httpx's transport then."""
    if choice != "httpx":
        if importlib.util.find_spec("aiohttp") is not None:
            from trellis.providers._aiohttp_transport import AiohttpTransport

            return AiohttpTransport(limits)
        if choice == "aiohttp":
            raise ConfigurationError(
                "http_client=aiohttp needs the aiohttp package: pip install aiohttp "
                "(or use http_client=httpx)"
            )
    return httpx.AsyncHTTPTransport(retries=0, limits=limits)


def make_client(
    *,
    timeout: float | None,
    connect_timeout: float | None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
    http_client: HTTPClientChoice = "auto",
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that never retries and never follows redirects.

    ``timeout`` bounds reads and writes (seconds between bytes), ``connect_timeout`` the
    TCP/TLS connect; waiting for a free pooled connection is unbounded (the engine's
    per-attempt deadline covers it). At most ``max_connections`` are open at once, all of
    them kept alive between requests. ``http_client`` chooses the transport
    (:func:`make_transport`); ``transport`` replaces the network (tests), limits and all.
    """
    if transport is None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        transport = make_transport(http_client, limits)
    return ProviderClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=None),
        transport=transport,
        follow_redirects=False,
    )
