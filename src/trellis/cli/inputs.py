"""Flow inputs from the command line: one ``--input`` object, or a JSONL file of items.

Everything is checked before anything runs: each line must be a JSON object, and each
object must be valid inputs for the flow; the first problem is reported with its line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trellis.cli.errors import CliError
from trellis.errors import InputError
from trellis.flow.flow import Flow

__all__ = ["Item", "parse_input", "read_items"]


class Item:
    """One item of a batch: its inputs and where it came from (``file:line``)."""

    __slots__ = ("inputs", "where")

    def __init__(self, inputs: dict[str, Any], where: str) -> None:
        self.inputs = inputs
        self.where = where


def _check_inputs(flow: Flow, inputs: dict[str, Any], where: str) -> None:
    try:
        flow.validate_inputs(inputs)
    except InputError as exc:
        raise CliError(f"{where}: {exc}") from None


def parse_input(flow: Flow, text: str) -> dict[str, Any]:
    """``--input '{"feedback": "..."}'`` -> validated-against-the-flow inputs."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(
            f"--input must be a JSON object of flow inputs, e.g. '{_example(flow)}'; "
            f"got {type(value).__name__}"
        )
    _check_inputs(flow, value, "--input")
    return value


def read_items(flow: Flow, path: Path) -> list[Item]:
    """Every non-blank line of ``path`` as a JSON object of flow inputs, all validated."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"input file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"input file {str(path)!r} is a directory") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"input file {str(path)!r} is not UTF-8 text: {exc.reason}") from None
    items: list[Item] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CliError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(value, dict):
            raise CliError(
                f"{where}: expected a JSON object of flow inputs like {_example(flow)}, "
                f"got {type(value).__name__}"
            )
        _check_inputs(flow, value, where)
        items.append(Item(value, where))
    if not items:
        raise CliError(f"input file {str(path)!r} has no items (one JSON object per line)")
    return items


def _example(flow: Flow) -> str:
    names = [n for n, spec in flow.compile().inputs.items() if spec.required] or list(
        flow.compile().inputs
    )
    return json.dumps({n: "..." for n in names[:2]})
