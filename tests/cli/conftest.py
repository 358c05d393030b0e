"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty working folder (the default store lands there), no $TRELLIS_STORE or
    step counter from outside, and ``sys.path`` restored after the flow imports."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRELLIS_STORE", raising=False)
    monkeypatch.delenv("TRELLIS_TEST_COUNTER", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
