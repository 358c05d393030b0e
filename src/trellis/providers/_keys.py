"""API keys and their redaction: keys from options or the environment
(:func:`resolve_api_key`), and their removal from every message, repr and URL a provider
produces (:class:`Redactor`, :func:`redact_url`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import SecretStr

from trellis.errors import (
    ConfigurationError,
)
from trellis.redact import redacted_url

__all__ = ["Redactor", "on_official_host", "redact_url", "resolve_api_key"]


def on_official_host(
    base_url: str, hosts: tuple[str, ...], suffixes: tuple[str, ...] = ()
) -> bool:
    """Whether ``base_url`` points at one of a provider's own API hosts: one of ``hosts``,
    or a host ending in one of ``suffixes`` (case-insensitive)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host in hosts or (bool(suffixes) and host.endswith(suffixes))


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
    if on_official_host(base_url, official_hosts):
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


def redact_url(url: str) -> str:
    """``url`` without user info and without the values of key-like query parameters (the
    rule of :mod:`trellis.redact`, which run metadata and the cache identity use too)."""
    return redacted_url(url)
