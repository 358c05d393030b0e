"""Structured output: the JSON schema sent for an output type, parsing and re-ask feedback."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from trellis.errors import ConfigurationError, FailureMode
from trellis.flow.types import describe

__all__ = ["OutputSpec", "ParseFailure", "output_spec"]

_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_CACHE: dict[Any, OutputSpec] = {}


@dataclass(frozen=True, slots=True)
class ParseFailure:
    mode: FailureMode
    error: str


class OutputSpec:
    """An output type with its schema and validator, built once per type."""

    __slots__ = ("adapter", "name", "schema", "tp")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        try:
            self.adapter: TypeAdapter[Any] = TypeAdapter(tp)
            self.schema: dict[str, Any] = self.adapter.json_schema()
        except Exception as exc:
            raise ConfigurationError(
                f"output={describe(tp)} has no JSON schema ({exc}); use a Pydantic model, a "
                "dataclass or builtin types"
            ) from exc
        title = self.schema.get("title")
        self.name = re.sub(r"[^A-Za-z0-9_-]", "_", title if isinstance(title, str) else "output")

    def parse(self, text: str) -> Any | ParseFailure:
        """The validated value, or why the reply is malformed / invalid."""
        body = text.strip()
        if body.startswith("```"):
            fenced = _FENCE.match(body)
            if fenced:
                body = fenced.group(1).strip()
        try:
            # pydantic-core's parser: the same values as json.loads for valid JSON, several
            # times faster; anything it refuses goes through json.loads, whose error (or
            # value, for what only json.loads reads) is what the call reports.
            data = from_json(body)
        except (ValueError, TypeError):  # TypeError: a str subclass
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, RecursionError) as exc:
                return ParseFailure(FailureMode.MALFORMED, f"the reply is not valid JSON: {exc}")
        try:
            return self.adapter.validate_python(data)
        except ValidationError as exc:
            return ParseFailure(FailureMode.INVALID, _describe_errors(exc))
        except Exception as exc:  # a validator that raised something else: still a re-ask
            return ParseFailure(
                FailureMode.INVALID, f"validating the reply raised {type(exc).__name__}: {exc}"
            )


def output_spec(tp: Any) -> OutputSpec:
    try:
        spec = _CACHE.get(tp)
    except TypeError:  # unhashable annotation: build each time
        return OutputSpec(tp)
    if spec is None:
        spec = _CACHE[tp] = OutputSpec(tp)
    return spec


def _describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"- {where}: {err['msg']}")
    return "the JSON does not match the schema:\n" + "\n".join(lines)


def reask_message(failure: ParseFailure, spec: OutputSpec) -> str:
    return (
        f"Your previous reply could not be used: {failure.error}\n"
        f"Reply again with only a JSON value matching this schema, no prose:\n"
        f"{json.dumps(spec.schema, separators=(',', ':'))}"
    )
