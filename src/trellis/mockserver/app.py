"""The mock server's aiohttp application: routes, the request pipeline, the control API.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic),
``GET /v1/models`` (OpenAI's list, or Anthropic's when the request carries an
``anthropic-version`` or ``x-api-key`` header), and for tests ``POST /_mock/script``
(load a fault script: a JSON list of steps, or ``{"steps": [...], "append": true}``),
``POST /_mock/faults`` (set per-mode rates), ``POST /_mock/outage`` (every request gets
503 / 529 for a while: ``{"duration_s": 3, "start_in_s": 0, "from_first_request": false}``,
see :class:`~trellis.mockserver.faults.Outage`), ``POST /_mock/reset`` and
``GET /_mock/stats`` (with ``outage``: the window and the requests received in it).

Each model request goes through: API key check (only when the server has one), body
parsing and the dialect's strict checks (``validate_openai`` / ``validate_anthropic``: the
400 the real API answers, in its shape and words), the fault plan (a scripted or drawn
step), the rate limiter (429 with the headers, answered at once), the latency, the reply
from the simulator, and the rendering as JSON or as a stream. Every response of a
rate-limited server carries the dialect's remaining / reset headers.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from trellis.mockserver.anthropic_api import AnthropicDialect
from trellis.mockserver.anthropic_api import models_list as anthropic_models
from trellis.mockserver.faults import FaultPlan, FaultStep, parse_steps
from trellis.mockserver.limits import AdmissionLimiter
from trellis.mockserver.openai_api import OpenAIDialect
from trellis.mockserver.openai_api import models_list as openai_models
from trellis.mockserver.profiles import check_profile, profiled, rejection
from trellis.mockserver.replies import (
    Dialect,
    ParsedRequest,
    Reply,
    RequestError,
    answer_schema,
    choose_tools,
    input_tokens,
    make_reply,
)
from trellis.models.faults import content_fault, error_fault
from trellis.models.sim import SimModel, SimOptions

__all__ = ["DEFAULT_MODELS", "STATE_KEY", "MockState", "MockStats", "create_app"]

DEFAULT_MODELS = ("sim-small", "sim-medium", "sim-large")
_MAX_BODY = 32 * 1024 * 1024  # the Messages API's request size limit
OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()
_JSON_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The request body must be valid JSON.)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class MockStats:
    """What the server has seen; ``GET /_mock/stats`` returns :meth:`to_dict`."""

    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0  # 429s from the rate limiter (fault 429s are under faults)
    faults: Counter[str] = field(default_factory=Counter)
    scripted: int = 0  # script steps consumed
    cancelled: int = 0  # requests whose client went away before the reply
    input_tokens: int = 0
    output_tokens: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    first_request_at: float | None = None  # time.monotonic()
    last_response_at: float | None = None

    @property
    def responses_429(self) -> int:
        return self.by_status[429]

    def copy(self) -> MockStats:
        return replace(
            self,
            by_endpoint=self.by_endpoint.copy(),
            by_status=self.by_status.copy(),
            faults=self.faults.copy(),
        )

    def to_dict(self) -> dict[str, Any]:
        elapsed = None
        if self.first_request_at is not None and self.last_response_at is not None:
            elapsed = round(self.last_response_at - self.first_request_at, 6)
        return {
            "requests": self.requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "responses_429": self.responses_429,
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "scripted": self.scripted,
            "cancelled": self.cancelled,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "elapsed_s": elapsed,
        }


class MockState:
    """Everything one server instance keeps: models, faults, limits, latency, stats."""

    def __init__(
        self,
        *,
        faults: FaultPlan | None = None,
        limiter: AdmissionLimiter | None = None,
        latency_ms: float | tuple[float, float] | str = 0.0,
        seed: int = 0,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        profile: str | None = None,
    ) -> None:
        self.faults = faults or FaultPlan(seed=seed)
        #: The server profile forced for every request (None: chosen by model name).
        self.profile = check_profile(profile)
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self.latency_bounds_ms = SimOptions.parse({"latency_ms": latency_ms}).latency_bounds_ms
        self.seed = seed
        self.api_key = api_key
        self.models = list(models)
        self.stats = MockStats()
        self._sims: dict[str, SimModel] = {}
        self._latency_rng = random.Random(f"trellis-mock-latency:{seed}")

    def sim(self, model: str) -> SimModel:
        sim = self._sims.get(model)
        if sim is None:
            sim = self._sims[model] = SimModel(f"sim:{model}", SimOptions(seed=self.seed))
        return sim

    def latency_s(self, step: FaultStep | None) -> float:
        if step is not None and step.latency_ms is not None:
            return step.latency_ms / 1000.0
        low, high = self.latency_bounds_ms
        if high <= 0.0:
            return 0.0
        return (low + (high - low) * self._latency_rng.random()) / 1000.0

    def reset(self) -> None:
        """Back to the start: fresh stats, full rate-limit buckets, no script, same seed."""
        self.stats = MockStats()
        self.faults.reset()
        if self.limiter is not None:
            self.limiter.reset()
        self._sims.clear()
        self._latency_rng = random.Random(f"trellis-mock-latency:{self.seed}")


STATE_KEY = web.AppKey("trellis_mock_state", MockState)


# -- helpers -------------------------------------------------------------------------------


def _json(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


def _limit_headers(state: MockState, dialect: Dialect, model: str) -> dict[str, str]:
    if state.limiter is None:
        return {}
    return dialect.limit_headers(state.limiter.snapshot(model))


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _raw_response(step: FaultStep, dialect: Dialect, headers: dict[str, str]) -> web.Response:
    status = step.status or 500
    body = step.body
    if body is None:
        payload = json.dumps(dialect.error_for_status(status, step.message))
        ctype = "application/json"
    elif isinstance(body, str):
        payload = body
        html = body.lstrip().startswith("<")
        ctype = step.content_type or ("text/html; charset=utf-8" if html else "text/plain")
    else:
        payload = json.dumps(body, ensure_ascii=False)
        ctype = step.content_type or "application/json"
    return web.Response(
        status=status, body=payload.encode(), headers={**headers, "Content-Type": ctype}
    )


def _fault_error(
    state: MockState,
    dialect: Dialect,
    step: FaultStep,
    parsed: ParsedRequest,
    headers: dict[str, str],
) -> web.Response:
    kind = error_fault(step.fault) or "server_error"
    model = parsed.request.model
    status, body = dialect.error(
        kind, model=model, message=step.message, tokens=input_tokens(parsed.request)
    )
    retry_after = state.faults.retry_after_for(step)
    if retry_after is not None:
        headers.update(dialect.retry_headers(retry_after))
    return _json(status, body, headers)


# -- the model endpoints -------------------------------------------------------------------


async def _read(
    request: web.Request, state: MockState, dialect: Dialect, headers: dict[str, str]
) -> ParsedRequest | web.Response:
    """The parsed request, or the 401 / 400 the provider would answer instead."""
    if state.api_key is not None and not dialect.authorized(request.headers, state.api_key):
        status, body = dialect.error("auth", model="")
        return _json(status, body, headers)
    try:
        raw = await request.json()
    except ValueError:
        status, body = dialect.error("bad_request", model="", message=_JSON_ERROR)
        return _json(status, body, headers)
    rejected = rejection(state.profile, dialect.name, raw)
    if rejected is not None:  # a field this profile's server does not take
        return _json(rejected[0], rejected[1], headers)
    model = raw.get("model") if isinstance(raw, dict) else None
    try:
        parsed = profiled(dialect, state.profile, model).parse(raw)
        dialect.validate(raw, request.headers)
    except RequestError as exc:
        status, body = dialect.error(
            "bad_request", model="", message=exc.message, param=exc.param, code=exc.code
        )
        return _json(exc.status, body, headers)
    return parsed


def _admit(
    state: MockState, dialect: Dialect, parsed: ParsedRequest, headers: dict[str, str]
) -> web.Response | None:
    """None when the rate limits let the request through, else the 429."""
    if state.limiter is None:
        return None
    model = parsed.request.model
    admission = state.limiter.admit(model, input_tokens(parsed.request))
    if admission.allowed:
        return None
    state.stats.rate_limited += 1
    headers.update(dialect.limit_headers(admission.snapshot))
    if admission.retry_after_s is not None:
        headers.update(dialect.retry_headers(admission.retry_after_s, whole_seconds=True))
    status, body = dialect.limit_error(admission, model=model)
    return _json(status, body, headers)


def _draw(state: MockState, parsed: ParsedRequest, headers: dict[str, str]) -> FaultStep | None:
    """The fault step for this request (counted in the stats), if any."""
    req = parsed.request
    structured = answer_schema(req) is not None or bool(choose_tools(req, state.seed))
    step, scripted = state.faults.next(structured=structured, stream=parsed.stream)
    if step is not None:
        state.stats.scripted += scripted
        if step.label != "ok":
            state.stats.faults[step.label] += 1
        headers.update(step.headers)
    return step


async def _serve(request: web.Request, dialect: Dialect) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    dialect = profiled(dialect, state.profile)
    headers = dialect.base_headers()
    parsed = await _read(request, state, dialect, headers)
    if isinstance(parsed, web.Response):
        return parsed
    model = parsed.request.model
    dialect = profiled(dialect, state.profile, model)
    step = _draw(state, parsed, headers)
    fault = step.fault if step is not None else None
    if step is not None and (step.status is not None or error_fault(fault) is not None):
        await _sleep(state.latency_s(step))
        headers.update(_limit_headers(state, dialect, model))
        if step.status is None:
            return _fault_error(state, dialect, step, parsed, headers)
        if step.retry_after is not None:
            headers.update(dialect.retry_headers(step.retry_after))
        return _raw_response(step, dialect, headers)
    refused = _admit(state, dialect, parsed, headers)
    if refused is not None:
        return refused

    await _sleep(state.latency_s(step))
    if step is not None and fault == "timeout" and not parsed.stream:
        await _sleep(state.faults.hang_for(step))
    try:
        reply = await make_reply(
            state.sim(model), parsed.request, seed=state.seed, fault=content_fault(fault)
        )
    except RequestError as exc:
        status, body = dialect.error(
            "bad_request", model=model, message=exc.message, param=exc.param
        )
        return _json(exc.status, body, headers)
    state.stats.input_tokens += reply.usage.input_tokens
    state.stats.output_tokens += reply.usage.output_tokens
    if state.limiter is not None:
        state.limiter.record_tokens(model, reply.usage.output_tokens)
    headers.update(_limit_headers(state, dialect, model))

    if parsed.stream:
        return await _stream(request, state, dialect, parsed, step, reply, headers)
    if step is not None and fault == "stream_error":  # scripted for a plain request
        status, body = dialect.error("overloaded", model=model, message=step.message)
        return _json(status, body, headers)
    payload = json.dumps(dialect.render(parsed, reply), ensure_ascii=False)
    if fault == "stream_cut":  # the body ends half-way
        payload = payload[: len(payload) // 2]
    return web.Response(
        status=200, body=payload.encode(), headers={**headers, "Content-Type": "application/json"}
    )


async def _stream(
    request: web.Request,
    state: MockState,
    dialect: Dialect,
    parsed: ParsedRequest,
    reply_step: FaultStep | None,
    reply: Reply,
    headers: dict[str, str],
) -> web.StreamResponse:
    plan = dialect.stream(parsed, reply)
    events = plan.events
    body_end = len(events) - plan.terminal
    fault = reply_step.fault if reply_step is not None else None
    strike = -1
    if reply_step is not None and fault in ("stream_error", "stream_cut", "timeout"):
        wanted = reply_step.after_events
        strike = min(body_end, max(1, body_end // 2) if wanted is None else wanted)
    response = web.StreamResponse(
        status=200,
        headers={
            **headers,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
        },
    )
    await response.prepare(request)
    try:
        for i, event in enumerate(events):
            if i == strike and reply_step is not None:
                if fault == "stream_error":
                    await response.write(dialect.stream_error(reply_step.message))
                    break
                if fault == "stream_cut":
                    break
                await _sleep(state.faults.hang_for(reply_step))
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:  # the client went away
        pass
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, OPENAI)


async def _messages(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ANTHROPIC)


async def _models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    is_anthropic = "anthropic-version" in request.headers or "x-api-key" in request.headers
    dialect: Dialect = ANTHROPIC if is_anthropic else OPENAI
    headers = dialect.base_headers()
    if state.api_key is not None and not dialect.authorized(request.headers, state.api_key):
        status, body = dialect.error("auth", model="")
        return _json(status, body, headers)
    listing = anthropic_models(state.models) if is_anthropic else openai_models(state.models)
    return _json(200, listing, headers)


# -- the control API -----------------------------------------------------------------------


async def _control_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body must be JSON"}), content_type="application/json"
        ) from None


def _control_error(message: str) -> web.Response:
    return _json(400, {"error": message}, {})


async def _load_script(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    data = await _control_body(request)
    append = isinstance(data, dict) and data.get("append") is True
    try:
        steps = parse_steps(data)
    except ValueError as exc:
        return _control_error(str(exc))
    state.faults.load_script(steps, append=append)
    return _json(200, {"pending": state.faults.pending}, {})


async def _set_rates(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    data = await _control_body(request)
    if not isinstance(data, dict):
        return _control_error('expected {"mode": rate, ...}')
    try:
        plan = FaultPlan(
            data,
            seed=state.faults.seed,
            hang_s=state.faults.hang_s,
            retry_after_s=state.faults.retry_after_s,
        )
    except ValueError as exc:
        return _control_error(str(exc))
    state.faults.rates = plan.rates
    return _json(200, {"rates": dict(state.faults.rates)}, {})


async def _schedule_outage(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    data = await _control_body(request)
    if not isinstance(data, dict) or "duration_s" not in data:
        return _control_error('expected {"duration_s": seconds, "start_in_s": seconds}')
    try:
        outage = state.faults.schedule_outage(**data)
    except (TypeError, ValueError) as exc:
        return _control_error(str(exc))
    return _json(200, {"outage": outage.to_dict(state.faults.clock())}, {})


async def _reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset()
    return _json(200, {"reset": True}, {})


async def _stats(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    outage = state.faults.outage
    return _json(
        200,
        {
            **state.stats.to_dict(),
            "script_pending": state.faults.pending,
            "outage": None if outage is None else outage.to_dict(state.faults.clock()),
        },
        {},
    )


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request under /v1/ (not the control API) and its status."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    stats = request.app[STATE_KEY].stats
    stats.requests += 1
    stats.by_endpoint[f"{request.method} {request.path}"] += 1
    if stats.first_request_at is None:
        stats.first_request_at = time.monotonic()
    stats.in_flight += 1
    stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        stats.by_status[exc.status] += 1
        raise
    except asyncio.CancelledError:
        stats.cancelled += 1
        raise
    finally:
        stats.in_flight -= 1
        stats.last_response_at = time.monotonic()
    stats.by_status[response.status] += 1
    return response


def create_app(state: MockState | None = None) -> web.Application:
    """The aiohttp application of one mock server (a default :class:`MockState` if none)."""
    app = web.Application(middlewares=[_count], client_max_size=_MAX_BODY)
    app[STATE_KEY] = state or MockState()
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/_mock/script", _load_script)
    app.router.add_post("/_mock/faults", _set_rates)
    app.router.add_post("/_mock/outage", _schedule_outage)
    app.router.add_post("/_mock/reset", _reset)
    app.router.add_get("/_mock/stats", _stats)
    return app
