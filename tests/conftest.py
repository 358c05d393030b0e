"""Session-wide test setup: no network, no real provider keys, and a few shared fixtures.

Every test runs with :mod:`trellis.testing`'s network guard installed: a connection to
anything but loopback fails at once with ``NetworkBlockedError``. Real provider API keys
are removed from the environment so that no test can authenticate against a real model.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest

from trellis.testing import install_network_guard, uninstall_network_guard

#: Environment variables that would let a provider client reach a real, billed model.
PROVIDER_KEY_VARS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
)


def pytest_configure(config: pytest.Config) -> None:
    for name in PROVIDER_KEY_VARS:
        os.environ.pop(name, None)
    install_network_guard()


def pytest_unconfigure(config: pytest.Config) -> None:
    uninstall_network_guard()


@pytest.fixture(autouse=True, scope="session")
def _network_guard_for_session() -> None:
    """Belt and braces: the guard is on for every test, even if a test removed it."""
    install_network_guard()


class SleepRecorder:
    """A fake ``sleep`` for ``tl.Engine(sleep=...)``: records every wait, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    @property
    def total(self) -> float:
        return sum(self.waits)


@pytest.fixture
def sleeps() -> SleepRecorder:
    """``tl.Engine(sleep=sleeps)`` and later ``assert sleeps.waits == [...]``."""
    return SleepRecorder()


@pytest.fixture
def fake_sleep(sleeps: SleepRecorder) -> Callable[[float], Awaitable[None]]:
    return sleeps


#: The collector's thresholds the GC tests start from (not CPython's default: a change
#: to them by the code under test shows).
GC_CUSTOM = (1234, 11, 12)


@pytest.fixture
def known_collector() -> Iterator[None]:
    """Start from a known collector state (enabled, nothing frozen, :data:`GC_CUSTOM`)
    and leave the process as it was."""
    saved, enabled = gc.get_threshold(), gc.isenabled()
    gc.unfreeze()
    gc.enable()
    gc.set_threshold(*GC_CUSTOM)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
        if not enabled:
            gc.disable()
