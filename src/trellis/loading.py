"""Loading a user's callable named ``module:function`` or ``path/to/file.py:function``.

Scorers (``trellis eval --score``), provider factories (``[providers]`` in
``trellis.toml``) and replay tokenizers are all named this way; they share this one
loader, so they accept the same forms and fail with the same kind of message.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trellis.errors import ConfigurationError

__all__ = ["FILE_MODULE_MARK", "load_callable"]


#: Set (to its path) in a module Trellis loaded from a file path rather than imported by
#: name: what cannot be imported by name in another process (see the Ray executor).
FILE_MODULE_MARK = "__trellis_source_file__"

def load_callable(spec: str, *, what: str) -> Callable[..., Any]:
    """The callable ``spec`` names. ``what`` says what it is for the error message, e.g.
    ``"scorer 'x.py:f'"``. A :class:`ConfigurationError` when the form is wrong, the
    module or file cannot be imported, the name is missing, or it is not callable."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigurationError(
            f"{what} must be 'module:function' or 'path/to/file.py:function', got {spec!r}"
        )
    try:
        module = _import_file(target) if target.endswith(".py") else importlib.import_module(target)
        value = getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise ConfigurationError(f"cannot load {what}: {exc}") from exc
    if not callable(value):
        raise ConfigurationError(f"{what} is not callable")
    return value  # type: ignore[no-any-return]


def _import_file(target: str) -> Any:
    path = Path(target)
    if not path.is_file():
        raise ImportError(f"no file {target}")
    name = f"_trellis_loaded_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.util.spec_from_file_location(name, path)
    if loader is None or loader.loader is None:
        raise ImportError(f"cannot load {target}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[name] = module  # pydantic and dataclasses look their module up by name
    try:
        loader.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
