"""Trellis's one exception tree, and the failure taxonomy that drives retries.

Every error Trellis raises derives from :class:`TrellisError`. Foreign errors (from a
provider SDK, an HTTP client, the user's own step code) are mapped at the boundary with
``raise ... from`` so the original stays reachable as ``__cause__``.

::

    TrellisError
    ├── FlowDefinitionError          the flow itself is wrong (found when it is built)
    ├── ConfigurationError           model bindings, providers, price table, options
    ├── InputError                   flow inputs missing or of the wrong type
    ├── StepError                    a step's own code raised
    │   ├── OutputTypeError          a step returned a value that is not its annotated type
    │   ├── AgentTurnLimitError      an agent gave no final answer within its turns
    │   └── SubflowError             a sub-flow step's child run failed
    ├── NestedRunError               a step's code started another run (use flow.subflow)
    ├── BudgetExceededError          a run budget (cost, tokens, calls, time) would be exceeded
    ├── StoreError                   the store is unusable: newer/foreign schema, corrupt row
    │   ├── SerializationError       a value cannot be stored as JSON
    │   └── LeaseLostError           another process took this run over: a stale write refused
    ├── WorkerLostError              an executor's worker died too often: the batch stopped
    ├── RunLockedError               another process is executing this run (its lease)
    ├── StepChangedError             a recorded step's code changed since the run was recorded
    ├── ToolArgumentsError           a model's tool-call arguments do not fit the tool
    └── ModelError                   an LLM call failed; ``.mode`` is its FailureMode
        ├── RateLimitError           429; ``.retry_after`` when the provider said
        ├── ModelTimeoutError        the attempt's deadline passed
        ├── OverloadedError          5xx / overloaded
        ├── ConnectionFailedError    DNS failure, refused or reset connection
        ├── RefusalError             refusal or content filter
        ├── TruncatedError           the reply hit max_tokens
        ├── ContextOverflowError     the request does not fit the model's context
        ├── AuthenticationError      401 / 403: fails the whole run
        ├── BadRequestError          400 / 404 / 413 / 422
        ├── QuotaExceededError       out of credit: fails the whole run
        └── OutputValidationError    no valid structured output within the re-ask budget
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trellis.types import Usage

__all__ = [
    "AgentTurnLimitError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ContextOverflowError",
    "FailureMode",
    "FlowDefinitionError",
    "InputError",
    "LeaseLostError",
    "ModelError",
    "ModelTimeoutError",
    "NestedRunError",
    "OutputTypeError",
    "OutputValidationError",
    "OverloadedError",
    "QuotaExceededError",
    "RateLimitError",
    "RefusalError",
    "ReplyAttempt",
    "RunLockedError",
    "SerializationError",
    "StepChangedError",
    "StepError",
    "StoreError",
    "SubflowError",
    "ToolArgumentsError",
    "TrellisError",
    "TruncatedError",
    "WorkerLostError",
]


class FailureMode(enum.StrEnum):
    """Why one LLM attempt failed. Retries are decided by mode, never by message text."""

    MALFORMED = "malformed"  # reply is not parseable JSON -> re-ask
    INVALID = "invalid"  # JSON that fails the output schema -> re-ask
    RATE_LIMIT = "rate_limit"  # wait retry-after, else backoff
    TIMEOUT = "timeout"  # per-attempt deadline -> retry
    OVERLOADED = "overloaded"  # 5xx / overloaded -> backoff, then fallback model
    CONNECTION = "connection"  # could not connect (DNS, refused, reset) -> backoff, retry
    REFUSAL = "refusal"  # refusal / content filter -> never retried identically
    TRUNCATED = "truncated"  # hit max_tokens -> never resent identically
    CONTEXT_OVERFLOW = "context_overflow"  # prompt too long -> never resent identically
    AUTH = "auth"  # fail fast
    BAD_REQUEST = "bad_request"  # fail fast
    QUOTA = "quota"  # fail the run

    @property
    def is_reask(self) -> bool:
        """The reply was not JSON or failed the output schema: ask again, with the error."""
        return self in (FailureMode.MALFORMED, FailureMode.INVALID)

    @property
    def is_transient(self) -> bool:
        """Worth sending the identical request again after a wait."""
        return self in (
            FailureMode.RATE_LIMIT,
            FailureMode.TIMEOUT,
            FailureMode.OVERLOADED,
            FailureMode.CONNECTION,
        )

    @property
    def wants_other_model(self) -> bool:
        """The same request to the same model will not succeed: try a fallback model."""
        return self in (
            FailureMode.REFUSAL,
            FailureMode.TRUNCATED,
            FailureMode.CONTEXT_OVERFLOW,
            FailureMode.OVERLOADED,
        )


class TrellisError(Exception):
    """Base of every error Trellis raises.

    Every Trellis error pickles and unpickles with its message and attributes (a worker
    process or a Ray task sends errors back to the driver), whatever its constructor takes.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(
    cls: type[TrellisError], args: tuple[Any, ...], state: dict[str, Any]
) -> TrellisError:
    """Unpickle a Trellis error without calling its (keyword-only) constructor."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class FlowDefinitionError(TrellisError):
    """The flow is not well formed: unknown input, cycle, duplicate step, type mismatch...

    ``step`` and ``param`` name where the problem is, when it is in one place.
    """

    def __init__(self, message: str, *, step: str | None = None, param: str | None = None):
        super().__init__(message)
        self.step = step
        self.param = param


class ConfigurationError(TrellisError):
    """A model role is unbound, a binding or provider is unknown, an option is invalid."""


class InputError(TrellisError):
    """The inputs given to a run are missing, unknown or of the wrong type."""


class StepError(TrellisError):
    """A step's own code raised. ``__cause__`` is the original exception."""

    def __init__(self, message: str, *, step: str):
        super().__init__(message)
        self.step = step


class SubflowError(StepError):
    """A sub-flow step's child run failed; ``run_id`` is the child run's id."""

    def __init__(self, message: str, *, step: str, run_id: str):
        super().__init__(message, step=step)
        self.run_id = run_id


class NestedRunError(TrellisError):
    """A step's code started another run (``flow.run`` / ``engine.run``): its calls would
    be neither journaled nor accounted to this run. Use ``flow.subflow`` instead."""


class OutputTypeError(StepError):
    """A step returned a value that does not match its return annotation."""


class AgentTurnLimitError(StepError):
    """An agent step gave no final answer within ``max_turns``; its transcript is kept."""


class BudgetExceededError(TrellisError):
    """A run budget would be exceeded; the run stops cleanly before it is."""

    def __init__(self, message: str, *, budget: str, limit: float, spent: float):
        super().__init__(message)
        self.budget = budget
        self.limit = limit
        self.spent = spent


class StoreError(TrellisError):
    """The store cannot be used: a newer or foreign schema, a corrupt record, a bad URL."""


class SerializationError(StoreError):
    """A value cannot be recorded as JSON (and Trellis never falls back to pickle)."""


class WorkerLostError(TrellisError):
    """An executor's worker process died while running a batch's items, more often than
    the executor hands them to a replacement; the batch stopped (resume it)."""


class LeaseLostError(StoreError):
    """This process lost a run's lease to another process (it stalled past the lease's
    TTL, or failed to renew it): the store refused a write carrying its older lease epoch
    (fencing token), or the heartbeat found the lease taken. The process stops its work on
    that run; what the new owner writes is never overwritten.

    ``epoch`` is the epoch this process held, ``current`` the run's epoch now (when known),
    ``owner`` who holds the lease now (when known)."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str,
        epoch: int | None = None,
        current: int | None = None,
        owner: str | None = None,
    ):
        super().__init__(message)
        self.run_id = run_id
        self.epoch = epoch
        self.current = current
        self.owner = owner


class RunLockedError(TrellisError):
    """Another process holds this run's lease: it is executing it now."""

    def __init__(self, message: str, *, run_id: str, owner: str):
        super().__init__(message)
        self.run_id = run_id
        self.owner = owner


class StepChangedError(TrellisError):
    """A step completed in the recorded run has a different definition now."""

    def __init__(self, message: str, *, step: str):
        super().__init__(message)
        self.step = step


class ToolArgumentsError(TrellisError):
    """The model's arguments for a tool are not valid JSON for its parameters.

    Never raised out of a run: the agent loop sends the message back to the model as the
    tool's result, and the tool does not execute.
    """


class ModelError(TrellisError):
    """An LLM call failed. ``mode`` tells how, and so what the retry layer does about it."""

    mode: FailureMode = FailureMode.BAD_REQUEST
    #: How the provider changed the request before it failed (see ModelResponse).
    adjustments: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        usage: Usage | None = None,
    ):
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.usage = usage  # tokens billed for a failed attempt, when known


class RateLimitError(ModelError):
    """Rate limited (429); ``retry_after`` is the provider's wait, if given. Resent to the same
    model after it (at most ``RetryPolicy.max_retry_after``), else after backoff; no fallback."""

    mode = FailureMode.RATE_LIMIT

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ModelTimeoutError(ModelError):
    """The attempt timed out (``RetryPolicy.timeout``, HTTP timeout, stalled stream, 408).
    Resent to the same model after backoff, within the retry deadline; no fallback model."""

    mode = FailureMode.TIMEOUT


class OverloadedError(ModelError):
    """The server is overloaded or failing (5xx, 529, an unreadable reply or stream). Resent
    after backoff; with a fallback model left, moved to it after ``overloaded_attempts``."""

    mode = FailureMode.OVERLOADED


class ConnectionFailedError(ModelError):
    """The provider could not be reached: DNS failure, refused or reset connection."""

    mode = FailureMode.CONNECTION


class RefusalError(ModelError):
    """The model refused, or a content filter stopped the reply. Never resent identically:
    the next fallback model is tried, else the error is raised."""

    mode = FailureMode.REFUSAL


class TruncatedError(ModelError):
    """The reply stopped at ``max_tokens`` (finish reason ``length``). Never resent
    identically: the next fallback model is tried, else the error is raised."""

    mode = FailureMode.TRUNCATED


class ContextOverflowError(ModelError):
    """The request does not fit the model's context window. Never resent identically: the
    next fallback model is tried, else the error is raised."""

    mode = FailureMode.CONTEXT_OVERFLOW


class AuthenticationError(ModelError):
    """The provider rejected the credentials (401 / 403). Never retried, no fallback: the
    engine sends that model nothing more, and the whole run fails."""

    mode = FailureMode.AUTH


class BadRequestError(ModelError):
    """The provider rejected the request (a 4xx such as 400, 404, 413, 422). Never retried,
    no fallback model: the call fails at once."""

    mode = FailureMode.BAD_REQUEST


class QuotaExceededError(ModelError):
    """The account is out of credit or quota (402, ``insufficient_quota``). Never retried, no
    fallback: the engine sends that model nothing more, and the whole run fails."""

    mode = FailureMode.QUOTA


class ReplyAttempt:
    """One raw reply that failed parsing or validation, kept for the error report."""

    __slots__ = ("error", "mode", "model", "text", "usage")

    def __init__(
        self, *, model: str, text: str, error: str, mode: FailureMode, usage: Usage
    ) -> None:
        self.model = model
        self.text = text
        self.error = error
        self.mode = mode
        self.usage = usage

    def __repr__(self) -> str:
        return f"ReplyAttempt(model={self.model!r}, mode={self.mode.value}, error={self.error!r})"


class OutputValidationError(ModelError):
    """No reply parsed and validated within the re-ask budget.

    ``attempts`` holds every failed reply with its raw text, the error and its usage.
    """

    mode = FailureMode.INVALID

    def __init__(self, message: str, *, attempts: list[ReplyAttempt], **kw: Any):
        super().__init__(message, **kw)
        self.attempts = attempts
        if attempts:
            self.mode = attempts[-1].mode
