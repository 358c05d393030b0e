"""The per-server token: every write (an answer to a waiting step) needs it, and so does
every page when the server listens beyond loopback (as Jupyter does)."""

from __future__ import annotations

import ipaddress
import secrets

__all__ = ["COOKIE", "HEADER", "is_loopback", "new_token", "token_matches"]

COOKIE = "trellis_ui_token"
HEADER = "x-trellis-token"


def new_token() -> str:
    """A fresh random token (printed with the URL at start)."""
    return secrets.token_urlsafe(24)


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is the server's token (compared in constant time)."""
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
