"""Where the CLI records runs: the ``--store`` option's value, found and opened.

The store a command uses is, in order: ``--store``; ``$TRELLIS_STORE``; a ``[store]``
table's ``url`` in the project's ``trellis.toml``; the ``.trellis/trellis.db`` of the
project, found by looking upward from the working directory for a ``.trellis/`` folder (as
git looks for ``.git/``; the search stops at the folder holding ``.git`` and at the home
directory, so a project never picks up a store from outside it); else
``sqlite:///.trellis/trellis.db`` in the working directory (created there by the first
recorded run). A relative ``[store]`` URL is relative to the
``trellis.toml`` that names it.

:func:`open_cli_store` opens (creating if needed) that store; :func:`open_existing_store`
(and :func:`reading_store`, :func:`store_of_run` around it) is for the commands that only
read (``runs``, ``show``, ``cache``): they never create a database.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from trellis.cli.errors import CliError
from trellis.errors import StoreError, TrellisError
from trellis.store import DEFAULT_STORE_URL, Store, open_store, parse_store_url
from trellis.store.base import RunRow

__all__ = [
    "PROJECT_DIR",
    "find_run",
    "open_cli_store",
    "open_existing_store",
    "project_config",
    "reading_store",
    "store_of_run",
    "store_url",
]

#: The folder that marks a project's store (like ``.git/``).
PROJECT_DIR = ".trellis"
_DEFAULT_FILE = "trellis.db"
_CONFIG = "trellis.toml"


def store_url(url: str | None) -> str:
    """The store a command uses: ``--store``, else ``$TRELLIS_STORE``, else the project's
    (``[store]`` in ``trellis.toml``, else the nearest ``.trellis/`` folder upward), else
    the default in the working directory."""
    return url or os.environ.get("TRELLIS_STORE") or _project_store() or DEFAULT_STORE_URL


def _project_folders(start: Path | None = None) -> Iterator[Path]:
    """The working directory, then its parents up to the project's root: the first
    folder holding a ``.trellis/`` folder or a ``.git``, or the home folder (nothing
    above it is the project's)."""
    here = (start or Path.cwd()).resolve()
    home = Path.home().resolve()
    for folder in (here, *here.parents):
        yield folder
        if (folder / PROJECT_DIR).is_dir() or (folder / ".git").exists() or folder == home:
            return


def _trusted(path: Path, here: Path) -> bool:
    """Whether ``path`` (a ``trellis.toml`` or ``.trellis/`` found while walking up) may
    decide for the working directory: its own always; one above only when it is the
    user's own and not in a folder anyone may write to (``/tmp``), as git refuses a
    repository another user owns. A configuration names code to import (providers) and
    where keys go (``base_url``): a file someone else planted above must not."""
    if path.parent == here:
        return True
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # no owners to compare (Windows)
        return True
    try:
        mine = path.stat().st_uid == getuid()
        shared = bool(path.parent.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return False
    return mine and not shared


def project_config(start: Path | None = None) -> Path | None:
    """The project's ``trellis.toml``: the first one walking up from the working
    directory to the project's root (as git finds its repository), so a command run
    from a subdirectory binds the project's roles and uses its store alike. One above
    the working directory counts only if it is the user's own (:func:`_trusted`)."""
    here = (start or Path.cwd()).resolve()
    for folder in _project_folders(here):
        candidate = folder / _CONFIG
        if candidate.is_file() and _trusted(candidate, here):
            return candidate
    return None


def _project_store(start: Path | None = None) -> str | None:
    """The store of the project the working directory is in: walking up from it, the
    first folder holding a ``trellis.toml`` with a ``[store]`` url, or a ``.trellis/``
    folder, decides. ``None`` when none does (or it is the working directory's own
    default, which needs no spelling out)."""
    here = (start or Path.cwd()).resolve()
    for folder in _project_folders(here):
        config = folder / _CONFIG
        configured = _configured_store(config) if _trusted(config, here) else None
        if configured is not None:
            return configured
        if (folder / PROJECT_DIR).is_dir() and _trusted(folder / PROJECT_DIR, here):
            return None if folder == here else f"sqlite:///{folder / PROJECT_DIR / _DEFAULT_FILE}"
    return None


def _configured_store(config: Path) -> str | None:
    """``[store] url = "..."`` of a ``trellis.toml`` (a relative SQLite path or URL is
    relative to that file's folder)."""
    if not config.is_file():
        return None
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # reported by the command that loads the configuration
    table = data.get("store")
    if table is None:
        return None
    url = table.get("url") if isinstance(table, dict) else None
    if not isinstance(url, str) or not url.strip():
        raise CliError(f'{config}: [store] needs url = "sqlite:///path/to/trellis.db"')
    return _relative_to(url.strip(), config.parent)


def _relative_to(url: str, folder: Path) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and not rest.startswith(":memory:"):
            return f"sqlite:///{folder / rest}"
        return url
    if "://" not in url and url.endswith(".db") and not Path(url).is_absolute():
        return str(folder / url)
    return url


def open_cli_store(url: str | None) -> Store:
    """Open (creating if needed) the store; a bad URL or database is one CliError."""
    spec = store_url(url)
    try:
        return open_store(spec)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # e.g. its folder cannot be created
        raise CliError(f"cannot open the store {spec!r}: {exc.strerror or exc}") from None


def _sqlite_file(spec: str) -> Path | None:
    """The database file a SQLite store URL names (None: not a SQLite file store)."""
    try:
        location = parse_store_url(spec)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    path = location.path
    return Path(path) if path and path != ":memory:" else None


def open_existing_store(url: str | None) -> Store | None:
    """The store if it exists, for commands that only read; ``None`` when its SQLite file
    does not exist (nothing was recorded there), so that reading never creates one."""
    spec = store_url(url)
    path = _sqlite_file(spec)
    if path is not None and not path.exists():
        # Still check the URL's options (on an in-memory database with the same options).
        query = urlsplit(spec).query if "://" in spec else ""
        open_cli_store("sqlite:///:memory:" + (f"?{query}" if query else "")).close()
        return None
    return open_cli_store(spec)


@contextmanager
def reading_store(url: str | None) -> Iterator[tuple[Store | None, str]]:
    """The existing store (None when nothing was recorded there) and its URL, for a block
    that reads it: the store is closed when the block ends, and a store error inside the
    block is one CliError."""
    opened = open_existing_store(url)
    try:
        yield opened, store_url(url) if opened is None else opened.url
    except TrellisError as exc:
        raise CliError(str(exc)) from None
    finally:
        if opened is not None:
            opened.close()


@contextmanager
def store_of_run(url: str | None, run: str) -> Iterator[Store]:
    """The existing store a command reads run ``run`` from, closed when the block ends;
    ``no run 'ID' in URL`` when the store does not exist (nothing was recorded there)."""
    opened = open_existing_store(url)
    if opened is None:
        raise CliError(f"no run {run!r} in {store_url(url)}")
    try:
        yield opened
    finally:
        opened.close()


def find_run(opened: Store, run: str) -> RunRow:
    """Run ``run``'s row; ``no run 'ID' in URL`` when the store has none."""
    row = opened.get_run(run)
    if row is None:
        raise CliError(f"no run {run!r} in {opened.url}")
    return row
