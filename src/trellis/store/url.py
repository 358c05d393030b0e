"""Store URLs: which store a ``--store`` / ``$TRELLIS_STORE`` / ``Engine(store=...)`` names.

Accepted forms:

- ``memory:`` (also ``memory://`` and a bare ``memory``): the in-memory store;
- ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``, with an optional
  ``?synchronous=OFF|NORMAL|FULL|EXTRA``;
- ``postgresql://user@host:port/db`` (or ``postgres://``; ``postgresql:///db`` for the
  local Unix socket): a PostgreSQL database (the ``[postgres]`` extra);
- a plain file path that is recognisably a path: it names a folder (``runs/t.db``,
  ``./runs``) or ends in ``.db``, ``.sqlite`` or ``.sqlite3``.

Anything else — a bare word such as ``sqlite`` or ``mystore``, an unknown scheme — is a
:class:`StoreError` naming these forms, rather than a database file created under an
unintended name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from trellis.errors import StoreError
from trellis.store.pgurl import redact_url

__all__ = ["ACCEPTED_FORMS", "StoreLocation", "parse_store_url"]

ACCEPTED_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path ending in .db "
    "(or naming its folder: ./name), postgresql://user@host:port/db, or memory:"
)

_MEMORY = ("memory:", "memory://", "memory")
_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: not a drive

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreLocation:
    """What a store URL names: the memory store, a SQLite file and its options, or a
    PostgreSQL database (``url``: the URL as given, password included — never show it)."""

    kind: Literal["memory", "sqlite", "postgres"]
    path: str | None = None  # the SQLite file (":memory:" for an in-memory database)
    synchronous: Synchronous = "NORMAL"
    query: str = ""  # the URL's options as given
    url: str | None = None  # a PostgreSQL URL


def parse_store_url(spec: str) -> StoreLocation:
    """Where ``spec`` points; a :class:`StoreError` when it is not one of the accepted forms."""
    text = spec.strip()
    if text in _MEMORY:
        return StoreLocation(kind="memory")
    if "://" not in text:
        return StoreLocation(kind="sqlite", path=_plain_path(spec))
    parts = urlsplit(text)
    if parts.scheme in ("postgresql", "postgres"):
        return StoreLocation(kind="postgres", url=text)
    if parts.scheme != "sqlite":
        raise StoreError(f"unknown store URL {redact_url(spec)!r}; use {ACCEPTED_FORMS}")
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
    return StoreLocation(kind="sqlite", path=path, synchronous=sync, query=parts.query)  # type: ignore[arg-type]


def _plain_path(spec: str) -> str:
    if not spec.strip():
        raise StoreError(f"the store is empty; use {ACCEPTED_FORMS}")
    if _SCHEME.match(spec):
        raise StoreError(f"unknown store URL {spec!r}; use {ACCEPTED_FORMS}")
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    names_folder = any(sep in spec for sep in separators)
    if names_folder or spec.lower().endswith(_DATABASE_SUFFIXES):
        return spec
    raise StoreError(
        f"store {spec!r} is neither a store URL nor a database path; use {ACCEPTED_FORMS}"
    )
