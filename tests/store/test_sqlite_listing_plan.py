"""The newest top-level runs are read through the start-time index, not by sorting every
run: a runs page over 20 000 runs reads only its own rows (the web UI's runs page)."""

from __future__ import annotations

from trellis.store.base import RunRow
from trellis.store.sqlite import SQLiteStore


def test_newest_top_level_runs_are_read_in_index_order() -> None:
    store = SQLiteStore(":memory:")
    store.create_runs(
        [
            RunRow(run_id=f"r{i}", flow="f", status="done", inputs="{}", started_at=float(i))
            for i in range(50)
        ]
    )
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    newest = store.list_runs(top_level=True, limit=3)
    store._db.set_trace_callback(None)
    assert [r.run_id for r in newest] == ["r49", "r48", "r47"]
    (query,) = [s for s in statements if s.startswith("SELECT")]
    plan = " ".join(str(row[-1]) for row in store._db.execute("EXPLAIN QUERY PLAN " + query))
    assert "runs_started" in plan and "TEMP B-TREE" not in plan, plan
    store.close()
