"""Fixtures of the web UI's tests: the sample store (``examples/ui_sample/build.py``,
recorded through the ``trellis`` command) and the UI's app over it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the web UI's tests need the [ui] extra")

from starlette.testclient import TestClient

from trellis.cli.stores import open_existing_store
from trellis.cli.ui import make_answerer
from trellis.ui import UiSettings, create_app

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ui_sample"
if str(SAMPLE) not in sys.path:
    sys.path.insert(0, str(SAMPLE))

from build import build  # noqa: E402

TOKEN = "test-token-123"


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The sample store, built once; tests copy it (answers change it)."""
    path = tmp_path_factory.mktemp("ui-sample") / "sample.db"
    return path, build(path, items=6)


@pytest.fixture
def sample(
    sample_template: tuple[Path, dict[str, str]], tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the sample store: its path and its run ids by role."""
    source, ids = sample_template
    copy = tmp_path / "sample.db"
    shutil.copy(source, copy)
    return copy, ids


def settings_for(store: Path, host: str = "127.0.0.1") -> UiSettings:
    return UiSettings(
        open_store=lambda: open_existing_store(str(store)),
        store_url=str(store),
        token=TOKEN,
        host=host,
        answer=make_answerer(str(store)),
    )


@pytest.fixture
def client(sample: tuple[Path, dict[str, str]]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(sample[0])), base_url="http://127.0.0.1") as c:
        yield c
