"""The HTTP client the providers send with: timeouts, connection limits, and no retries and
no redirects (the engine's retry layer is the only one).

The client is always an ``httpx.AsyncClient``; what carries its requests (``http_client``)
is aiohttp's connection pool (:mod:`trellis.providers._aiohttp_transport`: several times
less CPU per request than httpcore's under concurrency) or httpx's own transport.
``"auto"`` picks aiohttp when it can be imported, else httpx's.

A request that is not streamed goes through :meth:`ProviderClient.post_json`: over aiohttp
it skips httpx's request and response objects (a third of a provider's CPU per request)
and sends the very bytes and headers httpx would; with any other transport, or whenever
httpx has a part to play (a cookie to send, auth or event hooks), it is ``client.post``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from pydantic_core import from_json, to_json

from trellis.errors import ConfigurationError

if TYPE_CHECKING:
    from trellis.providers._aiohttp_transport import AiohttpTransport, DirectReply

__all__ = [
    "HTTPClientChoice",
    "HTTPReply",
    "ProviderClient",
    "decode_json",
    "json_body",
    "make_client",
    "make_transport",
]

#: Which transport carries a provider's requests (the ``http_client`` option).
HTTPClientChoice = Literal["auto", "aiohttp", "httpx"]


_URL_CACHE = 64  # distinct URL strings a client keeps parsed
_HEADER_CACHE = 16  # distinct header sets a client keeps merged


class HTTPReply(Protocol):
    """What the providers read of a reply that is not streamed: an ``httpx.Response`` or
    the aiohttp transport's :class:`~trellis.providers._aiohttp_transport.DirectReply`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def json_body(payload: Any) -> bytes:
    """``payload`` as httpx encodes ``json=`` (compact UTF-8; NaN or an infinity is a
    ``ValueError``), by ``pydantic_core.to_json``: several times faster than ``json.dumps``
    on a long conversation, the same bytes but for the spelling of some floats (``1e-05``
    is ``0.00001``). A body that may hold a non-finite number is encoded again by
    ``json.dumps``, which raises for a real one."""
    body = to_json(payload, inf_nan_mode="constants")
    if b"NaN" in body or b"Infinity" in body:  # or merely a string that says so
        body = json.dumps(
            payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    return body


def decode_json(data: bytes | str) -> Any:
    """A JSON document (a reply body, a stream chunk), as ``json.loads`` reads it, by
    ``pydantic_core.from_json`` (several times faster); what it refuses (another UTF
    than 8, a byte-order mark, a lone surrogate escape, deep nesting) goes to
    ``json.loads``, whose ``ValueError`` an invalid document raises."""
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data)


def _json_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with ``Content-Type: application/json`` unless they set one."""
    out = dict(headers)
    if not any(name.lower() == "content-type" for name in out):
        out["Content-Type"] = "application/json"
    return out


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
        #: The transport when it is aiohttp's (its module is imported by then, if ever).
        self._direct: AiohttpTransport | None = None
        module = sys.modules.get("trellis.providers._aiohttp_transport")
        if module is not None and isinstance(kwargs.get("transport"), module.AiohttpTransport):
            self._direct = kwargs["transport"]
        self._merged: dict[tuple[tuple[str, str], ...], list[tuple[str, str]]] = {}

    async def post_json(self, url: str, payload: Any, headers: Mapping[str, str]) -> HTTPReply:
        """``client.post(url, json=payload, headers=headers)``, read to the end; over the
        aiohttp transport without httpx's request and response objects (see the module
        docs). The body is :func:`json_body`'s. Errors are httpx's, as ``post`` raises
        them."""
        body = json_body(payload)
        direct = self._direct
        if (
            direct is None
            or self._reply_cookies.jar  # a cookie to send: httpx's jar decides which
            or self.auth is not None
            or self.event_hooks["request"]
            or self.event_hooks["response"]
            or self.is_closed
        ):
            return await self.post(url, content=body, headers=_json_headers(headers))
        reply = await direct.post_direct(
            url, body, self._headers_for(headers), self.timeout.as_dict()
        )
        if "content-encoding" in reply.headers or "set-cookie" in reply.headers:
            return self._as_httpx(url, reply)
        return reply

    def stream_json(
        self, url: str, payload: Any, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """``client.stream("POST", url, json=payload, headers=headers)``, the body
        :func:`json_body`'s."""
        return self.stream("POST", url, content=json_body(payload), headers=_json_headers(headers))

    def _headers_for(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The headers httpx would send with ``json=`` (the client's defaults, then
        ``headers``, then ``Content-Type``), less ``Host`` and ``Content-Length``: aiohttp
        writes those two. Merged once per distinct ``headers``."""
        key = tuple(headers.items())
        merged = self._merged.get(key)
        if merged is None:
            if len(self._merged) >= _HEADER_CACHE:
                self._merged.clear()
            combined = httpx.Headers(self.headers)
            combined.update(_json_headers(headers))
            merged = self._merged[key] = [
                (name, value)
                for name, value in combined.multi_items()
                if name not in ("host", "content-length")
            ]
        return merged

    def _as_httpx(self, url: str, reply: DirectReply) -> httpx.Response:
        """``reply`` as httpx's response: its body decoded (``Content-Encoding``), its
        cookies kept in this client's jar."""
        request = httpx.Request("POST", url)
        response = httpx.Response(
            reply.status_code,
            headers=reply.raw_headers,
            content=reply.content,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reply.reason.encode()},
        )
        response.default_encoding = self._default_encoding
        self.cookies.extract_cookies(response)
        return response

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
) -> ProviderClient:
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
