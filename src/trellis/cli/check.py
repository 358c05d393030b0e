"""``trellis check``: a validated flow described step by step, as data and as a table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.text import Text

from trellis.config import Config
from trellis.errors import ConfigurationError
from trellis.flow.flow import Flow
from trellis.flow.policy import RetryPolicy
from trellis.flow.roles import roles_used
from trellis.flow.step import StepSpec
from trellis.flow.types import describe

__all__ = ["FlowInfo", "InputInfo", "RoleInfo", "StepInfo", "describe_flow", "render_flow"]


_INJECTED = {"llm": "calls an LLM", "context": "reads its RunContext", "round": "loops"}


@dataclass(frozen=True, slots=True)
class InputInfo:
    name: str
    type: str
    required: bool
    default: str | None
    readers: tuple[str, ...]
    parameter: bool = False  # a tunable tl.Param (what ``trellis eval --sweep`` varies)


@dataclass(frozen=True, slots=True)
class StepInfo:
    name: str
    reads: tuple[str, ...]  # "name" for a step, "name (input)" for a flow input
    returns: str
    options: tuple[str, ...]  # when / branch / map / loop / model / retry
    kind: str  # "async" or "sync", plus what is injected
    description: str


@dataclass(frozen=True, slots=True)
class RoleInfo:
    name: str
    steps: tuple[str, ...]  # the steps whose LLM calls name it
    binding: str | None  # provider:model (+ fallbacks) it is bound to; None: unbound


@dataclass(frozen=True, slots=True)
class FlowInfo:
    name: str
    description: str
    inputs: tuple[InputInfo, ...]
    steps: tuple[StepInfo, ...]  # in execution (topological) order
    defaults: tuple[str, ...]  # flow-wide options: model, concurrency, budget, retry
    roles: tuple[RoleInfo, ...] = ()  # the model roles found in the steps
    config: str | None = None  # what the roles were resolved against: a file, "--model"


def _retry_diff(policy: RetryPolicy) -> str:
    default = RetryPolicy()
    changed = [
        f"{f.name}={getattr(policy, f.name)!r}"
        for f in dataclasses.fields(policy)
        if getattr(policy, f.name) != getattr(default, f.name)
    ]
    return f"retry({', '.join(changed)})" if changed else "retry(defaults)"


def _condition(spec: StepSpec) -> str | None:
    when = spec.when
    if when is None:
        return None
    if when.router is not None:
        labels = ", ".join(repr(label) for label in when.labels)
        return f"branch: {when.router} in ({labels})"
    name = getattr(when.predicate, "__name__", "")
    if not name or name == "<lambda>":
        return f"when: condition on {', '.join(when.reads) or 'nothing'}"
    return f"when: {when.description}"


def _options(spec: StepSpec) -> tuple[str, ...]:
    options: list[str] = []
    condition = _condition(spec)
    if condition:
        options.append(condition)
    if spec.map_over is not None:
        on_error = ", collect failures" if spec.on_error == "collect" else ""
        options.append(f"map over {spec.map_over}{on_error}")
    if spec.max_rounds is not None:
        until = ""
        if spec.until is not None:
            name = getattr(spec.until, "__name__", "")
            until = " until " + (name if name and name != "<lambda>" else "condition")
        options.append(f"loop ≤{spec.max_rounds} rounds{until}")
    if spec.model is not None:
        options.append(f"model={spec.model}")
    if spec.retry is not None:
        options.append(_retry_diff(spec.retry))
    return tuple(options)


def _roles(flow: Flow, config: Config) -> tuple[RoleInfo, ...]:
    roles: list[RoleInfo] = []
    for role, steps in roles_used(flow).items():
        try:
            bound = config.resolve(role)
        except ConfigurationError:
            roles.append(RoleInfo(role, steps, None))
            continue
        text = bound.binding.name
        if bound.fallbacks:
            text += ", then " + ", ".join(bound.fallbacks)
        roles.append(RoleInfo(role, steps, text))
    return tuple(roles)


def describe_flow(
    flow: Flow, config: Config | None = None, config_source: str | None = None
) -> FlowInfo:
    """The flow's inputs, steps (in the order they can run) and model roles, resolved
    against ``config``. Validates the flow."""
    plan = flow.compile()
    steps: list[StepInfo] = []
    for spec in plan.steps:
        reads = tuple(r if r in plan.index else f"{r} (input)" for r in spec.reads)
        kind = "async" if spec.is_async else "sync"
        uses = [_INJECTED[k] for k in sorted(set(spec.injected.values())) if k in _INJECTED]
        if uses:
            kind += ", " + ", ".join(uses)
        steps.append(
            StepInfo(
                name=spec.name,
                reads=reads,
                returns=describe(spec.produces),
                options=_options(spec),
                kind=kind,
                description=spec.description,
            )
        )
    inputs = tuple(
        InputInfo(
            name=i.name,
            type=describe(i.annotation),
            required=i.required,
            default=None if i.required else repr(i.default),
            readers=i.readers,
            parameter=i.param is not None,
        )
        for i in plan.inputs.values()
    )
    defaults: list[str] = []
    if flow.model:
        defaults.append(f"model={flow.model}")
    if flow.concurrency:
        defaults.append(f"concurrency={flow.concurrency}")
    if flow.budget is not None:
        limits = [
            f"{f.name}={getattr(flow.budget, f.name)!r}"
            for f in dataclasses.fields(flow.budget)
            if f.name.startswith("max_") and getattr(flow.budget, f.name) is not None
        ]
        defaults.append(f"budget({', '.join(limits)})")
    if flow.retry != RetryPolicy():
        defaults.append(_retry_diff(flow.retry))
    return FlowInfo(
        flow.name,
        flow.description,
        inputs,
        tuple(steps),
        tuple(defaults),
        roles=_roles(flow, config or Config()),
        config=config_source,
    )


def render_flow(console: Console, info: FlowInfo, source: str) -> None:
    def line(markup: str, indent: int = 0) -> None:
        console.print(
            Padding(Text.from_markup(markup), (0, 0, 0, indent), expand=False), highlight=False
        )

    n_steps, n_inputs = len(info.steps), len(info.inputs)
    line(
        f"[bold green]✓[/] flow [bold]{escape(info.name)}[/] ({escape(source)}) is valid: "
        f"{n_steps} step{'s' if n_steps != 1 else ''}, {n_inputs} input"
        f"{'s' if n_inputs != 1 else ''}"
    )
    if info.description:
        line(f"[dim]{escape(info.description)}[/]", 2)
    if info.defaults:
        line("flow options: " + escape(", ".join(info.defaults)), 2)
    console.print()
    line("[bold]Inputs[/]")
    if not info.inputs:
        line("[dim]none[/]", 2)
    for i in info.inputs:
        required = "required" if i.required else f"optional, default {i.default}"
        if i.parameter:
            required = f"parameter, default {i.default}"
        readers = ", ".join(i.readers) or "nothing"
        line(
            f"[bold]{escape(i.name)}[/]: {escape(i.type)} ({escape(required)}) "
            f"[dim]— read by {escape(readers)}[/]",
            2,
        )
    console.print()
    line("[bold]Steps, in order[/]")
    for n, s in enumerate(info.steps, start=1):
        line(
            f"{n}. [bold]{escape(s.name)}[/] -> {escape(s.returns)}   [dim]{escape(s.kind)}[/]",
            2,
        )
        line(f"reads: {escape(', '.join(s.reads)) or '[dim]nothing[/]'}", 5)
        for option in s.options:
            line(f"[cyan]{escape(option)}[/]", 5)
        if s.description:
            line(f"[dim]{escape(s.description)}[/]", 5)
    if info.roles:
        console.print()
        checked = info.config is not None
        where = ""
        if info.config == "--model":
            where = " (bound by --model)"
        elif info.config:
            where = f" (bound in {escape(info.config)} and --model)"
        line(f"[bold]Model roles[/]{where}")
        for role in info.roles:
            used = f"[dim]— used by {escape(', '.join(role.steps))}[/]"
            if role.binding is None and not checked:
                line(f"[bold]{escape(role.name)}[/] {used}", 2)
            elif role.binding is None:
                line(f"[bold]{escape(role.name)}[/]: [bold red]not bound[/] {used}", 2)
            else:
                line(f"[bold]{escape(role.name)}[/]: {escape(role.binding)} {used}", 2)
        if not checked:
            line("[dim]give --config FILE.toml or --model ROLE=... to check the bindings[/]", 2)
