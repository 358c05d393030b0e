"""The sample answer a command line shows: the schema sampler's walk with fixed choices
(``placeholder_value``), which ``cli/render.sample_answer`` uses instead of its own."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from trellis.cli.render import answer_commands, sample_answer
from trellis.models.schema_sample import placeholder_value


class Owner(BaseModel):
    name: str
    team: str | None = None


class Triage(BaseModel):
    priority: Literal["low", "high"]
    owner: str
    note: str | None = None


class Ticket(BaseModel):
    severity: int = Field(ge=1, le=5)
    weight: float = Field(gt=0.5)
    urgent: bool
    tags: list[str] = Field(min_length=2)
    owner: Owner
    maybe: Owner | None


def test_required_fields_first_choices_and_dots() -> None:
    assert placeholder_value(Triage.model_json_schema()) == {"priority": "low", "owner": "..."}


def test_refs_are_followed_and_bounds_are_honoured() -> None:
    value = placeholder_value(Ticket.model_json_schema())
    assert value == {
        "severity": 1,
        "weight": 1.5,
        "urgent": True,
        "tags": ["...", "..."],
        "owner": {"name": "..."},
        "maybe": {"name": "..."},
    }
    Ticket.model_validate(value)  # a template that also validates


def test_every_field_when_none_is_required_and_allof_is_merged() -> None:
    schema: dict[str, Any] = {
        "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"b": {"type": "integer"}}}],
        "$defs": {"A": {"type": "object", "properties": {"a": {"type": "string"}}}},
    }
    assert placeholder_value(schema) == {"a": "...", "b": 0}


def test_a_schema_it_cannot_walk_gives_none() -> None:
    assert placeholder_value({"$ref": "https://example.com/schema.json"}) is None


def test_the_cli_sample_answer_is_the_placeholder() -> None:
    schema = Triage.model_json_schema()
    assert sample_answer(schema) == placeholder_value(schema)
    defs = Ticket.model_json_schema()["$defs"]
    assert sample_answer({"$ref": "#/$defs/Owner"}, defs) == {"name": "..."}
    [line] = answer_commands("a1", "triage", {"type": "Triage", "schema": schema})
    assert line == """trellis reply a1 triage --input '{"priority": "low", "owner": "..."}'"""
