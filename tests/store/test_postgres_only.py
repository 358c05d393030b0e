"""What only the Postgres store has: a real server shared by processes.

Schema versions and foreign schemas, JSON in ``jsonb``, URLs and secrets, concurrent
writers from several processes, many processes racing for one lease, a stale owner fenced
out, fencing against a concurrent takeover, and connections dropped mid-write.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from trellis.errors import LeaseLostError, StoreError
from trellis.store import CallRow, StepRow, open_store
from trellis.store.pgcluster import PostgresCluster
from trellis.store.pgtext import escape, unescape
from trellis.store.pgurl import redact_url
from trellis.store.postgres import SCHEMA_VERSION, PostgresStore
from trellis.testing.store_conformance import NASTY, run_row

from . import pg_workers

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url) as store:
        yield store


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


# -- schema ---------------------------------------------------------------------------------


def test_a_new_database_gets_the_current_schema_and_keeps_data(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.create_run(run_row("r"))
    assert sql(postgres_url, "SELECT key, value FROM trellis_meta ORDER BY key") == [
        ("app", "trellis"),
        ("schema_version", str(SCHEMA_VERSION)),
    ]
    with PostgresStore(postgres_url) as again:
        assert again.get_run("r") == run_row("r")


def test_a_newer_schema_is_a_clear_error(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    sql(postgres_url, "UPDATE trellis_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"newer Trellis \(schema version 99"):
        PostgresStore(postgres_url)


def test_a_foreign_schema_is_a_clear_error(postgres_url: str) -> None:
    sql(postgres_url, "CREATE TABLE runs (id int)")
    with pytest.raises(StoreError, match=r"tables \['runs'\] but is not a Trellis store"):
        PostgresStore(postgres_url)


def test_a_foreign_meta_table_is_a_clear_error(postgres_url: str) -> None:
    sql(postgres_url, "CREATE TABLE trellis_meta (key text PRIMARY KEY, value text)")
    sql(postgres_url, "INSERT INTO trellis_meta VALUES ('app', 'other')")
    with pytest.raises(StoreError, match="not a Trellis store"):
        PostgresStore(postgres_url)


def test_other_tables_in_the_database_are_left_alone(postgres_url: str) -> None:
    sql(postgres_url, "CREATE TABLE invoices (id int)")
    with PostgresStore(postgres_url) as store:
        store.create_run(run_row("r"))
    assert sql(postgres_url, "SELECT count(*) FROM invoices") == [(0,)]


def test_processes_creating_the_schema_at_once_take_turns(postgres_url: str) -> None:
    threads = [
        threading.Thread(target=lambda: PostgresStore(postgres_url).close()) for _ in range(6)
    ]
    errors: list[BaseException] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        errors.append(args.exc_value)  # type: ignore[arg-type]

    previous, threading.excepthook = threading.excepthook, hook
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        threading.excepthook = previous
    assert errors == []
    assert sql(postgres_url, "SELECT value FROM trellis_meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


# -- values: jsonb, exact text, bound parameters ------------------------------------------


def test_json_is_stored_as_jsonb_documents(store: PostgresStore) -> None:
    store.create_run(run_row("r", meta='{"target": "x.py:flow"}'))
    store.save_done_step("r", "classify", "d", '{"label":"positive","score":0.5}', 1.0, 0.1)
    store.save_call(
        CallRow(
            run_id="r",
            key="k",
            request="req",
            result='{"a": [1, 2]}',
            attempts='[{"outcome": "ok"}]',
        )
    )
    url = store._conninfo
    assert sql(url, "SELECT output->>'label', jsonb_typeof(output) FROM steps") == [
        ("positive", "object")
    ]
    assert sql(url, "SELECT meta->>'target', inputs->>'x' FROM runs") == [("x.py:flow", "1")]
    assert sql(url, "SELECT result->'a'->>1, attempts->0->>'outcome' FROM calls") == [("2", "ok")]
    column_types = sql(
        url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE data_type = 'jsonb' ORDER BY 1, 2",
    )
    assert column_types == [
        ("cache", "value"),
        ("calls", "attempts"),
        ("calls", "result"),
        ("runs", "error"),
        ("runs", "inputs"),
        ("runs", "meta"),
        ("runs", "usage"),
        ("steps", "decisions"),
        ("steps", "details"),
        ("steps", "error"),
        ("steps", "output"),
        ("steps", "usage"),
    ]
    (step,) = store.load_steps("r")
    assert step.output == '{"label": "positive", "score": 0.5}'  # the same JSON value


def test_text_that_jsonb_cannot_hold_is_kept_exactly_and_flagged(store: PostgresStore) -> None:
    for i, text in enumerate(["not json", '"nul \\u0000 escaped"', "NaN", '"\\ud800"', NASTY]):
        store.save_done_step("r", f"s{i}", "d", text, None, None)
        assert {s.step: s.output for s in store.load_steps("r")}[f"s{i}"] == text
    assert sql(store._conninfo, "SELECT count(*) FROM steps WHERE raw & 1 = 1") == [(5,)]


@pytest.mark.parametrize("text", ["", "plain", "\x00", "\x01", "\x01\x02", "a\x00\x01\x00b\x01"])
def test_nul_escaping_is_reversible_and_leaves_plain_text_alone(text: str) -> None:
    assert unescape(escape(text)) == text
    assert "\x00" not in escape(text)
    if "\x00" not in text and "\x01" not in text:
        assert escape(text) == text


def test_escaping_is_injective_so_lookups_stay_exact(store: PostgresStore) -> None:
    for run_id in ("a\x00", "a\x01\x02", "a\x01", "a"):
        store.create_run(run_row(run_id))
    assert sorted(r.run_id for r in store.list_runs()) == sorted(
        ["a\x00", "a\x01\x02", "a\x01", "a"]
    )
    assert store.get_run("a\x01\x02").run_id == "a\x01\x02"  # type: ignore[union-attr]


# -- URLs and secrets -----------------------------------------------------------------------


def test_open_store_selects_postgres_for_both_schemes(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://")):
        with open_store(url) as store:
            assert isinstance(store, PostgresStore)


def test_trellis_store_selects_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_STORE", postgres_url)
    with open_store() as store:
        assert isinstance(store, PostgresStore)
        assert store.url == postgres_url


def test_the_password_is_kept_out_of_the_url_and_errors(postgres_url: str) -> None:
    secret = "s3cr3t-pass"
    with_password = postgres_url.replace("trellis@", f"trellis:{secret}@") + f"?password={secret}"
    with PostgresStore(with_password) as store:  # trust auth: the password is not checked
        assert secret not in store.url and secret not in repr(store)
        assert store.url == postgres_url
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    unreachable = with_password.replace(f":{port}/", ":1/")
    with pytest.raises(StoreError) as info:
        PostgresStore(unreachable, connect_timeout=2)
    assert secret not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p@h:5/db?sslmode=require&password=p") == (
        "postgresql://u@h:5/db?sslmode=require"
    )
    assert redact_url("postgres://h/db") == "postgres://h/db"


# -- several processes --------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_writers_from_several_processes(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    workers, steps = 4, 40
    barrier, out = SPAWN.Barrier(workers), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=pg_workers.write_concurrently, args=(postgres_url, w, steps, barrier, out)
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=90) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(results.values()) == 1, "exactly one process created the contested run"
    with PostgresStore(postgres_url) as store:
        for w in range(workers):
            run = store.get_run(f"own{w}")
            assert run is not None and run.status == "done" and run.lease_epoch == 1
            assert {s.step: s.output for s in store.load_steps(f"own{w}")} == {
                f"s{i}": f'{{"i": {i}, "w": {w}}}' for i in range(steps)
            }
            assert {c.key: c.result for c in store.load_calls(f"own{w}")} == {
                f"k{i}": f'"{w}-{i}"' for i in range(steps)
            }
        assert len(store.load_steps("shared")) == workers * steps
        assert len(store.list_runs()) == workers * 21 + 1


@pytest.mark.slow
def test_many_processes_racing_for_one_lease_exactly_one_wins(postgres_url: str) -> None:
    workers, rounds = 6, 5
    with PostgresStore(postgres_url) as store:
        store.create_runs(
            [run_row(f"race{r}", lease_owner="dead", lease_expires=100.0) for r in range(rounds)]
        )
    barrier, out = SPAWN.Barrier(workers), SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=pg_workers.race_for_leases, args=(postgres_url, w, rounds, barrier, out)
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    claims = [out.get(timeout=90) for _ in range(workers * rounds)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with PostgresStore(postgres_url) as store:
        for r in range(rounds):
            these = [c for c in claims if c[0] == r]
            winners = [c for c in these if c[2]]
            assert len(winners) == 1, these
            winner = f"w{winners[0][1]}"
            assert winners[0][3] == 1, "one grant: the epoch went from 0 to 1"
            assert all(c[3] == 1 and c[4] == winner for c in these if not c[2])
            row = store.get_run(f"race{r}")
            assert row is not None
            assert (row.lease_owner, row.lease_epoch) == (winner, 1)


@pytest.mark.slow
def test_a_stale_owner_in_another_process_is_fenced_out(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store:
        store.create_run(run_row("fenced", status="running"))
        ready, resume, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
        proc = SPAWN.Process(target=pg_workers.stale_owner, args=(postgres_url, ready, resume, out))
        proc.start()
        assert ready.wait(60)
        # The stale owner's lease (expires at 110) is taken over by this process.
        claim = store.claim_lease("fenced", "new", now=200.0, ttl=100.0)
        assert (claim.granted, claim.epoch) == (True, 2)
        store.save_done_step("fenced", "s", "d", '"new"', 1.0, 0.1, epoch=2)
        resume.set()
        results = out.get(timeout=60)
        proc.join(30)
        assert proc.exitcode == 0
        refused = ("refused", 1, 2, "new")
        assert results == {
            "epoch": 1,
            "update_run": refused,
            "save_done_step": refused,
            "save_step": refused,
            "save_call": refused,
            "renew": False,
        }
        row = store.get_run("fenced")
        assert row is not None
        assert (row.status, row.lease_owner, row.lease_epoch) == ("running", "new", 2)
        assert {s.step: s.output for s in store.load_steps("fenced")} == {
            "before": '"mine"',
            "s": '"new"',
        }
        assert store.load_calls("fenced") == []


# -- fencing against a takeover in flight ---------------------------------------------------


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def wait_until_blocked(url: str, application_name: str) -> int:
    """The pid of the backend of ``application_name`` once it waits on a lock."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sql(
            url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (application_name,),
        )
        if rows:
            return int(rows[0][0])
        time.sleep(0.02)
    raise AssertionError(f"{application_name} never waited on a lock")


def test_a_fenced_write_racing_a_takeover_sees_the_new_epoch(postgres_url: str) -> None:
    """The write waits for the grant in flight and is then refused: it never lands on the
    epoch the takeover just replaced (the share lock of the fence)."""
    with PostgresStore(postgres_url, application_name="racing-writer") as store:
        store.create_run(run_row("r", status="running"))
        epoch = store.claim_lease("r", "old", now=100.0, ttl=10.0).epoch
        with psycopg.connect(postgres_url) as thief:  # a transaction left open
            thief.execute(
                "UPDATE runs SET lease_owner = 'thief', lease_expires = 1000, "
                "lease_epoch = lease_epoch + 1 WHERE run_id = 'r'"
            )
            thread, box = in_thread(
                lambda: store.save_done_step("r", "s", "d", '"old"', 1.0, 0.1, epoch=epoch)
            )
            wait_until_blocked(postgres_url, "racing-writer")
            thief.commit()
        thread.join(30)
        assert isinstance(box.get("error"), LeaseLostError), box
        assert store.load_steps("r") == []


# -- connections dropped mid-write ----------------------------------------------------------


def test_a_connection_dropped_mid_batch_insert_leaves_nothing_half_written(
    postgres_url: str,
) -> None:
    with PostgresStore(postgres_url, application_name="victim-create") as store:
        with psycopg.connect(postgres_url) as blocker:
            # An uncommitted row with the id of item 500: the insert of the batch blocks
            # there, with items 0..499 already written in its open transaction.
            blocker.execute(
                "INSERT INTO runs (run_id, flow, status, inputs, started_at, format) "
                "VALUES ('b.500', 'f', 'pending', '{}', 1, 1)"
            )
            rows = [run_row(f"b.{i}", parent_id="b", item_index=i) for i in range(1000)]
            thread, box = in_thread(lambda: store.create_runs(rows))
            pid = wait_until_blocked(postgres_url, "victim-create")
            sql(postgres_url, "SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(30)
            blocker.rollback()
        error = box.get("error")
        assert isinstance(error, StoreError) and "connection was lost" in str(error), box
        assert store.list_runs() == []  # not one of the 500 rows written before the drop
        store.create_runs(rows)  # the store works on, on a fresh connection
        assert len(store.list_runs(parent_id="b")) == 1000


def test_a_connection_dropped_mid_step_write_is_retried_once(postgres_url: str) -> None:
    with PostgresStore(postgres_url, application_name="victim-step") as store:
        store.create_run(run_row("r", status="running"))
        epoch = store.claim_lease("r", "me", now=100.0, ttl=100.0).epoch
        with psycopg.connect(postgres_url) as blocker:
            blocker.execute("SELECT 1 FROM runs WHERE run_id = 'r' FOR UPDATE")
            thread, box = in_thread(
                lambda: store.save_done_step("r", "s", "d", '{"v": 1}', 1.0, 0.1, epoch=epoch)
            )
            pid = wait_until_blocked(postgres_url, "victim-step")
            sql(postgres_url, "SELECT pg_terminate_backend(%s)", (pid,))
            time.sleep(0.2)
            blocker.rollback()
        thread.join(30)
        assert "error" not in box, box
        assert [(s.step, s.output) for s in store.load_steps("r")] == [("s", '{"v": 1}')]


def test_an_idle_connection_killed_between_writes_is_replaced(postgres_url: str) -> None:
    with PostgresStore(postgres_url, application_name="victim-idle") as store:
        store.create_run(run_row("r"))
        sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            ("victim-idle",),
        )
        store.save_step(StepRow(run_id="r", step="s", status="done", definition="d", output="1"))
        store.update_run("r", status="done")
        assert store.get_run("r").status == "done"  # type: ignore[union-attr]
        assert [s.step for s in store.load_steps("r")] == ["s"]


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_a_database_that_refuses_connections_is_a_store_error_not_a_hang(
    postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    admin, database = postgres_cluster.url(), postgres_url.rsplit("/", 1)[1]
    with PostgresStore(postgres_url, application_name="victim-gone", connect_timeout=1) as store:
        store.create_run(run_row("r"))
        sql(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            sql(
                admin,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                ("victim-gone",),
            )
            started = time.monotonic()
            with pytest.raises(StoreError, match="get_run failed"):
                store.get_run("r")
            assert time.monotonic() - started < 10
        finally:
            sql(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        # Back once the database accepts connections again (the pool reconnects, backing off).
        deadline = time.monotonic() + 30
        while True:
            try:
                assert store.get_run("r") is not None
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise


def test_a_unix_socket_url_works(postgres_url: str, postgres_cluster: PostgresCluster) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    url = f"postgresql://trellis@/{database}?host={postgres_cluster.root}&port={postgres_cluster.port}"
    with open_store(url) as store:
        store.create_run(run_row("via-socket"))
    assert sql(postgres_url, "SELECT run_id FROM runs") == [("via-socket",)]
