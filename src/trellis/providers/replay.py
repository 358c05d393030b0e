"""The replay provider: a model that answers from recorded calls instead of a live API.

``replay:NAME?file=recorded.jsonl`` answers from a JSONL file of recorded calls, one object
per line::

    {"model": NAME, "prompt": TEXT, "response": TEXT,
     "usage": {"input_tokens": N, "output_tokens": N}, "cost_usd": X}

``usage`` and ``cost_usd`` are optional. A request matches a record on the model name
(``NAME``, the part after ``replay:``) and the text of the request's *last user message*;
the first record of a (model, prompt) pair wins. Recorded usage is returned as the reply's
usage and a recorded cost is billed as it is (``ModelResponse.cost_usd``); without one the
engine prices the usage with the price table (``[prices] "replay:NAME" = {input=...,
output=..., request=...}``: per-token and/or per-request prices). Without recorded usage a
tokenizer counts tokens: the ``tokenizer=module:function`` option (a callable
``str -> int``), or the ``tokenizer`` argument of :class:`ReplayModel`; the default is the
simulator's characters/4 estimate, which undercounts real model output by about 40%, so
give a real tokenizer (or recorded usage) when cost matters.

``replay:store?url=sqlite:///.trellis/trellis.db&run=ID`` replays the LLM calls a Trellis
store journaled for run ``ID`` (and, for a batch, for all its items): a request matches a
recorded call when its hash (model, messages, schema and parameters, as the journal keys
it) equals the recorded request's for one of the models the call used. The reply is the
recorded value, its usage and cost those of the attempt that succeeded.

A request no record matches is a :class:`ReplayMissError` quoting the start of its prompt,
unless ``fallback=ROLE`` names a role whose (live) model answers it instead; such a reply
is priced as that model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trellis.errors import BadRequestError, ConfigurationError
from trellis.loading import load_callable
from trellis.models.base import Model, ModelRequest, ModelResponse, Usage
from trellis.models.tokens import estimate_tokens

__all__ = [
    "RecordedCall",
    "ReplayMissError",
    "ReplayModel",
    "Tokenizer",
    "load_recorded_calls",
    "load_tokenizer",
]

#: Counts the tokens of a text.
Tokenizer = Callable[[str], int]
#: Resolves a role to its model, and prices a model's usage (set by the engine).
RoleResolver = Callable[[str], Model]
Pricer = Callable[[str, Usage], "float | None"]

_QUOTE_CHARS = 80
_OPTIONS = frozenset({"file", "url", "run", "fallback", "tokenizer"})


class ReplayMissError(BadRequestError):
    """No recorded call matches the request (and no ``fallback=`` role was given)."""


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One recorded answer: what was asked, what came back, and what it cost."""

    model: str
    prompt: str
    response: str
    usage: Usage | None = None
    cost_usd: float | None = None


_LOADED: dict[tuple[str, int, int], list[RecordedCall]] = {}


def load_recorded_calls(path: str | Path) -> list[RecordedCall]:
    """Read a JSONL file of recorded calls; a bad line is a ConfigurationError naming it.

    Parsed files are kept per (path, size, mtime): every variant of an eval binds its own
    models to the same recording, and it is read once."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError as exc:
        raise ConfigurationError(f"replay: cannot read recorded calls {file}: {exc}") from exc
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _LOADED.get(key)
    if cached is not None:
        return cached
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"replay: cannot read recorded calls {file}: {exc}") from exc
    calls: list[RecordedCall] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            calls.append(_record(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(
                f"replay: {file}:{number} is not a recorded call "
                f'({{"model", "prompt", "response", "usage"?, "cost_usd"?}}): {exc}'
            ) from exc
    if len(_LOADED) >= 16:
        _LOADED.clear()
    _LOADED[key] = calls
    return calls


def _record(obj: Any) -> RecordedCall:
    if not isinstance(obj, dict):
        raise TypeError(f"expected an object, got {type(obj).__name__}")
    for name in ("model", "prompt", "response"):
        if not isinstance(obj.get(name), str):
            raise TypeError(f"{name!r} must be a string")
    usage = obj.get("usage")
    cost = obj.get("cost_usd")
    return RecordedCall(
        model=obj["model"],
        prompt=obj["prompt"],
        response=obj["response"],
        usage=None
        if usage is None
        else Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
        cost_usd=None if cost is None else float(cost),
    )


def load_tokenizer(spec: str) -> Tokenizer:
    """``module:function`` or ``path.py:function``: a callable ``str -> int``."""
    return load_callable(spec, what=f"replay: tokenizer {spec!r}")


class ReplayModel(Model):
    """Answers from recorded calls; see the module docstring."""

    def __init__(
        self,
        model: str,
        records: list[RecordedCall] | None = None,
        *,
        by_hash: Mapping[str, RecordedCall] | None = None,
        models: tuple[str, ...] = (),
        fallback: str | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.name = f"replay:{model}"
        self.model = model
        self.fallback = fallback
        self.tokenizer: Tokenizer = tokenizer or estimate_tokens
        self._by_prompt: dict[tuple[str, str], RecordedCall] = {}
        for record in records or ():
            self._by_prompt.setdefault((record.model, record.prompt), record)
        self._by_hash = dict(by_hash or {})
        self._hash_models = models
        self._resolve: RoleResolver | None = None
        self._price: Pricer | None = None

    @classmethod
    def from_options(cls, model: str, options: Mapping[str, Any]) -> ReplayModel:
        """Build from a binding's options (``file=``, ``url=``/``run=``, ``fallback=``,
        ``tokenizer=``)."""
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"replay:{model}: unknown option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(_OPTIONS))}"
            )
        fallback = options.get("fallback") or None
        spec = options.get("tokenizer")
        tokenizer = load_tokenizer(str(spec)) if spec else None
        if model == "store":
            url, run = options.get("url"), options.get("run")
            if not url or not run:
                raise ConfigurationError(
                    "replay:store needs url= (the store) and run= (the recorded run or batch)"
                )
            by_hash, models = recorded_store_calls(str(url), str(run))
            return cls(
                model, by_hash=by_hash, models=models, fallback=fallback, tokenizer=tokenizer
            )
        file = options.get("file")
        if not file:
            raise ConfigurationError(
                f"replay:{model} needs file=recorded.jsonl (or use replay:store?url=...&run=...)"
            )
        return cls(model, load_recorded_calls(str(file)), fallback=fallback, tokenizer=tokenizer)

    def bind_engine(self, resolve: RoleResolver, price: Pricer) -> None:
        """Called by the engine: how to reach the ``fallback=`` role and price its replies."""
        self._resolve, self._price = resolve, price

    def lookup(self, request: ModelRequest) -> RecordedCall | None:
        if self._hash_models:
            from trellis.engine.journal import request_hash  # the journal's own key

            for name in self._hash_models:
                found = self._by_hash.get(request_hash(name, request))
                if found is not None:
                    return found
            return None
        return self._by_prompt.get((request.model, last_user_text(request)))

    async def complete(self, request: ModelRequest) -> ModelResponse:
        record = self.lookup(request)
        if record is None:
            return await self._miss(request)
        usage = record.usage
        if usage is None:
            usage = Usage(self.tokenizer(request.prompt_text()), self.tokenizer(record.response))
        return ModelResponse(
            text=record.response,
            usage=usage,
            model=record.model,
            raw_finish_reason="stop",
            cost_usd=record.cost_usd,
        )

    async def _miss(self, request: ModelRequest) -> ModelResponse:
        prompt = last_user_text(request)
        quoted = prompt[:_QUOTE_CHARS] + ("..." if len(prompt) > _QUOTE_CHARS else "")
        if self.fallback is None:
            raise ReplayMissError(
                f"{self.name}: no recorded call for model {self.model!r} and prompt "
                f"{quoted!r} (add fallback=ROLE to call a live model on a miss)",
                model=self.name,
            )
        if self._resolve is None or self._price is None:
            raise ConfigurationError(
                f"{self.name}: fallback={self.fallback} needs an engine to resolve the role"
            )
        live = self._resolve(self.fallback)
        if live is self:
            raise ConfigurationError(f"{self.name}: fallback={self.fallback} is this model")
        live_request = replace(request, model=live.name.partition(":")[2] or live.name)
        response = await live.complete(live_request)
        cost = response.cost_usd
        if cost is None:
            cost = self._price(live.name, response.usage)
        return replace(response, cost_usd=cost)


def last_user_text(request: ModelRequest) -> str:
    """The content of the request's last user message ('' if it has none)."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    return ""


def recorded_store_calls(url: str, run_id: str) -> tuple[dict[str, RecordedCall], tuple[str, ...]]:
    """The LLM calls journaled for ``run_id`` (and its batch items), by request hash."""
    from trellis.store import open_store
    from trellis.store.pgurl import is_postgres_url, redact_url

    shown = redact_url(url) if is_postgres_url(url) else url  # a password is never shown

    store = open_store(url)
    try:
        root = store.get_run(run_id)
        if root is None:
            raise ConfigurationError(f"replay:store: no run {run_id!r} in {shown}")
        run_ids = [run_id] + [row.run_id for row in store.list_runs(parent_id=run_id)]
        by_hash: dict[str, RecordedCall] = {}
        models: dict[str, None] = {}
        for rid in run_ids:
            for row in store.load_calls(rid):
                attempts = json.loads(row.attempts)
                recorded = _from_call_row(row.result, attempts)
                if recorded is not None:
                    by_hash.setdefault(row.request, recorded)
                    for attempt in attempts:
                        models.setdefault(str(attempt.get("model")), None)
    finally:
        store.close()
    return by_hash, tuple(models)


def _from_call_row(result: str, attempts: list[dict[str, Any]]) -> RecordedCall | None:
    from trellis.store.codec import decode

    ok = [a for a in attempts if a.get("outcome") == "ok" and a.get("source", "live") != "cache"]
    if not ok:
        return None
    last = ok[-1]
    value = decode(result, what="a recorded call's reply")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return RecordedCall(
        model=str(last.get("model")),
        prompt="",
        response=text,
        usage=Usage(int(last.get("input_tokens", 0)), int(last.get("output_tokens", 0))),
        cost_usd=last.get("cost_usd"),
    )
