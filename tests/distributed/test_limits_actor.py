"""The limits actor's protocol in one process (the class the Ray actor runs), and a
worker's pacer sharing it: blocks, refusals, reclaiming a dead worker's allowance."""

from __future__ import annotations

import asyncio
import time

import pytest

import trellis as tl
from trellis.cluster.limits import LEASE_PERIOD_S, LimitsActor, RatePool, Report
from trellis.providers.ratelimit import RequestPacer


def test_a_budget_block_is_a_share_of_what_is_free_and_never_more() -> None:
    actor = LimitsActor(tl.Budget(max_calls=10), workers=2)
    a = actor.budget("a", Report(), (1.0, 50.0, 0.0))
    assert a.grant is not None and a.grant[0] == 3  # ceil(10 / (2 * 2))
    b = actor.budget("b", Report(), (1.0, 50.0, 0.0))
    assert b.grant is not None and b.grant[0] == 2  # ceil(7 / 4)
    # a reserves its 3 and settles them; b holds 2 unused: 5 are free.
    spent = Report(spent=(3.0, 150.0, 0.0))
    c = actor.budget("a", spent, (1.0, 50.0, 0.0))
    assert c.grant is not None and c.grant[0] == 2
    totals = actor.totals()
    assert totals[:2] == (3.0, 150.0)


def test_a_call_that_fits_only_the_leases_waits_and_holders_are_told_to_give_back() -> None:
    actor = LimitsActor(tl.Budget(max_calls=2), workers=1)
    held = actor.budget("a", Report(), (1.0, 0.0, 0.0))
    assert held.grant is not None and held.grant[0] == 1  # half of what is free
    # a reserved it (in flight) and asks again: the last one.
    more = actor.budget("a", Report(inflight=(1.0, 0.0, 0.0)), (1.0, 0.0, 0.0))
    assert more.grant is not None and more.grant[0] == 1
    wait = actor.budget("b", Report(), (1.0, 0.0, 0.0))
    assert wait.grant is None and wait.refusal is None and wait.wait_s > 0
    told = actor.budget("a", Report(unused=(1.0, 0.0, 0.0), inflight=(1.0, 0.0, 0.0)))
    assert told.contended
    actor.budget("a", Report(inflight=(1.0, 0.0, 0.0)))  # a gives its unused one back
    got = actor.budget("b", Report(), (1.0, 0.0, 0.0))
    assert got.grant is not None and got.grant[0] >= 1


def test_a_call_that_cannot_fit_the_spending_is_refused_for_everyone() -> None:
    actor = LimitsActor(tl.Budget(max_tokens=100), spent=(0.0, 80.0, 0.0), workers=2)
    refused = actor.budget("a", Report(), (1.0, 30.0, 0.0))
    assert refused.refusal is not None and refused.refusal.which == "max_tokens"
    assert refused.refusal.would_be == 110.0
    later = actor.budget("b", Report(), (1.0, 1.0, 0.0))
    assert later.refusal == refused.refusal  # sticky, as one process's guard


def test_a_silent_worker_s_allowance_is_reclaimed_and_its_calls_in_flight_count() -> None:
    actor = LimitsActor(tl.Budget(max_calls=4), workers=1, allowance_ttl_s=0.2)
    need = (1.0, 0.0, 0.0)
    assert actor.budget("dead", Report(), need).grant == (2.0, 0.0, 0.0)
    assert actor.budget("dead", Report(inflight=(2.0, 0.0, 0.0)), need).grant == (1.0, 0.0, 0.0)
    assert actor.budget("dead", Report(inflight=(3.0, 0.0, 0.0)), need).grant == (1.0, 0.0, 0.0)
    # It holds all 4: 3 in flight, 1 unused. Then it is killed and reports no more.
    assert actor.budget("live", Report(), need).grant is None  # must wait
    time.sleep(0.3)
    got = actor.budget("live", Report(), need)
    assert got.grant == (1.0, 0.0, 0.0)  # its unused one is free; its 3 in flight are spent
    assert actor.totals()[0] == 3.0
    back = actor.budget("dead", Report(unused=(1.0, 0.0, 0.0)), need)
    assert back.expired  # it was presumed dead: it drops what it held


def test_rate_permits_come_in_blocks_at_the_rate() -> None:
    actor = LimitsActor()
    rpm = 1200.0  # 20 a second: blocks of 20 * LEASE_PERIOD_S
    block = int(20 * LEASE_PERIOD_S)
    n, _, _ = actor.try_rate("m", rpm, None, 100, 0, 0.0)
    assert n == 10  # the full half-second bucket
    n, _, wait = actor.try_rate("m", rpm, None, 100, 0, 0.0)
    assert n == 0 and wait == pytest.approx(block / 20.0, rel=0.3)
    time.sleep(wait + 0.01)
    n, _, _ = actor.try_rate("m", rpm, None, 100, 0, 0.0)
    assert n >= block


class _Direct:
    """A stand-in for a Ray actor handle: ``handle.method.remote(...)`` awaits the call."""

    def __init__(self, actor: LimitsActor) -> None:
        self._actor = actor
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        method = getattr(self._actor, name)
        outer = self

        class _Remote:
            async def remote(self, *args: object) -> object:
                outer.calls += 1
                result = method(*args)
                return await result if asyncio.iscoroutine(result) else result

        return _Remote()


async def test_a_shared_pacer_takes_tokens_in_blocks_and_settles_the_difference() -> None:
    actor = LimitsActor()
    handle = _Direct(actor)
    pacer = RequestPacer(rpm=600, tpm=60_000)
    pool = RatePool(handle, "m", 600, 60_000)
    pacer.share(pool)
    permits = await asyncio.gather(*(pacer.acquire(100) for _ in range(5)))
    assert handle.calls < 5  # one lease served several calls
    for permit in permits:
        pacer.settle(permit, 40)  # 60 tokens each back to the worker's block
    assert pool.tokens >= 5 * 60 - 1e-6
    # Past the bucket, a lease waits in the actor: one round trip brings a block.
    before = handle.calls
    t0 = time.monotonic()
    await asyncio.gather(*(pacer.acquire(100) for _ in range(4)))
    assert handle.calls - before <= 2 and time.monotonic() - t0 >= 0.05
    pacer.share(None)
    assert pacer.shared is None and pacer.available()[0] is not None  # its own buckets again
