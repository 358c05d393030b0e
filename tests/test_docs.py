"""The Python snippets in the guides run as written (a user copies them literally)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from trellis.testing import forbid_network

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GUIDES = ["guide.md", "testing.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(name: str) -> list[str]:
    """Each block, preceded by blank lines so that tracebacks name the line in the guide."""
    text = (DOCS / name).read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start(1))
        blocks.append("\n" * line + match.group(1))
    return blocks


@pytest.mark.parametrize("name", GUIDES)
def test_guide_snippets_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = snippets(name)
    assert blocks, f"{name} has no python snippets"
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"docs_{name.removesuffix('.md')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # pydantic resolves names here
    namespace: dict[str, Any] = module.__dict__
    with forbid_network():
        for block in blocks:
            if "def pytest_configure" not in block:  # a conftest.py, shown, not run here
                exec(compile(block, str(DOCS / name), "exec"), namespace)
        tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
        for test in tests:
            if "tmp_path" in test.__code__.co_varnames[: test.__code__.co_argcount]:
                test(tmp_path)
            else:
                test()
    if name == "testing.md":
        assert len(tests) >= 4


def test_readme_example_runs_as_a_script_and_not_on_import(tmp_path: Path) -> None:
    (block,) = [b for b in _BLOCK.findall(README.read_text(encoding="utf-8")) if "run_sync" in b]
    script = tmp_path / "triage.py"
    script.write_text(block, encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("done {"), ran.stdout
    checked = subprocess.run(
        [sys.executable, "-m", "trellis", "check", f"{script}:flow"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    assert "done {" not in checked.stdout  # importing the file ran nothing


def test_readme_subflow_example_runs_with_the_command_it_shows(tmp_path: Path) -> None:
    """The sub-flow block (indented in its list item) saved as ``tickets.py`` and run as
    the README says: one child run per issue."""
    indented = re.compile(r"^  ```python\n(.*?)^  ```", re.S | re.M)
    (block,) = [b for b in indented.findall(README.read_text(encoding="utf-8")) if "subflow(" in b]
    (tmp_path / "tickets.py").write_text(textwrap.dedent(block), encoding="utf-8")
    inputs = '{"text": "Login fails. Billing is wrong."}'
    command = ["run", "tickets.py:ticket", "-i", inputs, "-m", "small=sim:small"]
    ran = subprocess.run(
        [sys.executable, "-m", "trellis", *command, "--no-store", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    shown = json.loads(ran.stdout)
    assert len(shown["outputs"]["categorise"]) == 2
    assert all("category" in label for label in shown["outputs"]["categorise"])
