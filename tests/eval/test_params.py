"""tl.Param: tunable flow parameters, read by steps and when= conditions like inputs."""

from __future__ import annotations

import pytest

import trellis as tl


def threshold_flow() -> tl.Flow:
    flow = tl.Flow(
        "thresholds",
        inputs={"x": float},
        params=[tl.Param("cutoff", default=0.5, low=0.0, high=1.0, description="escalate")],
    )

    @flow.step
    def scaled(x: float) -> float:
        return x

    @flow.step(when=lambda scaled, cutoff: scaled < cutoff)
    def escalate(scaled: float, cutoff: float) -> str:
        return f"{scaled} < {cutoff}"

    return flow


def test_a_param_gets_its_default_and_can_be_given() -> None:
    flow = threshold_flow()
    default = flow.run_sync({"x": 0.4})
    assert default.outputs["escalate"] == "0.4 < 0.5"
    tuned = flow.run_sync({"x": 0.4, "cutoff": 0.3})
    assert tuned.steps["escalate"].status == "skipped"


def test_a_param_outside_its_bounds_is_an_input_error() -> None:
    with pytest.raises(tl.InputError, match=r"cutoff.*above high=1"):
        threshold_flow().run_sync({"x": 0.4, "cutoff": 2.0})


def test_params_are_marked_in_the_compiled_plan() -> None:
    plan = threshold_flow().compile()
    assert plan.inputs["cutoff"].param is not None
    assert plan.inputs["cutoff"].readers == ("escalate",)
    assert plan.inputs["x"].param is None


def test_params_without_declared_inputs() -> None:
    flow = tl.Flow("loose", params=[tl.Param("k", default=2)])

    @flow.step
    def times(x: int, k: int) -> int:
        return x * k

    assert flow.run_sync({"x": 3}).outputs["times"] == 6


def test_a_param_declared_twice_is_a_definition_error() -> None:
    with pytest.raises(tl.FlowDefinitionError, match="declared twice"):
        tl.Flow("dup", inputs={"k": int}, params=[tl.Param("k", default=1)])
    with pytest.raises(tl.FlowDefinitionError, match="identifier"):
        tl.Param("not a name", default=1)


def test_trellis_check_lists_params() -> None:
    from trellis.cli.check import describe_flow

    info = describe_flow(threshold_flow(), tl.Config(), None)
    by_name = {i.name: i for i in info.inputs}
    assert by_name["cutoff"].parameter and by_name["cutoff"].default == "0.5"
    assert not by_name["x"].parameter
