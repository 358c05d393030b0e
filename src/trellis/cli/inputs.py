"""Flow inputs from the command line: one ``--input`` object, or a JSONL file of items.

Everything is checked before anything runs: each line must be a JSON object, and each
object must be valid inputs for the flow; the first problem is reported with its line.
Pathological JSON (nested thousands of levels deep, an integer of more than 4,300 digits)
is such a problem too: one line naming where it is, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from trellis.cli.errors import CliError
from trellis.errors import InputError
from trellis.flow.flow import Flow

__all__ = ["MAX_DEPTH", "Item", "ItemFile", "load_json", "parse_input", "read_items"]

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
    """Every non-blank line of ``path`` as a JSON object of flow inputs, all validated
    (in memory at once: a batch reads its items through :class:`ItemFile` instead)."""
    with ItemFile.open(flow, path) as items:
        return list(items)


class LazyItems(Sequence[Item]):
    """A sequence of items read when used: a subclass gives ``__len__`` and ``_item``."""

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...

    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("item index out of range")
        return self._item(index)

    def _item(self, index: int) -> Item:
        raise NotImplementedError


class ItemFile(LazyItems):
    """The items of a JSONL input file, checked once and read again as they are used.

    :meth:`open` reads the file once: every non-blank line must be a JSON object of valid
    inputs for the flow (the first problem is a :class:`CliError` naming its line, as
    :func:`read_items` says). It keeps, per item, where its line is in the file, its line
    number and a hash of its text (32 bytes an item), not the item: ``items[i]`` and
    iterating parse the lines again, from the file opened then. A line that no longer
    reads as it did when it was checked (the file was changed since) is a
    :class:`CliError` naming the file and the line, never another item's inputs."""

    def __init__(self, path: Path, file: io.BufferedReader) -> None:
        self.path = path
        self._file = file
        self._offsets = array("q")
        self._lengths = array("q")
        self._numbers = array("q")
        self._digests = bytearray()
        self._size = 0

    @classmethod
    def open(cls, flow: Flow, path: Path) -> ItemFile:
        """Check every line of ``path`` (see the class); the file stays open for reading
        the items again until :meth:`close`."""
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise CliError(f"input file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise CliError(f"input file {str(path)!r} is a directory") from None
        items = cls(path, file)
        try:
            items._check(flow)
        except BaseException:
            file.close()
            raise
        return items

    def _check(self, flow: Flow) -> None:
        path = self.path
        problem: CliError | None = None  # the first bad line, said once the file is UTF-8
        position = number = 0
        for raw in self._file:
            start = position
            position += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CliError(
                    f"input file {str(path)!r} is not UTF-8 text: {exc.reason}"
                ) from None
            if problem is not None:
                continue
            # Lines as str.splitlines() splits them (a lone \r, \u2028... end one too).
            parts = text.splitlines(keepends=True)
            offset = start
            for part in parts:
                number += 1
                size = len(raw) if len(parts) == 1 else len(part.encode("utf-8"))
                here, offset = offset, offset + size
                line = part.splitlines()[0]
                if not line.strip():
                    continue
                try:
                    _check_line(flow, line, f"{path}:{number}")
                except CliError as exc:
                    problem = exc
                    break
                data = line.encode("utf-8")
                self._offsets.append(here)
                self._lengths.append(len(data))
                self._numbers.append(number)
                self._digests += _digest(data)
        if problem is not None:
            raise problem
        if not self._offsets:
            raise CliError(f"input file {str(path)!r} has no items (one JSON object per line)")
        self._size = position

    def __len__(self) -> int:
        return len(self._offsets)

    def _item(self, index: int) -> Item:
        return self._read(index)

    def __iter__(self) -> Iterator[Item]:
        for index in range(len(self)):
            yield self._read(index)

    def where(self, index: int) -> str:
        """Item ``index``'s ``file:line`` (without reading it)."""
        return f"{self.path}:{self._numbers[index]}"

    def _read(self, index: int) -> Item:
        file = self._file
        number = self._numbers[index]
        if os.fstat(file.fileno()).st_size != self._size:
            raise self._changed(number)
        # Unbuffered: a buffer kept from an earlier read would hide a change since.
        fd = file.fileno()
        os.lseek(fd, self._offsets[index], os.SEEK_SET)
        data = os.read(fd, self._lengths[index])
        if _digest(data) != self._digests[index * _DIGEST : (index + 1) * _DIGEST]:
            raise self._changed(number)
        return Item(json.loads(data.decode("utf-8")), f"{self.path}:{number}")

    def _changed(self, number: int) -> CliError:
        return CliError(
            f"input file {str(self.path)!r} changed while the batch was using it (line "
            f"{number} no longer reads as it did when it was checked); leave the file alone "
            "until the batch is over, then run it again"
        )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ItemFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DIGEST = 8  # bytes of each line's hash


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def _check_line(flow: Flow, line: str, where: str) -> None:
    """One line of an input file: a JSON object of valid inputs for ``flow``."""
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


def _example(flow: Flow) -> str:
    names = [n for n, spec in flow.compile().inputs.items() if spec.required] or list(
        flow.compile().inputs
    )
    return json.dumps({n: "..." for n in names[:2]})
