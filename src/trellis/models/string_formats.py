"""Sample strings for JSON schema ``format`` values (date-time, email, uri, uuid, ip...)."""

from __future__ import annotations

import datetime as _dt
import random
import re
import string
import uuid
from collections.abc import Sequence

from trellis.models.prose import pick_word

__all__ = ["ascii_word", "format_value"]


def format_value(fmt: str, rng: random.Random, words: Sequence[str]) -> str | None:
    """A string of format ``fmt`` (words of the prompt where it takes text), or None for
    a format it does not know."""
    fmt = fmt.lower()
    if fmt == "date-time":
        return _random_datetime(rng).isoformat().replace("+00:00", "Z")
    if fmt == "date":
        return _random_datetime(rng).date().isoformat()
    if fmt == "time":
        return _random_datetime(rng).time().replace(microsecond=0).isoformat()
    if fmt == "duration":
        return f"PT{rng.randint(1, 90)}M"
    if fmt in ("email", "idn-email"):
        local = ".".join(ascii_word(pick_word(rng, words)) for _ in range(rng.randint(1, 2)))
        return f"{local}@example.com"
    if fmt.startswith(("uri", "url", "iri")):
        return f"https://www.example.com/{ascii_word(pick_word(rng, words))}"
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if fmt.startswith("ip"):  # ipv4, ipv6, ipvanyaddress, ipv4network, ipvanyinterface...
        v6 = fmt.startswith("ipv6")
        if "network" in fmt:
            return "2001:db8::/64" if v6 else f"10.{rng.randint(0, 255)}.0.0/16"
        if v6:
            addr = f"2001:db8::{rng.randint(1, 0xFFFF):x}"
        else:
            addr = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        return f"{addr}/{64 if v6 else 24}" if "interface" in fmt else addr
    if fmt in ("hostname", "idn-hostname"):
        return f"{ascii_word(pick_word(rng, words))}.example.com"
    if fmt == "path":
        return f"/tmp/{ascii_word(pick_word(rng, words))}.txt"
    if fmt in ("binary", "base64", "base64url", "password"):
        return "".join(rng.choice(string.ascii_letters) for _ in range(12))
    return None


def ascii_word(w: str) -> str:
    return re.sub(r"[^a-z0-9]", "", w.lower()) or "item"


def _random_datetime(rng: random.Random) -> _dt.datetime:
    start = _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
    return start + _dt.timedelta(seconds=rng.randint(0, 6 * 365 * 24 * 3600))
