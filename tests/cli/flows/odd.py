"""Flows for the bad-input CLI tests: an echo, a step returning NaN, a blocking step."""

import os
import time

import trellis as tl

echo = tl.Flow("echo", inputs={"text": str})


@echo.step
def said(text: str) -> str:
    """Returns its input: whatever the store accepted comes back out."""
    return text


not_a_number = tl.Flow("not_a_number", inputs={"text": str})


@not_a_number.step
def ratio(text: str) -> float:
    """NaN for any text: a float JSON cannot hold."""
    return float("nan") if text else float("inf")


blocking = tl.Flow("blocking", inputs={"text": str})


@blocking.step
def sleepy(text: str) -> str:
    """A plain (sync) step that blocks: ``$TRELLIS_TEST_SLEEP`` seconds (default 30)."""
    time.sleep(float(os.environ.get("TRELLIS_TEST_SLEEP", "30")))
    return text


failing = tl.Flow("failing", inputs={"text": str})


@failing.step
def boom(text: str) -> str:
    """Fails with a message quoting its input."""
    raise ValueError(f"cannot handle {text}")
