"""The throwaway cluster of the Postgres tests and benchmarks: how it runs, and the clear
message (never a silent skip) where the server binaries are missing."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from trellis.store import pgcluster
from trellis.store.pgcluster import INSTALL_HINT, ClusterUnavailable, PostgresCluster


def test_missing_binaries_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    with pytest.raises(ClusterUnavailable) as info:
        pgcluster.start_cluster()
    assert str(info.value) == INSTALL_HINT
    assert "apt-get install postgresql" in INSTALL_HINT


def test_as_root_without_a_postgres_user_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    monkeypatch.setattr(pgcluster.os, "geteuid", lambda: 0)

    def no_user(name: str) -> None:
        raise KeyError(name)

    monkeypatch.setattr(pgcluster.pwd, "getpwnam", no_user)
    with pytest.raises(ClusterUnavailable, match="refuses to run as root"):
        pgcluster.start_cluster()


def test_the_cluster_listens_on_loopback_only_without_fsync(
    postgres_cluster: PostgresCluster,
) -> None:
    with psycopg.connect(postgres_cluster.url()) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("listen_addresses", "fsync", "unix_socket_directories", "port")
        }
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "unix_socket_directories": str(postgres_cluster.root),
        "port": str(postgres_cluster.port),
    }


def test_database_names_are_plain_identifiers(postgres_cluster: PostgresCluster) -> None:
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        postgres_cluster.create_database('x"; DROP DATABASE postgres; --')
