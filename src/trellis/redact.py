"""Which binding options may hold a secret, and binding options with those left out.

A URL-valued option keeps its host and path but loses its ``user:password@`` and any query
parameter named like a secret. Used wherever options are recorded or hashed: a run's
metadata (the CLI), the response cache's model identity (the engine). Keys, tokens and
passwords never leave the process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["is_secret_option", "redact_options", "redacted_url"]

_SECRET_WORDS = frozenset(
    {
        "key",
        "keys",
        "apikey",
        "apikeys",
        "token",
        "secret",
        "secrets",
        "password",
        "passwords",
        "passwd",
        "authorization",
        "auth",
        "bearer",
        "credential",
        "credentials",
        "cookie",
        "signature",
        "sig",  # a shared-access signature (Azure SAS: ``?sv=...&sig=...``)
    }
)
_SECRET_VALUE_PREFIXES = ("sk-", "sk_", "bearer ", "basic ", "ghp_", "xoxb-", "xoxp-")
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_option(name: str, value: object = None) -> bool:
    """Whether a binding option may hold a secret: its name has a word like key, token,
    secret, password or authorization (``api_key``, ``X-Api-Key``, ``authToken``; not
    ``max_tokens``), or its value looks like a key (``sk-...``, ``Bearer ...``). A name
    ending in ``env`` (``api_key_env``) names an environment variable, not a secret."""
    words = [w.lower() for w in _WORD.findall(name)]
    secret_name = any(w in _SECRET_WORDS for w in words) or name.lower() in _SECRET_WORDS
    if words and words[-1] == "env" and not _looks_secret(value):
        return False
    return secret_name or _looks_secret(value)


def _looks_secret(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(_SECRET_VALUE_PREFIXES)


#: Query parameters that carry a key in a URL although their name says nothing of it:
#: Azure Functions' ``?code=`` (a function key); only in a URL's query, where ``code``
#: cannot be anything else.
_SECRET_QUERY_NAMES = frozenset({"code"})


def _secret_query(name: str, value: str) -> bool:
    return name.lower() in _SECRET_QUERY_NAMES or is_secret_option(name, value)


def _clean_url(value: str) -> str | None:
    """``value`` without a URL's ``user:password@`` and without query parameters named like
    a secret (``?api-key=...``, ``&token=...``); None when there is nothing to remove."""
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = (parts.hostname or "") + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not _secret_query(k, v)]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    if netloc == parts.netloc and query == parts.query:
        return None
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def redacted_url(url: str) -> str:
    """``url`` as messages show it: without ``user:password@`` and with the value of every
    query parameter named like a secret replaced by ``[REDACTED]`` (the same rule as run
    metadata, :func:`is_secret_option`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable url]"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=[REDACTED]" if _secret_query(k, v) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Binding options safe to record, and the names of those dropped or cleaned."""
    kept: dict[str, Any] = {}
    redacted: list[str] = []
    for name, value in options.items():
        if is_secret_option(str(name), value):
            redacted.append(str(name))
            continue
        if isinstance(value, str):
            clean = _clean_url(value)
            if clean is not None:
                kept[name] = clean
                redacted.append(str(name))
                continue
        kept[name] = value
    return kept, redacted
