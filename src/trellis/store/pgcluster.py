"""A throwaway local PostgreSQL cluster, for tests and benchmarks of :class:`PostgresStore`.

:func:`start_cluster` finds the server binaries (``pg_config --bindir``, else the usual
Debian and Homebrew places), runs ``initdb`` in a new temporary directory, and starts
``postgres`` listening on ``127.0.0.1`` only, on a free port, with its Unix socket in that
directory and ``fsync=off`` (it is thrown away: speed over crash safety). Authentication is
``trust`` for the cluster's own superuser, which no other machine can reach.
:meth:`PostgresCluster.stop` stops it and removes the directory::

    with start_cluster() as cluster:
        url = cluster.create_database("trellis")  # postgresql://trellis@127.0.0.1:PORT/trellis

PostgreSQL refuses to run as root. When this process is root, the cluster's directory is
given to the ``postgres`` system user (created by the ``postgresql`` package) and
``initdb`` / ``pg_ctl`` run as that user through ``runuser``. Where the binaries are missing,
:class:`ClusterUnavailable` says how to install them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "INSTALL_HINT",
    "ClusterUnavailable",
    "PostgresCluster",
    "find_bindir",
    "start_cluster",
]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them with "
    "`apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql@15` (macOS), "
    "or put `pg_config` on PATH"
)

#: The cluster's superuser (and the owner of the databases it creates).
SUPERUSER = "trellis"

_SEARCHED = ("/usr/lib/postgresql/*/bin", "/usr/local/opt/postgresql*/bin", "/opt/homebrew/bin")


class ClusterUnavailable(RuntimeError):
    """No throwaway cluster can be started here (no binaries, or no user to run them as)."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``; ``None`` if absent."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    for pattern in _SEARCHED:
        candidates.extend(sorted(Path("/").glob(pattern.lstrip("/")), reverse=True))
    for where in candidates:
        if all((where / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return where
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """A running throwaway cluster; :meth:`stop` (or leaving the ``with``) removes it."""

    bindir: Path
    root: Path  # the temporary directory: data/, the socket, the server log
    port: int
    run_as: str | None  # the system user running the server (when this process is root)
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of a database of this cluster (TCP on loopback)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database (a plain identifier) and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: use letters, digits and underscores")
        import psycopg  # the [postgres] extra; only needed once a cluster runs

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # an identifier checked above
        return self.url(name)

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *args] if self.run_as else list(args)

    def _start(self) -> None:
        options = " ".join(
            (
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c shared_buffers=32MB",
                "-c max_connections=100",
            )
        )
        subprocess.run(
            self._command(
                str(self.bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run(
                self._command(
                    str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data_dir)
                ),
                capture_output=True,
                timeout=60,
            )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_cluster(*, attempts: int = 3) -> PostgresCluster:
    """Initialise and start a throwaway cluster (see the module docstring)."""
    bindir = find_bindir()
    if bindir is None:
        raise ClusterUnavailable(INSTALL_HINT)
    run_as: str | None = None
    uid = gid = -1
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable(
                "running as root, and PostgreSQL refuses to run as root: there is no "
                "`postgres` system user to run it as (`apt-get install postgresql` creates it)"
            ) from None
        if shutil.which("runuser") is None:
            raise ClusterUnavailable("running as root and `runuser` is missing (util-linux)")
        run_as, uid, gid = "postgres", user.pw_uid, user.pw_gid
    root = Path(tempfile.mkdtemp(prefix="trellis-pg-"))
    try:
        if run_as:
            os.chown(root, uid, gid)
        cluster = PostgresCluster(bindir, root, 0, run_as)
        subprocess.run(
            cluster._command(
                str(bindir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        for attempt in range(attempts):
            cluster.port = _free_port()
            try:
                cluster._start()
                return cluster
            except subprocess.CalledProcessError as exc:
                if attempt == attempts - 1:  # e.g. the port was taken in between, thrice
                    log = cluster.log_file.read_text(errors="replace")[-2000:]
                    raise ClusterUnavailable(
                        f"postgres did not start: {exc.stderr!r}; server log: {log}"
                    ) from exc
                time.sleep(0.2)
        raise AssertionError("unreachable")  # pragma: no cover
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
