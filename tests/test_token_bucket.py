"""The one token bucket under the client-side pacer and the mock server's admission limiter."""

from __future__ import annotations

import pytest

from trellis.mockserver.limits import AdmissionLimiter
from trellis.models.token_bucket import TokenBucket, per_minute_capacity
from trellis.providers.ratelimit import RequestPacer


def test_refill_is_continuous_and_capped() -> None:
    bucket = TokenBucket(10.0, 2.0, now=0.0)
    bucket.take(10.0)
    bucket.refill(1.5)
    assert bucket.level == pytest.approx(3.0)
    bucket.refill(100.0)
    assert bucket.level == 10.0


def test_a_clock_going_back_never_refills_twice() -> None:
    bucket = TokenBucket(10.0, 1.0, now=5.0)
    bucket.take(10.0)
    bucket.refill(4.0)  # earlier than the last refill: nothing flows in
    bucket.refill(6.0)
    assert bucket.level == pytest.approx(1.0)


def test_delay_waits_for_a_full_bucket_at_most_and_debt_is_repaid_first() -> None:
    bucket = TokenBucket(10.0, 5.0, now=0.0)
    assert bucket.delay(10.0) == 0.0
    assert bucket.delay(50.0) == 0.0  # larger than the bucket: needs it full, never deadlocks
    bucket.take(50.0)  # in debt: 10 - 50 = -40
    assert bucket.delay(1.0) == pytest.approx(41.0 / 5.0)


def test_tolerance_absorbs_float_noise_only() -> None:
    strict = TokenBucket(1.0, 1.0, now=0.0, tolerance=1e-9)
    lenient = TokenBucket(1.0, 1.0, now=0.0, tolerance=1e-6)
    for bucket in (strict, lenient):
        bucket.take(1.0 - 1e-3)
        bucket.level -= 1e-7  # short of the amount by float-noise size
    assert strict.delay(1e-3) > 0.0
    assert lenient.delay(1e-3) == 0.0


def test_give_back_lower_to_and_slow_to_only_move_one_way() -> None:
    bucket = TokenBucket(10.0, 1.0, now=0.0)
    bucket.take(4.0)
    bucket.give_back(100.0)
    assert bucket.level == 10.0
    bucket.lower_to(20.0)
    assert bucket.level == 10.0
    bucket.lower_to(3.0)
    assert bucket.level == 3.0
    bucket.slow_to(2.0, 50.0)  # faster: ignored
    assert (bucket.rate, bucket.capacity) == (1.0, 10.0)
    bucket.slow_to(0.5, 2.0)
    assert (bucket.rate, bucket.capacity, bucket.level) == (0.5, 2.0, 2.0)


def test_per_minute_capacity_holds_burst_seconds_and_at_least_one() -> None:
    assert per_minute_capacity(600, 1.0) == 10.0
    assert per_minute_capacity(6, 1.0) == 1.0
    bucket = TokenBucket.per_minute(120, 2.0, now=0.0)
    assert (bucket.capacity, bucket.rate, bucket.level) == (4.0, 2.0, 4.0)


@pytest.mark.parametrize(("capacity", "rate"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0)])
def test_a_bucket_needs_positive_capacity_and_rate(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError, match="positive capacity and rate"):
        TokenBucket(capacity, rate, now=0.0)


def test_the_pacer_and_the_admission_limiter_share_the_bucket_class() -> None:
    pacer = RequestPacer(rpm=60, clock=lambda: 0.0)
    limiter = AdmissionLimiter(rpm=60, clock=lambda: 0.0)
    limiter.admit("m", 1)
    assert isinstance(pacer._requests, TokenBucket)
    assert all(
        isinstance(b, TokenBucket) for lim in limiter._scopes["*"].values() for b in lim.buckets
    )
