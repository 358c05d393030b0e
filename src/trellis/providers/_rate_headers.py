"""Rate-limit headers: how long a 429 asks a client to wait (``retry-after-ms``,
``retry-after`` in seconds or as an HTTP date, else the ``x-ratelimit-reset-*`` /
``anthropic-ratelimit-*-reset`` headers) and what budget remains, for the client-side
:class:`~trellis.providers.ratelimit.RequestPacer`."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

__all__ = [
    "RateLimitHeaders",
    "parse_duration",
    "parse_http_date",
    "parse_rate_limit_headers",
    "parse_rfc3339",
    "retry_after_from_headers",
]


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
_NOT_SAID = RateLimitHeaders()


def parse_rate_limit_headers(headers: Mapping[str, str], *, now: float) -> RateLimitHeaders:
    """Remaining budget and reset times from OpenAI-style ``x-ratelimit-*`` headers
    (durations such as ``6m0s``) or Anthropic ``anthropic-ratelimit-*`` headers (RFC 3339
    reset times). For Anthropic's separate token limits the most exhausted one is used.
    ``now`` is the current epoch time."""
    h = _lower(headers)
    if not any("ratelimit-" in name for name in h):
        return _NOT_SAID  # most replies (and every local server's)
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
    """``headers`` by lower-case name; a repeated header's values joined by ``", "`` (as
    ``httpx.Headers`` joins them; a multidict, such as aiohttp's, lists each)."""
    if isinstance(headers, httpx.Headers | dict):
        return {str(k).lower(): str(v) for k, v in headers.items()}
    out: dict[str, str] = {}
    for k, v in headers.items():
        name = str(k).lower()
        out[name] = f"{out[name]}, {v}" if name in out else str(v)
    return out
