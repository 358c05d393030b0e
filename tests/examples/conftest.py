"""Shared fixtures for the example tests: where the examples live and how to load one.

An example is a plain script, not a package module, so tests load it by path::

    def test_something(load_example):
        triage = load_example("feedback_triage")
        result = await engine.run(triage.flow, {...})
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once (cached in ``sys.modules``) and return the module."""
    module_name = f"_trellis_example_{name}"
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    path = EXAMPLES_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines ignored)."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture
def examples_dir() -> Path:
    """The repository's ``examples/`` folder."""
    return EXAMPLES_DIR


@pytest.fixture(name="load_example")
def load_example_fixture() -> Callable[[str], ModuleType]:
    """``load_example("feedback_triage")`` -> the imported example module."""
    return load_example


@pytest.fixture(name="read_jsonl")
def read_jsonl_fixture() -> Callable[[Path], list[dict[str, Any]]]:
    """``read_jsonl(examples_dir / "data" / "feedback.jsonl")`` -> the records."""
    return read_jsonl
