"""The mock server's outage window and the flaky mix: the plan with a fake clock, the wire
format in both dialects, the control API and the request count."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from trellis.mockserver import FaultPlan, MockServer, flaky_rates

from . import USER


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outage_window_with_a_fake_clock() -> None:
    clock = Clock()
    plan = FaultPlan(clock=clock)
    outage = plan.schedule_outage(2.0, start_in_s=1.0)
    assert plan.next(structured=False, stream=False) == (None, False)  # not started yet
    clock.now = 101.0
    step, scripted = plan.next(structured=False, stream=False)
    assert step is not None and step.fault == "overloaded" and not scripted
    assert step.latency_ms == 0.0
    clock.now = 102.999
    assert plan.next(structured=False, stream=False)[0] is not None
    clock.now = 103.0
    assert plan.next(structured=False, stream=False) == (None, False)  # over
    assert outage.requests == 2
    assert outage.to_dict(clock.now)["over"] is True


def test_outage_from_the_first_request_and_before_the_script() -> None:
    clock = Clock()
    plan = FaultPlan(script=[{"fault": "auth"}], clock=clock)
    outage = plan.schedule_outage(1.0, start_in_s=0.5, from_first_request=True)
    clock.now = 500.0  # long after scheduling: it has not started, no request came yet
    assert outage.starts_at is None
    step, scripted = plan.next(structured=False, stream=False)
    assert step is not None and step.fault == "auth" and scripted  # the script still runs
    assert outage.starts_at == 500.5
    clock.now = 500.6
    step, _ = plan.next(structured=False, stream=False)
    assert step is not None and step.fault == "overloaded"
    plan.reset()
    assert plan.outage is None


@pytest.mark.parametrize(
    "kwargs", [{"duration_s": 0}, {"duration_s": 1, "start_in_s": -1}, {"duration_s": -2}]
)
def test_bad_outage_is_explained(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="outage: "):
        FaultPlan().schedule_outage(**kwargs)


def test_flaky_rates_are_the_issue_mix() -> None:
    rates = flaky_rates(0.1)
    assert set(rates) == {"rate_limit", "server_error", "malformed_json"}
    assert sum(rates.values()) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        flaky_rates(1.5)


@pytest.mark.parametrize(
    ("dialect", "status", "error_type"),
    [("openai", 503, None), ("anthropic", 529, "overloaded_error")],
)
async def test_outage_over_http_counts_its_requests(
    dialect: str, status: int, error_type: str | None
) -> None:
    async with MockServer(latency_ms=200) as server:
        if dialect == "openai":
            url = f"{server.openai_base_url}/chat/completions"
            body = {"model": "gpt-4o-mini", "messages": USER}
        else:
            url = f"{server.anthropic_base_url}/v1/messages"
            body = {"model": "claude", "max_tokens": 100, "messages": USER}
        headers = {"anthropic-version": "2023-06-01"} if dialect == "anthropic" else {}
        async with httpx.AsyncClient(timeout=10, headers=headers) as client:
            assert (await client.post(url, json=body)).status_code == 200
            scheduled = await client.post(
                f"{server.base_url}/_mock/outage", json={"duration_s": 0.4}
            )
            assert scheduled.status_code == 200
            assert scheduled.json()["outage"]["active"] is True
            loop = asyncio.get_running_loop()
            started = loop.time()
            failed = await client.post(url, json=body)
            assert loop.time() - started < 0.15, "an outage answers at once, not after latency"
            assert failed.status_code == status
            if error_type is not None:
                assert failed.json()["error"]["type"] == error_type
            await asyncio.sleep(0.45)
            assert (await client.post(url, json=body)).status_code == 200
            stats = (await client.get(f"{server.base_url}/_mock/stats")).json()
    assert stats["outage"]["requests"] == 1
    assert stats["outage"]["over"] is True
    assert stats["faults"] == {"overloaded": 1}
    assert stats["requests"] == 3


async def test_outage_control_errors() -> None:
    async with MockServer() as server, httpx.AsyncClient(timeout=10) as client:
        control = f"{server.base_url}/_mock/outage"
        missing = await client.post(control, json={"start_in_s": 1})
        assert missing.status_code == 400 and "duration_s" in missing.json()["error"]
        unknown = await client.post(control, json={"duration_s": 1, "when": 3})
        assert unknown.status_code == 400
        negative = await client.post(control, json={"duration_s": -1})
        assert negative.status_code == 400 and "outage" in negative.json()["error"]
