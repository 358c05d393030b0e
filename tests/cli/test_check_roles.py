"""``trellis check``: the model roles a flow uses, checked against its bindings, and the
user's own type names in every message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.flow.roles import roles_used

from .helpers import invoke

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Answer(BaseModel):
    text: str


def test_roles_are_found_in_literals_variables_fallbacks_and_defaults() -> None:
    flow = tl.Flow("roles", inputs={"q": str}, model="cheap")

    @flow.step
    async def direct(q: str, llm: tl.LLM) -> Answer:
        return await llm.generate(q, output=Answer, model="small", fallbacks=["backup"])

    @flow.step
    async def routed(q: str, direct: Answer, llm: tl.LLM) -> str:
        role = "large" if len(direct.text) > 3 else "medium"
        return await llm.generate(q, model=role)

    @flow.step
    async def defaulted(q: str, llm: tl.LLM) -> str:
        return await llm.generate(q)  # the flow's default role

    @flow.step(model="special")
    async def optioned(q: str, llm: tl.LLM) -> str:
        return await llm.generate(q)

    @flow.step
    async def direct_spec(q: str, llm: tl.LLM) -> str:
        return await llm.generate(q, model="sim:small")  # a spec, not a role

    @flow.step
    def plain(q: str) -> str:
        return q

    assert roles_used(flow) == {
        "small": ("direct",),
        "backup": ("direct",),
        "large": ("routed",),
        "medium": ("routed",),
        "cheap": ("defaulted",),
        "special": ("optioned",),
    }


def test_check_lists_roles_and_their_bindings_from_the_config() -> None:
    result = invoke(
        "check", f"{EXAMPLES}/feedback_triage.py:flow", "-c", f"{EXAMPLES}/trellis.toml"
    )
    assert result.exit_code == 0, result.output
    assert "Model roles" in result.output
    assert "small: sim:small — used by sentiment, topics, action_plan" in result.output
    assert "large: sim:large, then medium — used by topics" in result.output


def test_check_with_bindings_fails_on_a_role_no_binding_covers() -> None:
    result = invoke("check", f"{EXAMPLES}/feedback_triage.py:flow", "--model", "small=sim:small")
    assert result.exit_code == 2
    assert "large: not bound" in result.output
    assert "model role(s) large used by the flow are not bound" in result.output


def test_check_without_any_binding_lists_roles_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./trellis.toml
    result = invoke("check", f"{EXAMPLES}/feedback_triage.py:flow")
    assert result.exit_code == 0, result.output
    assert "small — used by sentiment" in result.output
    assert "--config FILE.toml or --model" in result.output


def test_messages_name_the_users_types_not_internal_module_names(tmp_path: Path) -> None:
    source = tmp_path / "typed.py"
    source.write_text(
        "from pydantic import BaseModel\n"
        "import trellis as tl\n"
        "class Topic(BaseModel):\n"
        "    name: str\n"
        "flow = tl.Flow('typed', inputs={'text': str})\n"
        "@flow.step\n"
        "def topics(text: str) -> list[Topic]:\n"
        "    return [Topic(name=text)]\n"
        "@flow.step\n"
        "def first(topics: list[Topic]) -> dict[str, Topic] | None:\n"
        "    return None\n"
        "@flow.step\n"
        "def bad(first: int) -> str:\n"
        "    return ''\n",
        encoding="utf-8",
    )
    result = invoke("check", f"{source}:flow")
    assert result.exit_code == 2
    assert "returns dict[str, Topic] | None" in result.output
    assert "_trellis_target" not in result.output


def test_a_users_class_in_an_error_is_named_by_its_own_module(tmp_path: Path) -> None:
    """The flow file is imported under its own name when that name is free, so a repr
    in an error reads ``reprs_flow.Out``, not an internal module name."""
    source = tmp_path / "reprs_flow.py"
    source.write_text(
        "from pydantic import BaseModel\n"
        "import trellis as tl\n"
        "class Out(BaseModel):\n"
        "    x: int\n"
        "flow = tl.Flow('reprs', inputs={'t': str})\n"
        "@flow.step\n"
        "def s(t: str) -> Out:\n"
        "    raise ValueError(f'cannot make {Out}')\n",
        encoding="utf-8",
    )
    result = invoke("run", f"{source}:flow", "-i", '{"t": "a"}', "--no-store", "--json")
    assert result.exit_code == 1
    assert "<class 'reprs_flow.Out'>" in result.stdout
    assert "_trellis_target" not in result.stdout + result.stderr
