"""An eval's dataset: a JSONL file of flow inputs plus a label that never reaches a step."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trellis.errors import InputError

__all__ = ["Dataset", "EvalItem", "load_dataset"]


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One labelled item: the flow's inputs (the label taken out) and the label."""

    index: int
    inputs: dict[str, Any]
    label: Any


@dataclass(frozen=True, slots=True)
class Dataset:
    source: str
    label_field: str
    items: tuple[EvalItem, ...]
    ignored_fields: tuple[str, ...] = ()  # fields of the lines that are not flow inputs

    def __len__(self) -> int:
        return len(self.items)


def load_dataset(
    path: str | Path,
    label: str,
    *,
    flow_inputs: Iterable[str] | None = None,
    limit: int | None = None,
) -> Dataset:
    """Read ``path`` (JSONL: one object per line, blank lines skipped).

    ``label`` is removed from every line and kept apart: a line without it is an
    :class:`InputError` naming the line. With ``flow_inputs`` (the names the flow reads),
    other fields (an id, metadata) are left out of the inputs and listed in
    ``ignored_fields``, so they never reach a step either."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the dataset {file}: {exc}") from exc
    known = set(flow_inputs) if flow_inputs is not None else None
    ignored: dict[str, None] = {}
    items: list[EvalItem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{file}:{number} is not JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{file}:{number} must be a JSON object of flow inputs")
        if label not in obj:
            raise InputError(
                f"{file}:{number} has no label field {label!r} (fields: "
                f"{', '.join(sorted(obj)) or 'none'})"
            )
        gold = obj.pop(label)
        if known is not None:
            for name in [n for n in obj if n not in known]:
                ignored.setdefault(name, None)
                del obj[name]
        items.append(EvalItem(len(items), obj, gold))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"the dataset {file} has no items")
    return Dataset(str(file), label, tuple(items), tuple(ignored))
