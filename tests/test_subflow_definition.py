"""Sub-flows as steps: declaring one, and the compile-time checks across the boundary."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import trellis as tl
from trellis.flow.subflow import SubflowSpec


def child_flow() -> tl.Flow:
    child = tl.Flow("child", inputs={"text": str, "times": int})

    @child.step
    def repeated(text: str, times: int) -> str:
        return text * times

    @child.step
    def size(repeated: str) -> int:
        return len(repeated)

    return child


def test_the_output_is_the_only_final_step_by_default() -> None:
    parent = tl.Flow("parent", inputs={"text": str, "times": int})
    spec = parent.subflow(child_flow(), name="measure")
    assert spec.subflow is not None and spec.subflow.output == "size"
    assert spec.output_type is int
    assert [p.name for p in spec.params] == ["text", "times"]
    parent.validate()


def test_output_names_another_result_step() -> None:
    parent = tl.Flow("parent", inputs={"draft": str, "n": int})
    spec = parent.subflow(
        child_flow(), name="grow", inputs={"text": "draft", "times": "n"}, output="repeated"
    )
    assert spec.output_type is str
    assert [p.name for p in spec.params] == ["draft", "n"]


def test_an_unknown_child_input_is_an_error() -> None:
    parent = tl.Flow("parent", inputs={"draft": str})
    with pytest.raises(tl.FlowDefinitionError, match="no input 'txt'"):
        parent.subflow(child_flow(), name="m", inputs={"txt": "draft", "times": "draft"})


def test_a_required_child_input_left_unmapped_is_an_error() -> None:
    parent = tl.Flow("parent", inputs={"draft": str})
    with pytest.raises(tl.FlowDefinitionError, match=r"\['times'\] are not given"):
        parent.subflow(child_flow(), name="m", inputs={"text": "draft"})


def test_an_unknown_parent_value_is_an_error_with_did_you_mean() -> None:
    parent = tl.Flow("parent", inputs={"draft": str, "n": int})
    parent.subflow(child_flow(), name="m", inputs={"text": "drafts", "times": "n"})
    with pytest.raises(tl.FlowDefinitionError, match="drafts"):
        parent.validate()


def test_types_are_checked_across_the_boundary() -> None:
    parent = tl.Flow("parent", inputs={"draft": str})

    @parent.step
    def count(draft: str) -> str:
        return draft

    parent.subflow(child_flow(), name="m", inputs={"text": "draft", "times": "count"})
    with pytest.raises(tl.FlowDefinitionError, match="count"):
        parent.validate()


def test_an_unknown_output_step_is_an_error() -> None:
    parent = tl.Flow("parent", inputs={"text": str, "times": int})
    with pytest.raises(tl.FlowDefinitionError, match="no step 'total'"):
        parent.subflow(child_flow(), name="m", output="total")


def test_several_final_steps_need_output() -> None:
    child = tl.Flow("two", inputs={"x": int})
    child.step(name="a")(lambda x: x)
    child.step(name="b")(lambda x: x)
    parent = tl.Flow("parent", inputs={"x": int})
    with pytest.raises(tl.FlowDefinitionError, match="2 final steps"):
        parent.subflow(child, name="m")


def test_a_flow_cannot_contain_itself() -> None:
    flow = tl.Flow("loop", inputs={"x": int})
    flow.step(name="a")(lambda x: x)
    with pytest.raises(tl.FlowDefinitionError, match="contain itself"):
        flow.subflow(flow, name="again")


def test_a_cycle_through_two_flows_is_an_error() -> None:
    a = tl.Flow("a", inputs={"x": int})
    a.step(name="one")(lambda x: x)
    b = tl.Flow("b", inputs={"x": int})
    b.subflow(a, name="inner")
    with pytest.raises(tl.FlowDefinitionError, match="contain itself"):
        a.subflow(b, name="outer")


def test_a_cycle_made_after_declaring_is_caught_at_compile() -> None:
    a = tl.Flow("a", inputs={"x": int})
    a.step(name="one")(lambda x: x)
    b = tl.Flow("b", inputs={"x": int})
    b.subflow(a, name="inner")
    # Bypass subflow()'s own check, as a step added by other means would.
    a.add(dataclasses.replace(b.steps["inner"], name="back", subflow=SubflowSpec(b, "inner")))
    with pytest.raises(tl.FlowDefinitionError, match="cannot contain itself"):
        b.compile()


def test_the_decorator_form_maps_parent_values() -> None:
    parent = tl.Flow("parent", inputs={"words": list[str]})

    @parent.subflow_step(child_flow(), map_over="words")
    def per_word(words: str) -> dict[str, Any]:
        return {"text": words, "times": 2}

    spec = parent.steps["per_word"]
    assert spec.subflow is not None and spec.map_over == "words"
    assert spec.produces == list[int]
    parent.validate()
