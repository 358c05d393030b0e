"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import isolate


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty working folder, no $TRELLIS_STORE or step counter from outside, and
    ``sys.path`` restored after the flow imports (see :func:`helpers.isolate`)."""
    isolate(tmp_path, monkeypatch)
