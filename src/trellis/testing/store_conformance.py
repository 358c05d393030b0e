"""The store conformance suite: what every :class:`trellis.store.Store` must do.

Trellis's own stores (memory, SQLite, PostgreSQL) pass it unchanged, and so must a store
you write. Run it by subclassing :class:`StoreConformance` in a test module and providing a
``store`` fixture that yields a fresh, empty store (it needs pytest)::

    import pytest
    from trellis.testing.store_conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyStore(tmp_path / "runs")
            yield store
            store.close()

The class name does not start with ``Test``, so pytest collects it only through subclasses.
Everything here goes through the public ``Store`` interface; timestamps are passed in
explicitly, so no test sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from trellis.errors import LeaseLostError, StoreError
from trellis.store import CacheStats, CallRow, RunRow, StepRow, Store

__all__ = ["StoreConformance", "run_row"]

#: Text no store may mangle: quotes, SQL, NUL, escapes, non-ASCII, emoji.
NASTY = "it's \"quoted\" '); DROP TABLE runs; -- \x00 nul \\u0000 ünïcödé 😀 \n\t end"


def run_row(run_id: str, **kw: object) -> RunRow:
    fields: dict[str, object] = {
        "flow": "f",
        "status": "pending",
        "inputs": json.dumps({"x": 1}),
        "started_at": 1000.0,
    }
    fields.update(kw)
    return RunRow(run_id=run_id, **fields)  # type: ignore[arg-type]


def step_row(run_id: str, step: str, **kw: object) -> StepRow:
    fields: dict[str, object] = {"status": "done", "definition": "def1", "output": "1"}
    fields.update(kw)
    return StepRow(run_id=run_id, step=step, **fields)  # type: ignore[arg-type]


def call_row(run_id: str, key: str, **kw: object) -> CallRow:
    fields: dict[str, object] = {"request": "req1", "result": '"reply"', "attempts": "[]"}
    fields.update(kw)
    return CallRow(run_id=run_id, key=key, **fields)  # type: ignore[arg-type]


def ids(rows: list[RunRow]) -> list[str]:
    return [r.run_id for r in rows]


class StoreConformance:
    """Behaviour every store shares. Subclasses provide a ``store`` fixture."""

    # -- runs -----------------------------------------------------------------------------

    def test_create_and_get_run_round_trips_every_field(self, store: Store) -> None:
        row = RunRow(
            run_id="r1",
            flow="flow-a",
            status="running",
            inputs='{"feedback": "great"}',
            started_at=1234.5,
            parent_id="batch",
            item_index=3,
            finished_at=1240.25,
            error='{"type": "StepError"}',
            usage='{"calls": 2}',
            meta='{"target": "x.py:flow"}',
            lease_owner="host:1:abc",
            lease_expires=1300.0,
        )
        store.create_run(row)
        assert store.get_run("r1") == row

    def test_get_unknown_run_is_none(self, store: Store) -> None:
        assert store.get_run("nope") is None

    def test_returned_rows_are_copies(self, store: Store) -> None:
        store.create_run(run_row("r1"))
        got = store.get_run("r1")
        assert got is not None
        got.status = "done"
        assert store.get_run("r1").status == "pending"  # type: ignore[union-attr]

    def test_create_run_with_an_existing_id_raises_and_keeps_the_original(
        self, store: Store
    ) -> None:
        store.create_run(run_row("r1", flow="first"))
        with pytest.raises(StoreError):
            store.create_run(run_row("r1", flow="second"))
        assert store.get_run("r1").flow == "first"  # type: ignore[union-attr]
        assert ids(store.list_runs()) == ["r1"]

    def test_create_runs_inserts_all(self, store: Store) -> None:
        store.create_runs([run_row(f"r{i}") for i in range(5)])
        assert sorted(ids(store.list_runs())) == [f"r{i}" for i in range(5)]

    def test_create_runs_is_atomic_when_an_id_exists(self, store: Store) -> None:
        store.create_run(run_row("taken"))
        with pytest.raises(StoreError):
            store.create_runs([run_row("new1"), run_row("taken"), run_row("new2")])
        assert store.get_run("new1") is None
        assert store.get_run("new2") is None
        assert ids(store.list_runs()) == ["taken"]

    def test_create_runs_takes_rows_as_they_are_made(self, store: Store) -> None:
        store.create_runs(run_row(f"g{i}") for i in range(5))  # a generator
        assert sorted(ids(store.list_runs())) == [f"g{i}" for i in range(5)]

    def test_create_runs_inserts_nothing_when_making_a_row_fails(self, store: Store) -> None:
        def rows() -> Iterator[RunRow]:
            yield run_row("made1")
            yield run_row("made2")
            raise ValueError("the third row could not be made")

        with pytest.raises(ValueError, match="third row"):
            store.create_runs(rows())
        assert store.list_runs() == []
        store.create_runs([run_row("made1")])  # the store works on
        assert ids(store.list_runs()) == ["made1"]

    def test_create_runs_is_atomic_when_the_batch_repeats_an_id(self, store: Store) -> None:
        with pytest.raises(StoreError):
            store.create_runs([run_row("a"), run_row("dup"), run_row("dup")])
        assert store.list_runs() == []

    def test_update_run(self, store: Store) -> None:
        store.create_run(run_row("r1", status="running"))
        store.update_run(
            "r1", status="failed", finished_at=2000.0, error='{"e": 1}', usage='{"u": 1}'
        )
        row = store.get_run("r1")
        assert row is not None
        assert (row.status, row.finished_at, row.error, row.usage) == (
            "failed",
            2000.0,
            '{"e": 1}',
            '{"u": 1}',
        )
        # usage=None keeps the recorded usage; error and finished_at are replaced.
        store.update_run("r1", status="running")
        row = store.get_run("r1")
        assert row is not None
        assert (row.status, row.finished_at, row.error, row.usage) == (
            "running",
            None,
            None,
            '{"u": 1}',
        )
        # Fields update_run does not touch are left alone.
        assert (row.flow, row.inputs, row.started_at) == ("f", json.dumps({"x": 1}), 1000.0)

    def test_update_unknown_run_raises(self, store: Store) -> None:
        with pytest.raises(StoreError):
            store.update_run("nope", status="done")

    # -- listing ----------------------------------------------------------------------------

    def test_list_runs_newest_first(self, store: Store) -> None:
        store.create_run(run_row("old", started_at=100.0))
        store.create_run(run_row("newest", started_at=300.0))
        store.create_run(run_row("middle", started_at=200.0))
        assert ids(store.list_runs()) == ["newest", "middle", "old"]
        assert ids(store.list_runs(limit=2)) == ["newest", "middle"]

    def test_list_runs_limit_zero_is_none_and_a_negative_limit_is_an_error(
        self, store: Store
    ) -> None:
        store.create_runs([run_row(name, started_at=t) for t, name in enumerate("abc")])
        assert store.list_runs(limit=0) == []
        assert ids(store.list_runs(limit=None)) == ["c", "b", "a"]
        for bad in (-1, -2):
            with pytest.raises(ValueError, match=f"limit must be 0 or more.*not {bad}"):
                store.list_runs(limit=bad)
            with pytest.raises(ValueError, match="limit must be 0 or more"):
                store.list_runs(parent_id="a", limit=bad)
        with pytest.raises(TypeError, match="limit must be an int or None, not str"):
            store.list_runs(limit="2")  # type: ignore[arg-type]

    def test_list_runs_with_equal_start_times_lists_the_last_created_first(
        self, store: Store
    ) -> None:
        store.create_runs([run_row(name, started_at=500.0) for name in ("a", "b", "c")])
        assert ids(store.list_runs()) == ["c", "b", "a"]

    def test_list_runs_filters_by_flow_and_status(self, store: Store) -> None:
        store.create_runs(
            [
                run_row("a1", flow="a", status="done", started_at=1.0),
                run_row("a2", flow="a", status="failed", started_at=2.0),
                run_row("b1", flow="b", status="done", started_at=3.0),
            ]
        )
        assert ids(store.list_runs(flow="a")) == ["a2", "a1"]
        assert ids(store.list_runs(status="done")) == ["b1", "a1"]
        assert ids(store.list_runs(flow="a", status="done")) == ["a1"]
        assert store.list_runs(flow="zzz") == []

    def test_list_runs_by_parent_is_in_item_order(self, store: Store) -> None:
        store.create_run(run_row("batch", started_at=1.0))
        # Created out of order, with later items started earlier: item order still wins.
        store.create_runs(
            [
                run_row("batch.2", parent_id="batch", item_index=2, started_at=5.0),
                run_row("batch.0", parent_id="batch", item_index=0, started_at=9.0),
                run_row("batch.1", parent_id="batch", item_index=1, started_at=7.0),
                run_row("other.0", parent_id="other", item_index=0, started_at=8.0),
            ]
        )
        assert ids(store.list_runs(parent_id="batch")) == ["batch.0", "batch.1", "batch.2"]
        assert ids(store.list_runs(parent_id="batch", limit=2)) == ["batch.0", "batch.1"]
        assert store.list_runs(parent_id="nobody") == []

    def test_list_runs_by_parent_and_status(self, store: Store) -> None:
        store.create_run(run_row("batch"))
        store.create_runs(
            [
                run_row(f"batch.{i}", parent_id="batch", item_index=i, status=status)
                for i, status in enumerate(["done", "pending", "done", "running"])
            ]
        )
        assert ids(store.list_runs(parent_id="batch", status="done")) == ["batch.0", "batch.2"]

    def test_list_runs_top_level_leaves_batch_items_out(self, store: Store) -> None:
        store.create_run(run_row("solo", started_at=1.0))
        store.create_run(run_row("batch", started_at=2.0))
        store.create_runs(
            [run_row(f"batch.{i}", parent_id="batch", item_index=i, started_at=3.0) for i in (0, 1)]
        )
        assert ids(store.list_runs(top_level=True)) == ["batch", "solo"]
        assert set(ids(store.list_runs())) == {"solo", "batch", "batch.0", "batch.1"}

    def test_update_run_sets_the_start_only_when_given(self, store: Store) -> None:
        store.create_run(run_row("item", started_at=1000.0))
        store.update_run("item", status="running", started_at=1005.5)
        assert store.get_run("item").started_at == 1005.5  # type: ignore[union-attr]
        store.update_run("item", status="done", finished_at=1010.0)
        assert store.get_run("item").started_at == 1005.5  # type: ignore[union-attr]

    def test_run_time_and_resume_time_are_kept_until_set_again(self, store: Store) -> None:
        store.create_run(run_row("r", started_at=1000.0, resumed_at=1000.0))
        row = store.get_run("r")
        assert row is not None and (row.run_s, row.resumed_at) == (None, 1000.0)
        store.update_run("r", status="failed", finished_at=1003.0, run_s=2.75)
        row = store.get_run("r")
        assert row is not None and (row.run_s, row.duration_s) == (2.75, 2.75)
        store.update_run("r", status="running", resumed_at=5000.0)  # resumed much later
        row = store.get_run("r")
        assert row is not None and (row.run_s, row.resumed_at) == (2.75, 5000.0)
        assert row.duration_s is None  # not ended
        store.update_run("r", status="done", finished_at=5001.0, run_s=3.5)
        row = store.get_run("r")
        assert row is not None and (row.started_at, row.duration_s) == (1000.0, 3.5)

    def test_is_batch_is_a_recorded_field_and_a_filter(self, store: Store) -> None:
        store.create_run(run_row("solo", started_at=1.0))
        store.create_runs(
            [
                run_row("batch", started_at=2.0, is_batch=True),
                run_row("batch.0", parent_id="batch", item_index=0, started_at=2.0),
            ]
        )
        store.create_run(run_row("empty-batch", started_at=3.0, is_batch=True))
        assert store.get_run("batch").is_batch is True  # type: ignore[union-attr]
        assert store.get_run("solo").is_batch is False  # type: ignore[union-attr]
        assert store.get_run("batch.0").is_batch is False  # type: ignore[union-attr]
        assert ids(store.list_runs(batches=True)) == ["empty-batch", "batch"]
        assert ids(store.list_runs(batches=False, top_level=True)) == ["solo"]
        store.update_run("batch", status="done")
        assert store.get_run("batch").is_batch is True  # type: ignore[union-attr]

    # -- leases -----------------------------------------------------------------------------

    def test_acquire_a_free_lease(self, store: Store) -> None:
        store.create_run(run_row("r"))
        assert store.acquire_lease("r", "me", now=100.0, ttl=30.0) is None
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires) == ("me", 130.0)

    def test_acquire_own_lease_again_extends_it(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.acquire_lease("r", "me", now=100.0, ttl=30.0)
        assert store.acquire_lease("r", "me", now=110.0, ttl=30.0) is None
        assert store.get_run("r").lease_expires == 140.0  # type: ignore[union-attr]

    def test_lease_held_by_another_is_refused_until_it_expires(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.acquire_lease("r", "first", now=100.0, ttl=30.0)
        assert store.acquire_lease("r", "second", now=129.9, ttl=30.0) == "first"
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires) == ("first", 130.0), "left alone"
        # Expired (at the expiry instant and after): taken over.
        assert store.acquire_lease("r", "second", now=130.0, ttl=30.0) is None
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires) == ("second", 160.0)
        assert store.acquire_lease("r", "first", now=131.0, ttl=30.0) == "second"

    def test_acquire_lease_on_unknown_run_raises(self, store: Store) -> None:
        with pytest.raises(StoreError):
            store.acquire_lease("nope", "me", now=1.0, ttl=1.0)

    def test_renew_lease_only_by_its_owner(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.acquire_lease("r", "me", now=100.0, ttl=30.0)
        assert store.renew_lease("r", "other", now=120.0, ttl=30.0) is False
        assert store.get_run("r").lease_expires == 130.0  # type: ignore[union-attr]
        assert store.renew_lease("r", "me", now=120.0, ttl=30.0) is True
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires) == ("me", 150.0)
        assert store.renew_lease("nope", "me", now=120.0, ttl=30.0) is False

    def test_renew_after_losing_the_lease_fails(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.acquire_lease("r", "me", now=100.0, ttl=10.0)
        assert store.acquire_lease("r", "thief", now=200.0, ttl=10.0) is None
        assert store.renew_lease("r", "me", now=201.0, ttl=10.0) is False
        assert store.get_run("r").lease_owner == "thief"  # type: ignore[union-attr]

    def test_release_lease(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.acquire_lease("r", "me", now=100.0, ttl=30.0)
        store.release_lease("r", "other")  # not theirs: nothing happens
        assert store.get_run("r").lease_owner == "me"  # type: ignore[union-attr]
        store.release_lease("r", "me")
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires) == (None, None)
        assert store.acquire_lease("r", "other", now=101.0, ttl=30.0) is None
        store.release_lease("nope", "me")  # unknown run: no error

    def test_finish_run_records_the_end_and_releases_the_owners_lease(
        self, store: Store
    ) -> None:
        store.create_run(run_row("r", status="running"))
        epoch = store.claim_lease("r", "me", now=100.0, ttl=30.0).epoch
        usage = '{"calls": 1}'
        store.finish_run(
            "r", "me", status="done", finished_at=5.0, usage=usage, epoch=epoch, run_s=2.5
        )
        row = store.get_run("r")
        assert row is not None
        assert (row.status, row.finished_at, row.usage, row.run_s) == ("done", 5.0, usage, 2.5)
        assert (row.lease_owner, row.lease_expires, row.lease_epoch) == (None, None, epoch)
        # Another owner's lease (or another grant of it) is left held; the end is recorded.
        store.create_run(run_row("s", status="running"))
        store.claim_lease("s", "other", now=100.0, ttl=30.0)
        store.finish_run("s", "me", status="failed", finished_at=6.0, error='{"e": 1}')
        row = store.get_run("s")
        assert row is not None
        assert (row.status, row.error, row.lease_owner) == ("failed", '{"e": 1}', "other")
        store.finish_run("s", "other", status="done", finished_at=7.0, epoch=1)
        assert store.get_run("s").lease_owner is None  # type: ignore[union-attr]
        store.create_run(run_row("t", status="running"))
        store.claim_lease("t", "me", now=100.0, ttl=30.0)
        store.claim_lease("t", "me", now=101.0, ttl=30.0)  # epoch 2: epoch 1 is not the grant
        store.update_run("t", status="running", epoch=2)
        with pytest.raises(LeaseLostError):
            store.finish_run("t", "me", status="done", finished_at=8.0, epoch=1)
        row = store.get_run("t")
        assert row is not None
        assert (row.status, row.lease_owner) == ("running", "me")

    def test_pending_runs_are_those_no_process_started(self, store: Store) -> None:
        store.create_runs(
            [run_row(f"b.{i}", parent_id="b", item_index=i) for i in range(5)]
            + [run_row("b.5", parent_id="b", item_index=5, status="done")]
        )
        store.claim_lease("b.1", "me", now=100.0, ttl=30.0)  # leased: epoch 1
        started = store.start_pending("b.2", "me", now=100.0, ttl=30.0)  # if the store can
        store.update_run("b.3", status="running")
        rows = store.pending_runs(["b.0", "b.1", "b.2", "b.3", "b.4", "b.5", "nope"])
        assert sorted(ids(rows)) == (["b.0", "b.4"] if started else ["b.0", "b.2", "b.4"])
        by_id = {r.run_id: r for r in rows}
        assert (by_id["b.4"].parent_id, by_id["b.4"].item_index) == ("b", 4)
        assert by_id["b.4"].inputs == json.dumps({"x": 1})
        assert store.pending_runs([]) == []

    # -- fencing: the lease epoch --------------------------------------------------------

    def test_a_new_run_has_epoch_zero_and_each_grant_increments_it(self, store: Store) -> None:
        store.create_run(run_row("r"))
        assert store.get_run("r").lease_epoch == 0  # type: ignore[union-attr]
        first = store.claim_lease("r", "me", now=100.0, ttl=30.0)
        assert (first.granted, first.epoch, first.holder) == (True, 1, None)
        again = store.claim_lease("r", "me", now=110.0, ttl=30.0)  # ours: granted anew
        assert (again.granted, again.epoch) == (True, 2)
        refused = store.claim_lease("r", "other", now=120.0, ttl=30.0)
        assert (refused.granted, refused.epoch, refused.holder) == (False, 2, "me")
        taken = store.claim_lease("r", "other", now=140.0, ttl=30.0)  # expired: taken over
        assert (taken.granted, taken.epoch) == (True, 3)
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires, row.lease_epoch) == ("other", 170.0, 3)

    def test_a_run_created_with_its_lease_keeps_the_epoch_given(self, store: Store) -> None:
        store.create_run(run_row("r", lease_owner="me", lease_expires=130.0, lease_epoch=1))
        row = store.get_run("r")
        assert row is not None
        assert (row.lease_owner, row.lease_expires, row.lease_epoch) == ("me", 130.0, 1)
        assert store.claim_lease("r", "other", now=100.0, ttl=30.0).holder == "me"

    def test_release_and_expiry_keep_the_epoch(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.claim_lease("r", "me", now=100.0, ttl=30.0)
        store.release_lease("r", "me", epoch=1)
        assert store.get_run("r").lease_epoch == 1  # type: ignore[union-attr]
        assert store.claim_lease("r", "other", now=101.0, ttl=30.0).epoch == 2

    def _taken_over(self, store: Store) -> None:
        """Run "r" leased by "me" at epoch 1, then taken over by "thief" at epoch 2."""
        store.create_run(run_row("r", status="running"))
        assert store.claim_lease("r", "me", now=100.0, ttl=10.0).epoch == 1
        assert store.claim_lease("r", "thief", now=200.0, ttl=10.0).epoch == 2

    def test_a_stale_epoch_cannot_update_the_run(self, store: Store) -> None:
        self._taken_over(store)
        with pytest.raises(LeaseLostError) as info:
            store.update_run("r", status="failed", finished_at=1.0, error="{}", epoch=1)
        assert (info.value.run_id, info.value.epoch, info.value.current) == ("r", 1, 2)
        assert info.value.owner == "thief"
        assert "epoch 1" in str(info.value) and "thief" in str(info.value)
        row = store.get_run("r")
        assert row is not None
        assert (row.status, row.finished_at, row.error) == ("running", None, None)
        store.update_run("r", status="done", finished_at=2.0, epoch=2)  # the owner's epoch
        assert store.get_run("r").status == "done"  # type: ignore[union-attr]

    def test_a_stale_epoch_cannot_save_a_step(self, store: Store) -> None:
        self._taken_over(store)
        store.save_step(step_row("r", "s", output='"new"'), epoch=2)
        with pytest.raises(LeaseLostError):
            store.save_step(step_row("r", "s", status="failed", output=None), epoch=1)
        with pytest.raises(LeaseLostError):
            store.save_step(step_row("r", "other"), epoch=1)
        assert [(s.step, s.status, s.output) for s in store.load_steps("r")] == [
            ("s", "done", '"new"')
        ]

    def test_a_stale_epoch_cannot_save_a_done_step(self, store: Store) -> None:
        self._taken_over(store)
        store.save_done_step("r", "s", "def1", '"new"', 1.0, 0.5, epoch=2)
        with pytest.raises(LeaseLostError):
            store.save_done_step("r", "s", "def1", '"old"', 1.0, 0.5, epoch=1)
        assert [s.output for s in store.load_steps("r")] == ['"new"']

    def test_a_stale_epoch_cannot_journal_a_call(self, store: Store) -> None:
        self._taken_over(store)
        store.save_call(call_row("r", "k", result='"new"'), epoch=2)
        with pytest.raises(LeaseLostError):
            store.save_call(call_row("r", "k", result='"old"'), epoch=1)
        with pytest.raises(LeaseLostError):
            store.save_call(call_row("r", "k2"), epoch=1)
        assert [(c.key, c.result) for c in store.load_calls("r")] == [("k", '"new"')]

    def test_a_stale_epoch_cannot_renew_or_release_the_lease(self, store: Store) -> None:
        self._taken_over(store)
        # Even under the same owner name: the grant, not the name, owns the lease.
        store.create_run(run_row("s"))
        store.claim_lease("s", "me", now=100.0, ttl=10.0)
        store.claim_lease("s", "me", now=101.0, ttl=10.0)
        assert store.renew_lease("s", "me", now=102.0, ttl=10.0, epoch=1) is False
        store.release_lease("s", "me", epoch=1)
        assert store.get_run("s").lease_owner == "me"  # type: ignore[union-attr]
        assert store.renew_lease("s", "me", now=102.0, ttl=10.0, epoch=2) is True
        assert store.get_run("s").lease_expires == 112.0  # type: ignore[union-attr]
        assert store.renew_lease("r", "me", now=201.0, ttl=10.0, epoch=1) is False
        store.release_lease("r", "me", epoch=1)
        assert store.get_run("r").lease_owner == "thief"  # type: ignore[union-attr]

    def test_fenced_writes_to_an_unknown_run_are_store_errors(self, store: Store) -> None:
        writes: tuple[Callable[[], None], ...] = (
            lambda: store.update_run("nope", status="done", epoch=1),
            lambda: store.save_step(step_row("nope", "s"), epoch=1),
            lambda: store.save_done_step("nope", "s", "d", "1", None, None, epoch=1),
            lambda: store.save_call(call_row("nope", "k"), epoch=1),
        )
        for write in writes:
            with pytest.raises(StoreError) as info:
                write()
            assert not isinstance(info.value, LeaseLostError)

    def test_the_current_epoch_and_unfenced_writes_pass(self, store: Store) -> None:
        store.create_run(run_row("r"))
        store.save_step(step_row("r", "a"), epoch=0)  # never leased: epoch 0 is current
        store.claim_lease("r", "me", now=100.0, ttl=10.0)
        store.save_step(step_row("r", "b"), epoch=1)
        store.save_step(step_row("r", "c"))  # no epoch: not fenced
        store.save_call(call_row("r", "k"))
        store.update_run("r", status="running")
        assert sorted(s.step for s in store.load_steps("r")) == ["a", "b", "c"]

    # -- steps and calls ------------------------------------------------------------------

    def test_save_and_load_steps_round_trip_every_field(self, store: Store) -> None:
        store.create_run(run_row("r"))
        row = StepRow(
            run_id="r",
            step="classify",
            status="done",
            definition="abc123",
            output='{"label": "positive"}',
            reason="because",
            error=None,
            usage='{"calls": 1}',
            decisions='[{"kind": "when"}]',
            details='{"attempts": 1}',
        )
        failed = StepRow(
            run_id="r",
            step="other",
            status="failed",
            definition="def",
            error='{"type": "StepError"}',
        )
        store.save_step(row)
        store.save_step(failed)
        loaded = {s.step: s for s in store.load_steps("r")}
        assert loaded == {"classify": row, "other": failed}

    def test_save_done_step_is_a_completed_step_row(self, store: Store) -> None:
        store.save_step(StepRow(run_id="r", step="s", status="running", definition="old"))
        store.save_done_step("r", "s", "def", '{"x": 1}', 12.5, 0.25)
        (row,) = store.load_steps("r")
        assert (row.step, row.status, row.definition, row.output) == (
            "s",
            "done",
            "def",
            '{"x": 1}',
        )
        assert (row.started_at, row.duration_s) == (12.5, 0.25)
        assert (row.reason, row.error, row.usage, row.decisions, row.details) == (None,) * 5

    def test_save_step_replaces_by_run_and_step(self, store: Store) -> None:
        store.create_runs([run_row("r"), run_row("s")])
        store.save_step(step_row("r", "a", status="running", output=None))
        store.save_step(step_row("r", "a", status="done", output='"final"'))
        store.save_step(step_row("s", "a", output='"other run"'))
        (only,) = store.load_steps("r")
        assert (only.status, only.output) == ("done", '"final"')
        assert [s.output for s in store.load_steps("s")] == ['"other run"']
        assert store.load_steps("nope") == []

    def test_save_and_load_calls(self, store: Store) -> None:
        store.create_runs([run_row("r"), run_row("s")])
        first = call_row("r", "a|None|None|1|1", result='{"x": 1}', attempts='[{"a": 1}]')
        store.save_call(first)
        store.save_call(call_row("r", "a|0|None|1|1"))
        store.save_call(call_row("s", "a|None|None|1|1", result='"s"'))
        loaded = {c.key: c for c in store.load_calls("r")}
        assert set(loaded) == {"a|None|None|1|1", "a|0|None|1|1"}
        assert loaded["a|None|None|1|1"] == first
        # Insert or replace by (run, key).
        store.save_call(call_row("r", "a|None|None|1|1", request="req2", result='"new"'))
        loaded = {c.key: c for c in store.load_calls("r")}
        assert len(loaded) == 2
        assert (loaded["a|None|None|1|1"].request, loaded["a|None|None|1|1"].result) == (
            "req2",
            '"new"',
        )
        assert [c.result for c in store.load_calls("s")] == ['"s"']
        assert store.load_calls("nope") == []

    def test_text_round_trips_unchanged(self, store: Store) -> None:
        """Quotes, SQL, NUL, escapes and non-ASCII text are data, never code or truncation."""
        run = run_row(NASTY, flow=NASTY, inputs=NASTY, meta=NASTY, error=NASTY)
        store.create_run(run)
        assert store.get_run(NASTY) == run
        step = step_row(NASTY, NASTY, output=NASTY, reason=NASTY, details=NASTY)
        store.save_step(step)
        assert store.load_steps(NASTY) == [step]
        call = call_row(NASTY, NASTY, request=NASTY, result=NASTY, attempts=NASTY)
        store.save_call(call)
        assert store.load_calls(NASTY) == [call]
        store.cache_put(NASTY, NASTY, now=1.0, expires_at=None)
        assert store.cache_get(NASTY, now=2.0) == NASTY
        assert ids(store.list_runs(flow=NASTY)) == [NASTY]
        assert store.acquire_lease(NASTY, NASTY, now=1.0, ttl=1.0) is None
        assert store.get_run(NASTY).lease_owner == NASTY  # type: ignore[union-attr]
        # Nothing else was touched by the "SQL" in the text.
        store.create_run(run_row("plain"))
        assert set(ids(store.list_runs())) == {NASTY, "plain"}

    # -- response cache ---------------------------------------------------------------------

    def test_cache_miss_put_get(self, store: Store) -> None:
        assert store.cache_get("k", now=1.0) is None
        store.cache_put("k", '{"v": 1}', now=1.0, expires_at=None)
        assert store.cache_get("k", now=2.0) == '{"v": 1}'
        assert store.cache_get("other", now=2.0) is None

    def test_cache_counts_hits_not_misses(self, store: Store) -> None:
        store.cache_put("k", "v", now=1.0, expires_at=None)
        for _ in range(3):
            store.cache_get("k", now=2.0)
        store.cache_get("missing", now=2.0)
        assert store.cache_stats(now=2.0) == CacheStats(entries=1, expired=0, hits=3, bytes=1)

    def test_cache_entry_expires(self, store: Store) -> None:
        store.cache_put("k", "v", now=100.0, expires_at=110.0)
        assert store.cache_get("k", now=109.9) == "v"
        assert store.cache_get("k", now=110.0) is None
        assert store.cache_get("k", now=500.0) is None
        stats = store.cache_stats(now=500.0)
        assert (stats.entries, stats.expired, stats.hits) == (1, 1, 1), "expired gets: no hit"

    def test_cache_put_replaces_and_resets_hits(self, store: Store) -> None:
        store.cache_put("k", "old", now=1.0, expires_at=None)
        store.cache_get("k", now=2.0)
        store.cache_put("k", "new", now=3.0, expires_at=None)
        assert store.cache_get("k", now=4.0) == "new"
        stats = store.cache_stats(now=4.0)
        assert (stats.entries, stats.hits) == (1, 1)

    def test_cache_stats(self, store: Store) -> None:
        assert store.cache_stats(now=0.0) == CacheStats(entries=0, expired=0, hits=0, bytes=0)
        store.cache_put("forever", "abc", now=1.0, expires_at=None)
        store.cache_put("short", "de", now=1.0, expires_at=5.0)
        store.cache_put("long", "f", now=1.0, expires_at=50.0)
        assert store.cache_stats(now=2.0) == CacheStats(entries=3, expired=0, hits=0, bytes=6)
        assert store.cache_stats(now=10.0).expired == 1
        assert store.cache_stats(now=100.0).expired == 2

    def test_cache_stats_bytes_are_utf8_bytes(self, store: Store) -> None:
        value = "é😀\x00x"
        store.cache_put("k", value, now=1.0, expires_at=None)
        assert store.cache_stats(now=1.0).bytes == len(value.encode())

    def test_cache_clear_all(self, store: Store) -> None:
        store.cache_put("a", "1", now=1.0, expires_at=None)
        store.cache_put("b", "2", now=1.0, expires_at=5.0)
        assert store.cache_clear() == 2
        assert store.cache_get("a", now=2.0) is None
        assert store.cache_stats(now=2.0).entries == 0
        assert store.cache_clear() == 0

    def test_cache_clear_expired_only(self, store: Store) -> None:
        store.cache_put("forever", "1", now=1.0, expires_at=None)
        store.cache_put("gone", "2", now=1.0, expires_at=5.0)
        store.cache_put("alive", "3", now=1.0, expires_at=50.0)
        assert store.cache_clear(expired_only=True, now=10.0) == 1
        assert store.cache_get("forever", now=10.0) == "1"
        assert store.cache_get("alive", now=10.0) == "3"
        assert store.cache_stats(now=10.0).entries == 2
        assert store.cache_clear(expired_only=True, now=10.0) == 0

    # -- lifecycle -------------------------------------------------------------------------

    def test_url_names_the_store(self, store: Store) -> None:
        assert isinstance(store.url, str) and store.url
