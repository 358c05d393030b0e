"""``PostgresStore`` runs the whole store conformance suite against a real PostgreSQL 15.

The cluster comes from ``tests/store/conftest.py``. The suite's store is one database per
session whose tables are emptied before every test (creating a database per test would
cost more than the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from trellis.store import Store
from trellis.store.postgres import PostgresStore
from trellis.testing.store_conformance import StoreConformance


@pytest.fixture(scope="session")
def conformance_url(new_postgres_database: Callable[[], str]) -> str:
    url = new_postgres_database()
    PostgresStore(url).close()  # creates the schema
    return url


class TestPostgresStoreConformance(StoreConformance):
    @pytest.fixture
    def store(self, conformance_url: str) -> Iterator[Store]:
        with psycopg.connect(conformance_url, autocommit=True) as conn:
            conn.execute("TRUNCATE runs, steps, calls, cache")
        with PostgresStore(conformance_url) as store:
            yield store
