"""Request parameters a server rejects: found in its error, adjusted once, remembered.

Current models reject parameters older ones took (OpenAI's gpt-5 / o-series answer 400
``unsupported_parameter`` to ``max_tokens`` and ``unsupported_value`` to a non-default
``temperature``; recent Claude models answer "`temperature` is deprecated for this
model"), and strict compatible servers reject fields they do not know (Mistral's 422
``extra_forbidden`` for ``stream_options``). One mechanism handles them all:

* :func:`rejected_parameters` reads the error body of a 400 / 422 and returns the
  top-level request fields it names as unsupported or unknown, in any known dialect
  (OpenAI ``param`` + ``unsupported_*`` code, a pydantic ``detail`` list, Anthropic's
  ``` `name` is deprecated``` / ``name: Extra inputs are not permitted`` messages). A body
  that names no parameter gives ``()``: the request stays a ``BadRequestError``.
* :class:`Negotiation` is the memory of one model binding (provider, base URL, model),
  shared by every run and item in the process (:func:`negotiation_for`): which fields to
  drop or rename, with the note users see. Each (binding, parameter) is adjusted at most
  once, so a 200-item batch gets one rejected request, not 200; a request whose
  negotiable fields were never accepted by the server goes alone (a probe), the others
  wait for its answer.

Adjustments are never silent: every reply (or error) of a request that was adjusted
carries the notes (``ModelResponse.adjustments``), which the engine stores on the
``CallRecord`` and the CLI shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trellis.errors import BadRequestError

__all__ = [
    "Adjustment",
    "Negotiation",
    "ParameterRejectedError",
    "negotiation_for",
    "rejected_parameters",
    "reset_negotiations",
]

log = logging.getLogger("trellis.providers")

#: Statuses whose body may name a rejected parameter.
NEGOTIABLE_STATUSES = frozenset({400, 422})

_QUOTED = r"[`'\"]([A-Za-z_][\w.]*)[`'\"]"
_MESSAGE_PATTERNS = (
    # OpenAI: "Unsupported parameter: 'max_tokens' is not supported with this model."
    re.compile(r"(?i)unsupported parameter:?\s*" + _QUOTED),
    # OpenAI: "Unsupported value: 'temperature' does not support 0.2 with this model."
    re.compile(r"(?i)unsupported value:?\s*" + _QUOTED),
    # OpenAI (older) / vLLM: "Unrecognized request argument supplied: foo"
    re.compile(r"(?i)unrecognized request arguments? supplied:?\s*[`'\"]?([A-Za-z_]\w*)"),
    re.compile(r"(?i)unknown (?:parameter|field|argument):?\s*" + _QUOTED),
    # Anthropic: "`temperature` is deprecated for this model."
    re.compile(r"(?i)" + _QUOTED + r" is (?:deprecated|not supported|not allowed)"),
    # Anthropic / pydantic in text: "top_k: Extra inputs are not permitted", Azure's
    # "Validation error at #/stream_options: Extra inputs are not permitted"
    re.compile(r"(?i)(?:^|[\s;,/])([A-Za-z_]\w*): extra inputs are not permitted"),
    # Fireworks: "Extra inputs are not permitted, field: 'stream_options'"
    re.compile(r"(?i)extra inputs are not permitted,? field:? [`'\"]?([A-Za-z_]\w*)"),
    # a pydantic error list as Python text: "'loc': ('body', 'user'), 'msg': 'extra ..."
    re.compile(
        r"(?i)'loc': \(\s*'body',\s*'([A-Za-z_]\w*)'[^)]*\),\s*'msg': "
        r"'extra (?:inputs are|fields) not permitted'"
    ),
)
_EXTRA_MESSAGES = ("extra inputs are not permitted", "extra fields not permitted")
_REJECTING_CODES = frozenset(
    {"unsupported_parameter", "unsupported_value", "unknown_parameter", "extra_forbidden"}
)


class ParameterRejectedError(BadRequestError):
    """A 400 / 422 that names request fields the server does not support (``params``)."""

    def __init__(self, message: str, *, params: tuple[str, ...], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.params = params


def _detail_params(detail: Any) -> list[str]:
    """Top-level fields of a pydantic ``detail`` list with ``extra_forbidden`` errors."""
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return []
        if isinstance(detail, dict):
            detail = detail.get("detail")
    if not isinstance(detail, list):
        return []
    names: list[str] = []
    for item in detail:
        if not isinstance(item, dict):
            continue
        message = str(item.get("msg", "")).lower()
        extra = item.get("type") in ("extra_forbidden", "value_error.extra") or any(
            m in message for m in _EXTRA_MESSAGES
        )
        loc = [p for p in item.get("loc") or () if p != "body"]
        if extra and loc and isinstance(loc[0], str):
            names.append(loc[0])
        elif extra:
            return []  # an extra field we cannot place: not negotiable
    return names


def _message_params(message: str) -> list[str]:
    names: list[str] = []
    for pattern in _MESSAGE_PATTERNS:
        names.extend(m.group(1).split(".")[0] for m in pattern.finditer(message))
    return names


def rejected_parameters(body_text: str, sent: Mapping[str, Any]) -> tuple[str, ...]:
    """The top-level fields of ``sent`` that the error body ``body_text`` rejects as
    unsupported or unknown, in the order named; ``()`` when it names none of them, or
    names any field that ``sent`` does not have at its top level (dropping fields would
    not fix that request)."""
    try:
        data = json.loads(body_text)
    except ValueError:
        data = None
    named: list[str] = []
    if isinstance(data, dict):
        err = data.get("error")
        err = err if isinstance(err, dict) else {}
        code = str(err.get("code") or data.get("code") or "").lower()
        param = err.get("param", data.get("param"))
        message = err.get("message", data.get("message"))
        detail = data.get("detail")
        if isinstance(message, dict):
            detail = message.get("detail", detail)
        named.extend(_detail_params(detail))
        if isinstance(message, str):
            named.extend(_detail_params(message) or _message_params(message))
        if isinstance(param, str) and param and code in _REJECTING_CODES:
            named.append(param.split(".")[0].split("[")[0])
    elif body_text:
        named.extend(_message_params(body_text))
    ordered = tuple(dict.fromkeys(named))
    if not ordered or any(name not in sent for name in ordered):
        return ()
    return ordered


@dataclass(frozen=True, slots=True)
class Adjustment:
    """What is done with a rejected field: dropped (``rename_to`` None) or renamed."""

    param: str
    rename_to: str | None
    note: str  # what users see, e.g. "max_tokens sent as max_completion_tokens (...)"


class Negotiation:
    """What one model binding's server rejected, for the rest of the process.

    ``renames`` maps fields that have a replacement (``max_tokens`` ->
    ``max_completion_tokens``); every other negotiable field is dropped when rejected.
    Fields outside ``negotiable`` are never touched.
    """

    def __init__(self, binding: str, *, negotiable: Iterable[str], renames: Mapping[str, str]):
        self.binding = binding
        self.negotiable = frozenset(negotiable)
        self.renames = dict(renames)
        self.adjustments: dict[str, Adjustment] = {}
        self.accepted: set[str] = set()  # fields the server took without complaint
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"Negotiation({self.binding!r}, adjusted={sorted(self.adjustments)})"

    def apply(self, payload: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``payload`` with the known adjustments made, and their notes (in field order)."""
        if not self.adjustments:
            return dict(payload), ()
        out: dict[str, Any] = {}
        notes: list[str] = []
        for key, value in payload.items():
            name: str | None = key
            seen: set[str] = set()
            while name is not None and name in self.adjustments and name not in seen:
                seen.add(name)  # a renamed field may itself have been rejected since
                adjustment = self.adjustments[name]
                notes.append(adjustment.note)
                name = adjustment.rename_to
                if name is not None and name != key and name in payload:
                    name = None  # the request sets the new name itself
            if name is not None and name not in seen:
                out.setdefault(name, value)
        return out, tuple(dict.fromkeys(notes))

    def untested(self, payload: Mapping[str, Any]) -> bool:
        """Whether ``payload`` has a negotiable field the server has not accepted yet."""
        return any(
            k in self.negotiable and k not in self.accepted and k not in self.adjustments
            for k in payload
        )

    def accept(self, payload: Mapping[str, Any]) -> None:
        self.accepted.update(k for k in payload if k in self.negotiable)

    def learn(self, error: ParameterRejectedError) -> list[Adjustment] | None:
        """Adjustments for the fields ``error`` rejects, or ``None`` if any of them is not
        negotiable or was adjusted already (the error then stands: never a second
        identical failure)."""
        if not error.params:
            return None
        if any(p not in self.negotiable or p in self.adjustments for p in error.params):
            return None
        status = f"HTTP {error.status_code}" if error.status_code else "an error"
        learned: list[Adjustment] = []
        for param in error.params:
            target = self.renames.get(param)
            if target is not None and target in self.adjustments:
                target = None  # both spellings rejected: drop it
            why = f"the server rejected {param} ({status})"
            if target is None:
                note = f"{param} not sent: {why}"
            else:
                note = f"{param} sent as {target}: {why}"
            adjustment = Adjustment(param, target, note)
            self.adjustments[param] = adjustment
            self.accepted.discard(param)
            learned.append(adjustment)
            log.warning("%s: %s", self.binding, note)
        return learned

    def probe_lock(self) -> asyncio.Lock:
        """The lock a request with untested fields holds until its answer (per loop)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            for old in [k for k in self._locks if k.is_closed()]:
                del self._locks[old]
            lock = self._locks[loop] = asyncio.Lock()
        return lock


_REGISTRY: dict[tuple[str, str, str], Negotiation] = {}


def negotiation_for(
    provider: str,
    base_url: str,
    model: str,
    *,
    negotiable: Iterable[str],
    renames: Mapping[str, str],
) -> Negotiation:
    """The process-wide :class:`Negotiation` of one binding (created on first use)."""
    key = (provider, base_url, model)
    found = _REGISTRY.get(key)
    if found is None:
        found = _REGISTRY[key] = Negotiation(
            f"{provider}:{model}", negotiable=negotiable, renames=renames
        )
    return found


def reset_negotiations() -> None:
    """Forget everything learned (tests)."""
    _REGISTRY.clear()
