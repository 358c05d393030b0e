"""Find the flow a command names: ``path/to/file.py:flow`` or ``package.module:flow``.

A file is imported under a fresh module name with its own directory first on ``sys.path``,
so a flow file can import its siblings. Every way this can go wrong becomes one
:class:`CliError` line: missing file, import error, missing attribute, not a flow, or an
invalid flow definition.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from trellis.cli.errors import CliError
from trellis.errors import FlowDefinitionError
from trellis.flow.flow import Flow
from trellis.loading import FILE_MODULE_MARK
from trellis.tracebacks import user_location

__all__ = ["Target", "load_flow", "parse_target"]

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed TARGET: where the flow lives and which attribute it is (None: the only one)."""

    source: str
    attribute: str | None
    is_file: bool

    def __str__(self) -> str:
        return self.source if self.attribute is None else f"{self.source}:{self.attribute}"


def parse_target(text: str) -> Target:
    spec = text.strip()
    if not spec:
        raise CliError("TARGET is empty; give 'path/to/file.py:flow' or 'package.module:flow'")
    source, sep, attribute = spec.rpartition(":")
    if not sep or any(c in attribute for c in "/\\") or attribute.endswith(".py"):
        source, attribute = spec, ""  # no attribute (a Windows drive colon is not one)
    if not source:
        raise CliError(f"TARGET {text!r} names no file or module before ':'")
    if attribute and not all(part.isidentifier() for part in attribute.split(".")):
        raise CliError(f"TARGET {text!r}: {attribute!r} is not a Python name")
    is_file = source.endswith(".py") or "/" in source or os.sep in source or Path(source).is_file()
    return Target(source, attribute or None, is_file)


def load_flow(text: str) -> tuple[Flow, Target]:
    """Import TARGET and return its validated flow, or raise :class:`CliError`."""
    target = parse_target(text)
    module = _import_file(target.source) if target.is_file else _import_module(target.source)
    flow = _pick_flow(module, target)
    try:
        flow.validate()
    except FlowDefinitionError as exc:
        raise CliError(f"flow {flow.name!r} in {target.source} is invalid: {exc}") from None
    return flow, target


def _import_file(source: str) -> ModuleType:
    path = Path(source)
    if not path.exists():
        raise CliError(f"{source} does not exist")
    if path.is_dir():
        raise CliError(f"{source} is a directory; name a Python file, e.g. {source}/flow.py:flow")
    resolved = path.resolve()
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot import {source}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Loaded from a path, not importable by name elsewhere: an executor's workers are sent
    # its code by value (trellis.cluster.ray_executor).
    module.__dict__[FILE_MODULE_MARK] = str(resolved)
    sys.modules[name] = module  # pydantic and dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise CliError(_import_failure(source, exc)) from None
    return module


def _module_name(path: Path) -> str:
    """The name the file is imported under: its own (``triage`` for ``triage.py``), as
    ``python triage.py``'s siblings would import it, so messages and reprs name the
    user's module (``triage.Sentiment``); a private name only when that one is taken (a
    module of that name is loaded, or another file or package has it)."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin and Path(found.origin).resolve() == path:
            return stem
    safe = "".join(c if c.isalnum() else "_" for c in stem)
    return f"_trellis_target_{next(_counter)}_{safe}"


def _import_module(source: str) -> ModuleType:
    if not all(part.isidentifier() for part in source.split(".")):
        raise CliError(
            f"{source!r} is neither a Python file (path/to/file.py) nor a module name "
            "(package.module)"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`: modules under the current directory
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (source == exc.name or source.startswith(exc.name + ".")):
            raise CliError(
                f"no module named {source!r} (for a file, give its path: path/to/file.py:flow)"
            ) from None
        raise CliError(_import_failure(source, exc)) from None
    except Exception as exc:
        raise CliError(_import_failure(source, exc)) from None


def _import_failure(source: str, exc: Exception) -> str:
    if isinstance(exc, FlowDefinitionError):
        return f"{source}: invalid flow definition: {exc}"
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}, line {exc.lineno})" if exc.lineno else ""
        return f"cannot import {source}: SyntaxError: {exc.msg}{where}"
    frame = user_location(exc)  # the user's line, not Trellis's (a bad Budget(...) call)
    where = f" (at {_short(frame.file)}:{frame.line})" if frame is not None else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"cannot import {source}: {detail}{where}"


def _short(filename: str) -> str:
    try:
        return os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename


def _flows_in(module: ModuleType) -> list[str]:
    return [name for name, value in vars(module).items() if isinstance(value, Flow)]


def _pick_flow(module: ModuleType, target: Target) -> Flow:
    found = _flows_in(module)
    shown = ", ".join(found) or "none"
    if target.attribute is None:
        if len(found) == 1:
            flow: Flow = getattr(module, found[0])
            return flow
        if not found:
            raise CliError(f"{target.source} defines no tl.Flow")
        raise CliError(
            f"{target.source} defines several flows ({shown}); pick one: {target.source}:{found[0]}"
        )
    value: Any = module
    for part in target.attribute.split("."):
        if not hasattr(value, part):
            raise CliError(
                f"{target.source} has no attribute {target.attribute!r} (flows found: {shown})"
            )
        value = getattr(value, part)
    if not isinstance(value, Flow):
        raise CliError(f"{target} is {_kind(value)}, not a tl.Flow (flows found: {shown})")
    return value


def _kind(value: object) -> str:
    if isinstance(value, type):
        return "a class"
    if isinstance(value, ModuleType):
        return "a module"
    if callable(value) and hasattr(value, "__code__"):
        return "a function"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
