"""Tunable flow parameters: ``tl.Param("escalate_below", default=0.7)``.

A parameter is a flow input with a default, marked as tunable: steps and ``when=``
conditions read it by name exactly like an input, a run that does not give it gets the
default, and ``trellis check`` and ``trellis eval --sweep`` know it as a setting of the
flow (not data of an item)::

    flow = tl.Flow("cascade", inputs={"question": str},
                   params=[tl.Param("escalate_below", default=0.7)])

    @flow.step(when=lambda check, escalate_below: check.score < escalate_below)
    async def large(question: str, llm: tl.LLM) -> str: ...
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

from trellis.errors import FlowDefinitionError

__all__ = ["Param"]


@dataclass(frozen=True, slots=True)
class Param:
    """A tunable setting of a flow: a name, a default and (optionally) a type.

    ``type`` defaults to the default's type (``float`` for ``0.7``); ``low``/``high`` are
    optional bounds that ``--sweep`` and input validation check; ``description`` says what
    it tunes."""

    name: str
    _: KW_ONLY
    default: Any
    type: Any = None
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise FlowDefinitionError(f"a parameter name must be an identifier: {self.name!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise FlowDefinitionError(f"parameter {self.name!r}: low > high")
        self.check(self.default, "default")

    @property
    def annotation(self) -> Any:
        return self.type if self.type is not None else type(self.default)

    def check(self, value: Any, what: str = "value") -> None:
        """Raise ``FlowDefinitionError`` if ``value`` is outside the declared bounds."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.low is not None and value < self.low:
                raise FlowDefinitionError(
                    f"parameter {self.name!r}: {what} {value!r} is below low={self.low:g}"
                )
            if self.high is not None and value > self.high:
                raise FlowDefinitionError(
                    f"parameter {self.name!r}: {what} {value!r} is above high={self.high:g}"
                )
