"""``Flow``: a named set of steps, declared with a decorator, compiled once on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from trellis.errors import FlowDefinitionError
from trellis.flow.graph import CompiledFlow, compile_flow
from trellis.flow.params import Param
from trellis.flow.policy import Budget, Cache, RetryPolicy
from trellis.flow.step import Condition, OnError, StepSpec, build_step
from trellis.flow.subflow import build_subflow_step, contains

if TYPE_CHECKING:
    from trellis.config import Config
    from trellis.engine.results import RunResult

__all__ = ["Flow"]

F = TypeVar("F", bound=Callable[..., Any])


class Flow:
    """A graph of typed steps. Each step's parameters name what it reads.

    ::

        flow = tl.Flow("triage", inputs={"feedback": str})

        @flow.step
        async def sentiment(feedback: str, llm: tl.LLM) -> Sentiment: ...

    ``inputs`` declares the flow's inputs and their types; without it, every name a step
    reads that is not a step is taken as an input (and typos surface only at run time).
    ``concurrency`` bounds how many step executions (including mapped elements) run at
    once in one run; ``retry`` and ``model`` are defaults for every step.
    ``params`` declares tunable settings (:class:`tl.Param`): inputs with a default that
    ``trellis eval --sweep`` can vary.
    """

    def __init__(
        self,
        name: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        model: str | None = None,
        budget: Budget | None = None,
        cache: Cache | bool | None = None,
        description: str = "",
        params: Sequence[Param] = (),
    ) -> None:
        if not name:
            raise FlowDefinitionError("a flow needs a name")
        if concurrency is not None and concurrency < 1:
            raise FlowDefinitionError(f"flow {name!r}: concurrency must be at least 1")
        self.name = name
        self.description = description
        self.params: dict[str, Param] = {}
        for param in params:
            if param.name in self.params or (inputs is not None and param.name in inputs):
                raise FlowDefinitionError(
                    f"flow {name!r}: {param.name!r} is declared twice (inputs/params)"
                )
            self.params[param.name] = param
        self.declared_inputs = dict(inputs) if inputs is not None else None
        if self.declared_inputs is not None:
            self.declared_inputs.update({p.name: p.annotation for p in params})
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.model = model
        self.budget = budget
        self.cache = cache
        self._steps: dict[str, StepSpec] = {}
        self._compiled: CompiledFlow | None = None

    # -- definition ---------------------------------------------------------------------

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
        /,
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
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
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
    ) -> Any:
        """Add a step. Used bare (``@flow.step``) or with options:

        - ``when``: run only if the predicate over upstream values holds (its parameters
          name what it reads), or ``tl.branch(router, *labels)``; otherwise *skipped*.
        - ``map_over``: the parameter holding a list; the step runs once per element,
          concurrently, and its output is the list of results in input order.
          ``on_error="collect"`` puts a :class:`tl.ElementFailure` where an element failed
          instead of failing the step.
        - ``max_rounds`` / ``until``: run the step repeatedly (a ``tl.Round`` parameter
          sees earlier rounds) until ``until(output)`` is true or ``max_rounds`` pass.
        - ``retry``: this step's :class:`tl.RetryPolicy`; ``model``: its default role.
        - ``cache``: reuse identical LLM replies across runs (:class:`tl.Cache`, ``True``,
          or ``False`` to turn off a cache set on the flow or engine).
        """

        def register(func: F) -> F:
            spec = build_step(
                func,
                name=name,
                when=when,
                map_over=map_over,
                on_error=on_error,
                max_rounds=max_rounds,
                until=until,
                retry=retry,
                model=model,
                cache=cache,
            )
            self.add(spec)
            return func

        if fn is not None:
            return register(fn)
        return register

    def subflow(
        self,
        other: Flow,
        *,
        name: str,
        inputs: Mapping[str, str] | None = None,
        output: str | None = None,
        map_over: str | None = None,
        on_error: OnError = "fail",
        when: Callable[..., Any] | Condition | None = None,
    ) -> StepSpec:
        """Add a step that runs flow ``other`` as a sub-flow; return its spec.

        ``inputs`` maps each of ``other``'s inputs to the parent value (a flow input or a
        step) that feeds it: ``inputs={"text": "draft"}``; by default each input of
        ``other`` reads the parent value of the same name. The step's output is
        ``other``'s *declared result*: the output of its step ``output``, or, by default,
        of its only final step (one no other step reads). With ``map_over`` (a parent
        value named in ``inputs``, holding a list) it runs one sub-flow per element, with
        the map's ``on_error`` policy. The sub-flow is recorded as a child run of the
        parent (``<run>/<step>``, ``<run>/<step>[i]`` per element), shares its budgets
        and concurrency limit, and its usage rolls up into the step and the run.
        """
        spec = build_subflow_step(
            self,
            other,
            name=name,
            inputs=inputs,
            output=output,
            map_over=map_over,
            on_error=on_error,
            when=when,
        )
        self.add(spec)
        return spec

    def subflow_step(
        self,
        other: Flow,
        *,
        name: str | None = None,
        output: str | None = None,
        map_over: str | None = None,
        on_error: OnError = "fail",
        when: Callable[..., Any] | Condition | None = None,
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`subflow`: the function's parameters name the parent
        values it reads (like a step's) and it returns ``other``'s inputs as a dict::

            @flow.subflow_step(review, map_over="issue")
            def review_issue(issue: Issue, tone: str) -> dict[str, Any]:
                return {"issue": issue, "tone": tone}
        """

        def register(func: F) -> F:
            step = name or str(getattr(func, "__name__", ""))
            spec = build_subflow_step(
                self,
                other,
                name=step,
                mapper=func,
                output=output,
                map_over=map_over,
                on_error=on_error,
                when=when,
            )
            self.add(spec)
            return func

        return register

    def add(self, spec: StepSpec) -> None:
        if spec.name in self._steps:
            raise FlowDefinitionError(
                f"flow {self.name!r} already has a step named {spec.name!r}", step=spec.name
            )
        self._steps[spec.name] = spec
        self._compiled = None

    # -- compiled view --------------------------------------------------------------------

    def compile(self) -> CompiledFlow:
        """Validate the flow and return its plan (cached until a step is added)."""
        if self._compiled is None:
            for spec in self._steps.values():
                if spec.subflow is not None and contains(spec.subflow.flow, self):
                    raise FlowDefinitionError(
                        f"step {spec.name!r}: its sub-flow {spec.subflow.flow.name!r} contains "
                        f"flow {self.name!r}: a flow cannot contain itself",
                        step=spec.name,
                    )
            self._compiled = compile_flow(self.name, self._steps, self.declared_inputs, self.params)
        return self._compiled

    def validate(self) -> None:
        """Raise :class:`FlowDefinitionError` if the flow is not well formed."""
        self.compile()

    def validate_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check inputs for a run without running; raises :class:`InputError`."""
        return self.compile().validate_inputs(inputs)

    @property
    def steps(self) -> Mapping[str, StepSpec]:
        return dict(self._steps)

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, steps={list(self._steps)})"

    # -- running (convenience: builds a one-off Engine) -------------------------------------

    async def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        models: Mapping[str, Any] | None = None,
        config: Config | None = None,
        budget: Budget | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Run once with a fresh :class:`tl.Engine`; see ``Engine.run`` for the options."""
        from trellis.engine.engine import Engine

        async with Engine(config=config, models=models) as engine:
            return await engine.run(self, inputs, budget=budget, run_id=run_id)

    def run_sync(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        models: Mapping[str, Any] | None = None,
        config: Config | None = None,
        budget: Budget | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Blocking :meth:`run`, for scripts and notebooks without an event loop."""
        import asyncio

        return asyncio.run(
            self.run(inputs, models=models, config=config, budget=budget, run_id=run_id)
        )
