"""Contracts of the public API: what ``__all__`` promises exists, and errors behave."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
import types
from typing import Any

import pytest

import trellis as tl
import trellis.errors as errors
import trellis.models.base as models_base
import trellis.types as shared_types
from trellis.engine.results import StepRecord
from trellis.models.base import ModelResponse, Usage
from trellis.store import CacheStats, CallRow, RunRow, StepRow, StoreLocation

PUBLIC_MODULES = [
    "trellis",
    "trellis.errors",
    "trellis.testing",
    "trellis.store",
    "trellis.types",
    "trellis.models.base",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"


def test_all_lists_every_public_name_of_the_package() -> None:
    for name in dir(tl):  # the package's names load lazily: load every one
        getattr(tl, name)
    public = {
        name
        for name, value in vars(tl).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(tl.__all__) - {"__version__"}
    assert set(dir(tl)) >= set(tl.__all__)


def test_a_name_the_package_does_not_have_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Engin'"):
        tl.Engin  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(tl, "Engin")


@pytest.mark.parametrize("name", shared_types.__all__)
def test_shared_value_types_are_one_class_wherever_imported(name: str) -> None:
    value = getattr(shared_types, name)
    assert getattr(models_base, name) is value
    if hasattr(tl, name):
        assert getattr(tl, name) is value


# Value types constructed by keyword only: (class, arguments that may be positional,
# the keyword arguments of a valid value).
_KEYWORD_ONLY: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = [
    (tl.Budget, (), {"max_calls": 3}),
    (tl.RetryPolicy, (), {"reasks": 1}),
    (tl.Cache, (), {"ttl": 60.0}),
    (tl.Decision, (), {"step": "s", "kind": "when", "outcome": "run", "reason": "r", "values": {}}),
    (tl.ErrorInfo, (), {"type": "StepError", "message": "m"}),
    (tl.Stats, (), {"calls": 1}),
    (tl.RunContext, (), {"run_id": "r", "flow": "f", "step": "s"}),
    (tl.Round, (), {"number": 1}),
    (tl.ElementFailure, (), {"index": 0, "error": "ValueError", "message": "m"}),
    (tl.ModelRequest, (), {"messages": (), "model": "m"}),
    (tl.RunResult, (), {"run_id": "r", "flow": "f", "inputs": {}, "steps": {}}),
    (tl.Param, ("threshold",), {"default": 0.7, "low": 0.0, "high": 1.0}),
    (tl.RoleBinding, (), {"binding": tl.ModelBinding("sim", "small"), "fallbacks": ("large",)}),
    (
        tl.BatchSummary,
        (),
        {
            "total": 1,
            "done": 1,
            "failed": 0,
            "not_started": 0,
            "failures": {},
            "failure_examples": {},
            "steps": (),
            "calls": 1,
            "attempts": 1,
            "retries": {},
            "input_tokens": 1,
            "output_tokens": 2,
            "cost_usd": 0.0,
            "unpriced_attempts": 0,
            "models": (),
            "counterfactual": None,
            "latency": None,
            "wall_s": None,
            "items_per_s": None,
        },
    ),
    (
        RunRow,
        (),
        {"run_id": "r", "flow": "f", "status": "running", "inputs": "{}", "started_at": 1.0},
    ),
    (StepRow, (), {"run_id": "r", "step": "s", "status": "done", "definition": "d"}),
    (CallRow, (), {"run_id": "r", "key": "k", "request": "q", "result": "1", "attempts": "[]"}),
    (CacheStats, (), {"entries": 1, "expired": 0, "hits": 2, "bytes": 3}),
    (StoreLocation, (), {"kind": "sqlite", "path": "t.db"}),
    (StepRecord, ("s",), {"status": "done"}),
    (ModelResponse, ("text", Usage()), {"finish_reason": "stop"}),
    (
        tl.CallRecord,
        (),
        {
            "step": "s",
            "call": 1,
            "attempt": 1,
            "model": "sim:small",
            "role": "small",
            "outcome": "ok",
            "input_tokens": 1,
            "output_tokens": 2,
            "cost_usd": None,
            "latency_s": 0.1,
        },
    ),
]


@pytest.mark.parametrize(
    ("cls", "positional", "keywords"), _KEYWORD_ONLY, ids=lambda v: getattr(v, "__name__", "")
)
def test_value_dataclasses_are_keyword_only(
    cls: type, positional: tuple[Any, ...], keywords: dict[str, Any]
) -> None:
    assert dataclasses.is_dataclass(cls)
    first_keyword, first_value = next(iter(keywords.items()))
    value = cls(*positional, **keywords)
    assert getattr(value, first_keyword) == first_value
    rest = {k: v for k, v in keywords.items() if k != first_keyword}
    with pytest.raises(TypeError):
        cls(*positional, first_value, **rest)  # the first keyword given by position


def test_documented_positional_construction_still_works() -> None:
    assert tl.Usage(3, 4).total_tokens == 7
    assert tl.Message("user", "hi").content == "hi"
    assert tl.ToolCall("c1", "search", "{}").name == "search"
    assert tl.ToolSpec("search", "find things", {"type": "object"}).name == "search"
    assert tl.Price(1.0, 2.0).cost(tl.Usage(1_000_000, 0)) == 1.0
    assert str(tl.ModelBinding("sim", "small")) == "sim:small"
    assert tl.ModelResponse("text", tl.Usage()).finish_reason == "stop"
    assert StepRecord("s").status == "pending"
    assert tl.Param("threshold", default=0.7).name == "threshold"


def test_every_public_error_class_is_exported_from_the_package() -> None:
    classes = {n for n, v in vars(errors).items() if isinstance(v, type)}
    public_errors = {n for n in classes if issubclass(getattr(errors, n), Exception)}
    assert public_errors <= set(tl.__all__), public_errors - set(tl.__all__)


def _public_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in tl.__all__:
        value = getattr(tl, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            found[name] = value
    return list(found.values())


@pytest.mark.parametrize("cls", _public_exception_classes(), ids=lambda c: c.__name__)
def test_every_public_exception_is_a_trellis_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, tl.TrellisError)


# Constructor arguments for the errors whose constructors take keyword-only extras.
_EXTRA: dict[str, dict[str, Any]] = {
    "FlowDefinitionError": {"step": "s", "param": "p"},
    "StepError": {"step": "s"},
    "OutputTypeError": {"step": "s"},
    "AgentTurnLimitError": {"step": "s"},
    "BudgetExceededError": {"budget": "max_calls", "limit": 3, "spent": 3},
    "RunLockedError": {"run_id": "r1", "owner": "host:1"},
    "LeaseLostError": {"run_id": "r1", "epoch": 2, "current": 3, "owner": "host:2:ab"},
    "StepChangedError": {"step": "s"},
    "SubflowError": {"step": "s", "run_id": "r1/s"},
    "RateLimitError": {"retry_after": 1.5, "model": "m", "status_code": 429},
    "OutputValidationError": {
        "attempts": [
            tl.ReplyAttempt(
                model="m", text="{", error="bad", mode=tl.FailureMode.MALFORMED, usage=Usage()
            )
        ],
        "model": "m",
    },
}


def _construct(cls: type[BaseException]) -> BaseException:
    kwargs = dict(_EXTRA.get(cls.__name__, {}))
    if issubclass(cls, tl.ModelError):
        kwargs.setdefault("model", "m")
        kwargs.setdefault("usage", Usage(3, 4))
    return cls("what went wrong", **kwargs)


@pytest.mark.parametrize("cls", _public_exception_classes(), ids=lambda c: c.__name__)
def test_every_public_exception_survives_pickling(cls: type[BaseException]) -> None:
    error = _construct(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.args == error.args
    for name, value in vars(error).items():
        restored = getattr(copy, name)
        if name == "attempts":
            assert [repr(a) for a in restored] == [repr(a) for a in value]
        else:
            assert restored == value, name


@pytest.mark.parametrize(
    "method",
    [tl.Engine.run, tl.Engine.run_many, tl.Engine.reply, tl.Engine.load, tl.Flow.run],
    ids=lambda m: m.__qualname__,
)
def test_public_methods_take_no_private_parameters(method: Any) -> None:
    private = [p for p in inspect.signature(method).parameters if p.startswith("_")]
    assert not private, f"{method.__qualname__} takes private parameters {private}"
