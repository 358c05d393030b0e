"""Scorers: ``score(outputs, label) -> float | bool``, built in or loaded from user code.

Built-ins compare the flow's *answer* with the label: the output of the step given as
``answer_step`` (the CLI's ``--answer STEP``), else of the last step, in run order, that
completed.

- ``exact``: equal after ``str(...).strip()`` (values that are not strings are compared
  as JSON).
- ``number``: numeric equality after normalising: thousands separators, currency and
  percent signs and surrounding text are dropped (the *last* number of a text answer is
  taken), and ``72``, ``72.0`` and ``"$72"`` are equal.
- ``json-field:PATH``: the value at the dotted ``PATH`` of the outputs (``answer.value``
  is ``outputs["answer"]["value"]``, a model's attribute or a dict key), compared like
  ``number`` when both sides are numbers and like ``exact`` otherwise.
- ``module:function`` or ``path/to/file.py:function``: your own; called with every
  completed step's output (``{step: output}``) and the label.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from trellis.errors import ConfigurationError
from trellis.loading import load_callable

__all__ = ["Scorer", "load_scorer", "parse_number"]

ScoreFn = Callable[[Mapping[str, Any], Any], Any]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(value: Any) -> float | None:
    """A number out of ``value``: itself, or the last number written in its text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value is None:
        return None
    text = str(value)
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


def numbers_equal(a: Any, b: Any) -> bool:
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, sort_keys=True, default=str)


def _get_path(outputs: Mapping[str, Any], path: str) -> Any:
    value: Any = outputs
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return None
            value = value[part]
        elif isinstance(value, Sequence) and not isinstance(value, str) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else None
        else:
            value = getattr(value, part, None)
        if value is None:
            return None
    return value


@dataclass(frozen=True, slots=True)
class Scorer:
    """A named scorer. ``__call__`` returns a float in [0, 1] (``True`` is 1.0)."""

    name: str
    fn: ScoreFn

    def __call__(self, outputs: Mapping[str, Any], label: Any) -> float:
        value = self.fn(outputs, label)
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        raise ConfigurationError(
            f"scorer {self.name!r} returned {value!r}; a scorer returns a float or a bool"
        )


def load_scorer(spec: str, *, answer_step: str | None = None) -> Scorer:
    """``exact``, ``number``, ``json-field:PATH``, ``module:function`` or
    ``path.py:function``; ``answer_step`` picks the output the built-ins compare."""

    def answer(outputs: Mapping[str, Any]) -> Any:
        if answer_step is not None:
            return outputs.get(answer_step)
        return list(outputs.values())[-1] if outputs else None

    if spec == "exact":
        return Scorer(spec, lambda o, label: _as_text(answer(o)) == _as_text(label))
    if spec == "number":
        return Scorer(spec, lambda o, label: numbers_equal(answer(o), label))
    if spec.startswith("json-field:"):
        path = spec.removeprefix("json-field:")
        if not path:
            raise ConfigurationError("json-field: needs a PATH, e.g. json-field:answer.value")

        def field_score(outputs: Mapping[str, Any], label: Any) -> bool:
            value = _get_path(outputs, path)
            both_numbers = parse_number(value) is not None and parse_number(label) is not None
            plain = not isinstance(value, str) or _NUMBER.fullmatch(value.strip()) is not None
            if both_numbers and plain:
                return numbers_equal(value, label)
            return value is not None and _as_text(value) == _as_text(label)

        return Scorer(spec, field_score)
    return Scorer(spec, _load_function(spec))


def _load_function(spec: str) -> ScoreFn:
    if ":" not in spec.strip(":"):
        raise ConfigurationError(
            f"unknown scorer {spec!r}: use exact, number, json-field:PATH, module:function "
            "or path.py:function"
        )
    return load_callable(spec, what=f"scorer {spec!r}")


