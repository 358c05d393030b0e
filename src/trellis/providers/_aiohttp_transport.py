"""An ``httpx`` transport over aiohttp: httpx's API for the providers, aiohttp's connection
pool on the wire (:class:`AiohttpTransport`).

httpcore's pool scans every connection on every request, which made it most of a
provider's CPU at a hundred concurrent requests; aiohttp's connector hands out a pooled
connection in constant time. Everything above the transport (``httpx.AsyncClient``, its
requests and responses, the provider code) is unchanged.

Behaviour, as :class:`httpx.AsyncHTTPTransport` with ``retries=0``:

- HTTP/1.1, one attempt per request, redirects never followed (the client's choice);
  bodies are passed through undecoded (``httpx.Response`` decodes ``Content-Encoding``).
- ``httpx.Limits``: ``max_connections`` bounds the open connections (``None``: no bound),
  ``keepalive_expiry`` how long an idle one is kept.
- The request's timeouts: ``connect`` bounds the TCP/TLS connect, ``read`` every wait for
  bytes (the status line, and each read of the body, streamed or not), ``pool`` the wait
  for a free connection. aiohttp has no write timeout: a request body is written into the
  socket's buffer without waiting for the peer (``write`` is not applied).
- aiohttp's errors become httpx's: a failed connect :class:`httpx.ConnectError`, a connect
  timeout :class:`httpx.ConnectTimeout` (a ``pool`` timeout too: aiohttp does not tell
  them apart), a read timeout :class:`httpx.ReadTimeout`, a connection closed or reset
  before the reply is complete :class:`httpx.RemoteProtocolError` /
  :class:`httpx.ReadError`.
- A reply of at most :data:`EAGER_BYTES` with a ``Content-Length`` (and not an event
  stream) is read before it is returned, as one read; any other body is streamed as its
  bytes arrive (``iter_any``: an SSE event is not held back for a full buffer).
- Environment proxies are not used (as for httpx given an explicit transport); TLS
  verification uses httpx's default context (certifi, ``SSL_CERT_FILE``).

The aiohttp session is created on the first request, in the running event loop, and
closed by :meth:`AiohttpTransport.aclose` (``httpx.AsyncClient.aclose`` calls it).

:meth:`AiohttpTransport.post_direct` is the providers' short path for a request that is
not streamed: it POSTs bytes over the same session without building an ``httpx.Request``
or ``httpx.Response`` (httpx's per-request machinery was most of a provider's CPU once the
pool was aiohttp's) and returns a :class:`DirectReply`, read to the end. The caller
(:class:`~trellis.providers._client.ProviderClient`) gives it the headers httpx would have
sent and turns the rare replies that need httpx (``Content-Encoding``, ``Set-Cookie``) into
an ``httpx.Response``; errors and timeouts are httpx's, as above.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import suppress
from typing import Any

import aiohttp
import httpx
from yarl import URL

from trellis.providers._client import decode_json

__all__ = ["AiohttpTransport", "DirectReply"]


#: What :func:`_httpx_error` maps.
_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

#: A reply up to this size that declares its ``Content-Length`` (and is not an event stream)
#: is read before the ``httpx.Response`` is returned: one read instead of httpx's chain of
#: stream iterators, and the connection is back in the pool at once.
EAGER_BYTES = 1 << 20


_URL_CACHE = 64  # distinct URL strings a transport keeps parsed


def _httpx_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    """The httpx equivalent of aiohttp's (or asyncio's) transport error ``exc``."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "connect timed out", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS, TLS
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
        return httpx.ReadTimeout(str(exc) or "read timed out", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected", request=request)
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):  # reset, broken pipe
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(str(exc), request=request)
    # a malformed reply, an invalid URL, ...
    return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request)


class DirectReply:
    """A reply of :meth:`AiohttpTransport.post_direct`, read to the end: what the providers
    read of an ``httpx.Response`` (``status_code``, ``headers``, ``content``, ``text``,
    ``json()``), decoded as httpx decodes it (``text``: the ``charset`` of the
    ``Content-Type``, else UTF-8, undecodable bytes replaced; ``json()``: the bytes, as
    ``json.loads`` reads them).
    ``Content-Encoding`` is not decoded (the caller hands such a reply to httpx)."""

    __slots__ = ("_response", "content", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse, content: bytes) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content = content

    def __repr__(self) -> str:
        return f"<DirectReply [{self.status_code}]>"

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return self._response.raw_headers

    @property
    def reason(self) -> str:
        return self._response.reason or ""

    @property
    def text(self) -> str:
        charset = self._response.charset or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # an unknown charset
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return decode_json(self.content)


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response's body, as bytes arrive; closing it returns the connection to the
    pool when the body was read to the end, and closes the connection otherwise."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _ERRORS as exc:
            raise _httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` sending over one ``aiohttp.ClientSession`` (see the
    module docs); ``limits`` sizes its connection pool."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self.limits = limits if limits is not None else httpx.Limits()
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        limits = self.limits
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,  # 0: no bound
            keepalive_timeout=limits.keepalive_expiry,
            ssl=httpx.create_ssl_context(),
        )
        session = self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx.Response decodes
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
            # httpx sets the headers; aiohttp adds none of its own
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None or session.closed:
            session = self._open()
        body = await request.aread()  # httpx built it (``json=``): no I/O
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(request.extensions.get("timeout", {})),
            )
        except _ERRORS as exc:
            raise _httpx_error(exc, request) from exc
        content: bytes | None = None
        length = response.content_length
        small = length is not None and length <= EAGER_BYTES
        if small and response.content_type != "text/event-stream":
            try:
                content = await response.read()
            except _ERRORS as exc:
                response.close()
                raise _httpx_error(exc, request) from exc
        extensions = {
            "http_version": b"HTTP/1.1",
            "reason_phrase": (response.reason or "").encode(),
        }
        if content is not None:  # read to the end: the connection is back in the pool
            return httpx.Response(
                response.status,
                headers=response.raw_headers,
                content=content,
                request=request,
                extensions=extensions,
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions=extensions,
        )

    async def post_direct(
        self,
        url: str,
        content: bytes,
        headers: Iterable[tuple[str, str]],
        timeouts: Mapping[str, float | None],
    ) -> DirectReply:
        """POST ``content`` to ``url`` with exactly ``headers`` (plus ``Host`` and
        ``Content-Length``) and read the reply to the end; ``timeouts`` as httpx's request
        extension (``connect``, ``read``, ``pool``). Failures raise httpx's errors, as
        :meth:`handle_async_request` does, without a request attached."""
        session = self._session
        if session is None or session.closed:
            session = self._open()
        target = self._urls.get(url)
        if target is None:
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()
            target = self._urls[url] = URL(url)
        try:
            response = await session.request(
                "POST",
                target,
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
            )
            body = await response.read()  # closes the connection if the read fails
        except _ERRORS as exc:
            raise _httpx_error(exc, None) from exc
        return DirectReply(response, body)

    def _timeout(self, timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for httpx's (one object per distinct set, reused)."""
        key = (timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=key[0], sock_connect=key[1], sock_read=key[2]
            )
        return timeout

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            await asyncio.sleep(0)  # let the connector's transports finish closing

    def __del__(self) -> None:
        # Dropped without aclose (its event loop may be gone): close the pool quietly, as
        # httpx's transport goes, instead of aiohttp's "Unclosed client session" reports.
        session = self._session
        if session is not None and not session.closed:
            connector = session.connector
            session.detach()
            if connector is not None:
                with suppress(Exception):
                    connector._close()  # what aiohttp's own __del__ and __exit__ call
