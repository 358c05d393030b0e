"""Shared HTTP plumbing for the provider clients.

Everything here is provider-neutral, and knows the OpenAI and Anthropic dialects only
where they differ on the wire:

* :func:`make_client`: one ``httpx.AsyncClient`` with timeouts and **no retries** (the
  engine's retry layer is the only one).
* :func:`resolve_api_key` and :class:`Redactor`: API keys from options or the environment,
  and their removal from every message, repr and URL we produce.
* :func:`retry_after_from_headers` and :func:`parse_rate_limit_headers`: how long a 429
  asks us to wait (``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date, else
  the ``x-ratelimit-reset-*`` / ``anthropic-ratelimit-*-reset`` headers) and what budget
  remains, for the client-side :class:`~trellis.providers.ratelimit.RateLimiter`.
* :func:`iter_sse`: a Server-Sent Events parser with an idle timeout.
* :func:`parse_error_body` and :func:`classify_error`: an HTTP status and error body (JSON
  in any dialect, HTML from a proxy, plain text) to the Trellis error tree.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import math
import os
import re
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)

__all__ = [
    "ErrorBody",
    "RateLimitHeaders",
    "Redactor",
    "SSEEvent",
    "StreamIdleTimeout",
    "classify_error",
    "is_context_overflow",
    "iter_sse",
    "make_client",
    "parse_duration",
    "parse_error_body",
    "parse_http_date",
    "parse_rate_limit_headers",
    "parse_rfc3339",
    "redact_url",
    "resolve_api_key",
    "retry_after_from_headers",
]

# -- the client -----------------------------------------------------------------------------


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


# -- keys and redaction ---------------------------------------------------------------------


def resolve_api_key(
    explicit: SecretStr | None,
    env_var: str,
    *,
    base_url: str,
    official_hosts: tuple[str, ...],
    provider: str,
    environ: Mapping[str, str] | None = None,
) -> SecretStr | None:
    """The API key: ``explicit`` if given, else the environment variable ``env_var``.

    A missing key is a :class:`ConfigurationError` naming the variable when ``base_url``
    points at one of the provider's ``official_hosts``; any other server (a local vLLM,
    Ollama, a mock) may run without one, and ``None`` is returned.
    """
    env = os.environ if environ is None else environ
    key = explicit.get_secret_value().strip() if explicit is not None else ""
    if not key:
        key = env.get(env_var, "").strip()
    if key:
        return SecretStr(key)
    host = (urlsplit(base_url).hostname or "").lower()
    if host in official_hosts:
        raise ConfigurationError(
            f"{provider}: no API key for {redact_url(base_url)}; set the environment variable "
            f"{env_var} (or name another one with api_key_env=...)"
        )
    return None


_KEY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1[REDACTED]"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-*.]{6,}"), "sk-[REDACTED]"),
    (
        re.compile(r"(?i)((?<![\w-])(?:x-)?api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"),
        r"\1[REDACTED]",
    ),
    (re.compile(r"(?i)(://)[^/\s@]+@"), r"\1[REDACTED]@"),
)


class Redactor:
    """Removes the given secrets, and anything that looks like a key, from text.

    Every error message a provider raises goes through one, so a key never reaches a log,
    a trace, a stored result or an exception message (``Bearer <key>``, ``sk-...``,
    ``api_key=...`` and credentials in URLs are masked even when they are not ours).
    """

    __slots__ = ("_secrets",)

    def __init__(self, *secrets: SecretStr | str | None) -> None:
        values = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
        self._secrets = tuple(sorted({v for v in values if v and len(v) >= 4}, key=len)[::-1])

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secret(s))"

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        for pattern, repl in _KEY_PATTERNS:
            text = pattern.sub(repl, text)
        return text


_SENSITIVE_QUERY = re.compile(r"(?i)^(api[_-]?key|key|token|access_token|sig|signature)$")


def redact_url(url: str) -> str:
    """``url`` without user info and without key-like query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable url]"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=[REDACTED]" if _SENSITIVE_QUERY.match(k) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# -- retry-after and rate-limit headers -----------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
#: A bare number this large is an epoch timestamp, not a number of seconds.
_EPOCH_THRESHOLD = 1e9


def parse_duration(text: str | None, *, now: float | None = None) -> float | None:
    """Seconds in a reset header: Go-style durations (``6m0s``, ``1.5s``, ``20ms``,
    ``1h2m3s``), a bare number of seconds (``"12"``, ``"0.5"``), or with ``now`` given a
    bare epoch timestamp (seconds since 1970, made relative to ``now``). ``None`` if it is
    none of these."""
    if text is None:
        return None
    value = text.strip().lower()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            return None
        if number >= _EPOCH_THRESHOLD and now is not None:
            return max(0.0, number - now)
        return max(0.0, number)
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        return None
    return total


def parse_http_date(text: str | None) -> float | None:
    """An HTTP date (``Wed, 21 Oct 2015 07:28:00 GMT``) as an epoch timestamp."""
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_tz(text.strip())
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError):
        return None


def parse_rfc3339(text: str | None) -> float | None:
    """An RFC 3339 time (``2024-05-01T12:00:05.5Z``) as an epoch timestamp."""
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _reset_seconds(text: str | None, now: float) -> float | None:
    """A reset header in either dialect: a duration / seconds, or an RFC 3339 time."""
    if text is None:
        return None
    seconds = parse_duration(text, now=now)
    if seconds is not None:
        return seconds
    stamp = parse_rfc3339(text)
    return None if stamp is None else max(0.0, stamp - now)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What a response said about the caller's remaining budget (``None``: not said)."""

    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: float | None = None  # the per-minute limits the server states
    limit_tokens: float | None = None

    @property
    def empty(self) -> bool:
        return (
            self.remaining_requests is None
            and self.remaining_tokens is None
            and self.reset_requests_s is None
            and self.reset_tokens_s is None
            and self.limit_requests is None
            and self.limit_tokens is None
        )

    def exhausted_reset(self) -> float | None:
        """Seconds until the budget that ran out resets (the later one if both did);
        without a ``remaining`` of 0, the later of the known resets; else ``None``."""
        exhausted = [
            reset
            for remaining, reset in (
                (self.remaining_requests, self.reset_requests_s),
                (self.remaining_tokens, self.reset_tokens_s),
            )
            if remaining is not None and remaining <= 0 and reset is not None
        ]
        if exhausted:
            return max(exhausted)
        known = [r for r in (self.reset_requests_s, self.reset_tokens_s) if r is not None]
        return max(known) if known else None


_ANTHROPIC_TOKEN_KINDS = ("tokens", "input-tokens", "output-tokens")


def parse_rate_limit_headers(headers: Mapping[str, str], *, now: float) -> RateLimitHeaders:
    """Remaining budget and reset times from OpenAI-style ``x-ratelimit-*`` headers
    (durations such as ``6m0s``) or Anthropic ``anthropic-ratelimit-*`` headers (RFC 3339
    reset times). For Anthropic's separate token limits the most exhausted one is used.
    ``now`` is the current epoch time."""
    h = _lower(headers)
    remaining_requests = _number(h.get("x-ratelimit-remaining-requests"))
    reset_requests = _reset_seconds(h.get("x-ratelimit-reset-requests"), now)
    remaining_tokens = _number(h.get("x-ratelimit-remaining-tokens"))
    reset_tokens = _reset_seconds(h.get("x-ratelimit-reset-tokens"), now)
    if remaining_requests is None:
        remaining_requests = _number(h.get("anthropic-ratelimit-requests-remaining"))
        reset_requests = _reset_seconds(h.get("anthropic-ratelimit-requests-reset"), now)
    if remaining_tokens is None:
        pairs = [
            (
                _number(h.get(f"anthropic-ratelimit-{kind}-remaining")),
                _reset_seconds(h.get(f"anthropic-ratelimit-{kind}-reset"), now),
            )
            for kind in _ANTHROPIC_TOKEN_KINDS
        ]
        known = [(r, t) for r, t in pairs if r is not None]
        if known:
            lowest = min(r for r, _ in known)
            remaining_tokens = lowest
            resets = [t for r, t in known if r == lowest and t is not None]
            reset_tokens = max(resets) if resets else None
    limit_requests = _number(h.get("x-ratelimit-limit-requests"))
    if limit_requests is None:
        limit_requests = _number(h.get("anthropic-ratelimit-requests-limit"))
    limit_tokens = _number(h.get("x-ratelimit-limit-tokens"))
    if limit_tokens is None:
        limit_tokens = _number(h.get("anthropic-ratelimit-tokens-limit"))
    return RateLimitHeaders(
        remaining_requests,
        remaining_tokens,
        reset_requests,
        reset_tokens,
        limit_requests,
        limit_tokens,
    )


def retry_after_from_headers(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds a 429 (or 503) asks the client to wait, or ``None`` if it does not say.

    In order: ``retry-after-ms``; ``retry-after`` as seconds; ``retry-after`` as an HTTP
    date (measured against the response's own ``Date`` header when present, so a skewed
    local clock does not matter); then the reset time of the exhausted rate limit from
    ``x-ratelimit-reset-*`` / ``anthropic-ratelimit-*-reset``. ``now`` is the epoch time.
    """
    h = _lower(headers)
    ms = _number(h.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000.0)
    raw = h.get("retry-after")
    if raw is not None:
        seconds = _number(raw)
        if seconds is not None:
            return max(0.0, seconds)
        stamp = parse_http_date(raw)
        if stamp is not None:
            reference = parse_http_date(h.get("date"))
            return max(0.0, stamp - (reference if reference is not None else now))
    return parse_rate_limit_headers(h, now=now).exhausted_reset()


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    if isinstance(headers, httpx.Headers):
        return {k.lower(): v for k, v in headers.items()}
    return {str(k).lower(): str(v) for k, v in headers.items()}


# -- Server-Sent Events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One Server-Sent Event: its ``event`` name (``"message"`` if unnamed) and data."""

    event: str
    data: str
    id: str | None = None


class StreamIdleTimeout(Exception):
    """No bytes arrived on a stream for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no data for {seconds:g}s")
        self.seconds = seconds


async def iter_sse(
    lines: AsyncIterable[str], *, idle_timeout: float | None = None
) -> AsyncGenerator[SSEEvent, None]:
    """Parse SSE from ``lines`` (without their line endings), per the WHATWG rules.

    ``data:`` lines of one event are joined with newlines; ``:`` comments are skipped
    (but, like every line, reset the idle clock); a blank line dispatches the event; an
    event still pending when the stream ends is dispatched too. If no line arrives for
    ``idle_timeout`` seconds, :class:`StreamIdleTimeout` is raised.
    """
    iterator = aiter(lines)
    event = ""
    data: list[str] = []
    last_id: str | None = None
    while True:
        try:
            if idle_timeout is None:
                line = await anext(iterator)
            else:
                async with asyncio.timeout(idle_timeout):
                    line = await anext(iterator)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise StreamIdleTimeout(idle_timeout or 0.0) from None
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data), last_id)


# -- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The provider's own account of an error, whatever the dialect."""

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None


_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")
_SCRIPT = re.compile(r"(?is)<(script|style)[^>]*>.*?</\1>")
_SPACE = re.compile(r"\s+")
_MAX_MESSAGE = 400


def _shorten(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _html_text(text: str) -> str:
    title = _TITLE.search(text)
    if title and title.group(1).strip():
        return html.unescape(_SPACE.sub(" ", title.group(1)).strip())
    body = _SCRIPT.sub(" ", text)
    return html.unescape(_SPACE.sub(" ", _TAG.sub(" ", body)).strip())


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def error_body_from_json(data: Any) -> ErrorBody | None:
    """An :class:`ErrorBody` from a decoded JSON error in any known dialect, else None.

    OpenAI ``{"error": {"message", "type", "code", "param"}}``; Anthropic ``{"type":
    "error", "error": {"type", "message"}}``; vLLM ``{"object": "error", "message", "type",
    "code"}``; Ollama / llama.cpp ``{"error": "text"}``; FastAPI ``{"detail": ...}``.
    """
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        message = err.get("message") or err.get("msg") or err.get("detail") or ""
        return ErrorBody(
            message=str(message) if not isinstance(message, str) else message,
            type=_str_or_none(err.get("type")),
            code=_str_or_none(err.get("code")),
            param=_str_or_none(err.get("param")),
        )
    if isinstance(err, str) and err:
        return ErrorBody(message=err, type=_str_or_none(data.get("type")))
    if data.get("object") == "error" or ("message" in data and "type" in data):
        message = data.get("message")
        if isinstance(message, dict) and message.get("detail"):  # Mistral's 422
            message = _detail_text(message["detail"])
        return ErrorBody(
            message=str(message or ""),
            type=_str_or_none(data.get("type")),
            code=_str_or_none(data.get("code")),
            param=_str_or_none(data.get("param")),
        )
    detail = data.get("detail")
    if detail:
        return ErrorBody(message=_detail_text(detail))
    if isinstance(data.get("message"), str):
        return ErrorBody(message=data["message"], code=_str_or_none(data.get("code")))
    return None


def _detail_text(detail: Any) -> str:
    """A FastAPI / pydantic ``detail`` (a list of ``{loc, msg}``, or text) as one line."""
    if isinstance(detail, list):
        parts = [
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', '')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail[:5]
        ]
        return "; ".join(parts)
    return str(detail)


def parse_error_body(text: str, content_type: str | None = None) -> ErrorBody:
    """The provider's message from an error response body: JSON in any dialect, an HTML
    page (its title, else its text), or plain text. Never empty-handed: an empty body
    gives an empty message."""
    stripped = text.strip()
    ctype = (content_type or "").lower()
    if stripped.startswith(("{", "[")) or "json" in ctype:
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        found = error_body_from_json(data)
        if found is not None:
            return ErrorBody(_shorten(found.message), found.type, found.code, found.param)
    if "html" in ctype or stripped.lower().startswith(("<!doctype", "<html", "<")):
        return ErrorBody(_shorten(_html_text(stripped)), type="html")
    return ErrorBody(_shorten(stripped))


_OVERFLOW = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|prompt is too long"
    r"|context window|exceeds? (?:the )?(?:available |model'?s? )?context"
    r"|input (?:is )?too long for (?:the )?model",
    re.IGNORECASE,
)
_QUOTA = re.compile(
    r"insufficient_quota|exceeded your current quota|credit balance is too low"
    r"|billing_hard_limit|out of credits",
    re.IGNORECASE,
)
_QUOTA_KINDS = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached"})
_RATE_KINDS = frozenset({"rate_limit_error", "rate_limit_exceeded", "requests", "tokens"})
_OVERLOAD_KINDS = frozenset(
    {
        "overloaded_error",
        "api_error",
        "server_error",
        "internal_server_error",
        "service_unavailable",
    }
)
_AUTH_KINDS = frozenset(
    {"authentication_error", "permission_error", "invalid_api_key", "unauthorized"}
)


def is_context_overflow(body: ErrorBody) -> bool:
    """Whether an error says the prompt does not fit the model's context, in any dialect:
    OpenAI ``context_length_exceeded``, Anthropic ``prompt is too long``, vLLM's ``This
    model's maximum context length is ... tokens``, llama.cpp's ``exceeds the available
    context size``."""
    if body.code == "context_length_exceeded" or body.type == "context_length_exceeded":
        return True
    return bool(_OVERFLOW.search(body.message))


def classify_error(
    status: int | None,
    body: ErrorBody,
    *,
    model: str,
    redact: Redactor,
    retry_after: float | None = None,
    where: str | None = None,
) -> ModelError:
    """The Trellis error for an HTTP ``status`` (``None``: an error event inside a stream)
    and the provider's ``body``; the message always carries the provider's own message.

    ======================================================  ===========================
    context length, in any dialect (400 / 413 / 422 / ...)  ContextOverflowError
    402, ``insufficient_quota``, ``billing_error``           QuotaExceededError
    429, ``rate_limit_error``                               RateLimitError(retry_after)
    5xx, 529, ``overloaded_error``, ``api_error`` (*)        OverloadedError
    408, ``timeout_error`` (*)                              ModelTimeoutError
    401, 403, ``authentication_error`` (*)                  AuthenticationError
    other 4xx (400, 404, 413, 422, ...)                     BadRequestError
    an unrecognised error event mid-stream                  OverloadedError
    ======================================================  ===========================

    (*) A label counts only without a 4xx status: for a 4xx the status decides (a 401
    labelled ``api_error``, as Ollama sends it, is an authentication error).
    """
    kinds = {k.lower() for k in (body.type, body.code) if k}
    head = f"HTTP {status}" if status is not None else (where or "error event in the stream")
    labels = [k for k in dict.fromkeys((body.type, body.code)) if k and k != "html"]
    if labels:
        head += " " + "/".join(labels)
    if body.param:
        head += f" (param {body.param})"
    text = body.message or "(no message)"
    message = redact(f"{model}: {head}: {text}")
    kw: dict[str, Any] = {"model": model, "status_code": status}

    quota = status == 402 or bool(kinds & _QUOTA_KINDS) or bool(_QUOTA.search(body.message))
    rate = status == 429 or "rate_limit_error" in kinds or (status is None and kinds & _RATE_KINDS)
    if status in (400, 413, 422, None) and not (quota or rate) and is_context_overflow(body):
        return ContextOverflowError(message, **kw)
    if quota:
        return QuotaExceededError(message, **kw)
    if rate:
        return RateLimitError(message, retry_after=retry_after, **kw)
    # Beyond quota and rate limits, a 4xx status decides and the body's label does not:
    # Ollama labels its 401 / 403 "api_error", which elsewhere means a server fault.
    client_error = status is not None and 400 <= status < 500
    if (
        (status is not None and status >= 500)
        or (not client_error and bool(kinds & _OVERLOAD_KINDS))
        or (status is None and "overloaded" in body.message.lower())
    ):
        return OverloadedError(message, **kw)
    if status == 408 or (not client_error and "timeout_error" in kinds):
        return ModelTimeoutError(message, **kw)
    if status in (401, 403) or (not client_error and kinds & _AUTH_KINDS):
        return AuthenticationError(message, **kw)
    if status is None:
        return OverloadedError(message, **kw)
    return BadRequestError(message, **kw)
