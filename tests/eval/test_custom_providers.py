"""Custom providers loaded by name: a [providers] table in trellis.toml (module:factory or
path.py:factory) and the 'trellis.providers' entry-point group; used by run and eval."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trellis as tl
from trellis.cli.app import app
from trellis.models import registry

PROVIDER = """
import trellis as tl


class Shout(tl.Model):
    def __init__(self, binding):
        self.name = binding.name
        self.suffix = binding.options.get("suffix", "!")

    async def complete(self, request):
        text = request.messages[-1].content.upper() + self.suffix
        return tl.ModelResponse(text=text, usage=tl.Usage(3, 2))


def make(binding):
    return Shout(binding)


def not_a_model(binding):
    return "hello"
"""

FLOW = """
import trellis as tl

flow = tl.Flow("shout", inputs={"text": str})


@flow.step
async def loud(text: str, llm: tl.LLM) -> str:
    return await llm.generate(text, model="main")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "shout_provider.py").write_text(PROVIDER)
    (tmp_path / "shout_flow.py").write_text(FLOW)
    (tmp_path / "trellis.toml").write_text(
        f'[providers]\nshout = "{tmp_path / "shout_provider.py"}:make"\n\n'
        '[models]\nmain = "shout:v1?suffix=!!"\n\n'
        '[prices]\n"shout:v1" = { input = 1e6, output = 1e6 }\n'
    )
    return tmp_path


def test_a_configured_provider_works_with_trellis_run(project: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            f"{project / 'shout_flow.py'}:flow",
            "--input",
            '{"text": "hi"}',
            "-c",
            str(project / "trellis.toml"),
            "--no-store",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"]["loud"]["output"] == "HI!!"
    assert data["usage"]["cost_usd"] == pytest.approx(5.0)


def test_a_configured_provider_works_with_trellis_eval(project: Path) -> None:
    dataset = project / "items.jsonl"
    dataset.write_text('{"text": "a", "gold": "A!!"}\n{"text": "b", "gold": "no"}\n')
    result = CliRunner().invoke(
        app,
        [
            "eval",
            f"{project / 'shout_flow.py'}:flow",
            "--dataset",
            str(dataset),
            "--label",
            "gold",
            "-c",
            str(project / "trellis.toml"),
            "--no-store",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["variants"]["default"]["score"] == 0.5


def test_provider_errors_are_configuration_errors(project: Path) -> None:
    with pytest.raises(tl.ConfigurationError, match="cannot load provider 'x'"):
        tl.Engine(config=tl.Config(providers={"x": "no_such_module_here:make"})).model(
            tl.ModelBinding.parse("x:m")
        )
    bad = tl.Config(providers={"y": f"{project / 'shout_provider.py'}:not_a_model"})
    with pytest.raises(tl.ConfigurationError, match=r"not a tl\.Model"):
        tl.Engine(config=bad).model(tl.ModelBinding.parse("y:m"))
    with pytest.raises(tl.ConfigurationError, match="must be 'module:factory'"):
        tl.Config(providers={"z": "nothing"})
    with pytest.raises(tl.ConfigurationError, match=r"\[providers\] in trellis.toml"):
        tl.Engine().model(tl.ModelBinding.parse("unknown:m"))


def test_an_entry_point_provider(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(project))
    point = metadata.EntryPoint(
        name="shoutep", value="shout_provider:make", group=registry.ENTRY_POINT_GROUP
    )

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [point] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    flow = tl.Flow("ep")

    @flow.step
    async def loud(text: str, llm: tl.LLM) -> str:
        return await llm.generate(text, model="shoutep:v2")

    assert flow.run_sync({"text": "yo"}).outputs["loud"] == "YO!"


def test_a_provider_file_is_relative_to_its_trellis_toml(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``path.py:factory`` in a trellis.toml names a file next to that trellis.toml, from
    wherever the command runs (a subdirectory finds the project's configuration)."""
    (project / "trellis.toml").write_text(
        '[providers]\nshout = "shout_provider.py:make"\n\n[models]\nmain = "shout:v1"\n'
    )
    (project / ".git").mkdir()  # the project's root
    sub = project / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    result = CliRunner().invoke(
        app,
        ["run", "../shout_flow.py:flow", "--input", '{"text": "hi"}', "--no-store", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"]["loud"].startswith("HI")
