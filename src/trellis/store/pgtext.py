"""How the Postgres store keeps any Python text exactly: NUL bytes, and JSON in ``jsonb``.

PostgreSQL's ``text`` cannot hold a NUL character and ``jsonb`` cannot hold ``\\u0000`` (nor
text that is not JSON). The store's contract is that every string comes back unchanged, so:

- ``text`` columns go through :func:`escape` / :func:`unescape`, an injective escaping of
  NUL with ``\\x01`` as the escape character (``\\x01`` → ``\\x01\\x01``, NUL →
  ``\\x01\\x02``). Text without either character — all real ids, keys and names — is stored
  as it is, so equality lookups on escaped values still use the indexes.
- JSON columns are ``jsonb``. A value :func:`fits_jsonb` is stored as that JSON document
  (Postgres normalises its whitespace and key order, as ``jsonb`` always does; the value is
  the same JSON). Anything else (not JSON, ``NaN``, ``\\u0000``, lone surrogates) is stored
  losslessly as a ``jsonb`` string of its escaped text, flagged in the row's ``raw`` bit mask
  so it is read back as the original text. The engine only ever writes JSON, so the flag is
  for foreign writers and odd data, never the common path.
"""

from __future__ import annotations

import json
import re

__all__ = ["decode_json", "encode_json", "escape", "fits_jsonb", "unescape"]

_ESCAPED = re.compile("\x01([\x01\x02])")


def escape(text: str) -> str:
    """``text`` without NUL characters, reversibly (see the module docstring)."""
    if "\x00" not in text and "\x01" not in text:
        return text
    return text.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")


def unescape(text: str) -> str:
    """The inverse of :func:`escape`."""
    if "\x01" not in text:
        return text
    return _ESCAPED.sub(lambda m: "\x01" if m.group(1) == "\x01" else "\x00", text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def fits_jsonb(text: str) -> bool:
    """Whether ``jsonb`` accepts ``text`` as a JSON document (and keeps its value)."""
    if "\\u0000" in text or "\\ud" in text or "\\uD" in text:
        return False  # NUL, and surrogates (a lone one is refused): keep the exact text
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return False
    return True


def encode_json(text: str | None, bit: int) -> tuple[str | None, int]:
    """The ``jsonb`` parameter for ``text`` and the ``raw`` bit to set (``bit`` or 0)."""
    if text is None or fits_jsonb(text):
        return text, 0
    return json.dumps(escape(text)), bit


def decode_json(stored: str | None, raw: int, bit: int) -> str | None:
    """The original text from a ``jsonb`` column read as ``::text`` and the row's mask."""
    if stored is None or not raw & bit:
        return stored
    return unescape(json.loads(stored))
