"""Error replies: an HTTP status and error body (JSON in any dialect, HTML from a proxy,
plain text) parsed (:func:`parse_error_body`) and classified into the Trellis error tree
(:func:`classify_error`)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from trellis.errors import (
    AuthenticationError,
    BadRequestError,
    ContextOverflowError,
    ModelError,
    ModelTimeoutError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
)
from trellis.providers._keys import Redactor

__all__ = [
    "ErrorBody",
    "classify_error",
    "error_body_from_json",
    "is_context_overflow",
    "parse_error_body",
]


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
