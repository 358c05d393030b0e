"""What an eval compares: named variants (role bindings), and sweeps of a flow parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from trellis.config import ModelBinding
from trellis.errors import ConfigurationError, InputError
from trellis.flow.flow import Flow
from trellis.redact import redact_options

__all__ = ["Sweep", "Variant", "expand", "parse_sweep", "parse_variant"]


@dataclass(frozen=True, slots=True)
class Variant:
    """One configuration to evaluate: role bindings and parameter values.

    ``name`` is ``NAME`` or, for a sweep setting, ``NAME@PARAM=value``; ``base`` is
    ``NAME``."""

    name: str
    bindings: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    base: str = ""

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.name)

    def safe_bindings(self) -> dict[str, str]:
        """The bindings without secret options (API keys...): what may be recorded."""
        safe: dict[str, str] = {}
        for role, spec in self.bindings.items():
            binding = ModelBinding.parse(spec)
            kept, _ = redact_options(binding.options)
            safe[role] = str(ModelBinding(binding.provider, binding.model, kept))
        return safe


@dataclass(frozen=True, slots=True)
class Sweep:
    param: str
    values: tuple[Any, ...]


def parse_variant(text: str) -> Variant:
    """``NAME=ROLE=binding,ROLE=binding`` (``NAME=`` alone: the configured bindings)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(
            f'--variant {text!r} must be NAME="ROLE=provider:model,ROLE=provider:model"'
        )
    if "@" in name:
        raise InputError(f"--variant name {name!r} cannot contain '@' (it marks sweep values)")
    bindings: dict[str, str] = {}
    for part in (p.strip() for p in rest.split(",")):
        if not part:
            continue
        role, eq, spec = part.partition("=")
        if not eq or not role.strip() or not spec.strip():
            raise InputError(f"--variant {name}: {part!r} must be ROLE=provider:model")
        try:
            ModelBinding.parse(spec)
        except ConfigurationError as exc:
            raise InputError(f"--variant {name}: role {role.strip()!r}: {exc}") from exc
        bindings[role.strip()] = spec.strip()
    return Variant(name, bindings)


def parse_sweep(text: str, flow: Flow) -> Sweep:
    """``PARAM=LOW:HIGH:STEP`` (both ends included) or ``PARAM=v1,v2,...``; ``PARAM``
    must be a declared ``tl.Param`` of ``flow``."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not spec.strip():
        raise InputError(f"--sweep {text!r} must be PARAM=LOW:HIGH:STEP or PARAM=v1,v2,...")
    param = flow.params.get(name)
    if param is None:
        declared = ", ".join(sorted(flow.params)) or "none (declare one with tl.Param)"
        raise InputError(
            f"--sweep {name!r}: flow {flow.name!r} has no parameter {name!r}; its "
            f"parameters: {declared}"
        )
    try:
        if ":" in spec:
            parts = [Decimal(p) for p in spec.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise InputError(f"--sweep {name}: LOW:HIGH:STEP needs LOW <= HIGH and STEP > 0")
            low, high, step = parts
            count = int((high - low) / step) + 1
            raw: list[Decimal] = [low + step * i for i in range(count)]
            values: list[Any] = [_typed(param.annotation, v) for v in raw]
        else:
            values = [_typed(param.annotation, Decimal(v.strip())) for v in spec.split(",")]
    except InvalidOperation as exc:
        raise InputError(f"--sweep {name}: {spec!r} is not numbers") from exc
    if len(values) > 1000:
        raise InputError(f"--sweep {name}: {len(values)} values; at most 1000")
    for value in values:
        try:
            param.check(value)
        except Exception as exc:
            raise InputError(f"--sweep: {exc}") from exc
    return Sweep(name, tuple(values))


def _typed(annotation: Any, value: Decimal) -> Any:
    if annotation is int:
        if value != value.to_integral_value():
            raise InputError(f"{value} is not an integer")
        return int(value)
    return float(value)


def expand(
    variants: list[Variant], sweep: Sweep | None, *, reference: str | None = None
) -> list[Variant]:
    """Every variant; with a sweep, every (variant, value) pair named ``NAME@PARAM=value``,
    except the reference, which is measured once at the parameter's default (a baseline
    does not get tuned)."""
    if sweep is None:
        return variants
    out: list[Variant] = []
    for v in variants:
        if v.name == reference:
            out.append(v)
            continue
        out.extend(
            Variant(
                f"{v.name}@{sweep.param}={value:g}",
                v.bindings,
                {**v.params, sweep.param: value},
                v.base,
            )
            for value in sweep.values
        )
    return out
