"""Build-time validation and the compiled graph the engine executes.

Checks, each an error naming the step and parameter: a read that is neither a step nor a
flow input (with a did-you-mean), a step reading itself, a cycle (with its path), a
mapped parameter whose source is not a list, a produced type that cannot satisfy the
annotated parameter, a flow input annotated differently by two steps, and a
``tl.branch`` label the router can never return.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import enum
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from trellis.errors import FlowDefinitionError, InputError
from trellis.flow.params import Param as FlowParam
from trellis.flow.step import Param, StepSpec
from trellis.flow.types import compatible, describe, input_adapter, make_validator

__all__ = ["CompiledFlow", "InputSpec", "compile_flow"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    annotation: Any
    required: bool
    default: Any
    readers: tuple[str, ...]
    adapter: TypeAdapter[Any] | None = None  # lax validation of the given value
    param: FlowParam | None = None  # a tunable parameter (tl.Param): its default is always given


@dataclass(frozen=True, slots=True)
class CompiledFlow:
    """An immutable, validated plan: steps in topological order with their edges."""

    name: str
    steps: tuple[StepSpec, ...]  # topological order
    index: Mapping[str, int]
    deps: tuple[tuple[int, ...], ...]  # step index -> indices of steps it reads
    dependents: tuple[tuple[int, ...], ...]
    inputs: Mapping[str, InputSpec]
    validators: tuple[Callable[[Any], Any] | None, ...]  # per step: checks its return value
    sources: tuple[tuple[tuple[Param, int], ...], ...]  # per step: (param, source step or -1)
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def step(self, name: str) -> StepSpec:
        return self.steps[self.index[name]]

    def shape(self) -> dict[str, Any]:
        """The graph a recorded run keeps of its flow (JSON, built once per plan):
        ``steps`` in execution order, ``edges`` (each step's upstream steps) and
        ``step_inputs`` (the flow inputs each step reads). Readers of recorded runs (the
        web UI's graph and per-step inputs, ``trellis show``'s order) use it."""
        shape = self.memo.get("shape")
        if shape is None:
            steps = self.steps
            shape = self.memo["shape"] = {
                "steps": [s.name for s in steps],
                "edges": {
                    s.name: [steps[d].name for d in self.deps[i]] for i, s in enumerate(steps)
                },
                "step_inputs": {
                    s.name: [p.name for p, source in self.sources[i] if source < 0]
                    for i, s in enumerate(steps)
                },
            }
        return shape

    def validate_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The inputs, validated (lax: JSON objects become models); :class:`InputError`
        names a missing, unknown or ill-typed input."""
        plan = self
        given = dict(inputs or {})
        unknown = sorted(set(given) - set(plan.inputs))
        if unknown:
            known = ", ".join(sorted(plan.inputs)) or "none"
            raise InputError(f"flow {plan.name!r}: unknown input(s) {unknown}; it reads: {known}")
        values: dict[str, Any] = {}
        for name, spec in plan.inputs.items():
            if name not in given:
                if spec.param is not None:
                    values[name] = spec.param.default
                    continue
                if spec.required:
                    raise InputError(
                        f"flow {plan.name!r}: missing input {name!r} (read by "
                        f"{', '.join(spec.readers)})"
                    )
                continue
            value = given[name]
            if spec.adapter is not None:
                try:
                    value = spec.adapter.validate_python(value)
                except ValidationError as exc:
                    first = exc.errors(include_url=False)[0]
                    where = ".".join(str(p) for p in first["loc"])
                    detail = f"{where}: {first['msg']}" if where else first["msg"]
                    raise InputError(f"flow {plan.name!r}: input {name!r}: {detail}") from exc
            if spec.param is not None:
                try:
                    spec.param.check(value)
                except FlowDefinitionError as exc:
                    raise InputError(f"flow {plan.name!r}: {exc}") from exc
            values[name] = value
        return values


def compile_flow(
    name: str,
    steps: Mapping[str, StepSpec],
    declared_inputs: Mapping[str, Any] | None,
    params: Mapping[str, FlowParam] | None = None,
) -> CompiledFlow:
    if not steps:
        raise FlowDefinitionError(f"flow {name!r} has no steps")
    for step_name in steps:
        if declared_inputs is not None and step_name in declared_inputs:
            raise FlowDefinitionError(
                f"flow {name!r}: {step_name!r} is both a flow input and a step", step=step_name
            )
    inputs = _collect_inputs(name, steps, declared_inputs)
    for param in (params or {}).values():
        if param.name in steps:
            raise FlowDefinitionError(
                f"flow {name!r}: {param.name!r} is both a parameter and a step", step=param.name
            )
        spec = inputs.get(param.name)
        inputs[param.name] = InputSpec(
            name=param.name,
            annotation=param.annotation,
            required=False,
            default=param.default,
            readers=spec.readers if spec is not None else (),
            adapter=input_adapter(param.annotation),
            param=param,
        )
    order = _topological_order(steps)
    index = {s: i for i, s in enumerate(order)}
    deps = tuple(tuple(sorted({index[r] for r in steps[s].reads if r in steps})) for s in order)
    dependents: list[list[int]] = [[] for _ in order]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)
    ordered = tuple(steps[s] for s in order)
    compiled = CompiledFlow(
        name=name,
        steps=ordered,
        index=index,
        deps=deps,
        dependents=tuple(tuple(d) for d in dependents),
        inputs=inputs,
        validators=tuple(make_validator(s.output_type) for s in ordered),
        sources=tuple(tuple((p, index.get(p.name, -1)) for p in s.params) for s in ordered),
    )
    _check_types(compiled)
    return compiled


def _collect_inputs(
    flow: str, steps: Mapping[str, StepSpec], declared: Mapping[str, Any] | None
) -> dict[str, InputSpec]:
    found: dict[str, list[tuple[str, Any, bool, Any]]] = {}
    for spec in steps.values():
        for read in spec.reads:
            if read in steps:
                if read == spec.name:
                    raise FlowDefinitionError(
                        f"step {spec.name!r} reads its own output {read!r}; use max_rounds= "
                        "and a tl.Round parameter to loop over earlier results",
                        step=spec.name,
                        param=read,
                    )
                continue
            if declared is not None and read not in declared:
                raise FlowDefinitionError(
                    f"step {spec.name!r} reads {read!r}, which is neither a step nor a flow "
                    f"input{_did_you_mean(read, [*steps, *declared])}{_llm_hint(read)}",
                    step=spec.name,
                    param=read,
                )
            param = spec.param(read)
            if param is None:  # read only by the when= condition
                found.setdefault(read, []).append((spec.name, Any, False, None))
            else:
                read_as = param.annotation
                if spec.map_over == read and read_as is not Any:
                    read_as = list[read_as]  # type: ignore[valid-type]
                found.setdefault(read, []).append(
                    (spec.name, read_as, param.has_default, param.default)
                )
    inputs: dict[str, InputSpec] = {}
    names = list(declared) if declared is not None else list(found)
    for input_name in names:
        uses = found.get(input_name, [])
        annotation: Any = declared.get(input_name, Any) if declared is not None else Any
        for step_name, ann, _, _ in uses:
            if ann is Any:
                continue
            if annotation is Any:
                annotation = ann
            elif not (compatible(annotation, ann) or compatible(ann, annotation)):
                raise FlowDefinitionError(
                    f"flow {flow!r}: input {input_name!r} is {describe(annotation)} but step "
                    f"{step_name!r} reads it as {describe(ann)}",
                    step=step_name,
                    param=input_name,
                )
        defaults = [(has, default) for _, _, has, default in uses if has]
        required = not defaults or len(defaults) < len(uses)
        inputs[input_name] = InputSpec(
            name=input_name,
            annotation=annotation,
            required=required if uses else False,
            default=defaults[0][1] if defaults and not required else None,
            readers=tuple(u[0] for u in uses),
            adapter=input_adapter(annotation),
        )
    return inputs


def _topological_order(steps: Mapping[str, StepSpec]) -> list[str]:
    """Kahn's algorithm, preferring definition order among ready steps (deterministic)."""
    position = {s: i for i, s in enumerate(steps)}
    indegree = dict.fromkeys(steps, 0)
    readers: dict[str, list[str]] = {s: [] for s in steps}
    for spec in steps.values():
        for read in set(spec.reads):
            if read in steps:
                indegree[spec.name] += 1
                readers[read].append(spec.name)
    ready = [position[s] for s in steps if indegree[s] == 0]
    heapq.heapify(ready)
    names = list(steps)
    order: list[str] = []
    while ready:
        current = names[heapq.heappop(ready)]
        order.append(current)
        for reader in readers[current]:
            indegree[reader] -= 1
            if indegree[reader] == 0:
                heapq.heappush(ready, position[reader])
    if len(order) != len(steps):
        cycle = _find_cycle(steps, {s for s, d in indegree.items() if d > 0})
        raise FlowDefinitionError(
            f"the steps form a cycle: {' -> '.join(cycle)}; a flow is acyclic (use "
            "max_rounds= to loop)",
            step=cycle[0],
        )
    return order


def _find_cycle(steps: Mapping[str, StepSpec], candidates: set[str]) -> list[str]:
    start = sorted(candidates)[0]
    path = [start]
    seen = {start}
    current = start
    while True:
        nxt = next(r for r in steps[current].reads if r in candidates)
        if nxt in seen:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)
        seen.add(nxt)
        current = nxt


def _check_types(flow: CompiledFlow) -> None:
    for spec in flow.steps:
        for param in spec.params:
            source = flow.index.get(param.name)
            if source is None:
                continue
            produced = flow.steps[source].produces
            expected = param.annotation
            if spec.map_over == param.name:
                if not _is_listlike(produced):
                    raise FlowDefinitionError(
                        f"step {spec.name!r} maps over {param.name!r}, but step "
                        f"{param.name!r} returns {describe(produced)}, not a list",
                        step=spec.name,
                        param=param.name,
                    )
                args = get_args(produced)
                produced = args[0] if args else Any
            if not compatible(produced, expected):
                raise FlowDefinitionError(
                    f"step {spec.name!r}, parameter {param.name!r}: expects "
                    f"{describe(expected)} but step {param.name!r} returns {describe(produced)}",
                    step=spec.name,
                    param=param.name,
                )
        if spec.when is not None and spec.when.router is not None:
            _check_branch_labels(flow, spec)


_LISTLIKE = (list, tuple, set, frozenset, cabc.Sequence, cabc.Iterable, cabc.Collection)


def _is_listlike(tp: Any) -> bool:
    if tp is Any:
        return True
    return (get_origin(tp) or tp) in _LISTLIKE


def _check_branch_labels(flow: CompiledFlow, spec: StepSpec) -> None:
    assert spec.when is not None and spec.when.router is not None
    router = spec.when.router
    if router not in flow.index:
        raise FlowDefinitionError(
            f"step {spec.name!r}: tl.branch({router!r}, ...) names no step "
            f"{_did_you_mean(router, list(flow.index))}",
            step=spec.name,
        )
    produced = flow.step(router).produces
    possible: set[Any] | None = None
    if get_origin(produced) is Literal:
        possible = set(get_args(produced))
    elif isinstance(produced, type) and issubclass(produced, enum.Enum):
        possible = {m for m in produced} | {m.value for m in produced}
    if possible is None:
        return
    for label in spec.when.labels:
        if label not in possible:
            shown = ", ".join(sorted(repr(p) for p in possible if not isinstance(p, enum.Enum)))
            raise FlowDefinitionError(
                f"step {spec.name!r}: router {router!r} never returns {label!r} "
                f"(it returns one of {shown})",
                step=spec.name,
            )


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _llm_hint(name: str) -> str:
    if name in ("llm", "model", "ctx", "context"):
        return "; to receive the model handle or run context, annotate it (llm: tl.LLM)"
    return ""
