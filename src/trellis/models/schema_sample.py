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

The pieces live in modules of their own: prose in :mod:`trellis.models.prose`, ``format``
strings in :mod:`trellis.models.string_formats`, ``pattern`` strings in
:mod:`trellis.models.regex_sample`, ``$ref`` / ``allOf`` resolution in
:mod:`trellis.models.schema_refs`; :func:`corrupt_value`
(:mod:`trellis.models.schema_corrupt`) does the opposite: a value that fails the schema.
:func:`placeholder_value` is the same walk with fixed, minimal choices: the template of an
answer a person fills in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from trellis.models.prose import hint_names, hint_words, phrase, pick_word, sentence
from trellis.models.prose import sample_prose as sample_prose
from trellis.models.schema_corrupt import corrupt_value as corrupt_value
from trellis.models.schema_refs import Schema, SchemaError, resolve
from trellis.models.string_formats import format_value

# corrupt_value, hint_words and sample_prose are re-exported: they were defined here.
__all__ = ["corrupt_value", "hint_words", "placeholder_value", "sample_prose", "sample_value"]

# Past this nesting depth the sampler goes minimal: optional fields are left out, arrays
# get their minimum length and Optional picks null, so recursive models terminate.
_SOFT_DEPTH = 6
_HARD_DEPTH = 64

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


_ENTITY_FIELDS = (
    "name", "entity", "entities", "subject", "object", "source", "target", "person",
    "persons", "people", "organization", "organizations", "location", "locations", "company",
    "place", "author", "owner",
)  # fmt: skip


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
        return resolve(self.root, schema)

    # -- dispatch -----------------------------------------------------------------------

    def sample(self, schema: Schema, name: str, depth: int) -> Any:
        if depth > _HARD_DEPTH:
            raise SchemaError("schema recursion does not terminate")
        if isinstance(schema, bool):
            return self._any(name) if schema else None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if enum:
            return self._choose(enum)
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
            return self._boolean()
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
            return str(self._choose(non_null))
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
        chosen: Schema = self._choose(others)
        return chosen

    def _choose(self, options: Sequence[Any]) -> Any:
        return self.rng.choice(options)

    def _boolean(self) -> bool:
        return self.rng.random() < 0.5

    def _is_container(self, schema: Schema) -> bool:
        try:
            s = self.resolve(schema)
        except SchemaError:
            return True
        return s.get("type") in ("object", "array") or "properties" in s or "items" in s

    def _any(self, name: str) -> Any:
        return phrase(self.rng, self.words)

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
                    key = pick_word(rng, self.words)
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
            v = format_value(fmt, rng, self.words)
            if v is not None and len(v) >= min_len and (max_len is None or len(v) <= max_len):
                return v
        if isinstance(pattern, str):
            from trellis.models.regex_sample import pattern_value  # only for patterns

            for _ in range(8):
                v = pattern_value(pattern, rng)
                if v is None:
                    break
                if len(v) >= min_len and (max_len is None or len(v) <= max_len):
                    return v
        text = self._text_for(name)
        return _fit_length(text, min_len, max_len, rng, self.words)

    def _text_for(self, name: str) -> str:
        rng, words = self.rng, self.words
        if not name:
            return sentence(rng, words)
        if _is_id_name(name):
            return f"{pick_word(rng, words)}-{rng.randint(1000, 99999)}"
        lname = name.lower()
        if "email" in lname:
            return format_value("email", rng, words) or "user@example.com"
        if any(n in lname for n in ("url", "link", "website", "href", "uri")):
            return format_value("uri", rng, words) or "https://example.com"
        if self.names and _name_has(name, _ENTITY_FIELDS) and rng.random() < 0.7:
            return rng.choice(self.names)
        if _name_has(name, _LONG_TEXT_NAMES):
            return " ".join(sentence(rng, words) for _ in range(rng.randint(1, 3)))
        if _name_has(name, _PHRASE_NAMES):
            return phrase(rng, words, title=_name_has(name, ("name", "title", "heading")))
        if rng.random() < 0.5:
            return phrase(rng, words)
        return sentence(rng, words)


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
        text = f"{text} {pick_word(rng, words)}" if text else pick_word(rng, words)
    if max_len is not None and len(text) > max_len:
        cut = text[:max_len]
        space = cut.rfind(" ")
        if space >= max(min_len, 1):
            cut = cut[:space]
        text = cut.rstrip(" ,") if len(cut.rstrip(" ,")) >= min_len else cut
    return text


# --------------------------------------------------------------------------- public API


def sample_value(schema: Mapping[str, Any], rng: random.Random, *, hint_text: str = "") -> Any:
    """Draw a value valid for ``schema`` (``$ref`` resolved against ``schema['$defs']``).

    Deterministic: the same schema, rng state and ``hint_text`` give the same value.
    Raises ``ValueError`` for a schema it cannot walk (a non-local or dangling ``$ref``,
    or recursion that never terminates).
    """
    sampler = _Sampler(schema, rng, hint_words(hint_text), hint_names(hint_text))
    return sampler.sample(schema, "", 0)


class _Placeholder(_Sampler):
    """The walk with fixed choices instead of random ones: the first option of an enum or
    a union (not null), the required fields (every field when none is), one array item,
    ``"..."`` for a string and the smallest allowed number at or above 0."""

    __slots__ = ()

    def __init__(self, root: Schema) -> None:
        super().__init__(root, random.Random(0), ())

    def sample(self, schema: Schema, name: str, depth: int) -> Any:
        if depth > _SOFT_DEPTH:
            return None
        return super().sample(schema, name, depth)

    def _choose(self, options: Sequence[Any]) -> Any:
        return options[0]

    def _boolean(self) -> bool:
        return True

    def _wants_null(self, depth: int) -> bool:
        return depth >= _SOFT_DEPTH

    def _any(self, name: str) -> Any:
        return None

    def _object(self, schema: Schema, depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = [key for key in schema.get("required") or () if key in props]
        return {key: self.sample(props[key], key, depth + 1) for key in required or props}

    def _array(self, schema: Schema, name: str, depth: int) -> list[Any]:
        items = schema.get("items")
        if not isinstance(items, Mapping) or schema.get("maxItems") == 0:
            return []
        count = max(1, int(schema.get("minItems") or 0))
        return [self.sample(items, name, depth + 1) for _ in range(count)]

    def _string(self, schema: Schema, name: str) -> str:
        return "..."

    def _integer(self, schema: Schema, name: str) -> int:
        lo_f, lo_ex, hi_f, hi_ex = self._bounds(schema)
        value = 0
        if lo_f is not None:
            value = max(value, math.floor(lo_f) + 1 if lo_ex else math.ceil(lo_f))
        if hi_f is not None:
            value = min(value, math.ceil(hi_f) - 1 if hi_ex else math.floor(hi_f))
        return value

    def _number(self, schema: Schema, name: str) -> float:
        lo, lo_ex, hi, hi_ex = self._bounds(schema)
        value = 0.0
        if lo is not None and (value < lo or (lo_ex and value <= lo)):
            value = float(lo) + 1.0 if lo_ex else float(lo)
        if hi is not None and (value > hi or (hi_ex and value >= hi)):
            value = (float(lo) + hi) / 2 if lo is not None else float(hi) - 1.0
        return value


def placeholder_value(schema: Mapping[str, Any]) -> Any:
    """The template of a value of ``schema`` for a person to fill in (a command line's
    sample answer): the same walk as :func:`sample_value` with fixed choices (see
    ``_Placeholder``). None for a schema it cannot walk."""
    try:
        return _Placeholder(schema).sample(schema, "", 0)
    except SchemaError:
        return None
