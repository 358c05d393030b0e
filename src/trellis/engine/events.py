"""The engine's typed events, and the one way they reach observers.

A run emits an :class:`Event` at each thing that happens to it: a step started, finished,
was skipped (with its decision) or failed; an LLM attempt started, was retried (with the
failure mode and the wait) or finished (with its usage and cost); a step waits for a
person. Observers are plain callables ``observer(event)`` registered on the engine
(``Engine(observers=[...])``) or per run (``engine.run(..., observers=[...])``);
``engine.stream`` (:mod:`trellis.engine.stream`) is one of them.

With no observer the run holds ``None`` instead of an :class:`Emitter` and every emitting
site is a single ``is not None`` test: no event object is built, nothing is called.

An observer runs on the run's event loop, synchronously, and must be quick; an observer
that raises is dropped for the rest of the run (its error is kept on the emitter) rather
than failing the run it watches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trellis.engine.results import CallRecord, Decision, ErrorInfo, RunResult
from trellis.models.base import ModelResponse
from trellis.types import Message

__all__ = [
    "AttemptFinished",
    "AttemptReasked",
    "AttemptRetried",
    "AttemptStarted",
    "Emitter",
    "Event",
    "Observer",
    "PartialOutput",
    "RunFinished",
    "StepFailed",
    "StepFinished",
    "StepPartFinished",
    "StepPartStarted",
    "StepSkipped",
    "StepStarted",
    "TokenDelta",
    "WaitingForPerson",
    "emitter",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened in run ``run_id``."""

    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    """A step's function is about to run (not emitted for a step a resume restored).
    ``decision``: what let it run when it had a condition (its ``when`` or a branch), with
    the values it read; None for an unconditional step."""

    step: str
    decision: Decision | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished(Event):
    """A step completed; after every event of its attempts."""

    step: str
    output: Any
    duration_s: float
    attempts: int  # LLM attempts the step made (its usage)
    cost_usd: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSkipped(Event):
    """A step did not run: its condition was false, an input was skipped, or an upstream
    step failed (``status="cancelled"``). ``decision`` is the routing decision, if any."""

    step: str
    status: str  # "skipped" or "cancelled"
    reason: str
    decision: Decision | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPartStarted(Event):
    """A part of a step starts: a mapped step's element (``index``) or a loop's round
    (``round``, from 1). Its attempts' events carry the same ``index`` / ``round``."""

    step: str
    index: int | None = None
    round: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPartFinished(Event):
    """That part ended: ``status`` ``done``, ``failed`` (``error``: its type and message;
    a collected element failure too), ``waiting`` (it asked a person) or ``cancelled``
    (the step stopped it)."""

    step: str
    index: int | None = None
    round: int | None = None
    status: str
    duration_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed(Event):
    """A step raised; ``error`` keeps the user's traceback."""

    step: str
    error: ErrorInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingForPerson(Event):
    """A step asked a person (``tl.Human``) and the run stops there until an answer."""

    step: str
    question: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarted(Event):
    """A request is about to be sent to a model."""

    step: str
    call: int
    attempt: int
    model: str
    index: int | None = None  # the mapped element
    round: int | None = None  # the loop round
    temperature: float | None = None  # as asked (None: the provider's default)
    max_tokens: int | None = None
    messages: tuple[Message, ...] = ()  # the conversation sent (re-asks included)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRetried(Event):
    """An attempt failed transiently; the same request is sent again after ``wait_s``."""

    step: str
    call: int
    attempt: int  # the attempt that failed
    model: str
    mode: str  # the FailureMode value
    wait_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptReasked(Event):
    """A reply did not parse or validate as the step's output: the model is asked again,
    shown its reply and ``error`` (``reask`` counts the re-asks of this call, from 1)."""

    step: str
    call: int
    attempt: int  # the attempt whose reply was rejected
    model: str
    mode: str  # the FailureMode value: "malformed" (not JSON) or "invalid" (failed validation)
    error: str  # the parse or validation error the model is shown (may quote the reply)
    reask: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFinished(Event):
    """An attempt settled (ok or not): its :class:`CallRecord` has usage, cost, outcome;
    ``response`` is the provider's reply when one came (the model and reply id it reports,
    its finish reason), None for an attempt that failed before a reply or a cache hit."""

    record: CallRecord
    response: ModelResponse | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenDelta(Event):
    """Text a streaming provider sent for one attempt of a step's call: ``call`` and
    ``attempt`` as in :class:`AttemptStarted`, ``index`` / ``round`` the mapped element
    / loop round (deltas may be coalesced, only with deltas of the same attempt)."""

    step: str
    text: str
    call: int = 0
    attempt: int = 0
    index: int | None = None
    round: int | None = None

    @property
    def part(self) -> DeltaPart:
        """Which attempt the text belongs to: ``(index, round, call, attempt)``."""
        return (self.index, self.round, self.call, self.attempt)


#: The attempt a token delta belongs to: ``(index, round, call, attempt)``.
DeltaPart = tuple[int | None, int | None, int, int]


def token_delta(run_id: str, step: str, text: str, part: DeltaPart) -> TokenDelta:
    """The :class:`TokenDelta` of ``text`` from attempt ``part`` of ``step``."""
    index, round_, call, attempt = part
    return TokenDelta(
        run_id=run_id, step=step, text=text, call=call, attempt=attempt, index=index, round=round_
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialOutput(Event):
    """The fields of a structured call's output so far: an instance of the output model's
    partial form (every field optional), valid as far as the JSON so far allows."""

    step: str
    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The run ended (done, failed or waiting): always the last event of a run."""

    result: RunResult


Observer = Callable[[Event], None]


class Emitter:
    """Calls each observer with each event; an observer that raises is dropped.

    Token deltas come through :meth:`delta`: when the only observer takes deltas as text
    (``observer.delta(run_id, step, text, part)``: the buffer of ``engine.stream``), it
    gets them so, and builds an event only for a delta it does not merge into an earlier
    one.

    :class:`StepPartStarted` / :class:`StepPartFinished` (two events per mapped element
    and loop round) are built only when an observer asks for them with a true
    ``wants_parts`` attribute (the tracing observer does): a wide fan-out streamed
    through ``engine.stream`` does not pay for events its consumer does not read."""

    __slots__ = ("_sink", "errors", "observers", "parts")

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = list(observers)
        self.errors: list[BaseException] = []
        self._sink = _delta_sink(self.observers)
        self.parts = _wants_parts(self.observers)

    def __call__(self, event: Event) -> None:
        broken = None
        for observer in self.observers:
            try:
                observer(event)
            except Exception as exc:  # a broken observer never fails the run it watches
                self.errors.append(exc)
                broken = observer
        if broken is not None:
            self.observers = [o for o in self.observers if o is not broken]
            self._sink = _delta_sink(self.observers)
            self.parts = _wants_parts(self.observers)

    def delta(self, run_id: str, step: str, text: str, part: DeltaPart) -> None:
        """A piece of streamed text of attempt ``part`` of ``step``: a :class:`TokenDelta`
        to every observer."""
        sink = self._sink
        if sink is None:
            self(token_delta(run_id, step, text, part))
            return
        try:
            sink(run_id, step, text, part)
        except Exception as exc:  # as for an event: the observer is dropped
            self.errors.append(exc)
            self.observers = []
            self._sink = None
            self.parts = False


def _wants_parts(observers: list[Observer]) -> bool:
    return any(getattr(o, "wants_parts", False) for o in observers)


def _delta_sink(
    observers: list[Observer],
) -> Callable[[str, str, str, DeltaPart], None] | None:
    """The lone observer's ``delta`` method, when it has one."""
    if len(observers) != 1:
        return None
    sink = getattr(observers[0], "delta", None)
    return sink if callable(sink) else None


def emitter(*groups: Iterable[Observer] | None) -> Emitter | None:
    """One emitter for the observers of every group, or None when there are none."""
    observers = [o for group in groups if group for o in group]
    return Emitter(observers) if observers else None
