"""``MemoryStore`` runs the store conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trellis.store import MemoryStore, Store, open_store
from trellis.testing.store_conformance import StoreConformance, run_row


class TestMemoryStoreConformance(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        with MemoryStore() as store:
            yield store

    def test_create_runs_is_atomic_when_the_batch_repeats_an_id(self, store: Store) -> None:
        super().test_create_runs_is_atomic_when_the_batch_repeats_an_id(store)

    def test_list_runs_with_equal_start_times_lists_the_last_created_first(
        self, store: Store
    ) -> None:
        super().test_list_runs_with_equal_start_times_lists_the_last_created_first(store)


def test_memory_store_is_what_memory_urls_open() -> None:
    for url in ("memory:", "memory://"):
        store = open_store(url)
        assert isinstance(store, MemoryStore)
        assert store.url == "memory:"


def test_memory_stores_are_independent() -> None:
    one, two = MemoryStore(), MemoryStore()
    one.create_run(run_row("r"))
    assert two.get_run("r") is None
