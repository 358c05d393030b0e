"""Output files written so that nothing is ever half-written, and never over the input.

:func:`write_atomic` writes a temporary file next to the target, fsyncs it and renames it
over the target (``os.replace``): a kill, a full disk or an encoding error at any point
leaves either the previous file or the complete new one, never a truncated file, and the
temporary file is removed on failure. :func:`check_not_input` refuses an ``--output`` that
is the input file (the same path once resolved, or the same file through another link).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from trellis.cli.errors import CliError

__all__ = ["check_not_input", "check_output_path", "write_atomic"]


def check_output_path(path: Path | None, input_file: Path | None = None) -> None:
    """Fail before running anything if the results could not be written (or would be
    written over the input file)."""
    if path is None or str(path) == "-":
        return
    check_not_input(path, input_file)
    if path.is_dir():
        raise CliError(f"--output {str(path)!r} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"--output {str(path)!r}: folder {str(parent)!r} does not exist")


def write_atomic(path: Path, text: str | Iterable[str], *, what: str = "--output") -> None:
    """Replace ``path`` with ``text`` (UTF-8; or its pieces, written as they come)
    atomically; a failure is a CliError and leaves whatever was there before untouched. A
    symbolic link is written through (its target is replaced); a device or pipe
    (``/dev/stdout``) is written directly."""
    data = _encoded([text] if isinstance(text, str) else text)
    if path.exists() and not path.is_file():  # (both follow symbolic links)
        _write_directly(path, data, what)
        return
    if path.is_symlink():
        path = path.resolve()
    folder = path.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CliError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.writelines(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(OSError):  # keep the permissions of the file replaced
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CliError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _encoded(pieces: Iterable[str]) -> Iterator[bytes]:
    return (piece.encode("utf-8") for piece in pieces)


def _write_directly(path: Path, data: Iterable[bytes], what: str) -> None:
    try:
        with path.open("wb") as out:
            out.writelines(data)
    except OSError as exc:
        raise CliError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def check_not_input(output: Path | None, inputs: Path | None) -> None:
    """Refuse ``--output`` naming the input file: writing it would destroy the items."""
    if output is None or inputs is None or str(output) == "-":
        return
    same = output.resolve() == inputs.resolve()
    if not same:
        with contextlib.suppress(OSError):
            same = output.exists() and os.path.samefile(output, inputs)
    if same:
        raise CliError(
            f"--output {str(output)!r} is the input file {str(inputs)!r}: writing the "
            "results would destroy the items; give another file"
        )
