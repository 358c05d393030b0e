"""The web UI's Starlette application: pages (Jinja2, server-rendered) and the JSON API
behind each, the token check, and the answer forms of waiting steps."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

try:
    import jinja2
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - the extra is missing
    from trellis.errors import ConfigurationError

    raise ConfigurationError(
        "the web UI needs the [ui] extra: pip install 'trellis-flows[ui]'"
    ) from exc

from trellis.errors import InputError, TrellisError
from trellis.formats import fmt_cost
from trellis.store.base import Store
from trellis.ui.graph import STATUS_COLOURS
from trellis.ui.security import COOKIE, HEADER, is_loopback, token_matches
from trellis.ui.views import (
    STATUSES,
    RunFilters,
    RunNotFound,
    compare_view,
    run_view,
    runs_view,
)

__all__ = ["Answerer", "UiSettings", "create_app"]

HERE = Path(__file__).resolve().parent

#: Answers step ``step`` of waiting run ``run`` and resumes it (``approval``: the answer
#: is an approve / reject); returns the run's status after. Raises TrellisError (an
#: InputError for an answer that was not taken) with the message to show.
Answerer = Callable[[str, str, Any, bool], str]


@dataclass(frozen=True, slots=True)
class UiSettings:
    """What one UI server serves and how it is guarded."""

    open_store: Callable[[], Store | None]  # None: nothing is recorded there (yet)
    store_url: str
    token: str
    host: str = "127.0.0.1"
    answer: Answerer | None = None

    @property
    def token_for_reads(self) -> bool:
        """A non-loopback bind needs the token for every page, not only for writes."""
        return not is_loopback(self.host)


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _usd(value: float | None) -> str:
    """One cost (an attempt's, a diff's): ``unknown`` when it has no price."""
    return fmt_cost(value)


def _cost(usage: Mapping[str, Any]) -> str:
    """The cost of a run, batch or step (its usage or entry dict), as everywhere else:
    ``≥ $x (n calls unpriced)`` when some calls had no price."""
    known = usage.get("cost_usd_known_part", usage.get("cost_usd"))
    return fmt_cost(known, int(usage.get("unpriced_attempts") or 0))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when, seconds=_seconds, usd=_usd, cost=_cost, pretty=_pretty, q=quote
    )
    env.globals.update(colours=STATUS_COLOURS, statuses=STATUSES)
    return env


def _parse_time(text: str | None) -> float | None:
    """A time filter: a Unix timestamp or an ISO date / date-time (UTC)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"not a time: {text!r} (give 2026-01-31 or 2026-01-31T12:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _filters(request: Request) -> RunFilters:
    q = request.query_params
    try:
        page = int(q.get("page") or 1)
    except ValueError:
        raise InputError(f"page must be a number, not {q.get('page')!r}") from None
    return RunFilters(
        flow=q.get("flow") or None,
        status=q.get("status") or None,
        batch=q.get("batch") or None,
        since=_parse_time(q.get("since")),
        until=_parse_time(q.get("until")),
        sort=q.get("sort") or "started",
        descending=(q.get("order") or "desc") != "asc",
        page=page,
    )


Handler = Callable[[Request], Awaitable[Response]]


def create_app(settings: UiSettings) -> Starlette:
    """The UI as an ASGI application (``uvicorn`` serves it; tests may call it directly)."""
    env = _environment()

    def given_token(request: Request) -> str | None:
        return (
            request.headers.get(HEADER)
            or request.query_params.get("token")
            or request.cookies.get(COOKIE)
        )

    def page(request: Request, template: str, status: int = 200, **values: Any) -> Response:
        authorised = token_matches(given_token(request), settings.token)
        html = env.get_template(template).render(
            request=request,
            store_url=settings.store_url,
            token=settings.token if authorised else None,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def with_store(read: Callable[[Store], dict[str, Any]]) -> dict[str, Any] | None:
        store = settings.open_store()
        if store is None:
            return None
        try:
            return read(store)
        finally:
            store.close()

    def guarded(handler: Handler) -> Handler:
        """Token and Host checks, the token cookie, errors as pages (or JSON)."""

        async def wrapped(request: Request) -> Response:
            api = request.url.path.startswith("/api/")
            if not _host_allowed(request, settings):
                return Response("unknown Host header", status_code=403)
            query_token = request.query_params.get("token")
            if settings.token_for_reads and not token_matches(given_token(request), settings.token):
                return _refuse(api, "this server needs its token: open the URL it printed")
            try:
                response = await handler(request)
            except RunNotFound as exc:
                response = _problem(api, page, request, 404, exc)
            except InputError as exc:
                response = _problem(api, page, request, 400, exc)
            except TrellisError as exc:
                response = _problem(api, page, request, 500, exc)
            if token_matches(query_token, settings.token):
                response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
            response.headers["content-security-policy"] = (
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "frame-ancestors 'none'"
            )
            response.headers["x-content-type-options"] = "nosniff"
            return response

        return wrapped

    async def runs_page(request: Request) -> Response:
        filters = _filters(request)
        data = await run_in_threadpool(with_store, lambda s: runs_view(s, filters))
        return page(request, "runs.html", data=data or _empty(), filters=filters)

    async def runs_api(request: Request) -> Response:
        filters = _filters(request)
        data = await run_in_threadpool(with_store, lambda s: runs_view(s, filters))
        return JSONResponse(data or _empty())

    async def load_run(request: Request) -> dict[str, Any]:
        run_id = request.path_params["run_id"]
        data = await run_in_threadpool(with_store, lambda s: run_view(s, run_id))
        if data is None:
            raise RunNotFound(f"no run {run_id!r} in {settings.store_url}")
        return data

    async def run_page(request: Request) -> Response:
        data = await load_run(request)
        template = "batch.html" if data["kind"] == "batch" else "run.html"
        return page(request, template, data=data, message=request.query_params.get("answered"))

    async def run_api(request: Request) -> Response:
        data = await load_run(request)
        data.pop("svg", None)
        return JSONResponse(data)

    async def progress_fragment(request: Request) -> Response:
        data = await load_run(request)
        return page(request, "_progress.html", data=data)

    async def compare_data(request: Request) -> dict[str, Any] | None:
        a, b = request.query_params.get("a"), request.query_params.get("b")
        if not a or not b:
            return None
        return await run_in_threadpool(with_store, lambda s: compare_view(s, a, b))

    async def compare_page(request: Request) -> Response:
        data = await compare_data(request)
        q = request.query_params
        return page(request, "compare.html", data=data, a=q.get("a", ""), b=q.get("b", ""))

    async def compare_api(request: Request) -> Response:
        data = await compare_data(request)
        if data is None:
            raise InputError("give two runs: /api/compare?a=RUN&b=RUN")
        return JSONResponse(data)

    async def answer(run_id: str, step: str, value: Any, approval: bool) -> str:
        if settings.answer is None:
            raise InputError("this server does not take answers")
        answer_with = settings.answer
        return await run_in_threadpool(answer_with, run_id, step, value, approval)

    async def answer_form(request: Request) -> Response:
        form = await request.form()
        token = form.get("token")
        if not token_matches(token if isinstance(token, str) else None, settings.token):
            return _refuse(False, "answering needs the server's token (printed at start)")
        run_id, step = request.path_params["run_id"], request.path_params["step"]
        kind = str(form.get("kind") or "reply")
        if kind in ("approve", "reject"):
            value: Any = {"approved": kind == "approve", "comment": str(form.get("comment") or "")}
            if not value["comment"]:
                value["comment"] = None
        else:
            text = str(form.get("answer") or "")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"the answer is not valid JSON: {exc}") from None
        status = await answer(run_id, step, value, kind in ("approve", "reject"))
        note = f"step {step} answered; the run is {status} now"
        return RedirectResponse(f"/runs/{quote(run_id)}?answered={quote(note)}", status_code=303)

    async def answer_api(request: Request) -> Response:
        if not token_matches(request.headers.get(HEADER), settings.token):
            return _refuse(True, f"answering needs the server's token in the {HEADER} header")
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or "answer" not in body:
            raise InputError('the body must be {"answer": ..., "approval": false}')
        run_id, step = request.path_params["run_id"], request.path_params["step"]
        status = await answer(run_id, step, body["answer"], bool(body.get("approval")))
        return JSONResponse({"run_id": run_id, "step": step, "status": status})

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", guarded(runs_page)),
        Route("/favicon.ico", no_icon),
        Route("/api/runs", guarded(runs_api)),
        # {run_id:path}: a sub-flow's child run is "<run>/<step>[i]"; the answer routes
        # come first, so that a path ending in /steps/.../answer is never taken for an id.
        Route("/compare", guarded(compare_page)),
        Route("/api/compare", guarded(compare_api)),
        # {step:path}: a question inside a sub-flow is addressed by its path (review/approve)
        Route("/runs/{run_id}/steps/{step:path}/answer", guarded(answer_form), methods=["POST"]),
        Route("/api/runs/{run_id}/steps/{step:path}/answer", guarded(answer_api), methods=["POST"]),
        Route("/runs/{run_id:path}/progress", guarded(progress_fragment)),
        Route("/runs/{run_id:path}", guarded(run_page)),
        Route("/api/runs/{run_id:path}", guarded(run_api)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def _empty() -> dict[str, Any]:
    return {"runs": [], "total": 0, "page": 1, "more": False, "pages": 1, "page_size": 50}


def _host_allowed(request: Request, settings: UiSettings) -> bool:
    """On a loopback bind, only loopback Host headers (no DNS rebinding)."""
    if settings.token_for_reads:
        return True
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or is_loopback(host)


def _refuse(api: bool, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=403)
    return HTMLResponse(f"<!doctype html><title>403</title><p>{message}</p>", status_code=403)


def _problem(
    api: bool, page: Callable[..., Response], request: Request, status: int, exc: Exception
) -> Response:
    if api:
        return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status)
    return page(request, "error.html", status=status, message=str(exc), when=time.time())
