"""The one JSON encoder of the CLI's output: ``--json`` on every command and the lines of
an ``--output`` file.

- Always valid JSON: a float that JSON cannot hold (``NaN``, ``Infinity``) is written as
  ``null``, and ``allow_nan=False`` guards that none slips through.
- Nothing lost, always writable: text stays as it is (non-ASCII included), except a lone
  surrogate (``"\\ud800"``, which UTF-8 cannot encode but a step may return and the store
  records escaped), written as its JSON escape ``\\ud800``; ``json.loads`` reads it back
  to the same string.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["finite", "json_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def finite(value: Any) -> Any:
    """``value`` (plain JSON types) with every non-finite float replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(value: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` (plain JSON types) as JSON text that UTF-8 can always encode."""
    text = json.dumps(
        finite(value), indent=indent, ensure_ascii=False, allow_nan=False, sort_keys=sort_keys
    )
    # Outside strings JSON text is ASCII, so a surrogate is always inside a string literal,
    # where its \u escape means the same code point.
    return _SURROGATE.sub(_escape, text)
