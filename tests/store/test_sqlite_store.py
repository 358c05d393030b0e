"""``SQLiteStore``: the conformance suite plus what only a SQLite file has.

WAL and ``synchronous``, persistence across reopening, the schema version check (newer,
foreign and non-SQLite files), corrupt rows surfacing as clear errors, ``open_store``
URLs, and every SQL value being bound.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import trellis as tl
from trellis.errors import StoreError
from trellis.store import FORMAT, CallRow, MemoryStore, SQLiteStore, StepRow, Store, open_store
from trellis.store.sqlite import SCHEMA_VERSION
from trellis.testing.store_conformance import NASTY, StoreConformance, run_row


class TestSQLiteStoreConformance(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        with SQLiteStore(tmp_path / "conformance.db") as store:
            yield store

    def test_cache_stats_bytes_are_utf8_bytes(self, store: Store) -> None:
        super().test_cache_stats_bytes_are_utf8_bytes(store)


class TestSQLiteInMemoryDatabaseConformance(StoreConformance):
    """``SQLiteStore(":memory:")`` behaves like a file store (handy in tests)."""

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        with SQLiteStore(":memory:") as store:
            yield store

    def test_cache_stats_bytes_are_utf8_bytes(self, store: Store) -> None:
        super().test_cache_stats_bytes_are_utf8_bytes(store)


def pragma(store: SQLiteStore, name: str) -> object:
    return store._db.execute(f"PRAGMA {name}").fetchone()[0]


# -- settings and persistence ---------------------------------------------------------------


def test_wal_and_synchronous_normal_by_default(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == 1  # NORMAL
        assert pragma(store, "busy_timeout") == 5000
    # WAL is a property of the file: another connection sees it too.
    db = sqlite3.connect(tmp_path / "t.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


@pytest.mark.parametrize(("sync", "level"), [("FULL", 2), ("full", 2), ("OFF", 0), ("EXTRA", 3)])
def test_synchronous_setting_is_applied(tmp_path: Path, sync: str, level: int) -> None:
    with SQLiteStore(tmp_path / "t.db", synchronous=sync) as store:  # type: ignore[arg-type]
        assert pragma(store, "synchronous") == level


def test_bad_synchronous_setting_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="synchronous"):
        SQLiteStore(tmp_path / "t.db", synchronous="SOMETIMES")  # type: ignore[arg-type]


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "trellis.db"
    with SQLiteStore(path):
        pass
    assert path.is_file()


def test_data_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store:
        store.create_run(run_row("r", status="done"))
        store.save_step(saved := _step("r", "a", '"out"'))
        store.cache_put("k", "v", now=1.0, expires_at=None)
    with SQLiteStore(path) as store:
        assert store.get_run("r") == run_row("r", status="done")
        assert store.load_steps("r") == [saved]
        assert store.cache_get("k", now=2.0) == "v"
        assert store.schema_version == SCHEMA_VERSION


def test_two_connections_see_each_others_writes(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as one, SQLiteStore(tmp_path / "t.db") as two:
        one.create_run(run_row("r"))
        assert two.get_run("r") is not None
        assert two.acquire_lease("r", "two", now=1.0, ttl=10.0) is None
        assert one.acquire_lease("r", "one", now=2.0, ttl=10.0) == "two"


def _step(run_id: str, step: str, output: str) -> StepRow:
    return StepRow(run_id=run_id, step=step, status="done", definition="def", output=output)


# -- schema version and foreign files -------------------------------------------------------


def test_schema_version_is_current_and_tagged(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        assert store.schema_version == SCHEMA_VERSION >= 1
    db = sqlite3.connect(tmp_path / "t.db")
    try:
        meta = dict(db.execute("SELECT key, value FROM trellis_meta").fetchall())
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert meta == {"app": "trellis", "schema_version": str(SCHEMA_VERSION)}
    assert {"runs", "steps", "calls", "cache", "trellis_meta"} <= tables


def test_every_row_is_tagged_with_its_format(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create_run(run_row("r"))
        store.save_step(_step("r", "a", "1"))
        store.save_call(CallRow(run_id="r", key="k", request="req", result="1", attempts="[]"))
        store.cache_put("k", "1", now=1.0, expires_at=None)
        for table in ("runs", "steps", "calls", "cache"):
            formats = {r[0] for r in store._db.execute(f"SELECT format FROM {table}")}
            assert formats == {FORMAT}, table


def test_a_version_zero_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO trellis_meta VALUES ('app', 'trellis'), ('schema_version', '0')")
    db.commit()
    db.close()
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.create_run(run_row("r"))
        assert store.get_run("r") is not None


def test_a_newer_schema_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store:
        store.create_run(run_row("r"))
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE trellis_meta SET value = ? WHERE key = 'schema_version'",
        (str(SCHEMA_VERSION + 1),),
    )
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=r"newer Trellis.*upgrade") as info:
        SQLiteStore(path)
    assert str(SCHEMA_VERSION + 1) in str(info.value)
    # The database was not touched by the failed open.
    db = sqlite3.connect(path)
    try:
        version = db.execute("SELECT value FROM trellis_meta WHERE key='schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION + 1)
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    finally:
        db.close()


def test_a_corrupt_schema_version_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE trellis_meta SET value = 'two' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema_version"):
        SQLiteStore(path)


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO customers (name) VALUES ('ada')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a Trellis store") as info:
        SQLiteStore(path)
    assert "customers" in str(info.value)
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert tables == {"customers"}


def test_a_trellis_meta_table_of_another_app_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO trellis_meta VALUES ('app', 'other'), ('schema_version', '1')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a Trellis store"):
        SQLiteStore(path)


def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    junk = bytes(range(256)) * 32
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not a usable Trellis store"):
        SQLiteStore(path)
    assert path.read_bytes() == junk, "the file is left alone"


def test_a_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path)


def test_an_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION


# -- corrupt rows: a clear StoreError, never a crash or a silent wrong value -----------------


class Verdict(BaseModel):
    label: str
    score: float


def _flow(counts: dict[str, int], fail: list[bool] | None = None) -> tl.Flow:
    flow = tl.Flow("corrupt", inputs={"text": str})

    @flow.step
    async def judge(text: str, llm: tl.LLM) -> Verdict:
        counts["judge"] += 1
        return await llm.generate(text, output=Verdict, model="m")  # type: ignore[no-any-return]

    @flow.step
    def summary(judge: Verdict) -> str:
        counts["summary"] += 1
        if fail and fail[0]:
            raise RuntimeError("not yet")
        return f"{judge.label}:{judge.score}"

    return flow


def _model() -> tl.FunctionModel:
    return tl.FunctionModel(lambda request: {"label": "ok", "score": 0.5})


async def _recorded_run(path: Path, *, fail_summary: bool = False) -> None:
    flow = _flow({"judge": 0, "summary": 0}, [fail_summary])
    with SQLiteStore(path) as store:
        async with tl.Engine(models={"m": _model()}, store=store) as engine:
            result = await engine.run(flow, {"text": "hello"}, run_id="r1")
    assert result.ok is not fail_summary


def _sql(path: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(statement, args)
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE steps SET output = '{not json' WHERE step = 'judge'", "not valid JSON"),
        ("UPDATE steps SET output = '\"a string\"' WHERE step = 'judge'", "does not match"),
        ("UPDATE steps SET format = 99 WHERE step = 'judge'", "format 99"),
        ("UPDATE steps SET details = '{not json' WHERE step = 'summary'", "not valid JSON"),
        ("UPDATE steps SET usage = '{\"calls\": \"x\"}' WHERE step = 'judge'", "corrupt"),
        ("UPDATE calls SET format = 99", "format 99"),
        ("UPDATE calls SET attempts = '{not json'", "not valid JSON"),
        ("UPDATE runs SET format = 99", "format 99"),
        ("UPDATE runs SET inputs = '{not json'", "not valid JSON"),
        ("UPDATE runs SET usage = '[1, 2]'", "corrupt"),
    ],
)
async def test_a_corrupt_row_of_a_completed_run_is_a_clear_store_error(
    tmp_path: Path, statement: str, message: str
) -> None:
    path = tmp_path / "t.db"
    await _recorded_run(path)
    _sql(path, statement)
    counts = {"judge": 0, "summary": 0}
    model = _model()
    with SQLiteStore(path) as store:
        async with tl.Engine(models={"m": model}, store=store) as engine:
            with pytest.raises(StoreError, match=message):
                engine.load("r1", _flow(counts))
            with pytest.raises(StoreError, match=message):
                await engine.run(_flow(counts), None, run_id="r1")
    assert counts == {"judge": 0, "summary": 0}, "nothing ran"
    assert model.calls == []


async def test_a_corrupt_step_row_stops_a_resume_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await _recorded_run(path, fail_summary=True)
    _sql(path, "UPDATE steps SET output = '{not json' WHERE step = 'judge'")
    counts = {"judge": 0, "summary": 0}
    model = _model()
    with SQLiteStore(path) as store:
        async with tl.Engine(models={"m": model}, store=store) as engine:
            with pytest.raises(StoreError, match="corrupt record: step 'judge'"):
                await engine.run(_flow(counts), None, run_id="r1")
        row = store.get_run("r1")
        assert row is not None and row.lease_owner is None, "the lease was released"
    assert counts == {"judge": 0, "summary": 0}
    assert model.calls == []


async def test_a_corrupt_journaled_call_stops_the_resume_with_a_store_error(
    tmp_path: Path,
) -> None:
    """A journaled reply that cannot be read is reported, not silently asked again."""
    path = tmp_path / "t.db"
    counts = {"judge": 0}
    flow = tl.Flow("calls", inputs={"text": str})
    fail = [True]

    @flow.step
    async def judge(text: str, llm: tl.LLM) -> Verdict:
        counts["judge"] += 1
        verdict = await llm.generate(text, output=Verdict, model="m")
        if fail[0]:
            raise RuntimeError("crash after the call")
        return verdict  # type: ignore[no-any-return]

    model = _model()
    with SQLiteStore(path) as store:
        async with tl.Engine(models={"m": model}, store=store) as engine:
            first = await engine.run(flow, {"text": "x"}, run_id="r1")
            assert not first.ok and len(model.calls) == 1
            _sql(path, "UPDATE calls SET result = '{not json'")
            fail[0] = False
            with pytest.raises(StoreError, match="corrupt record: journaled call"):
                await engine.run(flow, None, run_id="r1")
    assert len(model.calls) == 1, "the model was not asked again behind the user's back"


async def test_a_failed_resume_leaves_nothing_running(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    flow = tl.Flow("orphan", inputs={"text": str})
    ran: list[str] = []
    fail = [True]

    @flow.step
    async def slow(text: str) -> str:  # not done in the first run: a task at resume
        ran.append("slow")
        await asyncio.sleep(0.05)
        if fail[0]:
            raise RuntimeError("first run fails here")
        return text

    @flow.step
    def quick(text: str) -> str:  # done in the first run; its row gets corrupted
        return text.upper()

    @flow.step
    def both(slow: str, quick: str) -> str:
        return slow + quick

    with SQLiteStore(path) as store:
        async with tl.Engine(store=store) as engine:
            assert not (await engine.run(flow, {"text": "x"}, run_id="r1")).ok
            _sql(path, "UPDATE steps SET output = '{not json' WHERE step = 'quick'")
            fail[0] = False
            with pytest.raises(StoreError):
                await engine.run(flow, None, run_id="r1")
            await asyncio.sleep(0.15)
            statuses = {s.step: s.status for s in store.load_steps("r1")}
    assert statuses["slow"] == "failed", "no step ran on after the resume failed"
    assert ran == ["slow"]


# -- open_store URLs ----------------------------------------------------------------------------


def test_open_store_relative_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///sub/rel.db") as store:
        assert isinstance(store, SQLiteStore)
        assert pragma(store, "synchronous") == 1
    assert (tmp_path / "sub" / "rel.db").is_file()


def test_open_store_absolute_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    assert path.is_absolute()
    with open_store(f"sqlite:///{path}") as store:
        assert isinstance(store, SQLiteStore)
        store.create_run(run_row("r"))
    with SQLiteStore(path) as again:
        assert again.get_run("r") is not None


@pytest.mark.parametrize(("option", "level"), [("FULL", 2), ("full", 2), ("NORMAL", 1)])
def test_open_store_synchronous_option(tmp_path: Path, option: str, level: int) -> None:
    with open_store(f"sqlite:///{tmp_path / 't.db'}?synchronous={option}") as store:
        assert isinstance(store, SQLiteStore)
        assert pragma(store, "synchronous") == level
        assert pragma(store, "journal_mode") == "wal"


def test_open_store_memory() -> None:
    assert isinstance(open_store("memory:"), MemoryStore)


def test_open_store_plain_path(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "plain.db")) as store:
        assert isinstance(store, SQLiteStore)
    assert (tmp_path / "plain.db").is_file()


def test_open_store_uses_trellis_store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    with open_store() as store:
        assert isinstance(store, SQLiteStore)
    assert (tmp_path / "env.db").is_file()
    monkeypatch.setenv("TRELLIS_STORE", "memory:")
    assert isinstance(open_store(None), MemoryStore)
    # An explicit URL wins over the environment.
    with open_store(str(tmp_path / "explicit.db")) as store:
        assert isinstance(store, SQLiteStore)


def test_open_store_default_is_dot_trellis_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRELLIS_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_store() as store:
        assert isinstance(store, SQLiteStore)
    assert (tmp_path / ".trellis" / "trellis.db").is_file()


@pytest.mark.parametrize(
    "url",
    [
        "postgres://localhost/trellis",
        "mysql:///x.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///x.db?journal=off",
        "sqlite:///x.db?synchronous=SOMETIMES",
    ],
)
def test_open_store_bad_urls(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError):
        open_store(url)


def test_engine_accepts_a_store_url(tmp_path: Path) -> None:
    engine = tl.Engine(store=f"sqlite:///{tmp_path / 'e.db'}")
    assert isinstance(engine.store, SQLiteStore)
    engine.store.close()


# -- every SQL value bound -----------------------------------------------------------------------


async def test_hostile_ids_and_values_round_trip_through_a_durable_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    run_id = "x'); DROP TABLE runs; --"
    flow = tl.Flow('it\'s a "flow"; DELETE FROM steps; --', inputs={"text": str})

    @flow.step
    def echo(text: str) -> str:
        return text + "'; DROP TABLE steps; --"

    with SQLiteStore(path) as store:
        async with tl.Engine(store=store) as engine:
            result = await engine.run(flow, {"text": NASTY}, run_id=run_id)
            assert result.ok
            again = await engine.run(flow, None, run_id=run_id)
            loaded = engine.load(run_id, flow)
        assert again["echo"] == loaded["echo"] == NASTY + "'; DROP TABLE steps; --"
        assert loaded.inputs == {"text": NASTY}
        assert [r.run_id for r in store.list_runs(flow=flow.name)] == [run_id]
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "steps", "calls", "cache"} <= tables


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    """Numbered migrations: a store written at schema version 1 opens, is upgraded, and
    keeps its rows (the step timings columns come with version 2)."""
    from trellis.store.sqlite import _MIGRATIONS, _split

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO trellis_meta VALUES ('app', 'trellis'), ('schema_version', '1')")
    for statement in _split(_MIGRATIONS[0]):
        db.execute(statement)
    db.execute(
        "INSERT INTO steps (run_id, step, status, definition, output, format) "
        "VALUES ('r', 's', 'done', 'd', '1', 1)"
    )
    db.close()
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        (row,) = store.load_steps("r")
        assert (row.step, row.output, row.started_at, row.duration_s) == ("s", "1", None, None)


def test_a_call_key_that_is_not_utf8_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """The hot path (no mapping wrapper) says what the wrapper says: which text is not
    UTF-8, as for every other operation."""
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create_run(run_row("r"))
        row = CallRow(run_id="r", key="k\ud800", request="h", result='"x"', attempts="[]")
        with pytest.raises(StoreError, match=r"save_call: '\\ud800' in an id or name is not UTF-8"):
            store.save_call(row)
