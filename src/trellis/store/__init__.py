"""Durable storage of runs: the interface, an in-memory and a SQLite implementation."""

from __future__ import annotations

import os

from trellis.store.base import FORMAT, CacheStats, CallRow, RunRow, StepRow, Store
from trellis.store.memory import MemoryStore
from trellis.store.sqlite import SQLiteStore
from trellis.store.url import StoreLocation, parse_store_url

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
    "StoreLocation",
    "open_store",
    "parse_store_url",
]

#: The embedded default, relative to the working directory.
DEFAULT_STORE_URL = "sqlite:///.trellis/trellis.db"


def open_store(url: str | None = None) -> Store:
    """A store from a URL: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``,
    ``sqlite:///path.db?synchronous=FULL``, ``postgresql://user@host:port/db`` (or
    ``postgres://``; the ``[postgres]`` extra), ``memory:``, or a plain file path (ending in
    ``.db`` or naming its folder; see :mod:`trellis.store.url`). ``None`` means
    ``$TRELLIS_STORE``, else ``sqlite:///.trellis/trellis.db``."""
    spec = url or os.environ.get("TRELLIS_STORE") or DEFAULT_STORE_URL
    location = parse_store_url(spec)
    if location.kind == "postgres" and location.url is not None:
        from trellis.store.postgres import PostgresStore  # needs the [postgres] extra

        return PostgresStore(location.url)
    if location.kind == "memory" or location.path is None:
        return MemoryStore()
    return SQLiteStore(location.path, synchronous=location.synchronous)
