"""Durable storage of runs: the interface, an in-memory and a SQLite implementation."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from trellis.errors import StoreError
from trellis.store.base import FORMAT, CacheStats, CallRow, RunRow, StepRow, Store
from trellis.store.memory import MemoryStore
from trellis.store.pgurl import redact_url
from trellis.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "FORMAT",
    "CacheStats",
    "CallRow",
    "MemoryStore",
    "RunRow",
    "SQLiteStore",
    "StepRow",
    "Store",
    "open_store",
]

#: The embedded default, relative to the working directory.
DEFAULT_STORE_URL = "sqlite:///.trellis/trellis.db"


def open_store(url: str | None = None) -> Store:
    """A store from a URL: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``,
    ``sqlite:///path.db?synchronous=FULL``, ``postgresql://user@host:port/db`` (or
    ``postgres://``; the ``[postgres]`` extra), ``memory:``, or a plain file path. ``None``
    means ``$TRELLIS_STORE``, else ``sqlite:///.trellis/trellis.db``."""
    spec = url or os.environ.get("TRELLIS_STORE") or DEFAULT_STORE_URL
    if spec in ("memory:", "memory://"):
        return MemoryStore()
    if "://" not in spec:
        return SQLiteStore(Path(spec))
    parts = urlsplit(spec)
    if parts.scheme in ("postgresql", "postgres"):
        from trellis.store.postgres import PostgresStore  # needs the [postgres] extra

        return PostgresStore(spec)
    if parts.scheme != "sqlite":
        raise StoreError(
            f"unknown store URL {redact_url(spec)!r}; use sqlite:///path/to/trellis.db, "
            "postgresql://user@host:port/db or memory:"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise StoreError(f"store URL {spec!r} names no file")
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise StoreError(f"store URL {spec!r}: unknown option(s) {sorted(unknown)}")
    sync = options.get("synchronous", "NORMAL").upper()
    if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise StoreError(
            f"store URL {spec!r}: synchronous must be OFF, NORMAL, FULL or EXTRA, got {sync!r}"
        )
    return SQLiteStore(path, synchronous=sync)  # type: ignore[arg-type]
