"""Contracts of the public API: what ``__all__`` promises exists, and errors behave."""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import pytest

import trellis as tl
import trellis.errors as errors
from trellis.models.base import Usage

PUBLIC_MODULES = ["trellis", "trellis.errors", "trellis.testing", "trellis.store"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not define: {missing}"


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
