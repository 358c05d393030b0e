"""The offline model simulator: a deterministic, fault-injecting stand-in for an LLM API.

``SimModel`` answers every request without a network: plain-text requests get one to three
plausible sentences built from the words of the prompt, structured requests get JSON that
is valid for the requested schema (see :mod:`trellis.models.schema_sample`). Latency and
provider faults are injected at configurable rates, so flows, retries, fallbacks, budgets
and benchmarks can all be exercised offline and reproducibly.

Options (:class:`SimOptions`; from a binding such as ``sim:small?latency_ms=50-400&rate_limit=0.1``
every value may be a string):

``seed`` (int, 0)
    Selects the whole sequence of replies, faults and latencies.
``latency_ms`` (float or (low, high), 0)
    Delay of every attempt: fixed, or uniform in ``[low, high]``; ``"50-400"`` and ``"200"``
    are accepted as strings.
``output_tokens_per_second`` (float or None)
    When set, a reply additionally takes ``output_tokens / output_tokens_per_second`` s.
``rate_limit``, ``timeout``, ``overloaded``, ``refusal``, ``truncation``, ``malformed_json``,
``invalid_json`` (float in [0, 1], 0)
    Per-attempt probability of each fault; see below.
``retry_after_s`` (float or None, 1.0)
    The ``retry_after`` sent with a rate-limit fault; None models a provider that says nothing.

Determinism: the randomness of an attempt comes from a ``random.Random`` seeded with a
BLAKE2b hash of (seed, model name, messages, output schema, temperature, max_tokens,
request seed) *and* an occurrence counter: the instance counts how often it has seen an
identical request, and the n-th occurrence draws from its own stream. So retrying an
identical request after a fault draws again (a fault would otherwise repeat forever),
while a fresh ``SimModel`` with the same seed (or :meth:`SimModel.reset`) replays exactly
the same sequence. Different prompts give different draws, so enum choices and confidences
vary with the input. A re-ask (the previous bad reply plus the error as extra messages) is
a different request and gets a fresh draw. Python's salted ``hash()`` is never used, so the
sequence is the same across processes.

Faults: at most one per attempt, drawn with the per-mode rates (scaled down together if
they add up to more than 1); ``malformed_json`` and ``invalid_json`` only apply when an
output schema was requested. The base latency is spent before a fault is raised.

* ``rate_limit``: raises ``RateLimitError`` (status 429, ``retry_after=retry_after_s``).
* ``timeout``: raises ``ModelTimeoutError``.
* ``overloaded``: raises ``OverloadedError`` (status 503).
* ``refusal``: returns ``finish_reason="refusal"``, empty text and a ``refusal`` message.
* ``truncation``: returns the reply cut roughly in half with ``finish_reason="length"``.
* ``malformed_json``: returns text that is not parseable JSON (JSON cut off, possibly
  behind some prose), ``finish_reason="stop"``.
* ``invalid_json``: returns JSON that parses but fails the schema (a required field
  missing or a field of the wrong type).

Without a fault, a structured reply longer than ``max_tokens`` (≈ 4 characters a token) is
cut to fit and returned with ``finish_reason="length"``, as a real API would; a plain-text
reply is simply made short enough. Usage follows :mod:`trellis.models.tokens`.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import math
import random
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trellis.errors import (
    BadRequestError,
    ConfigurationError,
    ModelTimeoutError,
    OverloadedError,
    RateLimitError,
)
from trellis.models.base import FinishReason, Model, ModelRequest, ModelResponse, Usage
from trellis.models.schema_sample import corrupt_value, hint_words, sample_prose, sample_value
from trellis.models.tokens import (
    estimate_request_tokens,
    estimate_tokens,
    schema_json,
)

__all__ = ["FAULT_MODES", "REFUSAL_MESSAGE", "FaultMode", "SimModel", "SimOptions"]

FaultMode = Literal[
    "rate_limit", "timeout", "overloaded", "refusal", "truncation", "malformed_json", "invalid_json"
]
#: Fault modes in the order they are drawn.
FAULT_MODES: tuple[FaultMode, ...] = (
    "rate_limit",
    "timeout",
    "overloaded",
    "refusal",
    "truncation",
    "malformed_json",
    "invalid_json",
)
_SCHEMA_ONLY_FAULTS = frozenset({"malformed_json", "invalid_json"})
REFUSAL_MESSAGE = "I can't help with that."

#: A per-attempt fault probability.
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class SimOptions(BaseModel):
    """Simulator options; unknown names are an error. See the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    latency_ms: float | tuple[float, float] = 0.0
    malformed_json: Rate = 0.0
    invalid_json: Rate = 0.0
    rate_limit: Rate = 0.0
    timeout: Rate = 0.0
    overloaded: Rate = 0.0
    refusal: Rate = 0.0
    truncation: Rate = 0.0
    retry_after_s: float | None = Field(default=1.0, ge=0.0)
    output_tokens_per_second: float | None = Field(default=None, gt=0.0)

    @field_validator("latency_ms", mode="before")
    @classmethod
    def _parse_latency(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().removesuffix("ms").strip()
            try:
                return float(text)
            except ValueError:
                pass
            for sep in ("..", "-", ","):
                low, found, high = text.partition(sep)
                if found and low.strip() and high.strip():
                    return (low.strip(), high.strip())
            return text
        if isinstance(value, list):
            return tuple(value)
        return value

    @field_validator("latency_ms")
    @classmethod
    def _check_latency(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        low, high = value if isinstance(value, tuple) else (value, value)
        if not (0.0 <= low <= high) or math.isinf(high):
            raise ValueError(
                "latency must be a finite number of ms >= 0, or low-high with low <= high"
            )
        return value

    @field_validator("retry_after_s", "output_tokens_per_second", mode="before")
    @classmethod
    def _parse_optional(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value

    @property
    def latency_bounds_ms(self) -> tuple[float, float]:
        """``latency_ms`` as a (low, high) range in milliseconds."""
        lat = self.latency_ms
        return lat if isinstance(lat, tuple) else (lat, lat)

    def fault_rates(self) -> dict[FaultMode, float]:
        """Each fault mode's per-attempt rate."""
        return {mode: float(getattr(self, mode)) for mode in FAULT_MODES}

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SimOptions:
        """Validate binding options (strings welcome); raise ``ConfigurationError`` if bad."""
        data = {str(k).strip().replace("-", "_"): v for k, v in options.items()}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, data)) from None


def _describe(exc: ValidationError, data: Mapping[str, Any]) -> str:
    valid = ", ".join(SimOptions.model_fields)
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, list(SimOptions.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown sim option {field!r}{hint}; valid options: {valid}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"invalid sim option {field}={data.get(field)!r}: {msg}; valid options: {valid}"


def _request_key(model: str, seed: int, request: ModelRequest) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{seed}\x00{model}\x00{len(request.messages)}\x00".encode())
    for m in request.messages:
        content = m.content.encode("utf-8", "surrogatepass")
        h.update(f"{m.role}\x00{len(content)}\x00".encode())
        h.update(content)
    schema = request.output_schema
    h.update(b"\x00-" if schema is None else schema_json(schema).encode())
    h.update(f"\x00{request.temperature!r}\x00{request.max_tokens!r}\x00{request.seed!r}".encode())
    return h.digest()


def _hint_text(request: ModelRequest) -> str:
    user = [m.content for m in request.messages if m.role == "user"]
    return "\n".join(user) if user else request.prompt_text()


def _cut_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space].rstrip(" ,") if space > 0 else cut


class SimModel(Model):
    """Deterministic offline model with latency and fault injection (see module docs)."""

    def __init__(
        self,
        name: str = "sim:small",
        options: SimOptions | Mapping[str, Any] | None = None,
    ) -> None:
        model = name.removeprefix("sim:")
        if not model:
            raise ConfigurationError(f"sim model name is empty in {name!r}; e.g. 'sim:small'")
        self.model = model
        self.name = f"sim:{model}"
        if options is None:
            self.options = SimOptions()
        elif isinstance(options, SimOptions):
            self.options = options
        else:
            self.options = SimOptions.parse(options)
        self._seen: dict[bytes, int] = {}
        self.attempts = 0  # every complete() call, faulted or not

    def __repr__(self) -> str:
        return f"SimModel({self.name!r}, seed={self.options.seed})"

    def reset(self) -> None:
        """Forget the occurrence counters: the instance replays its sequence from the start."""
        self._seen.clear()
        self.attempts = 0

    def _rng_for(self, request: ModelRequest) -> random.Random:
        key = _request_key(self.name, self.options.seed, request)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        digest = hashlib.blake2b(key + n.to_bytes(8, "little"), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "little"))

    def _fault(self, u: float, structured: bool) -> FaultMode | None:
        opts = self.options
        rates = [
            (mode, float(getattr(opts, mode)))
            for mode in FAULT_MODES
            if structured or mode not in _SCHEMA_ONLY_FAULTS
        ]
        total = sum(r for _, r in rates)
        if total <= 0.0:
            return None
        scale = 1.0 / total if total > 1.0 else 1.0
        acc = 0.0
        for mode, rate in rates:
            acc += rate * scale
            if u < acc:
                return mode
        return None

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.attempts += 1
        opts = self.options
        rng = self._rng_for(request)
        # A fixed number of draws before the content, so the reply of a fault-free attempt
        # does not depend on which fault rates are configured.
        u_fault, u_variant, u_latency = rng.random(), rng.random(), rng.random()
        schema = request.output_schema
        fault = self._fault(u_fault, schema is not None)
        low, high = opts.latency_bounds_ms
        latency_s = (low + (high - low) * u_latency) / 1000.0

        if fault in ("rate_limit", "timeout", "overloaded"):
            await _sleep(latency_s)
            if fault == "rate_limit":
                raise RateLimitError(
                    f"{self.name}: simulated rate limit (429)",
                    retry_after=opts.retry_after_s,
                    model=self.name,
                    status_code=429,
                )
            if fault == "timeout":
                raise ModelTimeoutError(f"{self.name}: simulated timeout", model=self.name)
            raise OverloadedError(
                f"{self.name}: simulated overload (503)", model=self.name, status_code=503
            )

        input_tokens = estimate_request_tokens(request)
        if fault == "refusal":
            await _sleep(latency_s)
            return ModelResponse(
                text="",
                usage=Usage(input_tokens, max(1, estimate_tokens(REFUSAL_MESSAGE))),
                finish_reason="refusal",
                refusal=REFUSAL_MESSAGE,
                model=self.name,
                raw_finish_reason="refusal",
            )

        hint = _hint_text(request)
        finish: FinishReason = "stop"
        max_chars = None if request.max_tokens is None else max(1, request.max_tokens * 4)
        if schema is not None:
            try:
                value = sample_value(schema, rng, hint_text=hint)
            except ValueError as exc:
                raise BadRequestError(
                    f"{self.name}: unusable output schema: {exc}", model=self.name, status_code=400
                ) from exc
            text = json.dumps(value, ensure_ascii=False)
            if fault == "malformed_json":
                text = _malformed(text, u_variant)
            elif fault == "invalid_json":
                text = json.dumps(corrupt_value(schema, value, rng), ensure_ascii=False)
            elif fault == "truncation":
                text, finish = text[: max(1, len(text) // 2)], "length"
            elif max_chars is not None and len(text) > max_chars:
                text, finish = text[:max_chars], "length"
        else:
            words = hint_words(hint)
            text = sample_prose(rng, hint, sentences=rng.randint(1, 3) if words else 1)
            if max_chars is not None:
                text = _cut_words(text, max_chars)
            if fault == "truncation":
                text, finish = _cut_words(text, max(1, len(text) // 2)), "length"

        usage = Usage(input_tokens, max(1, estimate_tokens(text)))
        if opts.output_tokens_per_second:
            latency_s += usage.output_tokens / opts.output_tokens_per_second
        await _sleep(latency_s)
        return ModelResponse(
            text=text, usage=usage, finish_reason=finish, model=self.name, raw_finish_reason=finish
        )


def _malformed(text: str, u: float) -> str:
    """Unparseable text, even for a lenient parser: the JSON is always left unclosed."""
    if not text.startswith(("{", "[")):
        text = '{"value": ' + text
    if u < 0.4:
        return text[: max(1, len(text) // 2)]
    if u < 0.7:
        return (
            "Sure! Here is the JSON you asked for:\n```json\n" + text[: max(1, len(text) * 2 // 3)]
        )
    if u < 0.85:
        return text[:-1] if len(text) > 1 else text
    return "Let me think about this step by step before I answer. {"


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
