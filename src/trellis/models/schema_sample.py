"""Deterministic sample values for a JSON schema, as the offline simulator's "model output".

:func:`sample_value` walks a JSON schema (as produced by pydantic's ``model_json_schema()``)
and draws a value that is valid for it, using only the given :class:`random.Random`: the
same schema, rng state and hint always give the same value. Strings are short plausible
English built from the words of ``hint_text`` (normally the prompt) and a small built-in
vocabulary, so a simulated reply reads like a real one and varies with the prompt.

Supported keywords: ``$ref`` (into the root schema, e.g. ``#/$defs/Name``), ``type`` (also
as a list), ``enum``, ``const``, ``anyOf``/``oneOf`` (one branch; ``null`` only sometimes),
``allOf`` (merged), ``properties``/``required``/``additionalProperties``/``propertyNames``/
``minProperties``/``maxProperties``, ``items``/``prefixItems``/``minItems``/``maxItems``/
``uniqueItems``, ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/
``multipleOf``, ``minLength``/``maxLength``/``pattern`` (simple regular expressions) and
``format`` (date, date-time, time, duration, email, uri, uuid, ipv4, ipv6, hostname...).

:func:`sample_prose` gives the free-text equivalent, and :func:`corrupt_value` turns a valid
value into one that parses as JSON but fails the schema (for the simulator's faults).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import math
import random
import re
import string
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["corrupt_value", "hint_words", "sample_prose", "sample_value"]

Schema = Mapping[str, Any]

# Past this nesting depth the sampler goes minimal: optional fields are left out, arrays
# get their minimum length and Optional picks null, so recursive models terminate.
_SOFT_DEPTH = 6
_HARD_DEPTH = 64

_ANNOTATION_KEYS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"}
)

_NOUNS = (
    "report", "customer", "order", "system", "team", "result", "request", "update",
    "issue", "account", "product", "service", "process", "data", "review", "plan",
    "feature", "project", "message", "policy", "market", "design", "schedule", "budget",
)  # fmt: skip
_ADJECTIVES = (
    "clear", "important", "recent", "simple", "detailed", "useful", "likely", "stable",
    "quick", "careful", "relevant", "solid", "strong", "minor", "promising", "practical",
)  # fmt: skip
_VERBS = (
    "describes", "supports", "improves", "requires", "explains", "covers", "highlights",
    "affects", "includes", "suggests", "mentions", "shows",
)  # fmt: skip
_TEMPLATES = (
    "The {a} {v} the {j} {b}.",
    "{A} {v} {b} and {c}.",
    "This {n} {v} {a} in a {j} way.",
    "Overall, the {a} looks {j}.",
    "{A} is {j} for the {b}.",
    "We found that {a} {v} the {b}.",
    "The main point is that {a} {v} {b}.",
    "In short, {a} and {b} are {j}.",
)
_STOPWORDS = frozenset(
    """the and for with that this from into onto your you are was were has have had not
    but can could would should will shall may might must its it's they them their there
    here what which who whom whose when where why how all any each few more most other
    some such only own same than too very just also about above below over under again
    then once both does did doing been being our ours out off per via please return
    given following json schema answer reply respond output field fields value values
    using use based one two three""".split()  # noqa: SIM905
)
_PHRASE_NAMES = (
    "name", "title", "label", "category", "tag", "topic", "keyword", "key", "type", "kind",
    "role", "status", "word", "term", "entity", "subject", "city", "country", "author",
    "company", "language", "genre", "team", "owner", "product", "heading",
)  # fmt: skip
_LONG_TEXT_NAMES = (
    "summary", "description", "explanation", "reason", "rationale", "answer", "body",
    "content", "text", "analysis", "detail", "response", "reply", "feedback", "comment",
    "note", "justification", "critique", "evidence", "abstract", "draft",
)  # fmt: skip
_SCORE_NAMES = ("confidence", "probability", "score", "likelihood", "certainty")


# --------------------------------------------------------------------------- words / prose


@functools.lru_cache(maxsize=512)
def hint_words(hint_text: str) -> tuple[str, ...]:
    """The distinct content words of ``hint_text``, lower-cased, in order (at most 64)."""
    out: dict[str, None] = {}
    for w in re.findall(r"[A-Za-z]{3,}", hint_text):
        lw = w.lower()
        if lw not in _STOPWORDS and len(lw) <= 20:
            out[lw] = None
            if len(out) >= 64:
                break
    return tuple(out)


_NAME_RE = re.compile(r"\b[A-Z][a-zA-Z'&.-]+(?:\s+(?:of\s+|de\s+|van\s+)?[A-Z][a-zA-Z'&.-]+)*")
_ENTITY_FIELDS = (
    "name", "entity", "entities", "subject", "object", "source", "target", "person",
    "persons", "people", "organization", "organizations", "location", "locations", "company",
    "place", "author", "owner",
)  # fmt: skip


@functools.lru_cache(maxsize=512)
def hint_names(hint_text: str) -> tuple[str, ...]:
    """Capitalised names in ``hint_text`` ("Amara Okonkwo", "Lumen Docs"), in order.

    Entity-like string fields reuse them, the way a real model quotes names from its prompt,
    so that later steps can link what earlier steps extracted.
    """
    out: dict[str, None] = {}
    for match in _NAME_RE.findall(hint_text):
        name = match.strip(" .'&-")
        if len(name) >= 3 and name.lower() not in _STOPWORDS:
            out[name] = None
            if len(out) >= 64:
                break
    return tuple(out)


def _word(rng: random.Random, words: Sequence[str]) -> str:
    if words and rng.random() < 0.7:
        return rng.choice(words)
    return rng.choice(_NOUNS)


def _other_word(rng: random.Random, words: Sequence[str], avoid: tuple[str, ...]) -> str:
    w = _word(rng, words)
    for _ in range(3):
        if w not in avoid:
            break
        w = _word(rng, words)
    return w


def _sentence(rng: random.Random, words: Sequence[str]) -> str:
    template = rng.choice(_TEMPLATES)
    a = _word(rng, words)
    b = _other_word(rng, words, (a,))
    c = _other_word(rng, words, (a, b))
    s = template.format(
        a=a, A=a, b=b, c=c, n=rng.choice(_NOUNS), v=rng.choice(_VERBS), j=rng.choice(_ADJECTIVES)
    )
    return s[0].upper() + s[1:]


def _phrase(rng: random.Random, words: Sequence[str], *, title: bool = False) -> str:
    n = rng.choice((1, 2, 2, 3))
    parts: list[str] = []
    for _ in range(n):
        parts.append(_other_word(rng, words, tuple(parts)))
    if title:
        return " ".join(p.capitalize() for p in parts)
    return " ".join(parts)


def sample_prose(rng: random.Random, hint_text: str = "", *, sentences: int = 2) -> str:
    """``sentences`` short plausible English sentences using words of ``hint_text``."""
    words = hint_words(hint_text)
    return " ".join(_sentence(rng, words) for _ in range(max(1, sentences)))


# --------------------------------------------------------------------------- schema walking


class _SchemaError(ValueError):
    pass


def _pointer(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#"):
        raise _SchemaError(f"only local $ref are supported, got {ref!r}")
    node: Any = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _SchemaError(f"unresolvable $ref {ref!r}")
    if not isinstance(node, Mapping):
        raise _SchemaError(f"$ref {ref!r} does not point at a schema")
    return node


def _is_score_name(name: str) -> bool:
    lname = name.lower()
    return any(s in lname for s in _SCORE_NAMES)


def _name_has(name: str, needles: Sequence[str]) -> bool:
    lname = name.lower()
    return any(n in lname for n in needles)


def _is_id_name(name: str) -> bool:
    return name.lower() == "id" or name.endswith(("_id", "Id", "_ID")) or name.lower() == "uuid"


class _Sampler:
    __slots__ = ("names", "rng", "root", "words")

    def __init__(
        self,
        root: Schema,
        rng: random.Random,
        words: Sequence[str],
        names: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.rng = rng
        self.words = words
        self.names = names

    # -- resolution ---------------------------------------------------------------------

    def resolve(self, schema: Schema) -> Schema:
        hops = 0
        while "$ref" in schema:
            target = _pointer(self.root, schema["$ref"])
            siblings = [k for k in schema if k != "$ref" and k not in _ANNOTATION_KEYS]
            if siblings:
                merged = dict(target)
                merged.update((k, schema[k]) for k in siblings)
                schema = merged
            else:
                schema = target
            hops += 1
            if hops > 32:
                raise _SchemaError("$ref cycle")
        if "allOf" in schema:
            schema = self._merge_all_of(schema)
        return schema

    def _merge_all_of(self, schema: Schema) -> Schema:
        merged: dict[str, Any] = {}
        props: dict[str, Any] = {}
        required: list[str] = []
        parts = [self.resolve(s) for s in schema["allOf"]]
        parts.append({k: v for k, v in schema.items() if k != "allOf"})
        for part in parts:
            for k, v in part.items():
                if k == "properties":
                    props.update(v)
                elif k == "required":
                    required.extend(r for r in v if r not in required)
                elif k in ("minimum", "exclusiveMinimum", "minLength", "minItems") and k in merged:
                    merged[k] = max(merged[k], v)
                elif k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems") and k in merged:
                    merged[k] = min(merged[k], v)
                else:
                    merged[k] = v
        if props:
            merged["properties"] = props
        if required:
            merged["required"] = required
        return merged

    # -- dispatch -----------------------------------------------------------------------

    def sample(self, schema: Schema, name: str, depth: int) -> Any:
        if depth > _HARD_DEPTH:
            raise _SchemaError("schema recursion does not terminate")
        if isinstance(schema, bool):
            return self._any(name) if schema else None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if enum:
            return self.rng.choice(enum)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            branch = self._pick_branch(branches, depth)
            value = self.sample(branch, name, depth)
            disc = schema.get("discriminator")
            if isinstance(disc, Mapping) and isinstance(value, dict):
                self._set_discriminator(value, branch, disc, depth)
            return value
        t = self._type(schema, depth)
        if t == "object":
            return self._object(schema, depth)
        if t == "array":
            return self._array(schema, name, depth)
        if t == "string":
            return self._string(schema, name)
        if t == "integer":
            return self._integer(schema, name)
        if t == "number":
            return self._number(schema, name)
        if t == "boolean":
            return self.rng.random() < 0.5
        if t == "null":
            return None
        return self._any(name)

    def _set_discriminator(
        self, value: dict[str, Any], branch: Schema, disc: Mapping[str, Any], depth: int
    ) -> None:
        """Always send the tag of a discriminated union, even when it has a default."""
        prop = disc.get("propertyName")
        if not isinstance(prop, str) or prop in value:
            return
        mapping = disc.get("mapping")
        if isinstance(mapping, Mapping):
            for tag, ref in mapping.items():
                if ref == branch.get("$ref"):
                    value[prop] = tag
                    return
        sub = (self.resolve(branch).get("properties") or {}).get(prop)
        if sub is not None:
            value[prop] = self.sample(sub, prop, depth + 1)

    def _type(self, schema: Schema, depth: int) -> str:
        t = schema.get("type")
        if isinstance(t, str):
            return t
        if isinstance(t, list) and t:
            non_null = [x for x in t if x != "null"]
            if not non_null or (len(non_null) < len(t) and self._wants_null(depth)):
                return "null"
            return str(self.rng.choice(non_null))
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
            return "string"
        return "any"

    def _wants_null(self, depth: int) -> bool:
        return depth >= _SOFT_DEPTH or self.rng.random() < 0.15

    def _pick_branch(self, branches: Sequence[Schema], depth: int) -> Schema:
        nulls = [b for b in branches if isinstance(b, Mapping) and b.get("type") == "null"]
        others = [b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")]
        if nulls and (not others or self._wants_null(depth)):
            return nulls[0]
        if len(others) > 1:
            # A bare string next to a number is pydantic's Decimal (and the like): a prose
            # string would not validate, a number always does.
            numeric = [b for b in others if b.get("type") in ("number", "integer")]
            if numeric:
                others = [b for b in others if not _is_bare_string(b)] or others
        if depth >= _SOFT_DEPTH:
            simple = [b for b in others if not self._is_container(b)]
            if simple:
                others = simple
        return self.rng.choice(others)

    def _is_container(self, schema: Schema) -> bool:
        try:
            s = self.resolve(schema)
        except _SchemaError:
            return True
        return s.get("type") in ("object", "array") or "properties" in s or "items" in s

    def _any(self, name: str) -> Any:
        return _phrase(self.rng, self.words)

    # -- containers ---------------------------------------------------------------------

    def _object(self, schema: Schema, depth: int) -> dict[str, Any]:
        rng = self.rng
        minimal = depth >= _SOFT_DEPTH
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = schema.get("required") or ()
        min_props = int(schema.get("minProperties", 0))
        out: dict[str, Any] = {}
        skipped: list[str] = []
        for key, sub in props.items():
            if key in required or (not minimal and rng.random() < 0.75):
                out[key] = self.sample(sub, key, depth + 1)
            else:
                skipped.append(key)
        for key in skipped:
            if len(out) >= min_props:
                break
            out[key] = self.sample(props[key], key, depth + 1)
        for key in required:  # required names absent from properties: anything will do
            if key not in out:
                out[key] = self._any(key)
        extra = schema.get("additionalProperties")
        if not props and extra is not False and (isinstance(extra, Mapping) or min_props):
            extra_schema: Schema = extra if isinstance(extra, Mapping) else {}
            max_props = schema.get("maxProperties")
            lo = max(min_props, len(out))
            hi = max(lo, int(max_props) if max_props is not None else 3)
            n = lo if minimal else rng.randint(max(lo, min(1, hi)), hi)
            names = schema.get("propertyNames")
            attempts = 0
            while len(out) < n and attempts < 10 * n + 10:
                attempts += 1
                if isinstance(names, Mapping):
                    key = str(self.sample(names, "key", depth + 1))
                else:
                    key = _word(rng, self.words)
                    if key in out:
                        key = f"{key}_{len(out)}"
                if key not in out:
                    out[key] = self.sample(extra_schema, key, depth + 1)
        return out

    def _array(self, schema: Schema, name: str, depth: int) -> list[Any]:
        rng = self.rng
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        min_items = schema.get("minItems")
        max_items = schema.get("maxItems")
        out: list[Any] = []
        if prefix:
            out = [self.sample(p, name, depth + 1) for p in prefix]
            if not isinstance(items, Mapping):
                return out
        if items is None or items is False:
            return out
        item_schema: Schema = items if isinstance(items, Mapping) else {}
        lo = int(min_items) if min_items is not None else (1 if max_items != 0 else 0)
        if max_items is not None:
            hi = int(max_items)
        else:
            hi = lo + 3 if min_items is not None else max(lo, 4)
        hi = max(hi, lo)
        lo = max(lo, len(out))
        if prefix:  # a tuple with a rest: just honour the minimum
            n = max(lo, len(out))
        elif depth >= _SOFT_DEPTH:
            n = lo
        else:
            n = rng.randint(lo, hi)
        if not schema.get("uniqueItems"):
            out.extend(self.sample(item_schema, name, depth + 1) for _ in range(n - len(out)))
            return out
        seen = {_freeze(v) for v in out}
        attempts = 0
        while len(out) < n and attempts < 10 * n + 10:
            attempts += 1
            v = self.sample(item_schema, name, depth + 1)
            fv = _freeze(v)
            if fv not in seen:
                seen.add(fv)
                out.append(v)
        return out

    # -- numbers ------------------------------------------------------------------------

    def _bounds(self, schema: Schema) -> tuple[float | None, bool, float | None, bool]:
        lo: float | None = schema.get("minimum")
        hi: float | None = schema.get("maximum")
        lo_ex = hi_ex = False
        ex_lo = schema.get("exclusiveMinimum")
        ex_hi = schema.get("exclusiveMaximum")
        if ex_lo is True:  # draft 4 spelling
            lo_ex = lo is not None
        elif isinstance(ex_lo, int | float) and (lo is None or ex_lo >= lo):
            lo, lo_ex = ex_lo, True
        if ex_hi is True:
            hi_ex = hi is not None
        elif isinstance(ex_hi, int | float) and (hi is None or ex_hi <= hi):
            hi, hi_ex = ex_hi, True
        return lo, lo_ex, hi, hi_ex

    def _integer(self, schema: Schema, name: str) -> int:
        rng = self.rng
        lo_f, lo_ex, hi_f, hi_ex = self._bounds(schema)
        lo = None if lo_f is None else (math.floor(lo_f) + 1 if lo_ex else math.ceil(lo_f))
        hi = None if hi_f is None else (math.ceil(hi_f) - 1 if hi_ex else math.floor(hi_f))
        if lo is None or hi is None:
            lname = name.lower()
            if "year" in lname:
                d_lo, d_hi = 1990, 2025
            elif lname == "age" or lname.endswith("_age"):
                d_lo, d_hi = 18, 80
            elif _is_score_name(name) or "rating" in lname:
                d_lo, d_hi = 0, 10
            else:
                d_lo, d_hi = 0, 100
            if lo is None and hi is None:
                lo, hi = d_lo, d_hi
            elif lo is None:
                assert hi is not None
                lo = d_lo if d_lo <= hi else hi - 100
                hi = min(hi, max(d_hi, lo))
            else:
                hi = d_hi if d_hi >= lo else lo + 100
                lo = max(lo, min(d_lo, hi))
        mult = schema.get("multipleOf")
        if isinstance(mult, int | float) and mult > 0:
            k_lo, k_hi = math.ceil(lo / mult), math.floor(hi / mult)
            if k_lo <= k_hi:
                value = rng.randint(k_lo, k_hi) * mult
                if float(value).is_integer():
                    return int(value)
        return rng.randint(lo, hi) if lo <= hi else lo

    def _number(self, schema: Schema, name: str) -> float:
        rng = self.rng
        lo, lo_ex, hi, hi_ex = self._bounds(schema)
        d_lo, d_hi = (0.0, 1.0) if _is_score_name(name) else (0.0, 100.0)
        # No bound: the default range. One bound: the default range clipped to it when
        # they overlap, else 100 either side of the bound.
        if lo is None and hi is None:
            lo, hi = d_lo, d_hi
        elif lo is None:
            assert hi is not None
            if d_lo < hi:
                lo = d_lo
                if d_hi < hi:
                    hi, hi_ex = d_hi, False
            else:
                lo = hi - 100.0
        elif hi is None:
            if d_hi > lo:
                hi = d_hi
                if d_lo > lo:
                    lo, lo_ex = d_lo, False
            else:
                hi = lo + 100.0
        lo, hi = float(lo), float(hi)

        def ok(x: float) -> bool:
            return (x > lo if lo_ex else x >= lo) and (x < hi if hi_ex else x <= hi)

        mult = schema.get("multipleOf")
        if isinstance(mult, int | float) and mult > 0:
            k_lo, k_hi = math.ceil(lo / mult), math.floor(hi / mult)
            ks = [k for k in (k_lo, k_hi) if not ok(k * mult)]
            if k_lo in ks:
                k_lo += 1
            if k_hi in ks:
                k_hi -= 1
            if k_lo <= k_hi:
                return float(round(rng.randint(k_lo, k_hi) * mult, 12))
        x = rng.uniform(lo, hi)
        for digits in (3 if hi - lo <= 10 else 2, 6):
            r = round(x, digits)
            if ok(r):
                return r
        if ok(x):
            return x
        mid = (lo + hi) / 2
        return mid if ok(mid) else math.nextafter(lo, math.inf)

    # -- strings ------------------------------------------------------------------------

    def _string(self, schema: Schema, name: str) -> str:
        rng = self.rng
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        fmt = schema.get("format")
        pattern = schema.get("pattern")
        if isinstance(fmt, str):
            v = _format_value(fmt, rng, self.words)
            if v is not None and len(v) >= min_len and (max_len is None or len(v) <= max_len):
                return v
        if isinstance(pattern, str):
            for _ in range(8):
                v = _pattern_value(pattern, rng)
                if v is None:
                    break
                if len(v) >= min_len and (max_len is None or len(v) <= max_len):
                    return v
        text = self._text_for(name)
        return _fit_length(text, min_len, max_len, rng, self.words)

    def _text_for(self, name: str) -> str:
        rng, words = self.rng, self.words
        if not name:
            return _sentence(rng, words)
        if _is_id_name(name):
            return f"{_word(rng, words)}-{rng.randint(1000, 99999)}"
        lname = name.lower()
        if "email" in lname:
            return _format_value("email", rng, words) or "user@example.com"
        if any(n in lname for n in ("url", "link", "website", "href", "uri")):
            return _format_value("uri", rng, words) or "https://example.com"
        if self.names and _name_has(name, _ENTITY_FIELDS) and rng.random() < 0.7:
            return rng.choice(self.names)
        if _name_has(name, _LONG_TEXT_NAMES):
            return " ".join(_sentence(rng, words) for _ in range(rng.randint(1, 3)))
        if _name_has(name, _PHRASE_NAMES):
            return _phrase(rng, words, title=_name_has(name, ("name", "title", "heading")))
        if rng.random() < 0.5:
            return _phrase(rng, words)
        return _sentence(rng, words)


def _is_bare_string(schema: Schema) -> bool:
    return schema.get("type") == "string" and not any(
        k in schema for k in ("format", "pattern", "enum", "const", "minLength", "maxLength")
    )


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return (type(v).__name__, v)


def _fit_length(
    text: str, min_len: int, max_len: int | None, rng: random.Random, words: Sequence[str]
) -> str:
    while len(text) < min_len:
        text = f"{text} {_word(rng, words)}" if text else _word(rng, words)
    if max_len is not None and len(text) > max_len:
        cut = text[:max_len]
        space = cut.rfind(" ")
        if space >= max(min_len, 1):
            cut = cut[:space]
        text = cut.rstrip(" ,") if len(cut.rstrip(" ,")) >= min_len else cut
    return text


def _format_value(fmt: str, rng: random.Random, words: Sequence[str]) -> str | None:
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
        local = ".".join(_ascii_word(_word(rng, words)) for _ in range(rng.randint(1, 2)))
        return f"{local}@example.com"
    if fmt.startswith(("uri", "url", "iri")):
        return f"https://www.example.com/{_ascii_word(_word(rng, words))}"
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
        return f"{_ascii_word(_word(rng, words))}.example.com"
    if fmt == "path":
        return f"/tmp/{_ascii_word(_word(rng, words))}.txt"
    if fmt in ("binary", "base64", "base64url", "password"):
        return "".join(rng.choice(string.ascii_letters) for _ in range(12))
    return None


def _ascii_word(w: str) -> str:
    return re.sub(r"[^a-z0-9]", "", w.lower()) or "item"


def _random_datetime(rng: random.Random) -> _dt.datetime:
    start = _dt.datetime(2020, 1, 1, tzinfo=_dt.UTC)
    return start + _dt.timedelta(seconds=rng.randint(0, 6 * 365 * 24 * 3600))


# --------------------------------------------------------------------------- patterns

_PRINTABLE = string.ascii_letters + string.digits + " -_.,:/@#"


@functools.lru_cache(maxsize=256)
def _parse_pattern(pattern: str) -> tuple[Any, re.Pattern[str]] | None:
    try:
        parser: Any = importlib.import_module("re._parser")
        return parser.parse(pattern), re.compile(pattern)
    except Exception:
        return None


def _pattern_value(pattern: str, rng: random.Random) -> str | None:
    """A string matching a simple regular expression, or None when it cannot make one."""
    parsed = _parse_pattern(pattern)
    if parsed is None:
        return None
    tree, compiled = parsed
    for _ in range(4):
        try:
            s = _gen(tree, rng)
        except _SchemaError:
            return None
        if compiled.search(s):
            return s
    return None


def _in_class(items: Sequence[tuple[Any, Any]], ch: str) -> bool:
    negate = False
    hit = False
    for op, av in items:
        kind = op.name
        if kind == "NEGATE":
            negate = True
        elif kind == "LITERAL":
            hit = hit or ord(ch) == av
        elif kind == "RANGE":
            hit = hit or av[0] <= ord(ch) <= av[1]
        elif kind == "CATEGORY":
            cat = av.name
            if cat.endswith("CATEGORY_DIGIT"):
                hit = hit or (ch.isdigit() != cat.startswith("CATEGORY_NOT"))
            elif cat.endswith("CATEGORY_WORD"):
                hit = hit or ((ch.isalnum() or ch == "_") != cat.startswith("CATEGORY_NOT"))
            elif cat.endswith("CATEGORY_SPACE"):
                hit = hit or (ch.isspace() != cat.startswith("CATEGORY_NOT"))
    return hit != negate


def _class_char(items: Sequence[tuple[Any, Any]], rng: random.Random) -> str:
    plain = [(op, av) for op, av in items if op.name != "NEGATE"]
    if len(plain) == len(items) and plain and rng.random() < 0.9:
        op, av = rng.choice(plain)
        if op.name == "LITERAL":
            return chr(av)
        if op.name == "RANGE":
            return chr(rng.randint(av[0], av[1]))
    candidates = [c for c in _PRINTABLE if _in_class(items, c)]
    if not candidates:
        raise _SchemaError("empty character class")
    return rng.choice(candidates)


def _gen(tree: Any, rng: random.Random) -> str:
    out: list[str] = []
    for op, av in tree:
        kind = op.name
        if kind == "LITERAL":
            out.append(chr(av))
        elif kind == "NOT_LITERAL":
            out.append(rng.choice([c for c in string.ascii_letters if ord(c) != av]))
        elif kind == "ANY":
            out.append(rng.choice(string.ascii_lowercase))
        elif kind == "IN":
            out.append(_class_char(av, rng))
        elif kind == "CATEGORY":
            out.append(_class_char([(op, av)], rng))
        elif kind in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = av
            n = rng.randint(lo, min(hi, lo + 3))
            out.extend(_gen(sub, rng) for _ in range(n))
        elif kind == "SUBPATTERN":
            out.append(_gen(av[-1], rng))
        elif kind == "ATOMIC_GROUP":
            out.append(_gen(av, rng))
        elif kind == "BRANCH":
            out.append(_gen(rng.choice(av[1]), rng))
        elif kind in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise _SchemaError(f"unsupported pattern element {kind}")
    return "".join(out)


# --------------------------------------------------------------------------- public API


def sample_value(schema: Mapping[str, Any], rng: random.Random, *, hint_text: str = "") -> Any:
    """Draw a value valid for ``schema`` (``$ref`` resolved against ``schema['$defs']``).

    Deterministic: the same schema, rng state and ``hint_text`` give the same value.
    Raises ``ValueError`` for a schema it cannot walk (a non-local or dangling ``$ref``,
    or recursion that never terminates).
    """
    sampler = _Sampler(schema, rng, hint_words(hint_text), hint_names(hint_text))
    return sampler.sample(schema, "", 0)


def _json_types(sampler: _Sampler, schema: Schema, depth: int = 0) -> set[str] | None:
    """The JSON types a value of ``schema`` may have, or None when anything might do."""
    if depth > 16:
        return None
    schema = sampler.resolve(schema)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        return {_type_of_value(v) for v in values}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        out: set[str] = set()
        for b in branches:
            t = _json_types(sampler, b, depth + 1)
            if t is None:
                return None
            out |= t
        return out
    t = schema.get("type")
    if isinstance(t, str):
        return {"number", "integer"} if t in ("number", "integer") else {t}
    if isinstance(t, list):
        types = {str(x) for x in t}
        if types & {"number", "integer"}:
            types |= {"number", "integer"}
        return types
    if "properties" in schema or "additionalProperties" in schema:
        return {"object"}
    if "items" in schema or "prefixItems" in schema:
        return {"array"}
    return None


def _type_of_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("object", {"unexpected": "value"}),
    ("array", ["unexpected"]),
    ("string", "not a valid value"),
)


def _wrong_value(sampler: _Sampler, schema: Schema) -> tuple[bool, Any]:
    try:
        types = _json_types(sampler, schema)
    except _SchemaError:
        return False, None
    if types is None:
        return False, None
    for t, v in _WRONG_VALUES:
        if t not in types:
            return True, v
    return False, None


def corrupt_value(schema: Mapping[str, Any], value: Any, rng: random.Random) -> Any:
    """A JSON value like ``value`` that fails ``schema``: a required field removed, or a
    field (or the whole value) given a value of the wrong JSON type.

    Best effort: a schema that accepts anything cannot be violated, and then a value of
    a wrong type for the root is still returned when one exists.
    """
    sampler = _Sampler(schema, rng, ())
    root = sampler.resolve(schema)
    if isinstance(value, dict):
        required = [r for r in root.get("required") or () if r in value]
        props: Mapping[str, Any] = root.get("properties") or {}
        retypable: list[tuple[str, Any]] = []
        for key in value:
            if key in props:
                ok, wrong = _wrong_value(sampler, props[key])
                if ok:
                    retypable.append((key, wrong))
        out = dict(value)
        if required and (not retypable or rng.random() < 0.5):
            del out[rng.choice(required)]
            return out
        if retypable:
            key, wrong = rng.choice(retypable)
            out[key] = wrong
            return out
    ok, wrong = _wrong_value(sampler, root)
    if ok:
        return wrong
    return {"unexpected": value} if not isinstance(value, dict) else ["unexpected"]
