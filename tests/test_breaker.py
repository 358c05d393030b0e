"""The per-model circuit breaker: its state machine on a fake clock, properties of any
sequence of events (hypothesis), the shared waiting, and how the engine uses it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import trellis as tl
from trellis.engine.breaker import (
    Admission,
    BreakerMachine,
    BreakerSettings,
    BreakerState,
    BreakerWaitExpired,
    CircuitBreaker,
    Outcome,
    Ticket,
)
from trellis.models.function import FunctionModel


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def machine(**kw: Any) -> tuple[BreakerMachine, Clock]:
    clock = Clock()
    kw.setdefault("probe_first", False)
    return BreakerMachine(BreakerSettings(**kw), clock), clock


def fail(m: BreakerMachine, times: int = 1) -> None:
    for _ in range(times):
        admission = m.admit()
        assert admission.allowed
        m.settle(admission, Outcome.FAILURE)


# -- the state machine ------------------------------------------------------------------------


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    m, _ = machine(failure_threshold=3)
    fail(m, 2)
    assert m.state is BreakerState.CLOSED
    ok = m.admit()
    m.settle(ok, Outcome.OK)  # a success resets the count
    fail(m, 2)
    assert m.state is BreakerState.CLOSED
    fail(m)
    assert m.state is BreakerState.OPEN
    assert m.stats.opened == 1


def test_after_a_failure_it_lets_one_request_through_until_one_succeeds() -> None:
    m, _ = machine(failure_threshold=3)
    fail(m)
    wary = m.admit()
    assert wary.kind == "probe"
    assert m.admit().kind == "wait", "one request at a time while wary"
    m.settle(wary, Outcome.OK)
    assert [m.admit().kind for _ in range(3)] == ["send"] * 3


def test_replies_to_requests_sent_before_a_failure_do_not_reset_the_count() -> None:
    m, _ = machine(failure_threshold=2)
    early = m.admit()  # sent first, answered last (an outage's start)
    failed = m.admit()
    m.settle(failed, Outcome.FAILURE)
    m.settle(early, Outcome.OK)
    assert m.failures == 1, "old news: the count stands"
    fail(m)
    assert m.state is BreakerState.OPEN


def test_open_waits_for_the_cooldown_then_lets_exactly_one_probe_through() -> None:
    m, clock = machine(failure_threshold=1, cooldown_s=0.5)
    fail(m)
    waiting = m.admit()
    assert waiting.kind == "wait" and waiting.until == pytest.approx(1000.5)
    clock.now = 1000.5
    probe = m.admit()
    assert probe.kind == "probe"
    assert m.state is BreakerState.HALF_OPEN
    for _ in range(5):
        other = m.admit()
        assert other.kind == "wait" and other.until is None  # until the probe's outcome
    m.settle(probe, Outcome.OK)
    assert m.state is BreakerState.CLOSED
    assert m.admit().kind == "send"


def test_a_failed_probe_reopens_with_a_longer_capped_cooldown() -> None:
    m, clock = machine(failure_threshold=1, cooldown_s=0.25, max_cooldown_s=1.0)
    fail(m)
    cooldowns = []
    for _ in range(5):
        opened_at = clock.now
        until = m.admit().until
        assert until is not None
        cooldowns.append(round(until - opened_at, 6))
        clock.now = until
        probe = m.admit()
        assert probe.kind == "probe"
        m.settle(probe, Outcome.FAILURE)
        assert m.state is BreakerState.OPEN
    assert cooldowns == [0.25, 0.5, 1.0, 1.0, 1.0]
    clock.now = m.reopen_at
    probe = m.admit()
    m.settle(probe, Outcome.OK)
    fail(m)  # closed again: the cool-down starts from its base
    assert m.reopen_at - clock.now == pytest.approx(0.25)


def test_a_neutral_probe_hands_the_probe_to_the_next_caller() -> None:
    m, clock = machine(failure_threshold=1)
    fail(m)
    clock.now = m.reopen_at
    probe = m.admit()
    assert m.admit().kind == "wait"
    assert m.settle(probe, Outcome.NEUTRAL) is True  # waiters must look again
    assert m.state is BreakerState.HALF_OPEN
    assert m.admit().kind == "probe"


def test_requests_sent_before_it_opened_do_not_move_it() -> None:
    m, _ = machine(failure_threshold=2)
    early = [m.admit() for _ in range(4)]  # four requests in flight while closed
    m.settle(early[0], Outcome.FAILURE)
    m.settle(early[1], Outcome.FAILURE)
    assert m.state is BreakerState.OPEN
    reopen_at = m.reopen_at
    m.settle(early[2], Outcome.OK)  # a straggler's success does not close it
    m.settle(early[3], Outcome.FAILURE)  # nor does a straggler's failure extend it
    assert m.state is BreakerState.OPEN and m.reopen_at == reopen_at


def test_stop_is_final() -> None:
    m, clock = machine()
    admission = m.admit()
    error = tl.AuthenticationError("bad key", model="openai:x")
    m.settle(admission, Outcome.STOP, error)
    assert m.state is BreakerState.STOPPED and m.stop_error is error
    clock.now += 1e6
    assert m.admit().kind == "stopped"
    m.settle(Admission("send"), Outcome.OK)
    assert m.state is BreakerState.STOPPED


def test_an_unproven_model_takes_one_request_at_a_time_until_it_answers() -> None:
    m, _ = machine(probe_first=True)
    first = m.admit()
    assert first.kind == "probe"
    assert m.admit().kind == "wait"
    m.settle(first, Outcome.OK)
    assert [m.admit().kind for _ in range(3)] == ["send"] * 3


def test_disabled_breaker_sends_everything_but_still_stops() -> None:
    m, _ = machine(enabled=False, failure_threshold=1)
    fail(m, 10)
    assert m.state is BreakerState.CLOSED
    m.settle(m.admit(), Outcome.STOP, tl.QuotaExceededError("quota"))
    assert m.admit().kind == "stopped"


@pytest.mark.parametrize(
    "kw", [{"failure_threshold": 0}, {"cooldown_s": 0}, {"cooldown_s": 2, "max_cooldown_s": 1}]
)
def test_settings_are_validated(kw: dict[str, float]) -> None:
    with pytest.raises(tl.ConfigurationError, match="BreakerSettings"):
        BreakerSettings(**kw)  # type: ignore[arg-type]


# -- properties of any sequence of events -----------------------------------------------------

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.just(0)),
        st.tuples(st.just("settle"), st.integers(0, 3)),  # outcome index
        st.tuples(st.just("tick"), st.integers(1, 3000)),  # milliseconds
    ),
    max_size=80,
)
OUTCOMES = [Outcome.OK, Outcome.FAILURE, Outcome.NEUTRAL, Outcome.OK]


@given(events=EVENTS, threshold=st.integers(1, 4), probe_first=st.booleans())
@settings(max_examples=300, deadline=None)
def test_properties_of_any_event_sequence(
    events: list[tuple[str, int]], threshold: int, probe_first: bool
) -> None:
    m, clock = machine(failure_threshold=threshold, probe_first=probe_first, cooldown_s=0.25)
    in_flight: list[Admission] = []
    for kind, arg in events:
        if kind == "tick":
            clock.now += arg / 1000
        elif kind == "admit":
            state_before = m.state
            admission = m.admit()
            if state_before is BreakerState.OPEN and clock.now < m.reopen_at:
                assert not admission.allowed, "nothing is sent while open"
            if admission.allowed:
                in_flight.append(admission)
        elif in_flight:
            admission = in_flight.pop(arg % len(in_flight))
            m.settle(admission, OUTCOMES[arg])
        probes = [a for a in in_flight if a.kind == "probe"]
        assert len(probes) <= 1, "at most one probe in flight"
        assert m.probing == bool(probes)
        if m.state is BreakerState.OPEN:
            assert m.settings.cooldown_s <= m.cooldown <= m.settings.max_cooldown_s
        if m.state is not BreakerState.CLOSED:
            assert m.failures == 0


# -- the asyncio side: shared waiting -----------------------------------------------------------


async def test_waiters_share_one_probe_and_are_released_together() -> None:
    breaker = CircuitBreaker(
        "m", BreakerSettings(failure_threshold=1, cooldown_s=0.05), remote=False
    )
    ticket = await breaker.acquire()
    assert isinstance(ticket, Ticket)
    ticket.settle(Outcome.FAILURE)
    assert breaker.state is BreakerState.OPEN
    started = time.monotonic()
    waiters = [asyncio.create_task(breaker.acquire()) for _ in range(20)]
    await asyncio.sleep(0.1)
    done = [w for w in waiters if w.done()]
    assert len(done) == 1, "after the cool-down exactly one caller gets the probe"
    probe = done[0].result()
    assert isinstance(probe, Ticket) and probe.probe
    assert probe.waited >= 0.04
    probe.settle(Outcome.OK)
    others = await asyncio.gather(*(w for w in waiters if w is not done[0]))
    assert all(isinstance(t, Ticket) and not t.probe for t in others)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats.waits == 20 and breaker.stats.probes == 1
    assert time.monotonic() - started < 1.0


async def test_a_wait_gives_up_at_the_callers_timeout() -> None:
    breaker = CircuitBreaker(
        "m", BreakerSettings(failure_threshold=1, cooldown_s=5, max_cooldown_s=5)
    )
    ticket = await breaker.acquire()
    assert isinstance(ticket, Ticket)
    ticket.settle(Outcome.FAILURE)
    started = time.monotonic()
    with pytest.raises(BreakerWaitExpired):
        await breaker.acquire(timeout=0.05)
    assert time.monotonic() - started < 1.0


async def test_a_stopped_breaker_returns_its_error_to_waiters() -> None:
    breaker = CircuitBreaker("m", BreakerSettings())  # remote: unproven, probes first
    first = await breaker.acquire()
    assert isinstance(first, Ticket) and first.probe
    waiter = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    error = tl.AuthenticationError("invalid key", model="m")
    first.settle(Outcome.STOP, error)
    assert await waiter is error


# -- in the engine ------------------------------------------------------------------------------


class Label(BaseModel):
    label: str


def one_call_flow(retry: tl.RetryPolicy | None = None) -> tl.Flow:
    flow = tl.Flow("one-call", inputs={"text": str}, retry=retry)

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(text, output=Label, model="small")

    return flow


async def test_auth_failure_stops_the_model_for_every_later_run() -> None:
    calls = 0

    async def deny(request: tl.ModelRequest) -> str:
        nonlocal calls
        calls += 1
        raise tl.AuthenticationError("Incorrect API key provided", status_code=401)

    async with tl.Engine(models={"small": FunctionModel(deny)}) as engine:
        results = [await engine.run(one_call_flow(), {"text": str(i)}) for i in range(5)]
    assert calls == 1
    errors = [r.steps["classify"].error for r in results]
    assert all(e is not None and e.type == "AuthenticationError" for e in errors)
    assert errors[0] is not None and "Incorrect API key" in errors[0].message
    later = errors[1]
    assert later is not None
    assert later.message.startswith("not sent to ")
    assert "an earlier request to it failed with auth" in later.message
    assert [len(r.calls) for r in results] == [1, 0, 0, 0, 0]


async def test_open_breaker_sends_the_call_to_the_fallback_at_once() -> None:
    primary_calls = 0

    async def overloaded(request: tl.ModelRequest) -> str:
        nonlocal primary_calls
        primary_calls += 1
        raise tl.OverloadedError("503")

    async def good(request: tl.ModelRequest) -> str:
        return '{"label": "ok"}'

    primary = FunctionModel(overloaded, name="test:primary")
    backup = FunctionModel(good, name="test:backup")
    flow = tl.Flow("fb", inputs={"text": str})

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(text, output=Label, model="small", fallbacks=["backup"])

    settings_ = BreakerSettings(failure_threshold=2, cooldown_s=30, max_cooldown_s=30)
    async with tl.Engine(
        models={"small": primary, "backup": backup}, breaker=settings_, sleep=_no_wait
    ) as engine:
        first = await engine.run(flow, {"text": "a"})  # 2 overloads: opens, then fallback
        second = await engine.run(flow, {"text": "b"})  # open: straight to the fallback
    assert first.ok and second.ok
    assert primary_calls == 2
    assert [c.model for c in second.calls] == ["test:backup"]


async def test_breaker_wait_is_recorded_and_counts_against_the_retry_deadline() -> None:
    attempts = 0

    async def down(request: tl.ModelRequest) -> str:
        nonlocal attempts
        attempts += 1
        raise tl.OverloadedError("503")

    policy = tl.RetryPolicy(retry_deadline=0.3, backoff_base=0.01, backoff_max=0.01)
    settings_ = BreakerSettings(failure_threshold=1, cooldown_s=0.1, max_cooldown_s=0.1)
    started = time.monotonic()
    async with tl.Engine(models={"small": FunctionModel(down)}, breaker=settings_) as engine:
        result = await engine.run(one_call_flow(policy), {"text": "x"})
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "OverloadedError"
    assert 0.25 < elapsed < 1.5, "gave up at the retry deadline, waiting on the breaker"
    assert 2 <= attempts <= 4, "one probe per cool-down, not a request per backoff"
    assert sum(c.wait_s for c in result.calls) >= 0.15


async def _no_wait(seconds: float) -> None:
    return None


def test_a_breaker_keeps_working_when_the_engine_moves_to_a_new_event_loop() -> None:
    settings_ = BreakerSettings(failure_threshold=1, cooldown_s=0.2, max_cooldown_s=0.2)
    breaker = CircuitBreaker("m", settings_, remote=False)

    async def open_it_and_abandon_a_waiter() -> None:  # e.g. a run aborted while it waited
        first = await breaker.acquire()
        assert isinstance(first, Ticket)
        first.settle(Outcome.FAILURE)
        waiter = asyncio.create_task(breaker.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()

    async def wait_for_the_probe() -> Ticket | tl.ModelError:
        return await breaker.acquire(timeout=2.0)

    asyncio.run(open_it_and_abandon_a_waiter())
    probe = asyncio.run(wait_for_the_probe())  # a fresh loop: its own event and timer
    assert isinstance(probe, Ticket) and probe.probe


async def test_a_call_waiting_on_an_open_breaker_holds_no_budget_reservation() -> None:
    """Room in the budget for one reservation at a time: a call waiting on model A's open
    breaker must not hold it, or model B's call would wait for A's cool-down."""
    finished: dict[str, float] = {}

    def replying(name: str) -> FunctionModel:
        async def reply(request: tl.ModelRequest) -> tl.ModelResponse:
            finished[name] = time.monotonic()
            return tl.ModelResponse('{"label": "ok"}', tl.Usage(5, 5))

        return FunctionModel(reply, name=f"test:{name}")

    model_a, model_b = replying("a"), replying("b")
    flow = tl.Flow("two-models", inputs={"text": str})

    @flow.step
    async def on_a(text: str, llm: tl.LLM) -> Label:
        return await llm.generate(text, output=Label, model="a", max_tokens=100)

    @flow.step
    async def on_b(text: str, llm: tl.LLM) -> Label:
        await asyncio.sleep(0.05)  # A is already waiting on its breaker
        return await llm.generate(text, output=Label, model="b", max_tokens=100)

    settings_ = BreakerSettings(failure_threshold=1, cooldown_s=0.6, max_cooldown_s=0.6)
    async with tl.Engine(models={"a": model_a, "b": model_b}, breaker=settings_) as engine:
        ticket = await engine.breaker(model_a).acquire()
        assert isinstance(ticket, Ticket)
        ticket.settle(Outcome.FAILURE)  # A's breaker is open for 0.6 s
        started = time.monotonic()
        result = await engine.run(flow, {"text": "x"}, budget=tl.Budget(max_tokens=180))
    assert result.ok, result.error
    assert finished["b"] - started < 0.4, "B did not wait for A's cool-down"
    assert finished["a"] - started >= 0.55
    assert result.steps["on_a"].usage.attempts == 1
    (a_call,) = [c for c in result.calls if c.model == "test:a"]
    assert a_call.wait_s >= 0.5, "the breaker wait is recorded on the call"
