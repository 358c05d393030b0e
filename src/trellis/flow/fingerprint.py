"""A step's definition hash: detects, at resume, a step whose code or prompt changed.

The hash covers the function's source (its prompt lives there), falling back to its
compiled code and constants when the source is unavailable, plus the step's options
(condition, map, loop, model, output type). Whitespace-only edits of the source change it
too: a re-run is the safe side of that trade.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable
from typing import Any

from trellis.flow.graph import CompiledFlow
from trellis.flow.step import StepSpec
from trellis.flow.types import describe

__all__ = ["flow_fingerprints", "step_fingerprint"]


def step_fingerprint(spec: StepSpec) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(_code_text(spec.fn).encode())
    when = spec.when
    parts = [
        ",".join(p.name for p in spec.params),
        describe(spec.output_type),
        when.description if when else "",
        _code_text(when.predicate) if when else "",
        str(spec.map_over),
        spec.on_error,
        str(spec.max_rounds),
        _code_text(spec.until) if spec.until else "",
        str(spec.model),
    ]
    h.update("\x1f".join(parts).encode())
    if spec.subflow is not None:  # a change inside the sub-flow changes the step
        child = spec.subflow.flow.compile()
        h.update(f"\x1e{child.name}\x1f{spec.subflow.output}".encode())
        for child_step, fingerprint in zip(child.steps, flow_fingerprints(child), strict=True):
            h.update(f"\x1e{child_step.name}={fingerprint}".encode())
    return h.hexdigest()


def _code_text(fn: Callable[..., Any]) -> str:
    try:
        text = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            return repr(fn)
        text = _code_repr(code)
    return text + _captured(fn)


_PLAIN = (int, float, str, bool, bytes, type(None))


def _captured(fn: Callable[..., Any]) -> str:
    """Plain values the function closes over or defaults to (a threshold, a prompt
    template): changing them changes the step. Other objects are left out: their repr
    may differ from one process to the next."""
    values: list[Any] = list(getattr(fn, "__defaults__", None) or ())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    plain = [repr(v) for v in values if _is_plain(v)]
    return "|" + ",".join(plain) if plain else ""


def _is_plain(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):  # not lists: mutable state is not definition
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _code_repr(code: types.CodeType) -> str:
    consts = [_code_repr(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


def flow_fingerprints(plan: CompiledFlow) -> list[str]:
    """Every step's fingerprint, in plan order; computed once per compiled flow."""
    cached = plan.memo.get("fingerprints")
    if cached is None:
        cached = plan.memo["fingerprints"] = [step_fingerprint(s) for s in plan.steps]
    return list(cached)
