"""Server-side rate limits: token buckets, the headers of each dialect, and 429s."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from trellis.mockserver import AdmissionLimiter, MockServer
from trellis.mockserver.limits import DimensionState, format_duration, format_rfc3339

from . import USER, post

pytestmark = pytest.mark.serial  # rate-limit windows are measured in wall time

OPENAI_BODY = {"model": "gpt-4o-mini", "messages": USER}
ANTHROPIC_BODY = {"model": "claude", "max_tokens": 100, "messages": USER}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.012, "12ms"),
        (0.0201, "21ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360.0, "6m0s"),
        (90.25, "1m30.25s"),
        (3723.0, "1h2m3s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rfc3339_times_round_up_to_the_second() -> None:
    assert format_rfc3339(0.2) == "1970-01-01T00:00:01Z"
    assert format_rfc3339(1_700_000_000) == "2023-11-14T22:13:20Z"


def test_rpm_60_admits_one_request_per_second() -> None:
    clock = FakeClock()
    limiter = AdmissionLimiter(rpm=60, clock=clock)
    first = limiter.admit("m", 10)
    assert first.allowed
    assert first.snapshot.requests is not None
    assert first.snapshot.requests.limit == 60
    assert first.snapshot.requests.remaining == 59
    assert first.snapshot.requests.reset_s == pytest.approx(1.0)
    second = limiter.admit("m", 10)
    assert not second.allowed
    assert second.dimension == "requests"
    assert second.snapshot.requests is not None
    assert second.snapshot.requests.remaining == 0  # what the 429's headers report...
    assert second.snapshot.requests.reset_s == pytest.approx(1.0)  # ...until retry-after
    assert second.retry_after_s == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.admit("m", 10).retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.admit("m", 10).allowed


def test_a_whole_minute_burst_when_burst_s_is_60() -> None:
    clock = FakeClock()
    limiter = AdmissionLimiter(rpm=60, burst_s=60, clock=clock)
    assert all(limiter.admit("m", 1).allowed for _ in range(60))
    refused = limiter.admit("m", 1)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)
    assert refused.snapshot.requests is not None
    assert refused.snapshot.requests.remaining == 0
    # a refusal's reset is when the next request fits (its retry-after), not a full bucket
    assert refused.snapshot.requests.reset_s == pytest.approx(1.0)
    assert limiter.snapshot("m").requests == DimensionState(60, 0, pytest.approx(60.0))


def test_tokens_are_charged_before_and_corrected_after() -> None:
    clock = FakeClock()
    limiter = AdmissionLimiter(tpm=6000, clock=clock)  # 100 tokens/s, bursts of 100
    assert limiter.admit("m", 80).allowed
    limiter.record_tokens("m", 70)  # output: 150 used, the burst bucket is at -50
    refused = limiter.admit("m", 20)
    assert not refused.allowed and refused.dimension == "tokens"
    assert refused.retry_after_s == pytest.approx(0.7)  # back to +20 at 100/s
    snap = limiter.snapshot("m").tokens
    assert snap is not None and snap.remaining == 5850
    clock.now += 0.7
    assert limiter.admit("m", 20).allowed
    # Bigger than a burst bucket: admitted once that bucket is full, then owed.
    clock.now += 10
    assert limiter.admit("m", 500).allowed
    assert limiter.admit("m", 1).retry_after_s == pytest.approx(4.01)


def test_a_request_over_the_minute_limit_is_too_large() -> None:
    limiter = AdmissionLimiter(tpm=1000)
    admission = limiter.admit("m", 1001)
    assert admission.too_large and admission.retry_after_s is None
    assert admission.limit == 1000 and admission.requested == 1001


def test_per_model_limits_are_separate() -> None:
    clock = FakeClock()
    shared = AdmissionLimiter(rpm=60, clock=clock)
    assert shared.admit("a", 1).allowed
    assert not shared.admit("b", 1).allowed
    split = AdmissionLimiter(rpm=60, per_model=True, clock=clock)
    assert split.admit("a", 1).allowed
    assert split.admit("b", 1).allowed
    assert not split.admit("a", 1).allowed


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rpm"):
        AdmissionLimiter(rpm=0)
    with pytest.raises(ValueError, match="burst_s"):
        AdmissionLimiter(rpm=10, burst_s=0)


async def test_openai_429_and_headers_on_every_response() -> None:
    async with MockServer(rpm=60, tpm=100_000) as s:
        url = f"{s.openai_base_url}/chat/completions"
        ok = await post(url, OPENAI_BODY)
        assert ok.status_code == 200
        h = ok.headers
        assert h["x-ratelimit-limit-requests"] == "60"
        assert h["x-ratelimit-remaining-requests"] == "59"
        assert h["x-ratelimit-reset-requests"].endswith("s")
        assert h["x-ratelimit-limit-tokens"] == "100000"
        usage = ok.json()["usage"]
        # The reply's tokens are charged; the bucket refills 1.7 tokens a millisecond
        # meanwhile (a slow machine's request may see a few back).
        refilled = int(h["x-ratelimit-remaining-tokens"]) - (100_000 - usage["total_tokens"])
        assert 0 <= refilled < 200
        assert "retry-after" not in h
        limited = await post(url, OPENAI_BODY)
        assert limited.status_code == 429
        h = limited.headers
        assert 0 < int(h["retry-after-ms"]) <= 1000
        assert h["retry-after"] == "1"
        # the limit that refused it has nothing left, though the minute bucket has 59
        assert h["x-ratelimit-remaining-requests"] == "0"
        assert h["x-ratelimit-reset-requests"] == f"{h['retry-after-ms']}ms"  # then one fits
        assert int(h["x-ratelimit-remaining-tokens"]) > 0  # tokens did not refuse it
        assert h["x-ratelimit-reset-requests"].endswith("ms")
        error = limited.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert "requests per min (RPM): Limit 60, Used 1, Requested 1" in error["message"]
        assert s.stats.rate_limited == 1
        assert s.stats.responses_429 == 1
        assert s.stats.faults == {}


async def test_anthropic_429_and_headers() -> None:
    async with MockServer(rpm=60, tpm=50_000) as s:
        url = f"{s.anthropic_base_url}/v1/messages"
        before = dt.datetime.now(dt.UTC)
        ok = await post(url, ANTHROPIC_BODY)
        assert ok.status_code == 200
        h = ok.headers
        assert h["anthropic-ratelimit-requests-limit"] == "60"
        assert h["anthropic-ratelimit-requests-remaining"] == "59"
        assert h["anthropic-ratelimit-tokens-limit"] == "50000"
        assert int(h["anthropic-ratelimit-tokens-remaining"]) < 50_000
        reset = dt.datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"])
        assert reset.tzinfo is not None
        assert before <= reset <= before + dt.timedelta(seconds=3)
        limited = await post(url, ANTHROPIC_BODY)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "1"
        assert "retry-after-ms" not in limited.headers
        assert "anthropic-ratelimit-requests-reset" in limited.headers
        assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert int(limited.headers["anthropic-ratelimit-tokens-remaining"]) > 0
        body = limited.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "rate_limit_error"
        assert "60 requests per minute" in body["error"]["message"]


async def test_too_large_request_is_a_429_without_retry_after() -> None:
    async with MockServer(tpm=5) as s:
        response = await post(f"{s.openai_base_url}/chat/completions", OPENAI_BODY)
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["type"] == "tokens"
    assert error["message"].startswith("Request too large")


async def test_no_rate_limit_headers_without_limits() -> None:
    async with MockServer() as s:
        response = await post(f"{s.openai_base_url}/chat/completions", OPENAI_BODY)
    assert not any(k.lower().startswith("x-ratelimit") for k in response.headers)


async def test_capacity_frees_when_retry_after_says() -> None:
    async with MockServer(rpm=240, burst_s=0.25) as s:  # one request per 250 ms
        url = f"{s.openai_base_url}/chat/completions"
        assert (await post(url, OPENAI_BODY)).status_code == 200
        limited = await post(url, OPENAI_BODY)
        assert limited.status_code == 429
        wait_ms = int(limited.headers["retry-after-ms"])
        assert 0 < wait_ms <= 250
        await asyncio.sleep(wait_ms / 1000 + 0.005)
        assert (await post(url, OPENAI_BODY)).status_code == 200


async def test_concurrent_burst_is_cut_at_the_bucket_size() -> None:
    clock = FakeClock()  # time stands still: no refill while the burst arrives
    async with MockServer(rpm=600, clock=clock) as s:  # bursts of 10
        url = f"{s.openai_base_url}/chat/completions"
        async with httpx.AsyncClient() as client:
            responses = await asyncio.gather(
                *(client.post(url, json=OPENAI_BODY) for _ in range(25))
            )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 10 + [429] * 15
        assert s.stats.rate_limited == 15
        clock.now += 0.1  # one request's worth comes back
        assert (await post(url, OPENAI_BODY)).status_code == 200
        assert (await post(url, OPENAI_BODY)).status_code == 429


async def test_a_client_paced_at_the_limit_gets_no_429() -> None:
    clock = FakeClock()
    async with MockServer(rpm=1200, clock=clock) as s:  # 20/s, bursts of 20
        url = f"{s.openai_base_url}/chat/completions"
        async with httpx.AsyncClient() as client:
            for i in range(60):  # the burst, then one request every 50 ms
                if i >= 20:
                    clock.now += 0.05
                assert (await client.post(url, json=OPENAI_BODY)).status_code == 200
            assert (await client.post(url, json=OPENAI_BODY)).status_code == 429
        assert s.stats.responses_429 == 1
