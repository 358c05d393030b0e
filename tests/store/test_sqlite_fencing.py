"""SQLite specifics of fencing: the epoch column's migration, and two connections (two
processes) where the one that took a run over wins every write."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from trellis.errors import LeaseLostError
from trellis.store import CallRow, SQLiteStore, StepRow
from trellis.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, _split
from trellis.testing.store_conformance import run_row


def _version_two_store(path: Path) -> None:
    """A database as Trellis wrote it before the lease epoch existed, with one leased run."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO trellis_meta VALUES ('app', 'trellis'), ('schema_version', '2')")
    for script in _MIGRATIONS[:2]:
        for statement in _split(script):
            db.execute(statement)
    db.execute(
        "INSERT INTO runs (run_id, flow, status, inputs, started_at, lease_owner, "
        "lease_expires, format) VALUES ('old', 'f', 'running', '{}', 1.0, 'h:1:x', 50.0, 1)"
    )
    db.commit()
    db.close()


def test_a_version_two_store_gets_the_epoch_column(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _version_two_store(path)
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        row = store.get_run("old")
        assert row is not None
        assert (row.lease_owner, row.lease_expires, row.lease_epoch) == ("h:1:x", 50.0, 0)
        claim = store.claim_lease("old", "me", now=100.0, ttl=10.0)
        assert (claim.granted, claim.epoch) == (True, 1)
        with pytest.raises(LeaseLostError):
            store.save_step(
                StepRow(run_id="old", step="s", status="done", definition="d", output="1"), epoch=0
            )


def test_the_process_that_took_over_wins_every_write(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as stalled, SQLiteStore(path) as successor:
        stalled.create_run(run_row("r", status="running"))
        old = stalled.claim_lease("r", "stalled", now=100.0, ttl=1.0).epoch
        new = successor.claim_lease("r", "successor", now=102.0, ttl=1.0).epoch
        assert new == old + 1
        successor.save_step(
            StepRow(run_id="r", step="s", status="done", definition="d", output='"new"'), epoch=new
        )
        successor.update_run("r", status="done", finished_at=103.0, epoch=new)
        with pytest.raises(LeaseLostError):
            stalled.save_done_step("r", "s", "d", '"old"', None, None, epoch=old)
        with pytest.raises(LeaseLostError):
            stalled.save_step(
                StepRow(run_id="r", step="s", status="failed", definition="d"), epoch=old
            )
        with pytest.raises(LeaseLostError):
            stalled.save_call(
                CallRow(run_id="r", key="k", request="req", result="1", attempts="[]"), epoch=old
            )
        with pytest.raises(LeaseLostError):
            stalled.update_run("r", status="failed", error="{}", epoch=old)
        assert stalled.renew_lease("r", "stalled", now=104.0, ttl=1.0, epoch=old) is False
        row = successor.get_run("r")
        assert row is not None and row.status == "done"
        assert [(s.status, s.output) for s in successor.load_steps("r")] == [("done", '"new"')]
        assert successor.load_calls("r") == []


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_processes_opening_the_same_new_file_at_once_all_get_the_store(tmp_path: Path) -> None:
    """Two ``trellis run`` creating the same new store at the same moment: one creates and
    migrates it, the others wait for it and open it (never "table already exists", never
    "database is locked" from switching the new file to WAL mode, which SQLite refuses at
    once, without waiting, while another connection is switching it: about 1 try in 40
    failed before the switch was retried)."""
    for attempt in range(80):
        path = tmp_path / f"new{attempt}.db"
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_it(
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                SQLiteStore(path).close()
            except BaseException as exc:  # collected, re-raised in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [], errors
        with SQLiteStore(path) as store:
            assert store.schema_version == SCHEMA_VERSION


def test_a_version_three_store_marks_its_batches_in_the_new_column(tmp_path: Path) -> None:
    """Migration 4: batches recorded before the ``is_batch`` column (by the meta's
    ``"batch": true`` or by having items) are marked once; other runs are not."""
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO trellis_meta VALUES ('app', 'trellis'), ('schema_version', '3')")
    for script in _MIGRATIONS[:3]:
        for statement in _split(script):
            db.execute(statement)
    columns = "run_id, flow, status, inputs, started_at, parent_id, meta, format"
    for values in (
        ("solo", None, '{"cli": 1, "kind": "run"}'),
        ("by-meta", None, '{"batch": true, "cli": 1}'),
        ("by-items", None, None),
        ("by-items.0", "by-items", None),
    ):
        db.execute(
            f"INSERT INTO runs ({columns}) VALUES (?, 'f', 'done', '{{}}', 1.0, ?, ?, 1)",
            values,
        )
    db.commit()
    db.close()
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        marked = {r.run_id: r.is_batch for r in store.list_runs()}
    assert marked == {"solo": False, "by-meta": True, "by-items": True, "by-items.0": False}
