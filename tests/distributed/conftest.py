"""One local Ray (``num_cpus=2``) and one throwaway PostgreSQL cluster per test session.

Every test here is marked ``serial`` (``make test`` runs them after the parallel phase,
alone), so two pytest-xdist workers never start two Rays on one machine. Ray binds to
loopback only (the network guard allows nothing else), and its workers get ``tests/`` on
their ``PYTHONPATH`` so they import ``distributed.flows`` by name.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor tests need: pip install '.[ray]'")

from trellis.store.pgcluster import ClusterUnavailable, PostgresCluster, start_cluster  # noqa: E402

TESTS = Path(__file__).resolve().parent.parent
_names = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {exc}", pytrace=False)
        pytest.skip(f"Ray tests with a PostgreSQL store skipped: {exc}")
    with cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    """A new, empty database of the session's cluster."""
    return pg_cluster.create_database(f"ray{os.getpid()}_{next(_names)}")
