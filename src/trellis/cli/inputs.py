"""Flow inputs from the command line: one ``--input`` object, or a JSONL file of items.

Everything is checked before anything runs: each line must be a JSON object, and each
object must be valid inputs for the flow; the first problem is reported with its line.
Pathological JSON (nested thousands of levels deep, an integer of more than 4,300 digits)
is such a problem too: one line naming where it is, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trellis.cli.errors import CliError
from trellis.errors import InputError
from trellis.flow.flow import Flow

__all__ = ["MAX_DEPTH", "Item", "load_json", "parse_input", "read_items"]

#: How deeply inputs may nest (the store's JSON encoder stops at about 255 levels).
MAX_DEPTH = 200


class Item:
    """One item of a batch: its inputs and where it came from (``file:line``)."""

    __slots__ = ("inputs", "where")

    def __init__(self, inputs: dict[str, Any], where: str) -> None:
        self.inputs = inputs
        self.where = where


def load_json(text: str, where: str) -> Any:
    """``text`` as a JSON value. Invalid JSON raises ``json.JSONDecodeError`` (the caller
    words it); JSON that ``json.loads`` cannot hold is a CliError starting with ``where``
    (``--input``, ``items.jsonl:3``)."""
    too_deep = CliError(f"{where}: the JSON is nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # e.g. an integer over sys.get_int_max_str_digits() digits
        message = str(exc).split(";")[0]
        raise CliError(f"{where}: the JSON cannot be read: {message}") from None
    if _depth(value) > MAX_DEPTH:
        raise too_deep
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar: 0, ``[]``: 1), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def _check_inputs(flow: Flow, inputs: dict[str, Any], where: str) -> None:
    try:
        flow.validate_inputs(inputs)
    except InputError as exc:
        raise CliError(f"{where}: {exc}") from None
    except RecursionError:
        raise CliError(f"{where}: the inputs are nested too deeply to be checked") from None


def parse_input(flow: Flow, text: str) -> dict[str, Any]:
    """``--input '{"feedback": "..."}'`` -> validated-against-the-flow inputs."""
    try:
        value = load_json(text, "--input")
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
            value = load_json(line, where)
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
