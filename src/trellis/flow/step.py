"""A step: a plain function, what it reads, what it returns, and how it runs.

Built from the function's signature: each parameter is either *data* (a flow input or
another step's output, by name) or *injected* (``tl.LLM``, ``tl.RunContext``,
``tl.Round``). The return annotation is the output type, validated after every run.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_origin

from trellis.errors import FlowDefinitionError
from trellis.flow.inject import LLM, ElementFailure, Human, Round, RunContext
from trellis.flow.policy import Cache, RetryPolicy
from trellis.flow.types import is_optional

if typing.TYPE_CHECKING:
    from trellis.flow.subflow import SubflowSpec

__all__ = ["Condition", "Param", "StepSpec", "branch"]

OnError = Literal["fail", "collect"]
_INJECTED = {LLM: "llm", RunContext: "context", Round: "round", Human: "human"}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    annotation: Any  # Any when unannotated
    has_default: bool
    default: Any
    optional: bool  # has a default or accepts None: may read a skipped step

    @property
    def fallback(self) -> Any:
        """The value passed when what it reads was skipped."""
        return self.default if self.has_default else None


class Condition:
    """A ``when=`` predicate with the names it reads and a description for the record."""

    __slots__ = ("description", "labels", "predicate", "reads", "router")

    def __init__(
        self,
        predicate: Callable[..., Any],
        reads: Sequence[str],
        description: str,
        *,
        router: str | None = None,
        labels: tuple[Any, ...] = (),
    ) -> None:
        self.predicate = predicate
        self.reads = tuple(reads)
        self.description = description
        self.router = router
        self.labels = labels

    @classmethod
    def from_callable(cls, fn: Callable[..., Any], step: str) -> Condition:
        if isinstance(fn, Condition):
            return fn
        if not callable(fn):
            raise FlowDefinitionError(
                f"step {step!r}: when= must be a callable or tl.branch(...), got {fn!r}", step=step
            )
        params = inspect.signature(fn).parameters.values()
        bad = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if bad:
            raise FlowDefinitionError(
                f"step {step!r}: the when= condition must name what it reads, not *{bad[0]}",
                step=step,
            )
        reads = [p.name for p in params]
        name = getattr(fn, "__name__", "condition")
        if name == "<lambda>":
            name = "condition"
        return cls(fn, reads, f"{name}({', '.join(reads)})")

    def __call__(self, values: dict[str, Any]) -> bool:
        return bool(self.predicate(**{r: values[r] for r in self.reads}))


def branch(router: str, *labels: Any) -> Condition:
    """Run the step only when step ``router`` returned one of ``labels``.

    ``@flow.step(when=tl.branch("route", "research"))``. The labels are checked against
    the router's ``Literal`` / ``Enum`` return type when the flow is built.
    """
    if not labels:
        raise FlowDefinitionError(f"branch({router!r}) needs at least one label")
    wanted = set(labels)

    def predicate(**kw: Any) -> bool:
        value = kw[router]
        return value in wanted or getattr(value, "value", object()) in wanted

    if len(labels) == 1:
        description = f"{router} == {labels[0]!r}"
    else:
        description = f"{router} in ({', '.join(repr(label) for label in labels)})"
    return Condition(predicate, [router], description, router=router, labels=tuple(labels))


@dataclass(slots=True)
class StepSpec:
    """Everything the engine needs to know about one step."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    params: tuple[Param, ...]  # data parameters, in signature order
    injected: dict[str, str]  # parameter name -> "llm" | "context" | "round"
    output_type: Any  # the return annotation (per element for a mapped step)
    when: Condition | None = None
    map_over: str | None = None
    on_error: OnError = "fail"
    max_rounds: int | None = None
    until: Callable[[Any], Any] | None = None
    retry: RetryPolicy | None = None
    model: str | None = None
    cache: Cache | bool | None = None
    description: str = ""
    #: Set for a sub-flow step (``Flow.subflow``): the flow it runs and its result step.
    subflow: SubflowSpec | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        names = [p.name for p in self.params]
        if self.when is not None:
            names.extend(r for r in self.when.reads if r not in names)
        return tuple(names)

    @property
    def produces(self) -> Any:
        """The type of the step's output as seen by its readers."""
        if self.map_over is None:
            return self.output_type
        if self.on_error == "collect":
            return list[self.output_type | ElementFailure]  # type: ignore[name-defined]
        return list[self.output_type]  # type: ignore[name-defined]

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


def build_step(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    when: Callable[..., Any] | Condition | None = None,
    map_over: str | None = None,
    on_error: OnError = "fail",
    max_rounds: int | None = None,
    until: Callable[[Any], Any] | None = None,
    retry: RetryPolicy | None = None,
    model: str | None = None,
    cache: Cache | bool | None = None,
) -> StepSpec:
    if not callable(fn):
        raise FlowDefinitionError(f"a step must be a function, got {fn!r}")
    step = name or getattr(fn, "__name__", None)
    if not step or not step.isidentifier():
        raise FlowDefinitionError(f"step name {step!r} is not a valid identifier")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for an annotation that cannot be resolved
        param = _unresolvable_param(fn)
        where = f"the annotation of {param!r}" if param else "its annotations"
        raise FlowDefinitionError(
            f"step {step!r}: cannot resolve {where} ({exc}); define the types it uses at "
            "module level",
            step=step,
            param=param,
        ) from exc
    signature = inspect.signature(fn)
    params: list[Param] = []
    injected: dict[str, str] = {}
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise FlowDefinitionError(
                f"step {step!r}: parameter {p.name!r} must be a plain named parameter; a step "
                "names exactly what it reads",
                step=step,
                param=p.name,
            )
        annotation = hints.get(p.name, Any)
        kind = _injected_kind(annotation)
        if kind is not None:
            injected[p.name] = kind
            continue
        has_default = p.default is not inspect.Parameter.empty
        params.append(
            Param(
                name=p.name,
                annotation=annotation,
                has_default=has_default,
                default=p.default if has_default else None,
                optional=has_default or is_optional(annotation),
            )
        )
    output_type = hints.get("return", Any)
    spec = StepSpec(
        name=step,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        params=tuple(params),
        injected=injected,
        output_type=output_type,
        when=Condition.from_callable(when, step) if when is not None else None,
        map_over=map_over,
        on_error=on_error,
        max_rounds=max_rounds,
        until=until,
        retry=retry,
        model=model,
        cache=cache,
        description=(inspect.getdoc(fn) or "").split("\n\n")[0],
    )
    _check_options(spec)
    return spec


def _unresolvable_param(fn: Callable[..., Any]) -> str | None:
    """The first parameter whose annotation cannot be resolved on its own."""
    for name, annotation in getattr(fn, "__annotations__", {}).items():

        def probe() -> None: ...

        probe.__annotations__ = {"x": annotation}
        probe.__module__ = getattr(fn, "__module__", probe.__module__)
        try:
            typing.get_type_hints(probe, globalns=getattr(fn, "__globals__", None))
        except Exception:
            return None if name == "return" else name
    return None


def _injected_kind(annotation: Any) -> str | None:
    base = get_origin(annotation) or annotation
    if isinstance(base, type):
        for cls, kind in _INJECTED.items():
            if base is cls or issubclass(base, cls):
                return kind
    return None


def _check_options(spec: StepSpec) -> None:
    name = spec.name
    if spec.on_error not in ("fail", "collect"):
        raise FlowDefinitionError(
            f"step {name!r}: on_error must be 'fail' or 'collect', got {spec.on_error!r}",
            step=name,
        )
    if spec.map_over is not None:
        if spec.param(spec.map_over) is None:
            raise FlowDefinitionError(
                f"step {name!r}: map_over={spec.map_over!r} must name one of its data "
                f"parameters ({', '.join(p.name for p in spec.params) or 'none'})",
                step=name,
                param=spec.map_over,
            )
    elif spec.on_error != "fail":
        raise FlowDefinitionError(
            f"step {name!r}: on_error applies to mapped steps only (add map_over=)", step=name
        )
    if spec.until is not None and spec.max_rounds is None:
        raise FlowDefinitionError(
            f"step {name!r}: until= needs max_rounds= so the loop is bounded", step=name
        )
    if spec.max_rounds is not None:
        if spec.max_rounds < 1:
            raise FlowDefinitionError(f"step {name!r}: max_rounds must be at least 1", step=name)
        if spec.map_over is not None:
            raise FlowDefinitionError(
                f"step {name!r}: a step cannot both map and loop; loop inside a mapped step's "
                "function, or map in a separate step",
                step=name,
            )
    elif "round" in spec.injected.values():
        raise FlowDefinitionError(
            f"step {name!r}: a tl.Round parameter needs max_rounds= (and usually until=)",
            step=name,
        )
    for kind, what in (("llm", "tl.LLM"), ("human", "tl.Human")):
        if kind in spec.injected.values() and not spec.is_async:
            raise FlowDefinitionError(
                f"step {name!r} asks for {what} but is a plain function; its calls are "
                f"awaited, so make it 'async def {name}(...)'",
                step=name,
            )
    if spec.retry is not None and not isinstance(spec.retry, RetryPolicy):
        raise FlowDefinitionError(f"step {name!r}: retry= must be a tl.RetryPolicy", step=name)
