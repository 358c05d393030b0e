"""What the HTTP providers share: options, one client per instance, and one attempt's life.

:class:`HTTPModel` sends one request per :meth:`~trellis.models.base.Model.complete` call
and never retries (the engine's retry layer is the only one). An attempt is::

    acquire rate-limit permit -> POST (JSON, or an SSE stream) -> observe rate-limit headers
      -> HTTP error: map status + body to the error tree (429: retry_after, pause limiter)
      -> success: parse / assemble the reply -> settle the permit with the real usage

Transport failures are typed too: any httpx timeout and a stalled stream become
:class:`~trellis.errors.ModelTimeoutError` (the attempt may still be billed); a DNS failure
or refused connection :class:`~trellis.errors.ConnectionFailedError` ("could not connect to
HOST:PORT"); a connection dropped after the request went out
:class:`~trellis.errors.OverloadedError`. Messages never contain the API key, and
``raise ... from None`` keeps httpx's request (whose headers hold the key) out of the
exception chain.

A 400 / 422 that names a request field as unsupported is negotiated
(:mod:`trellis.providers.negotiation`): the request is resent once without the field (or
renamed), the binding remembers it for the rest of the process, and the reply carries the
adjustment's note.
"""

from __future__ import annotations

import abc
import asyncio
import difflib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from trellis.errors import (
    BadRequestError,
    ConfigurationError,
    ConnectionFailedError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    RateLimitError,
)
from trellis.models.base import Model, ModelRequest, ModelResponse, Usage
from trellis.models.tokens import estimate_request_tokens, estimate_tokens
from trellis.providers._client import (
    HTTPClientChoice,
    HTTPReply,
    ProviderClient,
    decode_json,
    make_client,
)
from trellis.providers._errors import (
    ErrorBody,
    classify_error,
    error_body_from_json,
    parse_error_body,
)
from trellis.providers._keys import Redactor, redact_url, resolve_api_key
from trellis.providers._rate_headers import parse_rate_limit_headers, retry_after_from_headers
from trellis.providers._sse import SSEEvent, StreamIdleTimeout, iter_sse
from trellis.providers.negotiation import (
    NEGOTIABLE_STATUSES,
    Negotiation,
    ParameterRejectedError,
    negotiation_for,
    rejected_parameters,
)
from trellis.providers.ratelimit import RequestPacer

__all__ = ["DEFAULT_OUTPUT_ESTIMATE", "HTTPModel", "HTTPOptions", "normalise_base_url"]

#: Output tokens assumed for rate limiting when a request sets no ``max_tokens``.
DEFAULT_OUTPUT_ESTIMATE = 256

_NONE_STRINGS = frozenset({"", "none", "null"})


def normalise_base_url(value: str) -> str:
    """``value`` without surrounding space and trailing slashes; it must be http(s)."""
    url = value.strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url


class HTTPOptions(BaseModel):
    """Options every HTTP provider takes (values may be strings, as in a binding's query).

    ``base_url``: the API root (default from the provider's environment variable, else the
    official API). ``api_key``: discouraged (it ends up in configuration); prefer
    ``api_key_env``, the environment variable holding the key. ``timeout``: seconds a read
    or write may take (httpx read timeout); ``connect_timeout``: seconds to connect.
    ``stream``: use SSE streaming; ``stream_idle_timeout``: seconds without any bytes on a
    stream before the attempt fails (default: ``timeout``). ``rpm`` / ``tpm``: client-side
    requests / tokens per minute for this model, shared by every run of the engine.
    ``http_client``: what carries the requests: ``aiohttp``'s connection pool, ``httpx``'s
    own, or ``auto`` (default: aiohttp when installed, else httpx; see
    :mod:`trellis.providers._client`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    provider: ClassVar[str] = "http"

    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str = ""
    timeout: float | None = Field(default=600.0, gt=0)
    connect_timeout: float | None = Field(default=10.0, gt=0)
    stream: bool = False
    stream_idle_timeout: float | None = Field(default=None, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    http_client: HTTPClientChoice = "auto"

    @field_validator(
        "base_url",
        "api_key",
        "timeout",
        "connect_timeout",
        "stream_idle_timeout",
        "rpm",
        "tpm",
        mode="before",
    )
    @classmethod
    def _none_strings(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _NONE_STRINGS:
            return None
        return value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else normalise_base_url(value)

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> Self:
        """Validate binding options (strings welcome); a bad or unknown option is a
        :class:`ConfigurationError` naming it (with a did-you-mean), never echoing a key."""
        data = {str(k).strip().replace("-", "_"): v for k, v in (options or {}).items()}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(cls._describe(exc, data)) from None

    @classmethod
    def _describe(cls, exc: ValidationError, data: Mapping[str, Any]) -> str:
        names = [n for n in cls.model_fields]
        valid = ", ".join(names)
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(field, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown {cls.provider} option {field!r}{hint}; valid options: {valid}"
        shown = "[REDACTED]" if field == "api_key" else repr(data.get(field))
        msg = err["msg"].removeprefix("Value error, ")
        return f"invalid {cls.provider} option {field}={shown}: {msg}; valid options: {valid}"


CLIENT_BURST_S = 0.5


class HTTPModel(Model):
    """A model behind an HTTP API; subclasses speak one dialect (see module docs).

    ``transport`` replaces the network (``httpx.MockTransport`` in tests), ``limiter`` a
    shared :class:`RequestPacer` (default: one built from ``rpm`` / ``tpm``), ``now`` the
    wall clock used to read HTTP-date and RFC 3339 headers.
    """

    provider: ClassVar[str]
    remote: ClassVar[bool] = True
    default_base_url: ClassVar[str]
    base_url_env: ClassVar[str]
    official_hosts: ClassVar[tuple[str, ...]]
    #: Top-level request fields dropped (or renamed, see ``renames``) when a server
    #: rejects them; any other field is never touched.
    negotiable: ClassVar[frozenset[str]] = frozenset()
    renames: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        model: str,
        options: HTTPOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RequestPacer | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        name = model.strip().removeprefix(f"{self.provider}:")
        if not name:
            raise ConfigurationError(
                f"{self.provider} model name is empty in {model!r}; e.g. '{self.provider}:<model>'"
            )
        self.model = name
        self.name = f"{self.provider}:{name}"
        self.options = options
        env_url = os.environ.get(self.base_url_env, "").strip()
        try:
            base = options.base_url or (normalise_base_url(env_url) if env_url else None)
        except ValueError as exc:
            raise ConfigurationError(
                f"{self.provider}: {self.base_url_env}={redact_url(env_url)!r} {exc}"
            ) from None
        self.base_url = base or self.default_base_url
        self._api_key = resolve_api_key(
            options.api_key,
            options.api_key_env,
            base_url=self.base_url,
            official_hosts=self.official_hosts,
            provider=self.name,
        )
        self._redact = Redactor(self._api_key, options.api_key)
        # Half a second of burst: below the one second servers typically allow, so that
        # connection set-up jitter on the first burst does not turn into 429s.
        self.limiter = (
            limiter
            if limiter is not None
            else RequestPacer(options.rpm, options.tpm, burst_s=CLIENT_BURST_S)
        )
        self._transport = transport
        self._now = now
        self._client: ProviderClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        #: What this binding's server rejected, shared by every instance in the process.
        self.negotiation: Negotiation = negotiation_for(
            self.provider,
            redact_url(self.base_url),
            self.model,
            negotiable=self.negotiable,
            renames=self.renames,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, base_url={redact_url(self.base_url)!r})"

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    # -- dialect hooks ----------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """The URL requests are POSTed to."""

    @abc.abstractmethod
    def _headers(self) -> dict[str, str]:
        """Headers of every request, authentication included."""

    # -- the client -------------------------------------------------------------------------

    def _http(self) -> ProviderClient:
        """This instance's client, created on first use in the running event loop (a client
        left over from an earlier, finished loop is dropped, not reused)."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._client_loop is not loop:
            client = self._client = make_client(
                timeout=self.options.timeout,
                connect_timeout=self.options.connect_timeout,
                transport=self._transport,
                http_client=self.options.http_client,
            )
            self._client_loop = loop
        return client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        loop, self._client_loop = self._client_loop, None
        if client is not None and not client.is_closed and loop is asyncio.get_running_loop():
            await client.aclose()

    # -- one attempt ------------------------------------------------------------------------

    def estimate_tokens(self, request: ModelRequest, max_tokens: int | None) -> int:
        """Tokens the rate limiter reserves: the prompt estimate plus the output allowance."""
        return estimate_request_tokens(request) + (max_tokens or DEFAULT_OUTPUT_ESTIMATE)

    def fallback_usage(self, request: ModelRequest, text: str) -> Usage:
        """Usage estimated like the simulator does, for a server that reports none."""
        return Usage(estimate_request_tokens(request), estimate_tokens(text))

    async def _negotiated_send(
        self,
        payload: Mapping[str, Any],
        *,
        estimate: int,
        stream: bool,
        parse: Callable[[Any], ModelResponse],
        assemble: Callable[[AsyncIterator[SSEEvent]], Awaitable[ModelResponse]],
        notes: tuple[str, ...] = (),
    ) -> ModelResponse:
        """:meth:`_send` with the binding's known adjustments applied; a rejection that
        names negotiable fields is learned and the request resent at once (each field at
        most once per binding). The reply, or the error, carries every adjustment made
        (after ``notes``: the changes the dialect made itself)."""
        negotiation = self.negotiation
        made = notes
        notes = ()

        async def attempt() -> ModelResponse:
            nonlocal notes
            while True:
                adjusted, notes = negotiation.apply(payload)
                try:
                    result = await self._send(
                        adjusted, estimate=estimate, stream=stream, parse=parse, assemble=assemble
                    )
                except ParameterRejectedError as exc:
                    if negotiation.learn(exc) is None:
                        raise
                    continue
                negotiation.accept(adjusted)
                return result

        try:
            if negotiation.untested(negotiation.apply(payload)[0]):
                async with negotiation.probe_lock():
                    result = await attempt()
            else:
                result = await attempt()
        except ModelError as exc:
            if made or notes:
                exc.adjustments = (*exc.adjustments, *made, *notes)
            raise
        if made or notes:
            result = replace(result, adjustments=(*result.adjustments, *made, *notes))
        return result

    async def _send(
        self,
        payload: Mapping[str, Any],
        *,
        estimate: int,
        stream: bool,
        parse: Callable[[Any], ModelResponse],
        assemble: Callable[[AsyncIterator[SSEEvent]], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """POST ``payload``; ``parse`` a JSON reply or ``assemble`` an SSE one."""
        permit = await self.limiter.acquire(estimate)
        used: int | None = None  # tokens to settle the permit with; None keeps the estimate
        try:
            client = self._http()
            headers = self._headers()
            if stream:
                async with client.stream_json(self.endpoint, payload, headers) as response:
                    self._observe(response)
                    if response.status_code >= 400:
                        await response.aread()
                        used = 0
                        raise self._status_error(response, payload)
                    ctype = response.headers.get("content-type", "").lower()
                    if "json" in ctype and "event-stream" not in ctype:
                        await response.aread()  # the server ignored stream=true
                        result = parse(self._decode(response))
                    else:
                        idle = self.options.stream_idle_timeout or self.options.timeout
                        async with aclosing(
                            iter_sse(response.aiter_lines(), idle_timeout=idle)
                        ) as events:
                            result = await assemble(events)
            else:
                reply = await client.post_json(self.endpoint, payload, headers)
                self._observe(reply)
                if reply.status_code >= 400:
                    used = 0
                    raise self._status_error(reply, payload)
                result = parse(self._decode(reply))
            used = result.usage.total_tokens
            return result
        except StreamIdleTimeout as exc:
            raise ModelTimeoutError(
                f"{self.name}: the stream stalled ({exc}); partial reply discarded",
                model=self.name,
            ) from None
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(
                self._redact(
                    f"{self.name}: {type(exc).__name__} talking to "
                    f"{redact_url(self.endpoint)}: {exc or 'timed out'}"
                ),
                model=self.name,
            ) from None
        except httpx.ConnectError:
            raise ConnectionFailedError(
                f"{self.name}: could not connect to {self._host_port()}", model=self.name
            ) from None
        except httpx.RequestError as exc:
            raise OverloadedError(
                self._redact(
                    f"{self.name}: {type(exc).__name__} talking to "
                    f"{redact_url(self.endpoint)}: {exc or 'connection failed'}"
                ),
                model=self.name,
            ) from None
        finally:
            self.limiter.settle(permit, permit.tokens if used is None else used)

    def _observe(self, response: HTTPReply) -> None:
        limits = parse_rate_limit_headers(response.headers, now=self._now())
        if not limits.empty:
            self.limiter.observe(
                limits.remaining_requests,
                limits.remaining_tokens,
                limits.reset_requests_s,
                limits.reset_tokens_s,
                limit_requests=limits.limit_requests,
                limit_tokens=limits.limit_tokens,
            )

    def _host_port(self) -> str:
        """``HOST:PORT`` of the endpoint (default port by scheme), never a key or query."""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or "?"
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _status_error(
        self, response: HTTPReply, payload: Mapping[str, Any] | None = None
    ) -> ModelError:
        body = parse_error_body(response.text, response.headers.get("content-type"))
        retry_after = retry_after_from_headers(response.headers, now=self._now())
        error = classify_error(
            response.status_code,
            body,
            model=self.name,
            redact=self._redact,
            retry_after=retry_after,
        )
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            self.limiter.pause(error.retry_after)
        if (
            type(error) is BadRequestError
            and payload is not None
            and response.status_code in NEGOTIABLE_STATUSES
        ):
            params = rejected_parameters(response.text, payload)
            if params:
                return ParameterRejectedError(
                    str(error),
                    params=params,
                    model=self.name,
                    status_code=response.status_code,
                )
        return error

    def _decode(self, response: HTTPReply) -> Any:
        try:
            return decode_json(response.content)
        except ValueError:
            body = parse_error_body(response.text, response.headers.get("content-type"))
            if body.type == "html":
                raise BadRequestError(
                    self._redact(
                        f"{self.name}: expected JSON from {redact_url(self.endpoint)} but got "
                        f"an HTML page ({body.message or 'no title'}); check base_url"
                    ),
                    model=self.name,
                    status_code=response.status_code,
                ) from None
            raise OverloadedError(
                self._redact(f"{self.name}: the reply is not JSON: {body.message[:200]!r}"),
                model=self.name,
                status_code=response.status_code,
            ) from None

    def payload_error(self, data: Any, *, where: str | None = None) -> ModelError | None:
        """The error carried by a decoded reply (``{"error": ...}`` with HTTP 200, or an
        error event in a stream), or ``None`` when ``data`` is not an error."""
        if not isinstance(data, dict) or "error" not in data:
            return None
        if not data.get("error"):
            return None
        body = error_body_from_json(data)
        if body is None:
            return None
        status: int | None = None
        err = data["error"]
        code = err.get("code") if isinstance(err, dict) else None
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            value = int(code)
            status = value if 400 <= value <= 599 else None
        return classify_error(status, body, model=self.name, redact=self._redact, where=where)

    def event_error(self, data: Any, raw: str) -> ModelError:
        """The failure an SSE ``error`` event reports, whatever its payload looks like."""
        body = error_body_from_json(data) or ErrorBody(raw.strip()[:400])
        return classify_error(
            None, body, model=self.name, redact=self._redact, where="error event mid-stream"
        )

    def json_loads(self, text: str, *, what: str) -> Any:
        """``json.loads`` that raises :class:`OverloadedError` (a garbled reply) instead."""
        try:
            return decode_json(text)
        except ValueError:
            raise OverloadedError(
                self._redact(f"{self.name}: {what} is not valid JSON: {text[:200]!r}"),
                model=self.name,
            ) from None
