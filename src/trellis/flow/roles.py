"""Which model roles a flow uses, found without running it.

A role is named in three places: a step's ``model=`` option, the flow's ``model=`` default,
and the ``model=`` / ``fallbacks=`` arguments of ``llm.generate(...)`` / ``llm.agent(...)``
calls inside a step. The last are read from the step's source: a string literal, or a local
name whose assignments in the step are string literals (``role = "large" if unsure else
"small"``). A role computed any other way (read from an input, built with an f-string)
cannot be known before the run; it is simply not listed.

``trellis check --config`` uses this to report roles no binding covers before a run fails
on them.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trellis.flow.flow import Flow
    from trellis.flow.step import StepSpec

__all__ = ["roles_used"]

_CALLS = {"generate", "agent", "complete_turn"}


def roles_used(flow: Flow) -> dict[str, tuple[str, ...]]:
    """Each role the flow is known to use -> the steps that use it (in execution order).

    Direct ``provider:model`` specs (they contain ``:``) are not roles and are left out.
    """
    plan = flow.compile()
    found: dict[str, list[str]] = {}

    def add(role: str, step: str) -> None:
        if role and ":" not in role and step not in found.setdefault(role, []):
            found[role].append(step)

    for spec in plan.steps:
        if "llm" not in spec.injected.values():
            continue
        default = spec.model or flow.model or "default"  # what a call without model= asks
        for role in _source_roles(spec):
            add(default if role is None else role, spec.name)
    return {role: tuple(steps) for role, steps in found.items()}


def _source_roles(spec: StepSpec) -> Iterator[str | None]:
    """Roles named by the step's LLM calls; ``None`` for a call that names none (it uses
    the step's default). A step whose source cannot be read yields just ``None``."""
    llm_names = {name for name, kind in spec.injected.items() if kind == "llm"}
    if not llm_names:
        return
    try:
        source = textwrap.dedent(inspect.getsource(spec.fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        yield None  # no source (a REPL definition): assume the step's default
        return
    function = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
        None,
    )
    if function is None:
        yield None
        return
    assigned = _string_assignments(function)
    for node in ast.walk(function):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in llm_names
        ):
            continue
        if not any(k.arg == "model" for k in node.keywords):
            yield None
        for keyword in node.keywords:
            if keyword.arg == "model":
                yield from _strings(keyword.value, assigned)
            elif keyword.arg == "fallbacks" and isinstance(keyword.value, ast.List | ast.Tuple):
                for element in keyword.value.elts:
                    yield from _strings(element, assigned)


def _string_assignments(function: ast.AST) -> dict[str, list[ast.expr]]:
    """Local name -> the expressions assigned to it in the function."""
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            assigned.setdefault(node.target.id, []).append(node.value)
    return assigned


def _strings(node: ast.expr, assigned: dict[str, list[ast.expr]], depth: int = 0) -> Iterator[str]:
    """The string literals ``node`` can evaluate to, as far as the source shows."""
    if depth > 4:
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body, assigned, depth + 1)
        yield from _strings(node.orelse, assigned, depth + 1)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _strings(value, assigned, depth + 1)
    elif isinstance(node, ast.Name):
        for value in assigned.get(node.id, ()):
            yield from _strings(value, assigned, depth + 1)
