"""A sub-flow used as a step: which flow, how the parent's values become its inputs, and
which of its steps is its result.

``parent.subflow(child, name="review", inputs={"text": "draft"})`` builds an ordinary
:class:`~trellis.flow.step.StepSpec` carrying a :class:`SubflowSpec`. The step's data
parameters are the parent values it reads (annotated with the child's input types, so
the parent's compile checks the types across the boundary); its function maps them to
the child's inputs; its output type is the child's *declared result*: the step named by
``output=``, or else the child's only final step (one no other step reads).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trellis.errors import FlowDefinitionError
from trellis.flow.step import Condition, OnError, StepSpec, build_step

if TYPE_CHECKING:
    from trellis.flow.flow import Flow

__all__ = ["SubflowSpec", "build_subflow_step", "contains"]


@dataclass(frozen=True, slots=True)
class SubflowSpec:
    """What makes a step a sub-flow: the child flow and the step that is its result."""

    flow: Flow
    output: str


def declared_result(child: Flow, output: str | None, step: str) -> str:
    """The child step whose output is the sub-flow's output."""
    plan = child.compile()
    if output is not None:
        if output not in plan.index:
            names = ", ".join(s.name for s in plan.steps) or "none"
            raise FlowDefinitionError(
                f"sub-flow step {step!r}: flow {child.name!r} has no step {output!r} to "
                f"use as its output (steps: {names})",
                step=step,
            )
        return output
    finals = [s.name for i, s in enumerate(plan.steps) if not plan.dependents[i]]
    if len(finals) != 1:
        raise FlowDefinitionError(
            f"sub-flow step {step!r}: flow {child.name!r} has {len(finals)} final steps "
            f"({', '.join(finals) or 'none'}); name its result with output=",
            step=step,
        )
    return finals[0]


def contains(outer: Flow, inner: Flow) -> bool:
    """Whether ``outer`` is ``inner`` or uses it as a sub-flow, at any depth."""
    seen: set[int] = set()
    stack = [outer]
    while stack:
        flow = stack.pop()
        if flow is inner:
            return True
        if id(flow) in seen:
            continue
        seen.add(id(flow))
        stack.extend(s.subflow.flow for s in flow.steps.values() if s.subflow is not None)
    return False


def build_subflow_step(
    parent: Flow,
    child: Flow,
    *,
    name: str,
    inputs: Mapping[str, str] | None = None,
    mapper: Callable[..., Any] | None = None,
    output: str | None = None,
    map_over: str | None = None,
    on_error: OnError = "fail",
    when: Callable[..., Any] | Condition | None = None,
) -> StepSpec:
    """The step that runs ``child`` inside ``parent`` (see :meth:`Flow.subflow`)."""
    if not name or not name.isidentifier():
        raise FlowDefinitionError(f"sub-flow step name {name!r} is not a valid identifier")
    if contains(child, parent):
        raise FlowDefinitionError(
            f"sub-flow step {name!r}: flow {child.name!r} contains flow {parent.name!r}, "
            "so using it here would make a flow contain itself",
            step=name,
        )
    result = declared_result(child, output, name)
    plan = child.compile()
    if mapper is None:
        mapper = _mapping_function(name, plan.inputs, inputs)
    elif inputs is not None:
        raise FlowDefinitionError(
            f"sub-flow step {name!r}: give inputs= or a mapping function, not both", step=name
        )
    spec = build_step(mapper, name=name, when=when, map_over=map_over, on_error=on_error)
    spec.output_type = plan.step(result).produces
    spec.subflow = SubflowSpec(child, result)
    spec.description = spec.description or f"sub-flow {child.name}"
    return spec


def _mapping_function(
    step: str,
    child_inputs: Mapping[str, Any],
    inputs: Mapping[str, str] | None,
) -> Callable[..., dict[str, Any]]:
    """A function whose parameters are the parent values read (typed as the child's
    inputs) and which returns the child's inputs. ``inputs`` maps a child input to the
    parent value feeding it; by default each required child input reads the parent value
    of the same name."""
    if inputs is None:
        inputs = {n: n for n, spec in child_inputs.items() if spec.required or spec.param is None}
    for child_name, parent_name in inputs.items():
        if child_name not in child_inputs:
            known = ", ".join(sorted(child_inputs)) or "none"
            raise FlowDefinitionError(
                f"sub-flow step {step!r}: the sub-flow has no input {child_name!r} "
                f"(its inputs: {known})",
                step=step,
                param=child_name,
            )
        if not isinstance(parent_name, str) or not parent_name.isidentifier():
            raise FlowDefinitionError(
                f"sub-flow step {step!r}: inputs[{child_name!r}] must name a parent value, "
                f"got {parent_name!r}",
                step=step,
                param=child_name,
            )
    missing = [n for n, s in child_inputs.items() if s.required and n not in inputs]
    if missing:
        raise FlowDefinitionError(
            f"sub-flow step {step!r}: the sub-flow's input(s) {missing} are not given; map "
            "them with inputs={child_input: parent_value}",
            step=step,
            param=missing[0],
        )
    reads: dict[str, Any] = {}
    for child_name, parent_name in inputs.items():
        annotation = child_inputs[child_name].annotation  # per element when mapped
        if parent_name in reads and reads[parent_name] != annotation:
            annotation = Any
        reads[parent_name] = annotation
    pairs = tuple(inputs.items())

    def map_inputs(**values: Any) -> dict[str, Any]:
        return {child_name: values[parent_name] for child_name, parent_name in pairs}

    # build_step reads the signature: give it one naming exactly what the step reads.
    map_inputs.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a)
            for n, a in reads.items()
        ]
    )
    map_inputs.__annotations__ = {**reads, "return": dict[str, Any]}
    map_inputs.__name__ = step
    return map_inputs
