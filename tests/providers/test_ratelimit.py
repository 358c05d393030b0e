"""The client-side rate limiter, driven by a fake clock: deterministic and instant."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from trellis.providers.ratelimit import MAX_PAUSE_S, RequestPacer


class AutoClock:
    """A clock whose ``sleep`` advances time at once (only the queue head ever sleeps)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.now += seconds
        await asyncio.sleep(0)


class ManualClock:
    """A clock that only moves when the test calls :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), future))
        await future

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._timers if not f.done())

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def limiter(rpm: float | None = None, tpm: float | None = None, clock=None) -> RequestPacer:  # type: ignore[no-untyped-def]
    clock = clock or AutoClock()
    return RequestPacer(rpm, tpm, clock=clock, sleep=clock.sleep)


async def test_rpm_spaces_requests_evenly() -> None:
    clock = AutoClock()
    rl = limiter(rpm=60, clock=clock)
    times = []
    for _ in range(4):
        await rl.acquire()
        times.append(clock.now)
    assert times == [0.0, 1.0, 2.0, 3.0]


async def test_rpm_bucket_holds_one_second_of_requests() -> None:
    clock = AutoClock()
    rl = limiter(rpm=600, clock=clock)  # 10 a second
    times = []
    for _ in range(12):
        await rl.acquire()
        times.append(round(clock.now, 6))
    assert times == [0.0] * 10 + [0.1, 0.2]


async def test_long_run_rate_matches_rpm() -> None:
    clock = AutoClock()
    rl = limiter(rpm=1200, clock=clock)
    for _ in range(200):
        await rl.acquire()
    # 20 in the initial burst, then one every 50 ms
    assert clock.now == pytest.approx(180 * 0.05)


async def test_unlimited_limiter_never_waits() -> None:
    clock = AutoClock()
    rl = limiter(clock=clock)
    for _ in range(100):
        await rl.acquire(10_000)
    assert clock.sleeps == []


async def test_tpm_waits_for_tokens() -> None:
    clock = AutoClock()
    rl = limiter(tpm=600, clock=clock)  # 10 tokens a second, bucket of 10
    await rl.acquire(10)
    await rl.acquire(5)
    assert clock.now == pytest.approx(0.5)


async def test_settle_refunds_an_overestimate() -> None:
    clock = AutoClock()
    rl = limiter(tpm=600, clock=clock)
    permit = await rl.acquire(10)
    rl.settle(permit, 2)
    assert rl.available() == (None, pytest.approx(8.0))
    await rl.acquire(8)
    assert clock.now == 0.0
    rl.settle(permit, 0)  # a permit settles once
    assert rl.available()[1] == pytest.approx(0.0)


async def test_settle_charges_an_underestimate() -> None:
    clock = AutoClock()
    rl = limiter(tpm=600, clock=clock)
    permit = await rl.acquire(5)
    rl.settle(permit, 15)  # bucket: 10 - 15 = -5
    await rl.acquire(5)
    assert clock.now == pytest.approx(1.0)


async def test_oversized_request_proceeds_when_bucket_is_full() -> None:
    clock = AutoClock()
    rl = limiter(tpm=600, clock=clock)
    await rl.acquire(5)  # bucket 5 of 10
    await rl.acquire(50)  # waits for a full bucket, then goes into debt
    assert clock.now == pytest.approx(0.5)
    await rl.acquire(1)  # repays the 40-token debt first
    assert clock.now == pytest.approx(0.5 + 4.1)


async def test_oversized_request_never_deadlocks_when_alone() -> None:
    clock = AutoClock()
    rl = limiter(tpm=60, clock=clock)
    await asyncio.wait_for(rl.acquire(1_000_000), timeout=1)
    assert clock.now == 0.0


async def test_fifo_small_request_does_not_overtake_a_large_one() -> None:
    clock = ManualClock()
    rl = limiter(tpm=600, clock=clock)
    await rl.acquire(10)  # empties the bucket
    order: list[tuple[str, float]] = []

    async def take(label: str, tokens: int) -> None:
        await rl.acquire(tokens)
        order.append((label, clock.now))

    big = asyncio.create_task(take("big", 10))
    await settle()
    small = asyncio.create_task(take("small", 1))
    await settle()
    assert rl.waiting == 2
    await clock.advance(0.5)  # 5 tokens: enough for 'small', but 'big' is first
    assert order == []
    await clock.advance(0.5)
    assert order == [("big", 1.0)]
    await clock.advance(0.1)
    assert order == [("big", 1.0), ("small", 1.1)]
    await asyncio.gather(big, small)


async def test_many_waiters_are_served_in_arrival_order() -> None:
    clock = ManualClock()
    rl = limiter(rpm=60, clock=clock)
    await rl.acquire()
    served: list[int] = []

    async def take(i: int) -> None:
        await rl.acquire()
        served.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(take(i)))
        await settle()
    for _ in range(5):
        await clock.advance(1.0)
    assert served == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    clock = ManualClock()
    rl = limiter(rpm=60, clock=clock)
    await rl.acquire()
    first = asyncio.create_task(rl.acquire())
    await settle()
    second = asyncio.create_task(rl.acquire())
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    assert rl.waiting == 1
    await clock.advance(1.0)
    assert second.done()
    assert rl.waiting == 0
    # the cancelled waiter took nothing: the bucket refills for the next caller in 1 s
    third = asyncio.create_task(rl.acquire())
    await clock.advance(1.0)
    assert third.done()


async def test_refund_wakes_the_waiting_head_early() -> None:
    clock = ManualClock()
    rl = limiter(tpm=600, clock=clock)
    permit = await rl.acquire(10)
    waiter = asyncio.create_task(rl.acquire(10))
    await settle()
    assert not waiter.done()
    rl.settle(permit, 0)  # nothing was used after all
    await settle()
    assert waiter.done()
    assert clock.now == 0.0


async def test_observe_lowers_the_bucket_to_the_server_remaining() -> None:
    clock = AutoClock()
    rl = limiter(rpm=600, clock=clock)  # 10 in the bucket
    rl.observe(remaining_requests=2)
    await rl.acquire()
    await rl.acquire()
    assert clock.now == 0.0
    await rl.acquire()
    assert clock.now == pytest.approx(0.1)


async def test_observe_never_loosens_the_configured_limit() -> None:
    clock = AutoClock()
    rl = limiter(rpm=60, tpm=600, clock=clock)
    rl.observe(remaining_requests=10_000, remaining_tokens=1_000_000)
    assert rl.available() == (1.0, 10.0)
    await rl.acquire()
    await rl.acquire()
    assert clock.now == 1.0


async def test_observe_exhausted_pauses_until_reset() -> None:
    clock = AutoClock()
    rl = limiter(rpm=6000, clock=clock)
    rl.observe(remaining_requests=0, reset_requests_s=2.5)
    assert rl.paused_for == 2.5
    await rl.acquire()
    assert clock.now == pytest.approx(2.5)


async def test_headers_pause_a_limiter_without_configured_limits() -> None:
    clock = AutoClock()
    rl = limiter(clock=clock)
    await rl.acquire(100)
    rl.observe(remaining_requests=3, remaining_tokens=0, reset_tokens_s=1.25)
    await rl.acquire(100)
    assert clock.now == pytest.approx(1.25)
    await rl.acquire(100)
    assert clock.now == pytest.approx(1.25)


async def test_pauses_are_capped() -> None:
    clock = AutoClock()
    rl = limiter(clock=clock)
    rl.observe(remaining_tokens=0, reset_tokens_s=3600)
    assert rl.paused_for == MAX_PAUSE_S
    rl.pause(10)  # never shortens an existing pause
    assert rl.paused_for == MAX_PAUSE_S


async def test_pause_holds_every_caller() -> None:
    clock = AutoClock()
    rl = limiter(clock=clock)
    rl.pause(0.75)
    await rl.acquire()
    await rl.acquire()
    assert clock.now == pytest.approx(0.75)


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="rpm"):
        RequestPacer(rpm=0)
    with pytest.raises(ValueError, match="tpm"):
        RequestPacer(tpm=float("inf"))


async def test_default_clock_and_sleep_work() -> None:
    rl = RequestPacer(rpm=60_000)  # real clock: 1000 a second, bucket of 1000
    for _ in range(5):
        await rl.acquire(1)
    assert repr(rl) == "RequestPacer(rpm=60000, tpm=None)"
