"""A per-model circuit breaker: one shared backoff for every call waiting on a failing model.

The engine keeps one :class:`CircuitBreaker` per model binding, shared by every run (like a
provider's rate limiter). Every attempt asks it first (:meth:`CircuitBreaker.acquire`) and
reports how the attempt went (:meth:`Ticket.settle`)::

    closed ──a failure──► closed, wary: one request at a time until one succeeds
    closed ──N consecutive overload / connection failures──► open (cool-down c)
    open ──c elapsed──► half-open: exactly one probe in flight, everyone else waits
    half-open ──probe answered──► closed (cool-down back to its base)
    half-open ──probe failed──► open (cool-down doubled, capped)
    any state ──auth / quota failure──► stopped: no request is sent to the model again

While the breaker is open or a probe is in flight, callers wait on the breaker itself (one
event, woken by one timer when the cool-down ends, or by the probe's outcome), so the
requests reaching a failing server do not grow with the number of waiting calls.

``probe_first``: until a remote model (``Model.remote``: the HTTP providers) has answered
once, it is *unproven* and takes one request at a time, so a bad key or an exhausted quota
costs one request, not one per waiting call. In-process models start proven.

Outcomes (:class:`Outcome`): ``ok`` is any answer that shows the server is serving (a
reply, but also a 429, a 400 or an unparseable reply); ``failure`` an overload (5xx, 529)
or a connection failure; ``neutral`` tells nothing (a timeout, a cancelled or unsent
attempt); ``stop`` an authentication or quota failure. Failures are consecutive in the
order requests were *sent*: the reply to a request sent before the latest failed one does
not reset the count (at an outage's start, replies to earlier requests still arrive).
Results of requests sent before the breaker opened do not move an open breaker (only its
probe does).

:class:`BreakerMachine` is the state machine alone, driven by an explicit clock, so it can
be tested without waiting; :class:`CircuitBreaker` adds the asyncio waiting.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from trellis.errors import ConfigurationError, ModelError

__all__ = [
    "Admission",
    "BreakerMachine",
    "BreakerSettings",
    "BreakerState",
    "BreakerStats",
    "BreakerWaitExpired",
    "CircuitBreaker",
    "Outcome",
    "Ticket",
]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    STOPPED = "stopped"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILURE = "failure"
    NEUTRAL = "neutral"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """How a model's breaker behaves (``tl.Engine(breaker=...)``).

    - ``failure_threshold``: consecutive overload / connection failures that open it (2).
    - ``cooldown_s``: the first cool-down before a probe (0.5 s); each failed probe doubles
      it, up to ``max_cooldown_s`` (2 s), so a recovered server is noticed within 2 s.
    - ``probe_first``: an unproven remote model takes one request at a time until it
      answers (the cost: one round trip at the start of a batch).
    - ``enabled``: ``False`` turns the breaker off (auth / quota still stop the model).
    """

    failure_threshold: int = 2
    cooldown_s: float = 0.5
    max_cooldown_s: float = 2.0
    probe_first: bool = True
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigurationError("BreakerSettings.failure_threshold must be at least 1")
        if self.cooldown_s <= 0:
            raise ConfigurationError("BreakerSettings.cooldown_s must be positive")
        if self.max_cooldown_s < self.cooldown_s:
            raise ConfigurationError("BreakerSettings.max_cooldown_s must be >= cooldown_s")


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`BreakerMachine.admit` decided: ``send`` (closed), ``probe`` (the one
    request allowed through), ``wait`` (``until`` a monotonic time, or None: until the
    probe's outcome) or ``stopped``."""

    kind: str  # "send" | "probe" | "wait" | "stopped"
    epoch: int = 0
    until: float | None = None
    seq: int = 0  # the order in which requests were let through

    @property
    def allowed(self) -> bool:
        return self.kind in ("send", "probe")


@dataclass(slots=True)
class BreakerStats:
    """What a breaker did, for tests, benchmarks and diagnostics."""

    opened: int = 0  # closed -> open transitions
    probes: int = 0  # requests let through as probes
    waits: int = 0  # acquisitions that waited on an open / half-open breaker
    wait_s: float = 0.0  # seconds spent in those waits, summed


class BreakerMachine:
    """The breaker's state machine; ``clock`` is a monotonic time source (seconds)."""

    def __init__(
        self, settings: BreakerSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive failures while closed
        self.cooldown = self.settings.cooldown_s
        self.reopen_at = 0.0
        self.probing = False  # a probe is in flight
        self.proven = not self.settings.probe_first
        self.epoch = 0  # bumped when the breaker opens: older requests no longer count
        self.sent = 0  # requests let through so far (their order: Admission.seq)
        self.last_failed = -1  # the seq of the latest-sent request that failed
        self.stop_error: ModelError | None = None
        self.stats = BreakerStats()

    def admit(self) -> Admission:
        """May a request be sent now? ``probe`` admissions must be settled."""
        state = self.state
        if state is BreakerState.STOPPED:
            return Admission("stopped", self.epoch)
        if not self.settings.enabled:
            return self._let("send")
        if state is BreakerState.OPEN:
            if self.clock() < self.reopen_at:
                return Admission("wait", self.epoch, self.reopen_at)
            self.state = state = BreakerState.HALF_OPEN
        if state is BreakerState.CLOSED and self.proven and self.failures == 0:
            return self._let("send")
        if self.probing:
            return Admission("wait", self.epoch)
        self.probing = True
        self.stats.probes += 1
        return self._let("probe")

    def _let(self, kind: str) -> Admission:
        self.sent += 1
        return Admission(kind, self.epoch, seq=self.sent)

    def settle(
        self, admission: Admission, outcome: Outcome, error: ModelError | None = None
    ) -> bool:
        """Report how an admitted request went. True if waiters should look again."""
        if outcome is Outcome.STOP:
            self.state = BreakerState.STOPPED
            self.stop_error = error
            self.probing = False
            return True
        if self.state is BreakerState.STOPPED or not self.settings.enabled:
            return False
        probe = admission.kind == "probe"
        if probe:
            self.probing = False
        if outcome is Outcome.NEUTRAL:
            return probe
        if outcome is Outcome.OK:
            self.proven = True
            # A reply to a request sent before the latest failed one is old news.
            if probe or (
                self.state is BreakerState.CLOSED
                and admission.epoch == self.epoch
                and admission.seq > self.last_failed
            ):
                self.failures = 0
            if probe and self.state is BreakerState.HALF_OPEN:
                self.state = BreakerState.CLOSED
                self.cooldown = self.settings.cooldown_s
            return probe
        # a failure
        self.proven = True
        if probe and self.state is BreakerState.HALF_OPEN:
            self.cooldown = min(self.cooldown * 2.0, self.settings.max_cooldown_s)
            self._open()
            return True
        if self.state is BreakerState.CLOSED and admission.epoch == self.epoch:
            self.failures += 1
            self.last_failed = max(self.last_failed, admission.seq)
            if self.failures >= self.settings.failure_threshold:
                self.cooldown = self.settings.cooldown_s
                self._open()
                self.stats.opened += 1
                return True
        return probe

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self.reopen_at = self.clock() + self.cooldown
        self.failures = 0
        self.epoch += 1

    @property
    def failing(self) -> bool:
        """Open, or half-open (a probe decides): a fallback model is the better bet."""
        return self.state in (BreakerState.OPEN, BreakerState.HALF_OPEN)


class Ticket:
    """One admitted request; :meth:`settle` it exactly once (later calls are ignored)."""

    __slots__ = ("_admission", "_breaker", "waited")

    def __init__(self, breaker: CircuitBreaker, admission: Admission, waited: float) -> None:
        self._breaker = breaker
        self._admission = admission
        self.waited = waited  # seconds this acquisition waited on the breaker

    @property
    def probe(self) -> bool:
        return self._admission.kind == "probe"

    def settle(self, outcome: Outcome, error: ModelError | None = None) -> None:
        breaker, self._breaker = self._breaker, None  # type: ignore[assignment]
        if breaker is not None:
            breaker._settled(self._admission, outcome, error)


class BreakerWaitExpired(Exception):
    """Internal: the caller's deadline passed while it waited on the breaker."""


class CircuitBreaker:
    """A :class:`BreakerMachine` plus the waiting: every waiter awaits one shared event."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        remote: bool = True,
    ) -> None:
        self.name = name
        self.machine = BreakerMachine(settings, clock)
        if not remote:
            self.machine.proven = True
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self.machine.state.value})"

    @property
    def state(self) -> BreakerState:
        return self.machine.state

    @property
    def stats(self) -> BreakerStats:
        return self.machine.stats

    @property
    def failing(self) -> bool:
        return self.machine.failing

    @property
    def stop_error(self) -> ModelError | None:
        return self.machine.stop_error

    def admit_now(self) -> Ticket | ModelError | None:
        """Without waiting: a ticket when a request may be sent now (the common case), the
        error that stopped the model, or ``None`` when it must wait (:meth:`acquire`)."""
        machine = self.machine
        admission = machine.admit()
        if admission.allowed:
            return Ticket(self, admission, 0.0)
        if admission.kind == "stopped":
            assert machine.stop_error is not None
            return machine.stop_error
        return None

    async def acquire(self, *, timeout: float | None = None) -> Ticket | ModelError:
        """Wait until a request may be sent; the ticket, or the error that stopped the model.

        Raises :class:`BreakerWaitExpired` if ``timeout`` seconds pass first.
        """
        machine = self.machine
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # an engine reused on a new event loop
            self._loop, self._changed, self._timer = loop, asyncio.Event(), None
        waited = 0.0
        counted = False
        while True:
            admission = machine.admit()
            if admission.allowed:
                return Ticket(self, admission, waited)
            if admission.kind == "stopped":
                assert machine.stop_error is not None
                return machine.stop_error
            if machine.failing and not counted:
                counted = True
                machine.stats.waits += 1
            if admission.until is not None:
                self._wake_at(admission.until)
            left = None if timeout is None else timeout - waited
            if left is not None and left <= 0:
                raise BreakerWaitExpired
            event = self._changed
            started = time.monotonic()
            try:
                if left is None:
                    await event.wait()
                else:
                    async with asyncio.timeout(left):
                        await event.wait()
            except TimeoutError:
                raise BreakerWaitExpired from None
            finally:
                spent = time.monotonic() - started
                waited += spent
                if machine.failing or counted:
                    machine.stats.wait_s += spent

    def _settled(self, admission: Admission, outcome: Outcome, error: ModelError | None) -> None:
        if self.machine.settle(admission, outcome, error):
            self._wake()

    def _wake(self) -> None:
        """Let every waiter look again (one event for all, replaced for the next wait)."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _wake_at(self, when: float) -> None:
        """One timer for the cool-down's end, however many callers wait for it."""
        if self._timer is not None:
            if self._timer_due == when:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - self.machine.clock())
        self._timer_due = when
        self._timer = loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake()
