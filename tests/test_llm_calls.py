"""LLM calls from steps: structured output, re-asks, retries and fallbacks by failure mode.

Models are ``FunctionModel`` / ``TestModel`` instances; ``tl.Engine(sleep=...)`` records the
waits instead of sleeping, so backoff is asserted, never waited for.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.models.function import FunctionModel, TestModel


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float


GOOD = '{"label": "positive", "confidence": 0.9}'
GOOD_VALUE = Sentiment(label="positive", confidence=0.9)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def classify_flow(
    *,
    output: Any = Sentiment,
    model: str | None = "small",
    retry: tl.RetryPolicy | None = None,
    capture: dict[str, BaseException] | None = None,
    **generate: Any,
) -> tl.Flow:
    """One step that makes one ``llm.generate`` call; ``capture`` keeps the exception."""
    flow = tl.Flow("classify", inputs={"text": str})

    @flow.step(retry=retry)
    async def classify(text: str, llm: tl.LLM) -> Any:
        try:
            return await llm.generate(text, output=output, model=model, **generate)
        except tl.TrellisError as exc:
            if capture is not None:
                capture["error"] = exc
            raise

    return flow


async def run_flow(
    flow: tl.Flow,
    models: Mapping[str, Any],
    sleeps: Sleeps | None = None,
    *,
    providers: Mapping[str, Any] | None = None,
    config: tl.Config | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> tl.RunResult:
    async def no_wait(seconds: float) -> None:
        pass

    async with tl.Engine(
        models=models,
        sleep=sleeps or no_wait,
        seed=0,
        providers=providers,
        config=config,
    ) as engine:
        return await engine.run(flow, inputs if inputs is not None else {"text": "great!"})


def outcomes(result: tl.RunResult) -> list[str]:
    return [c.outcome for c in result.calls]


def response(
    text: str,
    finish_reason: Any = "stop",
    refusal: str | None = None,
    usage: tl.Usage | None = None,
) -> tl.ModelResponse:
    return tl.ModelResponse(
        text=text, usage=usage or tl.Usage(20, 8), finish_reason=finish_reason, refusal=refusal
    )


def named(name: str, *replies: Any) -> TestModel:
    return TestModel(*replies, name=name)


# -- structured output ----------------------------------------------------------------------


async def test_structured_output_is_parsed_and_validated() -> None:
    model = TestModel(GOOD)
    result = await run_flow(classify_flow(), {"small": model})
    assert result.ok, result.error
    assert result["classify"] == GOOD_VALUE
    assert isinstance(result["classify"], Sentiment)
    [request] = model.calls
    assert request.output_schema == Sentiment.model_json_schema()
    assert request.schema_name == "Sentiment"
    assert request.messages[-1] == tl.Message("user", "great!")
    assert outcomes(result) == ["ok"]


async def test_plain_text_output() -> None:
    model = TestModel("just text")
    result = await run_flow(classify_flow(output=None), {"small": model})
    assert result["classify"] == "just text"
    assert model.calls[0].output_schema is None


@pytest.mark.parametrize(
    "text",
    [
        f"```json\n{GOOD}\n```",
        f"```\n{GOOD}\n```",
        f"  ```JSON\n{GOOD}```  ",
        f"\n{GOOD}\n",
    ],
)
async def test_code_fences_around_json_are_accepted(text: str) -> None:
    result = await run_flow(classify_flow(), {"small": TestModel(text)})
    assert result["classify"] == GOOD_VALUE
    assert outcomes(result) == ["ok"]


async def test_other_output_types() -> None:
    result = await run_flow(classify_flow(output=list[int]), {"small": TestModel("[1, 2, 3]")})
    assert result["classify"] == [1, 2, 3]


async def test_request_carries_options_and_messages() -> None:
    model = TestModel("ok")
    flow = tl.Flow("opts")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate(
            [{"role": "user", "content": "hi"}, tl.Message("assistant", "hello")],
            model="small",
            system="be brief",
            temperature=0.3,
            max_tokens=50,
            seed=7,
        )

    result = await run_flow(flow, {"small": model}, inputs={})
    assert result["ask"] == "ok"
    [request] = model.calls
    assert request.messages == (
        tl.Message("system", "be brief"),
        tl.Message("user", "hi"),
        tl.Message("assistant", "hello"),
    )
    assert (request.temperature, request.max_tokens, request.seed) == (0.3, 50, 7)


async def test_bad_prompt_message_is_a_configuration_error() -> None:
    flow = tl.Flow("bad")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate([{"role": "robot", "content": "hi"}], model="small")

    result = await run_flow(flow, {"small": TestModel()}, inputs={})
    assert result.steps["ask"].error is not None
    assert result.steps["ask"].error.type == "ConfigurationError"


# -- re-asks ----------------------------------------------------------------------------------


async def test_malformed_json_is_reasked_with_the_reply_and_the_error() -> None:
    sleeps = Sleeps()
    model = TestModel('{"label": "positive", "confid', GOOD)
    result = await run_flow(classify_flow(), {"small": model}, sleeps)
    assert result["classify"] == GOOD_VALUE
    assert outcomes(result) == ["malformed", "ok"]
    first, second = model.calls
    assert second.messages[: len(first.messages)] == first.messages
    assistant, feedback = second.messages[len(first.messages) :]
    assert assistant == tl.Message("assistant", '{"label": "positive", "confid')
    assert feedback.role == "user"
    assert "not valid JSON" in feedback.content
    assert sleeps.waits == [], "a re-ask does not wait"
    assert result.steps["classify"].usage.failures == {"malformed": 1}


async def test_schema_invalid_reply_is_reasked_with_the_validation_error() -> None:
    model = TestModel('{"label": "furious", "confidence": 0.5}', GOOD)
    result = await run_flow(classify_flow(), {"small": model})
    assert result["classify"] == GOOD_VALUE
    assert outcomes(result) == ["invalid", "ok"]
    feedback = model.calls[1].messages[-1].content
    assert "label" in feedback
    assert "furious" in model.calls[1].messages[-2].content


async def test_reasks_exhausted_raise_output_validation_error_with_all_attempts() -> None:
    bad = ["nope", '{"label": "x"}', "[1]"]
    replies = [response(text, usage=tl.Usage(10 + i, 3 + i)) for i, text in enumerate(bad)]
    model = TestModel(*replies)
    captured: dict[str, BaseException] = {}
    result = await run_flow(classify_flow(capture=captured), {"small": model})

    assert result.status == "failed"
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "OutputValidationError"
    assert len(model.calls) == 3, "default: 2 re-asks after the first reply"
    exc = captured["error"]
    assert isinstance(exc, tl.OutputValidationError)
    assert [a.text for a in exc.attempts] == bad
    assert [a.mode for a in exc.attempts] == [
        tl.FailureMode.MALFORMED,
        tl.FailureMode.INVALID,
        tl.FailureMode.INVALID,
    ]
    assert [a.usage for a in exc.attempts] == [tl.Usage(10, 3), tl.Usage(11, 4), tl.Usage(12, 5)]
    assert all(a.error for a in exc.attempts)
    assert outcomes(result) == ["malformed", "invalid", "invalid"]


@pytest.mark.parametrize("reasks", [0, 1, 3])
async def test_reask_budget_from_policy_and_call(reasks: int) -> None:
    model = TestModel(*(["bad"] * (reasks + 1)))
    policy = await run_flow(classify_flow(retry=tl.RetryPolicy(reasks=reasks)), {"small": model})
    assert len(model.calls) == reasks + 1
    assert policy.status == "failed"
    per_call = TestModel(*(["bad"] * (reasks + 1)))
    await run_flow(classify_flow(reasks=reasks), {"small": per_call})
    assert len(per_call.calls) == reasks + 1


# -- transient failures ------------------------------------------------------------------------


async def test_rate_limit_with_retry_after_waits_exactly_that() -> None:
    sleeps = Sleeps()
    model = TestModel(tl.RateLimitError("slow down", retry_after=2.5), GOOD)
    result = await run_flow(classify_flow(), {"small": model}, sleeps)
    assert result["classify"] == GOOD_VALUE
    assert sleeps.waits == [2.5]
    assert outcomes(result) == ["rate_limit", "ok"]
    assert [c.attempt for c in result.calls] == [1, 2]
    assert len(model.calls) == 2
    assert model.calls[0] == model.calls[1], "a transient failure resends the identical request"


async def test_wait_before_a_successful_attempt_is_recorded() -> None:
    model = TestModel(tl.RateLimitError("slow down", retry_after=2.5), GOOD)
    result = await run_flow(classify_flow(), {"small": model}, Sleeps())
    assert [c.wait_s for c in result.calls] == [0.0, 2.5]


async def test_wait_before_a_failed_attempt_is_recorded() -> None:
    model = TestModel(
        tl.RateLimitError("a", retry_after=1.5),
        tl.RateLimitError("b", retry_after=3.0),
        GOOD,
    )
    result = await run_flow(classify_flow(), {"small": model}, Sleeps())
    assert [c.wait_s for c in result.calls][:2] == [0.0, 1.5]


async def test_retry_after_is_capped_by_the_policy() -> None:
    sleeps = Sleeps()
    model = TestModel(tl.RateLimitError("later", retry_after=500), GOOD)
    await run_flow(
        classify_flow(retry=tl.RetryPolicy(max_retry_after=7.0)), {"small": model}, sleeps
    )
    assert sleeps.waits == [7.0]


async def test_rate_limit_without_retry_after_backs_off_with_jitter_within_bounds() -> None:
    sleeps = Sleeps()
    model = TestModel(tl.RateLimitError, tl.RateLimitError, tl.RateLimitError, GOOD)
    policy = tl.RetryPolicy(backoff_base=0.5, backoff_max=30.0)
    result = await run_flow(classify_flow(retry=policy), {"small": model}, sleeps)
    assert result["classify"] == GOOD_VALUE
    assert len(sleeps.waits) == 3
    for n, wait in enumerate(sleeps.waits, start=1):
        assert 0 <= wait <= 0.5 * 2 ** (n - 1)
    assert len(set(sleeps.waits)) == 3, "full jitter: the waits are random"

    again = Sleeps()
    model2 = TestModel(tl.RateLimitError, tl.RateLimitError, tl.RateLimitError, GOOD)
    await run_flow(classify_flow(retry=policy), {"small": model2}, again)
    assert again.waits == sleeps.waits, "Engine(seed=0) makes the jitter reproducible"


async def test_backoff_is_capped_by_backoff_max() -> None:
    sleeps = Sleeps()
    model = TestModel(*([tl.RateLimitError] * 5), GOOD)
    policy = tl.RetryPolicy(max_attempts=6, backoff_base=1.0, backoff_max=1.5)
    await run_flow(classify_flow(retry=policy), {"small": model}, sleeps)
    assert len(sleeps.waits) == 5
    assert all(0 <= w <= 1.5 for w in sleeps.waits)


async def test_rate_limit_gives_up_after_max_attempts() -> None:
    model = TestModel(*([tl.RateLimitError("429", retry_after=1)] * 3))
    result = await run_flow(
        classify_flow(retry=tl.RetryPolicy(max_attempts=3)), {"small": model}, Sleeps()
    )
    assert len(model.calls) == 3
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "RateLimitError"
    assert error.mode == "rate_limit"
    assert result.usage.failures == {"rate_limit": 3}


async def test_timeout_is_enforced_per_attempt_and_retried() -> None:
    count = 0

    async def slow_then_fast(request: tl.ModelRequest) -> str:
        nonlocal count
        count += 1
        if count == 1:
            await asyncio.sleep(5)
        return GOOD

    sleeps = Sleeps()
    started = time.perf_counter()
    result = await run_flow(
        classify_flow(retry=tl.RetryPolicy(timeout=0.05)),
        {"small": FunctionModel(slow_then_fast)},
        sleeps,
    )
    assert time.perf_counter() - started < 1.0
    assert result["classify"] == GOOD_VALUE
    assert outcomes(result) == ["timeout", "ok"]
    assert result.calls[0].latency_s >= 0.045
    assert result.usage.failures == {"timeout": 1}
    assert result.steps["classify"].usage.failures == {"timeout": 1}
    assert len(sleeps.waits) == 1
    assert 0 <= sleeps.waits[0] <= 0.5


async def test_timeout_per_call_overrides_the_policy() -> None:
    async def slow(request: tl.ModelRequest) -> str:
        await asyncio.sleep(5)
        return GOOD

    started = time.perf_counter()
    result = await run_flow(
        classify_flow(timeout=0.02, retry=tl.RetryPolicy(max_attempts=2)),
        {"small": FunctionModel(slow)},
        Sleeps(),
    )
    assert time.perf_counter() - started < 1.0
    assert outcomes(result) == ["timeout", "timeout"]
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "ModelTimeoutError"


# -- fallbacks --------------------------------------------------------------------------------


async def test_overloaded_backs_off_then_falls_back() -> None:
    sleeps = Sleeps()
    primary = named("test:primary", tl.OverloadedError, tl.OverloadedError, GOOD)
    backup = named("test:backup", GOOD)
    result = await run_flow(
        classify_flow(fallbacks=["backup"]),
        {"small": primary, "backup": backup},
        sleeps,
    )
    assert result["classify"] == GOOD_VALUE
    assert len(primary.calls) == 2, "overloaded_attempts=2, then the fallback"
    assert len(backup.calls) == 1
    assert [(c.model, c.outcome, c.attempt) for c in result.calls] == [
        ("test:primary", "overloaded", 1),
        ("test:primary", "overloaded", 2),
        ("test:backup", "ok", 3),
    ]
    assert len(sleeps.waits) == 1, "one backoff between the two overloaded attempts"
    assert result.calls[2].role == "small"


async def test_overloaded_without_fallback_fails_at_the_attempt_cap() -> None:
    # overloaded_attempts only moves a call on to a fallback: with none left, overloads are
    # retried like the other transient modes, until max_attempts (or the retry deadline).
    model = TestModel(tl.OverloadedError, tl.OverloadedError, tl.OverloadedError)
    result = await run_flow(
        classify_flow(retry=tl.RetryPolicy(overloaded_attempts=1, max_attempts=3)),
        {"small": model},
        Sleeps(),
    )
    assert len(model.calls) == 3
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "OverloadedError"


async def test_refusal_is_never_retried_identically_and_falls_back() -> None:
    primary = named("test:primary", response("", "refusal", refusal="I can't help with that."))
    backup = named("test:backup", GOOD)
    result = await run_flow(
        classify_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}, Sleeps()
    )
    assert result["classify"] == GOOD_VALUE
    assert len(primary.calls) == 1
    assert outcomes(result) == ["refusal", "ok"]


@pytest.mark.parametrize(
    "reply",
    [
        response("", "refusal", refusal="no"),
        response("", "content_filter"),
        response(GOOD, "stop", refusal="I won't"),
    ],
)
async def test_refusal_without_fallback_fails(reply: tl.ModelResponse) -> None:
    model = TestModel(reply, GOOD)
    result = await run_flow(classify_flow(), {"small": model}, Sleeps())
    assert len(model.calls) == 1
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "RefusalError"
    assert error.mode == "refusal"
    assert result.status == "failed"


@pytest.mark.parametrize("output", [Sentiment, None])
async def test_truncated_reply_is_never_a_success(output: Any) -> None:
    model = TestModel(response(GOOD, "length"), GOOD)
    result = await run_flow(classify_flow(output=output, max_tokens=5), {"small": model})
    assert len(model.calls) == 1, "a truncated reply is not resent identically"
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "TruncatedError"
    assert outcomes(result) == ["truncated"]


async def test_truncated_reply_falls_back() -> None:
    primary = named("test:primary", response(GOOD[:10], "length"))
    backup = named("test:backup", GOOD)
    result = await run_flow(
        classify_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}
    )
    assert result["classify"] == GOOD_VALUE
    assert outcomes(result) == ["truncated", "ok"]


async def test_context_overflow_falls_back_without_resending() -> None:
    primary = named("test:primary", tl.ContextOverflowError("too long"), GOOD)
    backup = named("test:backup", GOOD)
    result = await run_flow(
        classify_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}, Sleeps()
    )
    assert result["classify"] == GOOD_VALUE
    assert len(primary.calls) == 1
    assert outcomes(result) == ["context_overflow", "ok"]


async def test_context_overflow_without_fallback_fails() -> None:
    model = TestModel(tl.ContextOverflowError("too long"), GOOD)
    result = await run_flow(classify_flow(), {"small": model}, Sleeps())
    assert len(model.calls) == 1
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "ContextOverflowError"


async def test_output_validation_failure_falls_back_to_the_next_model() -> None:
    primary = named("test:primary", "bad", "bad", "bad")
    backup = named("test:backup", GOOD)
    result = await run_flow(
        classify_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}
    )
    assert result["classify"] == GOOD_VALUE
    assert backup.calls[0].messages == primary.calls[0].messages, "the fallback starts fresh"


async def test_every_fallback_failing_raises_the_last_error() -> None:
    primary = named("test:primary", response("", "refusal", refusal="no"))
    backup = named("test:backup", tl.ContextOverflowError("too long"))
    result = await run_flow(
        classify_flow(fallbacks=["backup"]), {"small": primary, "backup": backup}
    )
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "ContextOverflowError"
    assert outcomes(result) == ["refusal", "context_overflow"]


async def test_fallbacks_from_the_config_role_binding() -> None:
    models = {
        "prim": named("fn:prim", response("", "refusal", refusal="no")),
        "back": named("fn:back", GOOD),
    }
    result = await run_flow(
        classify_flow(),
        {
            "small": {"model": "fn:prim", "fallbacks": ["large"]},
            "large": "fn:back",
        },
        providers={"fn": lambda binding: models[binding.model]},
    )
    assert result["classify"] == GOOD_VALUE
    assert [(c.model, c.outcome) for c in result.calls] == [
        ("fn:prim", "refusal"),
        ("fn:back", "ok"),
    ]
    assert all(c.role == "small" for c in result.calls)


async def test_fallbacks_from_a_toml_style_config() -> None:
    models = {
        "prim": named("fn:prim", tl.OverloadedError, tl.OverloadedError),
        "back": named("fn:back", GOOD),
    }
    config = tl.Config.from_dict(
        {"models": {"small": {"model": "fn:prim", "fallbacks": "fn:back"}}}
    )
    result = await run_flow(
        classify_flow(),
        {},
        Sleeps(),
        providers={"fn": lambda binding: models[binding.model]},
        config=config,
    )
    assert result["classify"] == GOOD_VALUE
    assert len(models["back"].calls) == 1


async def test_explicit_empty_fallbacks_disable_the_configured_ones() -> None:
    models = {
        "prim": named("fn:prim", response("", "refusal", refusal="no")),
        "back": named("fn:back", GOOD),
    }
    result = await run_flow(
        classify_flow(fallbacks=[]),
        {"small": {"model": "fn:prim", "fallbacks": ["large"]}, "large": "fn:back"},
        providers={"fn": lambda binding: models[binding.model]},
    )
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "RefusalError"
    assert models["back"].calls == []


# -- failing fast -------------------------------------------------------------------------------


def two_step_flow(fallbacks: Sequence[str] | None = None) -> tuple[tl.Flow, list[str]]:
    """``classify`` calls the model; ``other`` is independent and slow (0.3 s)."""
    finished: list[str] = []
    flow = tl.Flow("two", inputs={"text": str})

    @flow.step
    async def classify(text: str, llm: tl.LLM) -> Sentiment:
        return await llm.generate(text, output=Sentiment, model="small", fallbacks=fallbacks)

    @flow.step
    async def other(text: str) -> str:
        await asyncio.sleep(0.3)
        finished.append("other")
        return text

    @flow.step
    def after_other(other: str) -> str:
        return other

    return flow, finished


def network_like(name: str, *replies: Any) -> FunctionModel:
    """Like ``TestModel``, but each attempt first awaits briefly, as a network call does."""
    scripted = TestModel(*replies, name=name)

    async def reply(request: tl.ModelRequest) -> Any:
        await asyncio.sleep(0.01)
        return scripted._next(request)

    model = FunctionModel(reply, name=name)
    return model


async def test_auth_error_fails_fast_with_one_attempt_and_stops_the_run() -> None:
    primary = network_like("test:primary", tl.AuthenticationError("bad key", status_code=401))
    backup = network_like("test:backup", GOOD)
    flow, finished = two_step_flow(fallbacks=["backup"])
    sleeps = Sleeps()
    started = time.perf_counter()
    result = await asyncio.wait_for(
        run_flow(flow, {"small": primary, "backup": backup}, sleeps), timeout=2
    )
    assert time.perf_counter() - started < 0.25
    assert len(primary.calls) == 1
    assert backup.calls == []
    assert sleeps.waits == []
    assert outcomes(result) == ["auth"]
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "AuthenticationError"
    assert result.error is not None
    assert result.error.type == "AuthenticationError"
    assert result.steps["other"].status == "cancelled"
    assert result.steps["after_other"].status == "cancelled"
    assert finished == []


async def test_bad_request_fails_fast_with_one_attempt() -> None:
    primary = network_like("test:primary", tl.BadRequestError("bad", status_code=400), GOOD)
    backup = network_like("test:backup", GOOD)
    flow, finished = two_step_flow(fallbacks=["backup"])
    sleeps = Sleeps()
    result = await asyncio.wait_for(
        run_flow(flow, {"small": primary, "backup": backup}, sleeps), timeout=2
    )
    assert len(primary.calls) == 1
    assert backup.calls == []
    assert sleeps.waits == []
    assert outcomes(result) == ["bad_request"]
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "BadRequestError"
    assert result["after_other"] == "great!", "a bad request fails its step, not the run"
    assert finished == ["other"]
    assert result.status == "failed"


async def test_quota_exceeded_stops_the_whole_run() -> None:
    model = network_like("test:model", tl.QuotaExceededError("out of credit"), GOOD)
    flow, finished = two_step_flow()
    started = time.perf_counter()
    result = await asyncio.wait_for(run_flow(flow, {"small": model}, Sleeps()), timeout=2)
    assert time.perf_counter() - started < 0.25, "the running step was not cancelled"
    assert len(model.calls) == 1
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert result.error.mode == "quota"
    assert result.steps["other"].status == "cancelled"
    assert "QuotaExceededError" in (result.steps["other"].reason or "")
    assert result.steps["after_other"].status == "cancelled"
    assert finished == []


@pytest.mark.parametrize(
    "failure",
    [tl.QuotaExceededError("out of credit"), tl.AuthenticationError("bad key")],
    ids=["quota", "auth"],
)
async def test_run_fatal_model_error_raised_at_once_does_not_hang(failure: Exception) -> None:
    flow, _ = two_step_flow()
    result = await asyncio.wait_for(run_flow(flow, {"small": TestModel(failure)}), timeout=0.5)
    assert result.status == "failed"
    assert result.steps["other"].status == "cancelled"


async def test_unknown_role_beside_another_step_does_not_hang() -> None:
    flow, _ = two_step_flow()
    result = await asyncio.wait_for(run_flow(flow, {"large": TestModel(GOOD)}), timeout=0.5)
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "ConfigurationError"


async def test_provider_raising_a_foreign_exception_is_a_configuration_error() -> None:
    def broken(request: tl.ModelRequest) -> str:
        raise KeyError("choices")

    model = FunctionModel(broken, name="test:broken")
    result = await run_flow(classify_flow(), {"small": model}, Sleeps())
    assert len(model.calls) == 1, "a provider bug is not retried"
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "ConfigurationError"
    assert "test:broken" in error.message
    assert "KeyError" in error.message


async def test_unknown_role_is_a_configuration_error_naming_the_role() -> None:
    result = await run_flow(classify_flow(model="huge"), {"small": TestModel(GOOD)})
    error = result.steps["classify"].error
    assert error is not None
    assert error.type == "ConfigurationError"
    assert "'huge'" in error.message
    assert "small" in error.message


async def test_unknown_fallback_role_is_a_configuration_error() -> None:
    result = await run_flow(classify_flow(fallbacks=["nowhere"]), {"small": TestModel(GOOD)})
    assert result.steps["classify"].error is not None
    assert result.steps["classify"].error.type == "ConfigurationError"
    assert "nowhere" in result.steps["classify"].error.message


# -- which model --------------------------------------------------------------------------------


async def test_step_model_is_the_default_role() -> None:
    small = named("test:small", GOOD)
    large = named("test:large", GOOD, "text")
    flow = tl.Flow("roles", model="small")

    @flow.step(model="large")
    async def careful(llm: tl.LLM) -> Sentiment:
        return await llm.generate("x", output=Sentiment)

    @flow.step
    async def quick(llm: tl.LLM) -> Sentiment:
        return await llm.generate("x", output=Sentiment)

    @flow.step
    async def explicit(llm: tl.LLM) -> str:
        return await llm.generate("x", model="large")

    result = await run_flow(flow, {"small": small, "large": large}, inputs={})
    assert result.ok, result.error
    by_step = {c.step: (c.role, c.model) for c in result.calls}
    assert by_step == {
        "careful": ("large", "test:large"),
        "quick": ("small", "test:small"),
        "explicit": ("large", "test:large"),
    }
    assert len(small.calls) == 1
    assert len(large.calls) == 2


async def test_default_role_is_default() -> None:
    flow = tl.Flow("roles")

    @flow.step
    async def ask(llm: tl.LLM) -> str:
        return await llm.generate("x")

    model = TestModel("hi")
    result = await run_flow(flow, {"default": model}, inputs={})
    assert result["ask"] == "hi"
    assert result.calls[0].role == "default"

    missing = await run_flow(flow, {"small": TestModel("hi")}, inputs={})
    assert missing.steps["ask"].error is not None
    assert "'default'" in missing.steps["ask"].error.message


async def test_direct_provider_model_spec_and_simulator() -> None:
    flow = tl.Flow("direct")

    @flow.step
    async def ask(llm: tl.LLM) -> Sentiment:
        return await llm.generate("How do you feel?", output=Sentiment, model="sim:small")

    result = await run_flow(flow, {}, inputs={})
    assert result.ok, result.error
    assert isinstance(result["ask"], Sentiment)
    assert result.calls[0].model == "sim:small"
    assert result.calls[0].role == "sim:small"


async def test_several_calls_in_one_step_are_numbered() -> None:
    flow = tl.Flow("multi")

    @flow.step
    async def chat(llm: tl.LLM) -> list[str]:
        a = await llm.generate("one", model="small")
        b = await llm.generate("two", model="small", output=Sentiment)
        return [a, b.label]

    model = TestModel("first", tl.RateLimitError("x", retry_after=1), GOOD)
    result = await run_flow(flow, {"small": model}, Sleeps(), inputs={})
    assert result["chat"] == ["first", "positive"]
    assert [(c.call, c.attempt, c.outcome) for c in result.calls] == [
        (1, 1, "ok"),
        (2, 1, "rate_limit"),
        (2, 2, "ok"),
    ]
    assert json.loads(json.dumps(result.to_dict()["calls"]))[0]["outcome"] == "ok"


async def test_flow_level_retry_policy_is_the_default() -> None:
    flow = tl.Flow("policy", retry=tl.RetryPolicy(reasks=0))

    @flow.step
    async def strict(llm: tl.LLM) -> Sentiment:
        return await llm.generate("x", output=Sentiment, model="small")

    @flow.step(retry=tl.RetryPolicy(reasks=1))
    async def lenient(llm: tl.LLM) -> Sentiment:
        return await llm.generate("y", output=Sentiment, model="other")

    strict_model = TestModel("bad", GOOD)
    lenient_model = TestModel("bad", GOOD)
    result = await run_flow(flow, {"small": strict_model, "other": lenient_model}, inputs={})
    assert len(strict_model.calls) == 1
    assert result.steps["strict"].error is not None
    assert result.steps["strict"].error.type == "OutputValidationError"
    assert result["lenient"] == GOOD_VALUE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"overloaded_attempts": 0},
        {"step_attempts": 0},
        {"reasks": -1},
        {"timeout": 0},
    ],
)
def test_retry_policy_values_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(tl.ConfigurationError):
        tl.RetryPolicy(**kwargs)
