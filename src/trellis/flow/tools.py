"""Tools an agent may call: typed Python functions, their JSON schema, argument validation.

::

    @tl.tool
    async def search(query: str, limit: int = 5) -> list[str]:
        \"\"\"Search the knowledge base.

        Args:
            query: what to look for
            limit: how many snippets to return
        \"\"\"

The schema comes from the signature (types, defaults) and the docstring (summary, and the
``Args:`` section for parameter descriptions). Arguments the model sends are validated
before the function runs; an invalid call never executes.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from trellis.errors import FlowDefinitionError, ToolArgumentsError
from trellis.types import ToolSpec

__all__ = ["Tool", "ToolArgumentsError", "tool"]

_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


class Tool:
    """A function the model may call. Build with :func:`tool` (or pass a plain function)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        retries: int = 2,
    ) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"a tool must be a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", self.name):
            raise FlowDefinitionError(f"tool name {self.name!r} must match [A-Za-z_][A-Za-z0-9_-]*")
        if retries < 0:
            raise FlowDefinitionError(f"tool {self.name!r}: retries cannot be negative")
        self.retries = retries
        self.is_async = inspect.iscoroutinefunction(fn)
        doc = inspect.getdoc(fn) or ""
        self.description = description or doc.split("\n\n")[0].strip() or self.name
        self.arguments_model = _arguments_model(fn, self.name, _arg_docs(doc))
        self.parameters: dict[str, Any] = self.arguments_model.model_json_schema()
        self.parameters.pop("title", None)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, arguments: str) -> dict[str, Any]:
        """Parse and validate the model's JSON arguments; raise ToolArgumentsError."""
        try:
            parsed = self.arguments_model.model_validate_json(arguments or "{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors(include_url=False)[:6]
            )
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: {problems}"
            ) from exc
        return {k: getattr(parsed, k) for k in type(parsed).model_fields}

    async def call(self, arguments: dict[str, Any]) -> Any:
        result = self.fn(**arguments)
        if self.is_async:
            result = await result
        return result

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, retries: int = 2
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    retries: int = 2,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a :class:`Tool`. ``retries``: how many times the tool may raise in
    one agent run before the agent step fails (each failure goes back to the model)."""
    if fn is not None:
        return Tool(fn, name=name, description=description, retries=retries)

    def wrap(func: Callable[..., Any]) -> Tool:
        return Tool(func, name=name, description=description, retries=retries)

    return wrap


def as_tool(value: Tool | Callable[..., Any]) -> Tool:
    return value if isinstance(value, Tool) else Tool(value)


def _arguments_model(fn: Callable[..., Any], name: str, docs: dict[str, str]) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise FlowDefinitionError(f"tool {name!r}: cannot resolve its annotations ({exc})") from exc
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise FlowDefinitionError(
                f"tool {name!r}: parameter {p.name!r} must be a plain named parameter"
            )
        if p.name == "model_config" or p.name.startswith("__"):
            raise FlowDefinitionError(
                f"tool {name!r}: parameter name {p.name!r} is reserved; rename it"
            )
        annotation = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, Field(default, description=docs.get(p.name)))
    try:
        return create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", protected_namespaces=()),
            **fields,
        )
    except Exception as exc:
        raise FlowDefinitionError(
            f"tool {name!r}: its parameters have no JSON schema ({exc})"
        ) from exc


def _arg_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    out: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" "):
                break
            match = _ARG_LINE.match(line)
            if match:
                out[match.group(1).lstrip("*")] = match.group(2).strip()
    return out
