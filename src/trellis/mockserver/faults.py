"""The mock server's fault plan: per-mode rates, or a scripted sequence of responses.

A :class:`FaultPlan` decides, request by request, whether the mock server misbehaves and
how. Scripted steps come first, consumed in order (one per model request); once the
script is used up, each request draws a fault with the per-mode rates (scaled down
together when they add up to more than 1), from a ``random.Random`` seeded with the
plan's seed, so a run that sends the same requests in the same order sees the same faults.

Modes (:data:`FAULT_MODES`) and what the client sees, in each dialect:

``rate_limit``      429 (``rate_limit_exceeded`` / ``rate_limit_error``) with ``retry-after``
``quota``           OpenAI 429 ``insufficient_quota``; Anthropic 402 ``billing_error``
``overloaded``      OpenAI 503; Anthropic 529 ``overloaded_error``
``server_error``    500 (``server_error`` / ``api_error``)
``timeout``         the reply is held back ``hang_s`` seconds (a stream stalls after its
                    first events), past the client's timeout
``context_length``  400 ``context_length_exceeded`` / "prompt is too long"
``refusal``         OpenAI ``message.refusal``; Anthropic ``stop_reason: "refusal"``
``truncation``      the reply cut in half: ``finish_reason: "length"`` / ``"max_tokens"``
``malformed_json``  structured output (or tool arguments) that is not parseable JSON
``invalid_json``    structured output (or tool arguments) that parses but fails the schema
``stream_error``    an error event mid-stream, after HTTP 200
``stream_cut``      the stream ends without its terminal event
``auth``            401 (``invalid_api_key`` / ``authentication_error``)

``malformed_json`` and ``invalid_json`` are only drawn for structured requests (an output
schema, JSON mode or a tool call), ``stream_error`` and ``stream_cut`` only for streaming
ones. A script step is a JSON object (:class:`FaultStep`)::

    [{"fault": "rate_limit", "retry_after": 0.5},
     {"status": 413, "body": "<html>Request Entity Too Large</html>"},
     {"ok": true}]

An *outage* (:class:`Outage`, :meth:`FaultPlan.schedule_outage`) is a window of
``duration_s`` seconds in which every model request gets the ``overloaded`` fault (OpenAI
503, Anthropic 529 ``overloaded_error``), answered at once (``latency_ms``, default 0: a
failing load balancer does not think) before the script or the rates are consulted. It
starts ``start_in_s`` after it is scheduled, or after the first model request with
``from_first_request``, and counts the requests it received. :func:`flaky_rates` is the
random mix of the issue's "10% of requests fail" scenario: 429 with retry-after, 500 and
malformed JSON in equal parts.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trellis.models.faults import FAULTS, MOCK_FAULTS, Fault, ReplyPart, draw_fault, fault_named

__all__ = [
    "FAULT_MODES",
    "FaultMode",
    "FaultPlan",
    "FaultStep",
    "Outage",
    "flaky_rates",
    "load_script",
    "parse_rates",
]

#: A fault the mock server injects (one of :data:`FAULT_MODES`; the vocabulary, and the
#: engine failure mode of each, is :mod:`trellis.models.faults`).
FaultMode = Fault
#: Every mode, in the order rates are drawn.
FAULT_MODES: tuple[FaultMode, ...] = MOCK_FAULTS


class FaultStep(BaseModel):
    """One scripted response (or one drawn fault). Exactly one of ``ok``, ``fault`` and
    ``status`` says what it is; a step with none of them is a normal reply.

    * ``{"ok": true}``: a normal reply.
    * ``{"fault": MODE, ...}``: that fault; ``retry_after`` (seconds, or null for no
      ``retry-after`` header) for ``rate_limit``/``overloaded``, ``hang_s`` for
      ``timeout``, ``message`` to replace the error message, ``after_events`` for how many
      stream events go out before a stream fault strikes.
    * ``{"status": 413, "body": "<html>..."}``: exactly this HTTP response. A string body is
      sent as is (``content_type`` defaults to text/html when it looks like HTML, else
      text/plain), an object or list as JSON, no body as the dialect's error for the status.

    Any step may add ``headers`` and ``latency_ms`` (the delay before it is answered).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool = False
    fault: FaultMode | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    body: Any = None
    content_type: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    retry_after: float | None = Field(default=None, ge=0.0)
    hang_s: float | None = Field(default=None, ge=0.0)
    latency_ms: float | None = Field(default=None, ge=0.0)
    message: str | None = None
    after_events: int | None = Field(default=None, ge=0)

    @field_validator("fault")
    @classmethod
    def _injected_here(cls, fault: FaultMode | None) -> FaultMode | None:
        if fault is not None and fault not in FAULT_MODES:
            raise ValueError(
                f"unknown fault mode {fault!r} (a sim: fault, not one the mock server "
                f"injects); valid modes: {', '.join(FAULT_MODES)}"
            )
        return fault

    @model_validator(mode="after")
    def _one_kind(self) -> FaultStep:
        given = (("ok", self.ok), ("fault", self.fault), ("status", self.status))
        kinds = [name for name, value in given if value]
        if len(kinds) > 1:
            raise ValueError(f"a step is one of ok / fault / status, got {' and '.join(kinds)}")
        return self

    @property
    def label(self) -> str:
        """How the step is counted in the stats: its mode, ``http_413``, or ``ok``."""
        if self.fault is not None:
            return self.fault
        if self.status is not None:
            return f"http_{self.status}"
        return "ok"

    @property
    def retry_after_given(self) -> bool:
        """Whether the step set ``retry_after`` itself (possibly to null)."""
        return "retry_after" in self.model_fields_set


def _step(value: FaultStep | Mapping[str, Any], index: int) -> FaultStep:
    if isinstance(value, FaultStep):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"script step {index}: expected a JSON object, got {value!r}")
    try:
        return FaultStep.model_validate(dict(value))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "step"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":
            msg = f"unknown fault mode; valid modes: {', '.join(FAULT_MODES)}"
        raise ValueError(f"script step {index}: {where}: {msg}") from None


def parse_steps(data: Any) -> list[FaultStep]:
    """Script steps from decoded JSON: a list of steps, or ``{"steps": [...]}``."""
    if isinstance(data, Mapping) and "steps" in data:
        data = data["steps"]
    if not isinstance(data, list):
        raise ValueError('a fault script is a JSON list of steps (or {"steps": [...]})')
    return [_step(item, i) for i, item in enumerate(data)]


def load_script(path: str | Path) -> list[FaultStep]:
    """Read a fault script from a JSON file; ``ValueError`` says what is wrong with it."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return parse_steps(data)


def parse_rates(specs: Iterable[str]) -> dict[str, float]:
    """``["rate_limit=0.1", "overloaded=0.05"]`` -> rates by mode (ValueError if bad)."""
    rates: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"fault {spec!r}: expected MODE=RATE, e.g. rate_limit=0.1")
        rates[_mode(name.strip())] = _rate(name.strip(), value.strip())
    return rates


def _mode(name: str) -> FaultMode:
    mode = fault_named(name, FAULT_MODES)
    if mode is not None:
        return mode
    sim_only = ""
    if fault_named(name, FAULTS) is not None:
        sim_only = " (a sim: fault, not one the mock server injects)"
    raise ValueError(
        f"unknown fault mode {name!r}{sim_only}; valid modes: {', '.join(FAULT_MODES)}"
    )


def _rate(name: str, value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"fault {name}: rate {value!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault {name}: rate {rate} is not between 0 and 1")
    return rate


def flaky_rates(total: float = 0.1) -> dict[str, float]:
    """Random faults on ``total`` of the requests: 429 (with retry-after), 500 and malformed
    JSON, a third each (malformed JSON only strikes structured requests)."""
    share = _rate("total", total) / 3.0
    return {"rate_limit": share, "server_error": share, "malformed_json": share}


class Outage(BaseModel):
    """Every model request gets the ``overloaded`` fault for ``duration_s`` seconds.

    ``start_in_s``: the delay before it starts, counted from when it is scheduled, or from
    the first model request with ``from_first_request``. ``latency_ms``: how long each
    failing request is held before its error. ``requests`` counts the requests it failed;
    ``starts_at`` is the monotonic time it starts (None until known).
    """

    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(gt=0.0)
    start_in_s: float = Field(default=0.0, ge=0.0)
    from_first_request: bool = False
    latency_ms: float = Field(default=0.0, ge=0.0)
    starts_at: float | None = None
    requests: int = 0

    def anchor(self, now: float) -> None:
        """Fix the start time, ``start_in_s`` after ``now``."""
        if self.starts_at is None:
            self.starts_at = now + self.start_in_s

    def active(self, now: float) -> bool:
        return self.starts_at is not None and self.starts_at <= now < self.ends_at

    @property
    def ends_at(self) -> float:
        return float("inf") if self.starts_at is None else self.starts_at + self.duration_s

    def to_dict(self, now: float) -> dict[str, Any]:
        """For ``GET /_mock/stats``: the window relative to ``now``, and its request count."""
        starts_in = None if self.starts_at is None else round(self.starts_at - now, 6)
        return {
            "duration_s": self.duration_s,
            "starts_in_s": starts_in,
            "active": self.active(now),
            "over": self.starts_at is not None and now >= self.ends_at,
            "requests": self.requests,
        }


class FaultPlan:
    """Which request gets which fault: a script first, then per-mode rates.

    ``rates`` maps modes to per-request probabilities in [0, 1]; ``script`` is a sequence
    of steps (or their JSON objects). ``hang_s`` is how long a ``timeout`` holds a reply
    back and ``retry_after_s`` the ``retry-after`` of a drawn ``rate_limit`` (None: no
    header), unless a step says otherwise.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        script: Sequence[FaultStep | Mapping[str, Any]] | None = None,
        *,
        seed: int = 0,
        hang_s: float = 30.0,
        retry_after_s: float | None = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.outage: Outage | None = None
        self.rates: dict[FaultMode, float] = {
            _mode(name): _rate(name, value) for name, value in (rates or {}).items()
        }
        self.seed = seed
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self._rng = random.Random(f"trellis-mock-faults:{seed}")
        self._script: deque[FaultStep] = deque(_step(s, i) for i, s in enumerate(script or ()))

    def __repr__(self) -> str:
        rates = ", ".join(f"{m}={r}" for m, r in self.rates.items() if r)
        return f"FaultPlan({rates or 'no rates'}, {len(self._script)} scripted steps)"

    @property
    def pending(self) -> int:
        """Scripted steps not consumed yet."""
        return len(self._script)

    def load_script(
        self, steps: Sequence[FaultStep | Mapping[str, Any]], *, append: bool = False
    ) -> None:
        """Replace (or extend) the remaining script."""
        parsed = [_step(s, i) for i, s in enumerate(steps)]
        if not append:
            self._script.clear()
        self._script.extend(parsed)

    def schedule_outage(
        self,
        duration_s: float,
        start_in_s: float = 0.0,
        *,
        from_first_request: bool = False,
        latency_ms: float = 0.0,
    ) -> Outage:
        """Replace any outage with a new window (see :class:`Outage`); ValueError if bad."""
        try:
            outage = Outage(
                duration_s=duration_s,
                start_in_s=start_in_s,
                from_first_request=from_first_request,
                latency_ms=latency_ms,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "outage"
            raise ValueError(f"outage: {where}: {err['msg']}") from None
        if not from_first_request:
            outage.anchor(self.clock())
        self.outage = outage
        return outage

    def reset(self) -> None:
        """Drop the remaining script and any outage, and restart the random sequence."""
        self.outage = None
        self._script.clear()
        self._rng = random.Random(f"trellis-mock-faults:{self.seed}")

    def next(self, *, structured: bool, stream: bool) -> tuple[FaultStep | None, bool]:
        """The step for the next request and whether it came from the script.

        A drawn fault never is a mode that does not apply to the request (see the module
        docs); a scripted one always applies as written. During an outage every request
        gets ``overloaded`` (counted as not scripted), and the script waits.
        """
        outage = self.outage
        if outage is not None:
            now = self.clock()
            outage.anchor(now)
            if outage.active(now):
                outage.requests += 1
                return FaultStep(fault="overloaded", latency_ms=outage.latency_ms), False
        if self._script:
            return self._script.popleft(), True
        u = self._rng.random()
        has: list[ReplyPart] = []
        if structured:
            has.append("output")
        if stream:
            has.append("stream")
        fault = draw_fault(u, self.rates.items(), has)
        return (None if fault is None else FaultStep(fault=fault)), False

    def retry_after_for(self, step: FaultStep) -> float | None:
        """The ``retry-after`` (seconds) a fault step sends, None for no header."""
        if step.retry_after_given:
            return step.retry_after
        return self.retry_after_s if step.fault == "rate_limit" else None

    def hang_for(self, step: FaultStep) -> float:
        return self.hang_s if step.hang_s is None else step.hang_s
