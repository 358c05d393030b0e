"""Shared HTTP plumbing: header parsing, redaction, keys, SSE, and the error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
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
from trellis.providers._client import make_client
from trellis.providers._errors import ErrorBody, classify_error, parse_error_body
from trellis.providers._keys import Redactor, redact_url, resolve_api_key
from trellis.providers._rate_headers import (
    parse_duration,
    parse_http_date,
    parse_rate_limit_headers,
    parse_rfc3339,
    retry_after_from_headers,
)
from trellis.providers._sse import SSEEvent, StreamIdleTimeout, iter_sse

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


# -- durations and dates --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("250us", 0.00025),
        ("12", 12.0),
        ("0.5", 0.5),
        (" 2s ", 2.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "5 s", "1x", "s", "nan", "-"])
def test_parse_duration_rejects_garbage(text: str | None) -> None:
    assert parse_duration(text) is None


def test_parse_duration_reads_epoch_timestamps_relative_to_now() -> None:
    assert parse_duration(str(NOW + 7), now=NOW) == pytest.approx(7.0)


def test_parse_dates() -> None:
    assert parse_http_date("Tue, 14 Nov 2023 22:13:30 GMT") == NOW + 10
    assert parse_http_date("not a date") is None
    assert parse_rfc3339("2023-11-14T22:13:21.5Z") == NOW + 1.5
    assert parse_rfc3339("2023-11-14T23:13:20+01:00") == NOW
    assert parse_rfc3339("2023-11-14T22:13:20") is None  # no time zone: ambiguous
    assert parse_rfc3339("yesterday") is None


# -- retry-after ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"Retry-After-Ms": "20", "Retry-After": "9"}, 0.02),  # ms wins
        # an HTTP date, against the response's own Date header (local clock skew is moot)
        (
            {
                "retry-after": "Tue, 14 Nov 2023 22:14:00 GMT",
                "date": "Tue, 14 Nov 2023 22:13:50 GMT",
            },
            10.0,
        ),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:32 GMT"}, 12.0),  # against `now`
        ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),  # in the past
        # OpenAI reset durations: the exhausted limit's reset
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "5000",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            1.5,
        ),
        (
            {
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "20ms",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            360.0,
        ),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "3s",
            },
            3.0,
        ),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1s"}, 1.0),
        # Anthropic RFC 3339 reset times
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:24Z",
                "anthropic-ratelimit-tokens-remaining": "900",
                "anthropic-ratelimit-tokens-reset": "2023-11-14T22:14:20Z",
            },
            4.0,
        ),
        (
            {
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:22.5Z",
                "anthropic-ratelimit-output-tokens-remaining": "100",
                "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:59Z",
            },
            2.5,
        ),
        ({}, None),
        ({"retry-after": "whenever"}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], expected: float | None) -> None:
    got = retry_after_from_headers(headers, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_retry_after_reads_httpx_headers() -> None:
    assert retry_after_from_headers(httpx.Headers({"Retry-After": "3"}), now=NOW) == 3.0


def test_parse_rate_limit_headers_both_dialects() -> None:
    openai = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-reset-tokens": "9ms",
        },
        now=NOW,
    )
    assert openai.remaining_requests == 4999
    assert openai.remaining_tokens == 159976
    assert openai.reset_requests_s == pytest.approx(0.012)
    assert openai.reset_tokens_s == pytest.approx(0.009)
    anthropic = parse_rate_limit_headers(
        {
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:30Z",
        },
        now=NOW,
    )
    assert (anthropic.remaining_requests, anthropic.remaining_tokens) == (49, 39000)
    assert (anthropic.reset_requests_s, anthropic.reset_tokens_s) == (1.0, 10.0)
    assert parse_rate_limit_headers({"content-type": "x"}, now=NOW).empty


# -- keys and redaction ---------------------------------------------------------------------


def test_redactor_removes_secrets_and_key_shapes() -> None:
    redact = Redactor(SecretStr("my-local-secret-123"), None, "")
    text = redact(
        "failed with my-local-secret-123; Authorization: Bearer abc.def; key sk-proj-ABCDEF123456;"
        " url https://user:pw@host/v1?api_key=zzz; {'x-api-key': 'qqq'}"
    )
    for leaked in ("my-local-secret-123", "abc.def", "ABCDEF123456", "user:pw", "zzz", "qqq"):
        assert leaked not in text
    assert "[REDACTED]" in text
    assert repr(redact) == "Redactor(1 secret(s))"


def test_redact_url() -> None:
    assert redact_url("https://u:p@example.com/v1?key=abc&x=1") == (
        "https://example.com/v1?key=[REDACTED]&x=1"
    )
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_resolve_api_key_prefers_explicit_then_env() -> None:
    kw = {"base_url": "https://api.openai.com/v1", "official_hosts": ("api.openai.com",)}
    key = resolve_api_key(
        SecretStr("explicit"), "K", environ={"K": "env"}, provider="openai:x", **kw
    )
    assert key is not None and key.get_secret_value() == "explicit"
    key = resolve_api_key(None, "K", environ={"K": " env \n"}, provider="openai:x", **kw)
    assert key is not None and key.get_secret_value() == "env"


def test_missing_key_for_official_api_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="MY_KEY_VAR"):
        resolve_api_key(
            None,
            "MY_KEY_VAR",
            base_url="https://api.openai.com/v1",
            official_hosts=("api.openai.com",),
            provider="openai:x",
            environ={"MY_KEY_VAR": "  "},
        )


def test_missing_key_is_fine_for_a_local_server() -> None:
    assert (
        resolve_api_key(
            None,
            "MY_KEY_VAR",
            base_url="http://127.0.0.1:8000/v1",
            official_hosts=("api.openai.com",),
            provider="openai:x",
            environ={},
        )
        is None
    )


# -- the client -----------------------------------------------------------------------------


async def test_make_client_sets_timeouts_and_no_redirects() -> None:
    async with make_client(timeout=5.0, connect_timeout=2.0) as client:
        assert client.timeout.read == 5.0
        assert client.timeout.connect == 2.0
        assert client.timeout.pool is None
        assert client.follow_redirects is False
        pool = getattr(client._transport, "_pool", None)
        if pool is not None and hasattr(pool, "_retries"):
            assert pool._retries == 0


# -- SSE ------------------------------------------------------------------------------------


async def _lines(items: list[str | float]) -> AsyncIterator[str]:
    for item in items:
        if isinstance(item, str):
            yield item
        else:
            await asyncio.sleep(item)


async def _collect(items: list[str | float], idle: float | None = None) -> list[SSEEvent]:
    return [e async for e in iter_sse(_lines(items), idle_timeout=idle)]


async def test_iter_sse_parses_events() -> None:
    events = await _collect(
        [
            ": keep-alive comment",
            "event: message_start",
            'data: {"a":',
            "data: 1}",
            "id: 7",
            "",
            "",
            "data:no-space",
            "",
            "retry: 100",
            "data: [DONE]",  # no trailing blank line: still dispatched
        ]
    )
    assert events == [
        SSEEvent("message_start", '{"a":\n1}', "7"),
        SSEEvent("message", "no-space", "7"),
        SSEEvent("message", "[DONE]", "7"),
    ]


async def test_iter_sse_idle_timeout() -> None:
    with pytest.raises(StreamIdleTimeout, match=r"0\.05"):
        await _collect(["data: 1", "", 1.0, "data: 2", ""], idle=0.05)


async def test_iter_sse_comments_keep_a_slow_stream_alive() -> None:
    events = await _collect(["data: 1", "", 0.03, ": ping", 0.03, "data: 2", ""], idle=0.05)
    assert [e.data for e in events] == ["1", "2"]


# -- error bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ctype", "expected"),
    [
        (
            '{"error": {"message": "Bad key", "type": "invalid_request_error", '
            '"param": null, "code": "invalid_api_key"}}',
            "application/json",
            ErrorBody("Bad key", "invalid_request_error", "invalid_api_key"),
        ),
        (
            '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            "application/json",
            ErrorBody("Overloaded", "overloaded_error"),
        ),
        (
            '{"object": "error", "message": "This model\'s maximum context length is 4096 '
            'tokens.", "type": "BadRequestError", "param": null, "code": 400}',
            "application/json",
            ErrorBody(
                "This model's maximum context length is 4096 tokens.", "BadRequestError", "400"
            ),
        ),
        ('{"error": "model \\"x\\" not found"}', None, ErrorBody('model "x" not found')),
        (
            '{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}',
            "application/json",
            ErrorBody("body.messages: field required"),
        ),
        (
            "<html><head><title>413 Request Entity Too Large</title></head><body><center>"
            "<h1>413</h1></center><hr><center>nginx</center></body></html>",
            "text/html",
            ErrorBody("413 Request Entity Too Large", "html"),
        ),
        (
            "<html><body><script>x()</script><h1>502 Bad Gateway</h1></body></html>",
            "text/html; charset=utf-8",
            ErrorBody("502 Bad Gateway", "html"),
        ),
        ("upstream connect error", "text/plain", ErrorBody("upstream connect error")),
        ("", None, ErrorBody("")),
        ("{not json", "application/json", ErrorBody("{not json")),
    ],
)
def test_parse_error_body(text: str, ctype: str | None, expected: ErrorBody) -> None:
    assert parse_error_body(text, ctype) == expected


def test_parse_error_body_shortens_huge_pages() -> None:
    body = parse_error_body("x" * 10_000, "text/plain")
    assert len(body.message) <= 400
    assert body.message.endswith("...")


# -- classification -------------------------------------------------------------------------

_REDACT = Redactor("secret-key-value")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, ErrorBody("Rate limit reached", "requests", "rate_limit_exceeded"), RateLimitError),
        (
            429,
            ErrorBody("You exceeded your current quota", "insufficient_quota"),
            QuotaExceededError,
        ),
        (402, ErrorBody("Payment required"), QuotaExceededError),
        (
            400,
            ErrorBody("Your credit balance is too low", "invalid_request_error"),
            QuotaExceededError,
        ),
        (400, ErrorBody("x", "billing_error"), QuotaExceededError),
        (500, ErrorBody("The server had an error", "server_error"), OverloadedError),
        (502, ErrorBody("502 Bad Gateway", "html"), OverloadedError),
        (503, ErrorBody(""), OverloadedError),
        (504, ErrorBody("Gateway Timeout", "html"), OverloadedError),
        (529, ErrorBody("Overloaded", "overloaded_error"), OverloadedError),
        (408, ErrorBody("Request Timeout"), ModelTimeoutError),
        (400, ErrorBody("Invalid 'messages'", "invalid_request_error"), BadRequestError),
        (
            401,
            ErrorBody("Incorrect API key", "invalid_request_error", "invalid_api_key"),
            AuthenticationError,
        ),
        (403, ErrorBody("Region not supported", "permission_error"), AuthenticationError),
        (
            404,
            ErrorBody("The model does not exist", "invalid_request_error", "model_not_found"),
            BadRequestError,
        ),
        (413, ErrorBody("413 Request Entity Too Large", "html"), BadRequestError),
        (422, ErrorBody("body.messages: field required"), BadRequestError),
        (409, ErrorBody("conflict"), BadRequestError),
        (
            400,
            ErrorBody(
                "This model's maximum context length is 128000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            ContextOverflowError,
        ),
        (
            400,
            ErrorBody(
                "prompt is too long: 210000 tokens > 200000 maximum", "invalid_request_error"
            ),
            ContextOverflowError,
        ),
        (
            400,
            ErrorBody(
                "This model's maximum context length is 4096 tokens. However, you requested "
                "5000 tokens (4000 in the messages, 1000 in the completion).",
                "BadRequestError",
                "400",
            ),
            ContextOverflowError,
        ),
        (
            400,
            ErrorBody("the request exceeds the available context size, try increasing it"),
            ContextOverflowError,
        ),
        (413, ErrorBody("input is too long for model"), ContextOverflowError),
        # errors inside a stream (no HTTP status)
        (None, ErrorBody("Overloaded", "overloaded_error"), OverloadedError),
        (None, ErrorBody("The server had an error", "server_error"), OverloadedError),
        (None, ErrorBody("something odd"), OverloadedError),
        (None, ErrorBody("slow down", "rate_limit_error"), RateLimitError),
        (None, ErrorBody("prompt is too long", "invalid_request_error"), ContextOverflowError),
    ],
)
def test_classify_error(status: int | None, body: ErrorBody, expected: type[ModelError]) -> None:
    error = classify_error(status, body, model="openai:m", redact=_REDACT, retry_after=2.0)
    assert type(error) is expected
    assert error.status_code == status
    assert error.model == "openai:m"
    assert str(error).startswith("openai:m: ")
    if body.message:
        assert body.message in str(error)
    if isinstance(error, RateLimitError):
        assert error.retry_after == 2.0


def test_classify_error_message_carries_type_code_and_param_never_the_key() -> None:
    error = classify_error(
        400,
        ErrorBody("bad key secret-key-value here", "invalid_request_error", "bad", "messages"),
        model="openai:m",
        redact=_REDACT,
    )
    text = str(error)
    assert "HTTP 400 invalid_request_error/bad (param messages)" in text
    assert "secret-key-value" not in text
