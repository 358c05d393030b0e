"""What a run leaves behind: per-call, per-step and per-run records, and their JSON shape."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from pydantic_core import to_jsonable_python

from trellis.errors import BudgetExceededError, ModelError, StepError, TrellisError
from trellis.tracebacks import Frame, user_frames

__all__ = [
    "CallRecord",
    "Decision",
    "ErrorInfo",
    "RunResult",
    "Stats",
    "StepRecord",
    "StepStatus",
]

StepStatus = Literal["pending", "running", "waiting", "done", "skipped", "failed", "cancelled"]
RunStatus = Literal["running", "waiting", "done", "failed"]


def jsonable(value: Any) -> Any:
    """Pydantic models, dataclasses, enums, dates... as plain JSON values."""
    return to_jsonable_python(value, fallback=repr)


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """One request sent to a model (one attempt of one ``llm.generate`` call)."""

    step: str
    call: int  # the logical call's number within the step (1-based)
    attempt: int  # attempt number within that call, across models (1-based)
    model: str  # provider:model that was asked
    role: str  # the role (or spec) the step asked for
    outcome: str  # "ok", a FailureMode value, or "cancelled" (the run stopped mid-call)
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price
    latency_s: float
    wait_s: float = 0.0  # time waited before this attempt (backoff / retry-after)
    index: int | None = None
    round: int | None = None
    error: str | None = None
    reply: str | None = None  # the raw reply, kept for replies that failed to parse/validate
    source: str = "live"  # "live", "journal" (replayed on resume) or "cache" (cost nothing)
    #: How the provider changed the request to get it accepted (a rejected parameter
    #: dropped or renamed, a temperature clamped): never silent.
    adjustments: list[str] = field(default_factory=list)
    #: What the model was asked and what it answered, as GenAI message parts
    #: (``trellis.models.parts``); kept only when the engine records prompts
    #: (``Engine(record_prompts=True)``, ``trellis run --record-prompts``).
    prompt: list[dict[str, Any]] | None = None
    output: list[dict[str, Any]] | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        data = {
            "step": self.step,
            "call": self.call,
            "attempt": self.attempt,
            "model": self.model,
            "role": self.role,
            "outcome": self.outcome,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "latency_s": round(self.latency_s, 6),
            "wait_s": round(self.wait_s, 6),
            "index": self.index,
            "round": self.round,
            "error": self.error,
            "reply": self.reply,
            "source": self.source,
            "adjustments": list(self.adjustments),
        }
        if self.prompt is not None:
            data["prompt"] = self.prompt
        if self.output is not None:
            data["output"] = self.output
        return data


class FailureCounts(dict[str, int]):
    """Failed attempts by failure mode; a mode with no failures reads as 0."""

    def __missing__(self, key: str) -> int:
        return 0


@dataclass(slots=True, kw_only=True)
class Stats:
    """Accounting summed over calls: of a step, a run, or a batch."""

    calls: int = 0  # llm.generate() calls that returned a value
    attempts: int = 0  # requests sent, including failed ones and re-asks
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # sum over attempts with a known price
    unpriced_attempts: int = 0  # attempts whose model has no price: cost is incomplete
    latency_s: float = 0.0  # summed attempt latency
    retries: int = 0  # attempts beyond the first of each call (re-asks, retries, fallbacks)
    failures: FailureCounts = field(default_factory=lambda: FailureCounts())

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_known(self) -> bool:
        return self.unpriced_attempts == 0

    @property
    def failed_attempts(self) -> int:
        """Attempts that failed (each was retried, re-asked, fell back, or failed the call)."""
        return sum(self.failures.values())

    def add_attempt(self, record: CallRecord) -> None:
        self.attempts += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.latency_s += record.latency_s
        if record.cost_usd is None:
            self.unpriced_attempts += 1
        else:
            self.cost_usd += record.cost_usd
        if record.attempt > 1:
            self.retries += 1
        if record.outcome != "ok":
            self.failures[record.outcome] += 1

    def merge(self, other: Stats) -> None:
        self.calls += other.calls
        self.attempts += other.attempts
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.unpriced_attempts += other.unpriced_attempts
        self.latency_s += other.latency_s
        self.retries += other.retries
        for mode, count in other.failures.items():
            self.failures[mode] += count

    def subtract(self, other: Stats) -> None:
        """``self -= other``, field by field, never below zero (the inverse of merge)."""
        self.calls = max(0, self.calls - other.calls)
        self.attempts = max(0, self.attempts - other.attempts)
        self.input_tokens = max(0, self.input_tokens - other.input_tokens)
        self.output_tokens = max(0, self.output_tokens - other.output_tokens)
        self.cost_usd = max(0.0, self.cost_usd - other.cost_usd)
        self.unpriced_attempts = max(0, self.unpriced_attempts - other.unpriced_attempts)
        self.latency_s = max(0.0, self.latency_s - other.latency_s)
        self.retries = max(0, self.retries - other.retries)
        for mode, count in other.failures.items():
            remaining = self.failures[mode] - count
            if remaining > 0:
                self.failures[mode] = remaining
            else:
                self.failures.pop(mode, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10) if self.cost_known else None,
            "cost_usd_known_part": round(self.cost_usd, 10),
            "unpriced_attempts": self.unpriced_attempts,
            "latency_s": round(self.latency_s, 6),
            "retries": self.retries,
            "failures": dict(sorted(self.failures.items())),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    type: str
    message: str
    step: str | None = None
    mode: str | None = None  # FailureMode value for model errors
    budget: str | None = None  # which budget, for BudgetExceededError
    # The user's frames (outermost first) when user code raised: a step, a tool, a
    # condition, or a call into Trellis that a user's line made (trellis.tracebacks).
    traceback: tuple[Frame, ...] = ()

    @classmethod
    def from_exception(cls, exc: BaseException, step: str | None = None) -> ErrorInfo:
        mode = exc.mode.value if isinstance(exc, ModelError) else None
        budget = exc.budget if isinstance(exc, BudgetExceededError) else None
        if isinstance(exc, StepError):
            step = exc.step
        return cls(
            type=type(exc).__name__,
            message=str(exc),
            step=step,
            mode=mode,
            budget=budget,
            traceback=user_frames(exc),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "step": self.step,
            "mode": self.mode,
            "budget": self.budget,
            "traceback": [frame.to_dict() for frame in self.traceback],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A routing decision, with the values it was made on."""

    step: str  # the step the decision is about
    kind: str  # "when", "branch", "skip" (upstream skipped), "loop"
    outcome: str  # "run", "skip", "continue", "stop"
    reason: str
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "outcome": self.outcome,
            "reason": self.reason,
            "values": jsonable(self.values),
        }


@dataclass(slots=True)
class StepRecord:
    name: str
    _: KW_ONLY
    status: StepStatus = "pending"
    output: Any = None
    reason: str | None = None  # why skipped / cancelled
    error: ErrorInfo | None = None
    usage: Stats = field(default_factory=Stats)
    started_at: float | None = None
    duration_s: float | None = None
    attempts: int = 0  # executions of the step's code (more than 1 with retry_on)
    rounds: int | None = None  # looping steps
    elements: int | None = None  # mapped steps
    element_failures: int = 0
    turns: list[dict[str, Any]] = field(default_factory=list)  # agent transcripts
    question: dict[str, Any] | None = None  # what a waiting step asks a person
    children: list[RunResult] = field(default_factory=list)  # a sub-flow step's child runs
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "output": jsonable(self.output) if self.status == "done" else None,
            "reason": self.reason,
            "error": self.error.to_dict() if self.error else None,
            "usage": self.usage.to_dict(),
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "rounds": self.rounds,
            "elements": self.elements,
            "element_failures": self.element_failures,
            "turns": self.turns,
            "question": self.question,
        } | ({"children": [c.to_dict() for c in self.children]} if self.children else {})


@dataclass(slots=True, kw_only=True)
class RunResult:
    """The outcome of one run: every step's status and output, decisions, accounting."""

    run_id: str
    flow: str
    inputs: dict[str, Any]
    steps: dict[str, StepRecord]
    status: RunStatus = "running"
    decisions: list[Decision] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    usage: Stats = field(default_factory=Stats)
    error: ErrorInfo | None = None
    started_at: float = 0.0
    duration_s: float = 0.0
    #: The exception behind ``error`` (not serialised): what ``raise_for_status`` raises.
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def outputs(self) -> dict[str, Any]:
        return {n: r.output for n, r in self.steps.items() if r.status == "done"}

    def __getitem__(self, step: str) -> Any:
        record = self.steps.get(step)
        if record is None:
            raise KeyError(f"flow {self.flow!r} has no step {step!r}")
        if record.status != "done":
            why = f": {record.reason}" if record.reason else ""
            if record.error:
                why = f": {record.error.message}"
            raise KeyError(f"step {step!r} is {record.status}{why}")
        return record.output

    def get(self, step: str, default: Any = None) -> Any:
        record = self.steps.get(step)
        return record.output if record is not None and record.status == "done" else default

    def raise_for_status(self) -> RunResult:
        """Raise the error that failed the run (a :class:`TrellisError`: for a step's own
        exception, a :class:`StepError` whose ``__cause__`` is the original)."""
        if self.status != "done":
            if self.exception is not None:
                raise self.exception
            err = self.error
            text = f"{err.type}: {err.message}" if err else self.status
            raise TrellisError(f"run {self.run_id} of flow {self.flow!r} {self.status}: {text}")
        return self

    @property
    def skipped(self) -> dict[str, str]:
        return {n: r.reason or "" for n, r in self.steps.items() if r.status == "skipped"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "status": self.status,
            "inputs": jsonable(self.inputs),
            "outputs": jsonable(self.outputs),
            "steps": {n: r.to_dict() for n, r in self.steps.items()},
            "decisions": [d.to_dict() for d in self.decisions],
            "calls": [c.to_dict() for c in self.calls],
            "usage": self.usage.to_dict(),
            "error": self.error.to_dict() if self.error else None,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
        }
