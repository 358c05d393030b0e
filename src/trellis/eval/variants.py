"""What an eval compares: named variants (role bindings), and sweeps of a flow parameter."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from trellis.config import Config, ModelBinding
from trellis.errors import ConfigurationError, FlowDefinitionError, InputError
from trellis.flow.flow import Flow
from trellis.flow.params import Param
from trellis.redact import redact_options

__all__ = ["Sweep", "Variant", "expand", "parse_sweep", "parse_variant", "resolve_bindings"]


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
            if ":" not in spec:  # a role of the configuration
                safe[role] = spec
                continue
            binding = ModelBinding.parse(spec)
            kept, _ = redact_options(binding.options)
            safe[role] = str(ModelBinding(binding.provider, binding.model, kept))
        return safe


@dataclass(frozen=True, slots=True)
class Sweep:
    param: str
    values: tuple[Any, ...]


def parse_variant(text: str, params: Mapping[str, Param] | None = None) -> Variant:
    """``NAME=ROLE=binding,ROLE=binding,PARAM=value``.

    A binding is ``provider:model[?options]`` or the name of a role of the configuration
    (``large=gpt4`` binds ``large`` to whatever ``gpt4`` is bound to). An entry whose key
    is one of the flow's ``params`` sets that parameter for the variant (a JSON value:
    ``strictness=0``). ``NAME=`` alone is the configured bindings."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(
            f'--variant {text!r} must be NAME="ROLE=provider:model,ROLE=provider:model"'
        )
    if "@" in name:
        raise InputError(f"--variant name {name!r} cannot contain '@' (it marks sweep values)")
    bindings: dict[str, str] = {}
    values: dict[str, Any] = {}
    for part in (p.strip() for p in rest.split(",")):
        if not part:
            continue
        key, eq, spec = part.partition("=")
        key, spec = key.strip(), spec.strip()
        if not eq or not key or not spec:
            raise InputError(f"--variant {name}: {part!r} must be ROLE=provider:model")
        if params is not None and key in params:
            try:
                value = json.loads(spec)
            except json.JSONDecodeError:
                value = spec
            try:
                params[key].check(value)
            except FlowDefinitionError as exc:
                raise InputError(f"--variant {name}: {exc}") from exc
            values[key] = value
            continue
        if ":" in spec:
            try:
                ModelBinding.parse(spec)
            except ConfigurationError as exc:
                raise InputError(f"--variant {name}: role {key!r}: {exc}") from exc
        bindings[key] = spec
    return Variant(name, bindings, values)


def resolve_bindings(variant: Variant, config: Config) -> dict[str, Any]:
    """The variant's bindings for ``Engine(models=...)``: a role name is replaced by what
    that role is bound to in ``config`` (a ConfigurationError names an unknown one)."""
    out: dict[str, Any] = {}
    for role, spec in variant.bindings.items():
        if ":" in spec:
            out[role] = spec
            continue
        try:
            out[role] = config.resolve(spec)
        except ConfigurationError as exc:
            raise ConfigurationError(f"variant {variant.name!r}: {role}={spec}: {exc}") from exc
    return out


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
    except the reference and variants that set the parameter themselves, which are
    measured once (a baseline does not get tuned)."""
    if sweep is None:
        return variants
    out: list[Variant] = []
    for v in variants:
        if v.name == reference or sweep.param in v.params:
            out.append(v)  # a baseline, or a variant that fixes the parameter itself
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
