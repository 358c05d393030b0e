"""A throwaway PostgreSQL cluster for the Postgres store's tests, once per test session.

Each pytest-xdist worker starts its own (``initdb`` in a temporary directory, a free
loopback port, ``fsync=off``; see :mod:`trellis.store.pgcluster`), so ``pytest -n 2`` needs
no coordination; it is stopped and removed when the session ends. Where the server binaries
are missing, every test using it is skipped with the reason and how to install them
(``-ra`` prints it); under CI (``CI`` set) that is a failure instead, never a silent skip.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from trellis.store.pgcluster import ClusterUnavailable, PostgresCluster, start_cluster

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL store tests skipped: {exc}")
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def new_postgres_database(postgres_cluster: PostgresCluster) -> Callable[[], str]:
    """Create a new, empty database of the session's cluster; return its URL."""

    def create() -> str:
        return postgres_cluster.create_database(f"t{os.getpid()}_{next(_names)}")

    return create


@pytest.fixture
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """The URL of a new, empty database (for a test that needs a whole database)."""
    return new_postgres_database()
