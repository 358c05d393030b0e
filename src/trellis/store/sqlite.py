"""The embedded default store: one SQLite file, WAL mode, numbered migrations.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` (the default here) commits
without waiting for the disk on every transaction. That is safe against a killed or
crashed *process* — every committed step and call survives — but a power loss or OS crash
can lose the last transactions before the most recent checkpoint (never corrupt the file).
Choose ``synchronous="FULL"`` (``sqlite:///path?synchronous=FULL``) to fsync every commit
and survive power loss too, at the cost of one fsync per completed step and LLM call.

One writer: the engine writes from its event-loop thread only. The writes of the runs an
engine executes are group-committed (:mod:`trellis.store.groupcommit`): queued during an
event-loop turn and committed together in one transaction at the start of the next. Every
write commits the queued ones before it, in the same transaction, so what is durable is
always a prefix of what was written, in order; a read of a run commits its queued writes
first. The schema is versioned in
``trellis_meta``; opening a database written by a newer Trellis, or a SQLite file that is
not a Trellis store, is a clear :class:`StoreError`. Every SQL value is bound.

Text: SQLite stores UTF-8, which cannot hold a lone surrogate (``"\ud800"``). JSON
columns never contain one (the codec writes it as an escape); a step's free-text
``reason`` (an exception's message may quote such input) is stored with the surrogate
as its ``\ud800`` escape; an id that is not UTF-8 text is a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from trellis.errors import StoreError
from trellis.store.base import (
    FORMAT,
    CacheStats,
    CallRow,
    LeaseClaim,
    RunRow,
    RunState,
    StepRow,
    Store,
    stale_write,
)
from trellis.store.groupcommit import FENCED, ONE_ROW, UNCHECKED, Write, WriteGroup
from trellis.store.sql import Dialect, run_listing

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

_APP = "trellis"

#: How long a statement waits for another connection's lock before failing.
_BUSY_TIMEOUT_S = 5.0

#: Numbered migrations; the database's ``schema_version`` is how many have been applied.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        status TEXT NOT NULL,
        inputs TEXT NOT NULL,
        started_at REAL NOT NULL,
        parent_id TEXT,
        item_index INTEGER,
        finished_at REAL,
        error TEXT,
        usage TEXT,
        meta TEXT,
        lease_owner TEXT,
        lease_expires REAL,
        format INTEGER NOT NULL
    );
    CREATE INDEX runs_parent ON runs (parent_id, item_index);
    CREATE INDEX runs_started ON runs (started_at);
    CREATE TABLE steps (
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        status TEXT NOT NULL,
        definition TEXT NOT NULL,
        output TEXT,
        reason TEXT,
        error TEXT,
        usage TEXT,
        decisions TEXT,
        details TEXT,
        format INTEGER NOT NULL,
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE calls (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT NOT NULL,
        attempts TEXT NOT NULL,
        format INTEGER NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        hits INTEGER NOT NULL DEFAULT 0,
        format INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: step timings as REAL columns instead of JSON text (smaller rows, less to parse)
    """
    ALTER TABLE steps ADD COLUMN started_at REAL;
    ALTER TABLE steps ADD COLUMN duration_s REAL;
    """,
    # 3: the lease epoch (fencing token): incremented by every grant of a run's lease
    """
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: "is this run a batch's parent" as a column (it was inferred from the meta JSON and
    # from the existence of items); existing batches are marked by those two rules, once.
    """
    ALTER TABLE runs ADD COLUMN is_batch INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET is_batch = 1 WHERE parent_id IS NULL AND (
        meta LIKE '%"batch": true%'
        OR run_id IN (SELECT parent_id FROM runs WHERE parent_id IS NOT NULL)
    );
    """,
    # 5: run time apart from the start (a resumed run's idle time is not run time), and
    # when the latest execution began
    """
    ALTER TABLE runs ADD COLUMN run_s REAL;
    ALTER TABLE runs ADD COLUMN resumed_at REAL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_RUN_COLUMNS = (
    "run_id, flow, status, inputs, started_at, parent_id, item_index, finished_at, error, "
    "usage, meta, lease_owner, lease_expires, lease_epoch, is_batch, run_s, resumed_at"
)
_SQLITE = Dialect(
    mark="?",
    newest_first="started_at DESC, rowid DESC",
    # "+": not by runs_parent, so that runs_started gives the order (and LIMIT reads only
    # the newest rows instead of sorting every top-level run).
    top_level="+parent_id IS NULL",
    flag=int,
)
# A fenced write's guard: the run exists and its epoch is not newer than the writer's.
_FENCE = "EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND lease_epoch <= ?)"


def _fenced(insert: str, values: str) -> tuple[str, str]:
    """An insert's two forms: plain (queued: the commit checks the fence once per run,
    :data:`~trellis.store.groupcommit.FENCED`) and guarded by :data:`_FENCE` (written at
    once: its values end with the run id and the epoch)."""
    return f"{insert} VALUES ({values})", f"{insert} SELECT {values} WHERE {_FENCE}"


_STEP_INSERTS = _fenced(
    "INSERT OR REPLACE INTO steps (run_id, step, status, definition, output, reason, error, "
    "usage, decisions, details, started_at, duration_s, format)",
    ", ".join("?" * 13),
)
_DONE_STEP_INSERTS = _fenced(
    "INSERT OR REPLACE INTO steps (run_id, step, status, definition, output, started_at, "
    "duration_s, format)",
    "?, ?, 'done', ?, ?, ?, ?, ?",
)
_CALL_INSERTS = _fenced(
    "INSERT OR REPLACE INTO calls (run_id, key, request, result, attempts, format)",
    ", ".join("?" * 6),
)
#: Run ids per ``IN (...)`` list (SQLite allows at least 999 values per statement; a power
#: of two, see :func:`_id_lists`).
_IDS_PER_QUERY = 512

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _mapped(method: F) -> F:
    """SQLite errors (disk full, locked, corrupt page) surface as StoreError."""

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise _store_error(self.path, method.__name__, exc) from exc

    return wrapper  # type: ignore[return-value]


def _store_error(path: str, operation: str, exc: sqlite3.Error | UnicodeEncodeError) -> StoreError:
    """What :func:`_mapped` raises for ``exc`` from ``operation`` (for hot paths without it)."""
    if isinstance(exc, UnicodeEncodeError):  # e.g. an id decoded from bytes that are not UTF-8
        return StoreError(
            f"store {path!r}: {operation}: {exc.object[exc.start : exc.end]!r} "
            "in an id or name is not UTF-8 text (SQLite holds UTF-8 only)"
        )
    return StoreError(f"store {path!r}: {operation} failed: {exc}")


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: Synchronous = "NORMAL") -> None:
        self.path = str(path)
        sync = str(synchronous).upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.url = f"sqlite:///{self.path}"
        self._group = WriteGroup(self._commit_writes)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path!r}: {exc}") from exc
        try:
            self._db.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
            self._enter_wal()
            self._db.execute(f"PRAGMA synchronous={sync}")  # a keyword checked above
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{self.path!r} is not a usable Trellis store ({exc}); point --store or "
                "TRELLIS_STORE at another file"
            ) from exc

    # -- group commit -----------------------------------------------------------------------

    def grouped(
        self, run_id: str, on_failure: Callable[[StoreError], None]
    ) -> contextlib.AbstractContextManager[None]:
        return self._group.grouped(run_id, on_failure)

    def committed(self, run_id: str) -> Coroutine[Any, Any, None]:
        return self._group.committed(run_id)  # its coroutine: one frame less per wait

    def when_committed(self, run_id: str, callback: Callable[[], object]) -> bool:
        return self._group.when_committed(run_id, callback)

    def _read(self, run_id: str) -> None:
        """Before reading ``run_id``: commit its queued writes (read-your-writes; a read
        from another thread than the writer's sees what is committed, as another
        connection would)."""
        group = self._group
        if run_id in group.pending_runs and threading.get_ident() == group.thread:
            group.flush()

    def _read_all(self) -> None:
        """Before reading several runs: commit every queued write (as :meth:`_read`)."""
        if self._group.pending and threading.get_ident() == self._group.thread:
            self._group.flush()

    def _write(
        self,
        run_id: str,
        sql: str,
        values: tuple[Any, ...],
        epoch: int | None,
        check: bool,
        *,
        eager: bool = False,
    ) -> None:
        """One write of a run: queued while the run is grouped, else now (after the queued
        writes, in the same transaction). ``check``: it must change exactly one row, else
        it was refused (:meth:`_refused`). ``eager``: see :meth:`WriteGroup.defer`."""
        write = (run_id, sql, values, epoch, ONE_ROW if check else UNCHECKED)
        if self._group.defer(write, eager=eager):
            return
        cur = self._now(lambda: self._db.execute(sql, values))
        if check and cur.rowcount != 1:
            self._refused(run_id, epoch)

    def _insert(
        self,
        run_id: str,
        sql: tuple[str, str],
        values: tuple[Any, ...],
        epoch: int | None,
        *,
        eager: bool = False,
    ) -> None:
        """One record of a run (``sql``: the insert's plain and fenced forms, see
        :func:`_fenced`), fenced by ``epoch`` when it is given: queued (the commit checks
        the fence) or written at once by the fenced form."""
        plain, fenced = sql
        if epoch is None:
            self._write(run_id, plain, values, None, False, eager=eager)
        elif not self._group.defer((run_id, plain, values, epoch, FENCED), eager=eager):
            self._write(run_id, fenced, (*values, run_id, epoch), epoch, True)

    def _now(self, body: Callable[[], T]) -> T:
        """``body`` (statements of one immediate operation) after the queued writes, in one
        transaction with them when there are any."""
        if not self._group.pending:
            return body()
        return self._queued_then(body)

    def _queued_then(self, body: Callable[[], T]) -> T:
        """The queued writes, then ``body``, in one ``BEGIN IMMEDIATE`` transaction."""
        group, db = self._group, self._db
        writes = group.take()
        failures: dict[str, StoreError] = {}
        try:
            db.execute("BEGIN IMMEDIATE")
            failures = self._apply(writes)
            result = body()
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            error = StoreError(f"store {self.path!r}: a group commit failed: {exc}")
            group.settle({w[0]: error for w in writes})
            raise
        group.settle(failures)
        return result

    def _commit_writes(self, writes: list[Write]) -> dict[str, StoreError]:
        """:class:`WriteGroup`'s commit: ``writes`` in one transaction; what failed."""
        db = self._db
        if len(writes) == 1 and writes[0][4] != FENCED:  # one statement: its own transaction
            return self._apply(writes, alone=True)
        try:
            db.execute("BEGIN IMMEDIATE")
            failures = self._apply(writes)
            db.execute("COMMIT")
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            error = StoreError(
                f"store {self.path!r}: committing {len(writes)} queued write(s) failed: {exc}"
            )
            return {w[0]: error for w in writes}
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return failures

    def _apply(self, writes: list[Write], *, alone: bool = False) -> dict[str, StoreError]:
        """Execute queued writes inside the caller's transaction (``alone``: one write, its
        own transaction): the runs whose write was refused (a stale epoch) or failed (the
        statement is undone, the others stand), and their errors; a refused run's later
        writes are skipped. An error that ends the caller's transaction (a full disk) is
        raised."""
        db = self._db
        failures: dict[str, StoreError] = {}
        epochs: dict[str, int] | None = None  # the fenced runs' lease epochs, read once
        for run_id, sql, values, epoch, check in writes:
            if run_id in failures:
                continue
            try:
                if check == FENCED:
                    if epochs is None:
                        epochs = self._lease_epochs({w[0] for w in writes if w[4] == FENCED})
                    elif run_id not in epochs:  # unknown, or its epoch may have moved
                        epochs.update(self._lease_epochs({run_id}))
                    current = epochs.get(run_id)
                    if current is None or (epoch is not None and epoch < current):
                        self._refused(run_id, epoch)
                    db.execute(sql, values)
                    continue
                cur = db.execute(sql, values)
                if epochs is not None:
                    epochs.pop(run_id, None)  # a status write (a start) may move its epoch
                if check and cur.rowcount != 1:
                    self._refused(run_id, epoch)
            except StoreError as exc:
                failures[run_id] = exc
            except (sqlite3.Error, UnicodeEncodeError) as exc:
                if not alone and not db.in_transaction:
                    raise
                failures[run_id] = StoreError(
                    f"store {self.path!r}: a write of run {run_id!r} failed: {exc}"
                )
        return failures

    def _lease_epochs(self, run_ids: set[str]) -> dict[str, int]:
        """The lease epochs of the runs ``run_ids`` that exist, read inside the commit's
        transaction: what its fenced writes are checked against. Grants are immediate and
        commit the queue first; within a commit only a queued status write moves a run's
        epoch (:meth:`start_pending`, 0 to 1), after which :meth:`_apply` reads it again."""
        epochs: dict[str, int] = {}
        for chunk, marks in _id_lists(list(run_ids)):
            sql = f"SELECT run_id, lease_epoch FROM runs WHERE run_id IN ({marks})"
            epochs.update(self._db.execute(sql, chunk).fetchall())
        return epochs

    # -- schema ---------------------------------------------------------------------------

    def _enter_wal(self) -> None:
        """Switch the file to WAL mode. Connections switching a new file at the same moment
        can each hold the shared lock the others wait on; SQLite then answers "database is
        locked" at once, without its busy handler, so the switch is retried here (with a
        jittered pause, for up to the busy timeout)."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.002, 0.02))

    def _migrate(self) -> None:
        """Create or upgrade the schema. Processes opening the same new (or old) file at the
        same moment take turns: the check is made again under the write lock."""
        if self._read_version(creating=False) == SCHEMA_VERSION:
            return  # the common case: no lock taken
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._read_version(creating=True) or 0
            for number in range(version, SCHEMA_VERSION):
                for statement in _split(_MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(
                    "UPDATE trellis_meta SET value = ? WHERE key = 'schema_version'",
                    (str(number + 1),),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _read_version(self, *, creating: bool) -> int | None:
        """The database's schema version; ``None`` for an empty file (created when
        ``creating``, inside the caller's transaction: then 0)."""
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "trellis_meta" not in tables:
            if tables:
                raise StoreError(
                    f"{self.path!r} is a SQLite database but not a Trellis store (it has "
                    f"tables {sorted(tables)[:5]}); use another path"
                )
            if not creating:
                return None
            db.execute("CREATE TABLE trellis_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "INSERT INTO trellis_meta VALUES ('app', ?), ('schema_version', '0')", (_APP,)
            )
        meta = dict(db.execute("SELECT key, value FROM trellis_meta").fetchall())
        if meta.get("app") != _APP:
            raise StoreError(f"{self.path!r} is not a Trellis store (app={meta.get('app')!r})")
        try:
            version = int(meta.get("schema_version", "x"))
        except ValueError as exc:
            raise StoreError(f"{self.path!r}: corrupt schema_version {meta!r}") from exc
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} was written by a newer Trellis (schema version {version}, this "
                f"version knows up to {SCHEMA_VERSION}); upgrade Trellis to open it"
            )
        return version

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT value FROM trellis_meta WHERE key='schema_version'")
        return int(row.fetchone()[0])

    # -- runs -----------------------------------------------------------------------------

    def create_run(self, row: RunRow) -> None:
        self.create_runs([row])

    @_mapped
    def create_runs(self, rows: Iterable[RunRow]) -> None:
        self._read_all()  # the queued writes first, in order
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                f"INSERT INTO runs ({_RUN_COLUMNS}, format) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((*_run_values(r), FORMAT) for r in rows),
            )
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            raise StoreError(f"cannot create run(s): {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @_mapped
    def get_run(self, run_id: str) -> RunRow | None:
        self._read(run_id)
        cur = self._db.execute(
            f"SELECT {_RUN_COLUMNS}, format FROM runs WHERE run_id = ?", (run_id,)
        )
        row = cur.fetchone()
        return _run_row(row) if row else None

    @_mapped
    def pending_runs(self, run_ids: Sequence[str]) -> list[RunRow]:
        self._read_all()
        rows: list[RunRow] = []
        for chunk, marks in _id_lists(run_ids):
            cur = self._db.execute(
                f"SELECT {_RUN_COLUMNS}, format FROM runs WHERE run_id IN ({marks}) "
                "AND status = 'pending' AND lease_epoch = 0",
                chunk,
            )
            rows.extend(_run_row(r) for r in cur)
        return rows

    @_mapped
    def update_run(
        self,
        run_id: str,
        *,
        status: RunState,
        finished_at: float | None = None,
        error: str | None = None,
        usage: str | None = None,
        epoch: int | None = None,
        started_at: float | None = None,
        run_s: float | None = None,
        resumed_at: float | None = None,
    ) -> None:
        self._write(
            run_id,
            "UPDATE runs SET status = ?, finished_at = ?, error = ?, usage = COALESCE(?, usage), "
            "started_at = COALESCE(?, started_at), run_s = COALESCE(?, run_s), "
            "resumed_at = COALESCE(?, resumed_at) "
            "WHERE run_id = ? AND (? IS NULL OR lease_epoch <= ?)",
            (
                status,
                finished_at,
                error,
                usage,
                started_at,
                run_s,
                resumed_at,
                run_id,
                epoch,
                epoch,
            ),
            epoch,
            True,
        )

    @_mapped
    def finish_run(
        self,
        run_id: str,
        owner: str,
        *,
        status: RunState,
        finished_at: float,
        error: str | None = None,
        usage: str | None = None,
        epoch: int | None = None,
        run_s: float | None = None,
    ) -> None:
        # One statement: SET sees the row as it was, so both lease columns test the owner.
        release = "CASE WHEN lease_owner = ? AND (? IS NULL OR lease_epoch = ?) THEN NULL ELSE"
        self._write(
            run_id,
            "UPDATE runs SET status = ?, finished_at = ?, error = ?, usage = COALESCE(?, usage), "
            f"run_s = COALESCE(?, run_s), lease_owner = {release} lease_owner END, "
            f"lease_expires = {release} lease_expires END "
            "WHERE run_id = ? AND (? IS NULL OR lease_epoch <= ?)",
            (
                status,
                finished_at,
                error,
                usage,
                run_s,
                owner,
                epoch,
                epoch,
                owner,
                epoch,
                epoch,
                run_id,
                epoch,
                epoch,
            ),
            epoch,
            True,
        )

    @_mapped
    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        batches: bool | None = None,
        limit: int | None = None,
        lenient: bool = False,
    ) -> list[RunRow]:
        self._read_all()
        sql, args = run_listing(
            f"SELECT {_RUN_COLUMNS}, format FROM runs",
            _SQLITE,
            flow=flow,
            status=status,
            parent_id=parent_id,
            top_level=top_level,
            batches=batches,
            limit=limit,
        )
        return [_run_row(r, lenient=lenient) for r in self._db.execute(sql, args)]

    # -- leases ---------------------------------------------------------------------------

    @_mapped
    def claim_lease(self, run_id: str, owner: str, now: float, ttl: float) -> LeaseClaim:
        db = self._db

        def claim() -> tuple[bool, Any]:
            cur = db.execute(
                "UPDATE runs SET lease_owner = ?, lease_expires = ?, "
                "lease_epoch = lease_epoch + 1 WHERE run_id = ? AND "
                "(lease_owner IS NULL OR lease_owner = ? OR lease_expires IS NULL OR "
                "lease_expires <= ?)",
                (owner, now + ttl, run_id, owner, now),
            )
            return cur.rowcount == 1, db.execute(
                "SELECT lease_owner, lease_epoch FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()

        # The grant and the epoch it returns, atomically (with the queued writes before).
        granted, row = self._queued_then(claim)
        if row is None:
            raise StoreError(f"no run {run_id!r}")
        if granted:
            return LeaseClaim(True, int(row[1]))
        return LeaseClaim(False, int(row[1]), None if row[0] is None else str(row[0]))

    @_mapped
    def start_pending(self, run_id: str, owner: str, now: float, ttl: float) -> int | None:
        sql = (
            "UPDATE runs SET status = 'running', started_at = ?, resumed_at = ?, "
            "lease_owner = ?, lease_expires = ?, lease_epoch = 1 "
            "WHERE run_id = ? AND status = 'pending' AND lease_epoch = 0"
        )
        values = (now, now, owner, now + ttl, run_id)
        # Queued: refused (epoch 0 is older than the other process's grant) at commit.
        if self._group.defer((run_id, sql, values, 0, ONE_ROW)):
            return 1
        rows = self._now(lambda: self._db.execute(sql + " RETURNING 1", values).fetchall())
        return 1 if rows else None

    @_mapped
    def renew_lease(
        self, run_id: str, owner: str, now: float, ttl: float, epoch: int | None = None
    ) -> bool:
        cur = self._now(
            lambda: self._db.execute(
                "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND lease_owner = ? "
                "AND (? IS NULL OR lease_epoch = ?)",
                (now + ttl, run_id, owner, epoch, epoch),
            )
        )
        return cur.rowcount == 1

    @_mapped
    def release_lease(self, run_id: str, owner: str, epoch: int | None = None) -> None:
        self._write(
            run_id,
            "UPDATE runs SET lease_owner = NULL, lease_expires = NULL "
            "WHERE run_id = ? AND lease_owner = ? AND (? IS NULL OR lease_epoch = ?)",
            (run_id, owner, epoch, epoch),
            epoch,
            False,
        )

    def _refused(self, run_id: str, epoch: int | None) -> None:
        """Why a fenced write changed no row: an unknown run, or a stale epoch."""
        row = self._db.execute(
            "SELECT lease_epoch, lease_owner FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r}")
        if epoch is not None and epoch < int(row[0]):
            raise stale_write(run_id, epoch, int(row[0]), row[1])
        raise StoreError(f"run {run_id!r}: the write changed nothing")  # pragma: no cover

    # -- steps and calls ------------------------------------------------------------------

    def save_step(self, row: StepRow, *, epoch: int | None = None) -> None:
        # The hot path of a durable run (one call per completed step): no wrapper frame.
        try:
            values: tuple[Any, ...] = (
                row.run_id,
                row.step,
                row.status,
                row.definition,
                row.output,
                _storable(row.reason),
                row.error,
                row.usage,
                row.decisions,
                row.details,
                row.started_at,
                row.duration_s,
                FORMAT,
            )
            self._insert(row.run_id, _STEP_INSERTS, values, epoch, eager=True)
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise StoreError(f"store {self.path!r}: save_step failed: {exc}") from exc

    def save_done_step(
        self,
        run_id: str,
        step: str,
        definition: str,
        output: str,
        started_at: float | None,
        duration_s: float | None,
        *,
        epoch: int | None = None,
    ) -> None:
        values = (run_id, step, definition, output, started_at, duration_s, FORMAT)
        try:
            self._insert(run_id, _DONE_STEP_INSERTS, values, epoch, eager=True)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path!r}: save_step failed: {exc}") from exc

    @_mapped
    def load_steps(self, run_id: str) -> list[StepRow]:
        self._read(run_id)
        cur = self._db.execute(
            "SELECT run_id, step, status, definition, output, reason, error, usage, decisions, "
            "details, started_at, duration_s, format FROM steps WHERE run_id = ?",
            (run_id,),
        )
        out = []
        for r in cur:
            _check_format(r[-1], f"step {r[1]!r} of run {run_id!r}")
            out.append(
                StepRow(
                    run_id=r[0],
                    step=r[1],
                    status=r[2],
                    definition=r[3],
                    output=r[4],
                    reason=r[5],
                    error=r[6],
                    usage=r[7],
                    decisions=r[8],
                    details=r[9],
                    started_at=r[10],
                    duration_s=r[11],
                )
            )
        return out

    def save_call(self, row: CallRow, *, epoch: int | None = None) -> None:
        # The hot path of a durable run (one call per LLM reply): no wrapper frame.
        values = (row.run_id, row.key, row.request, row.result, row.attempts, FORMAT)
        try:
            self._insert(row.run_id, _CALL_INSERTS, values, epoch)
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise _store_error(self.path, "save_call", exc) from exc

    @_mapped
    def load_calls(self, run_id: str) -> list[CallRow]:
        self._read(run_id)
        cur = self._db.execute(
            "SELECT run_id, key, request, result, attempts, format FROM calls WHERE run_id = ?",
            (run_id,),
        )
        out = []
        for r in cur:
            _check_format(r[-1], f"call {r[1]!r} of run {run_id!r}")
            out.append(CallRow(run_id=r[0], key=r[1], request=r[2], result=r[3], attempts=r[4]))
        return out

    # -- cache ------------------------------------------------------------------------------

    @_mapped
    def cache_get(self, key: str, now: float) -> str | None:
        db = self._db
        row = db.execute(
            "SELECT value, expires_at, format FROM cache WHERE key = ?", (key,)
        ).fetchone()
        if row is None or (row[1] is not None and row[1] <= now):
            return None
        _check_format(row[2], "a cache entry")
        db.execute("UPDATE cache SET hits = hits + 1 WHERE key = ?", (key,))
        return str(row[0])

    @_mapped
    def cache_put(self, key: str, value: str, now: float, expires_at: float | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO cache (key, value, created_at, expires_at, hits, format) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            (key, value, now, expires_at, FORMAT),
        )

    @_mapped
    def cache_stats(self, now: float) -> CacheStats:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN expires_at IS NOT NULL AND expires_at <= ? "
            "THEN 1 ELSE 0 END), 0), COALESCE(SUM(hits), 0), "
            "COALESCE(SUM(LENGTH(CAST(value AS BLOB))), 0) "
            "FROM cache",
            (now,),
        ).fetchone()
        return CacheStats(
            entries=int(row[0]), expired=int(row[1]), hits=int(row[2]), bytes=int(row[3])
        )

    @_mapped
    def cache_clear(self, *, expired_only: bool = False, now: float = 0.0) -> int:
        if expired_only:
            cur = self._db.execute(
                "DELETE FROM cache WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
        else:
            cur = self._db.execute("DELETE FROM cache")
        return cur.rowcount

    def close(self) -> None:
        try:
            self._group.flush()  # what is queued is committed, not dropped
        finally:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


def _storable(text: str | None) -> str | None:
    """Free text as SQLite can store it: a lone surrogate becomes its ``\\udxxx`` escape."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _run_values(r: RunRow) -> tuple[Any, ...]:
    return (
        r.run_id,
        r.flow,
        r.status,
        r.inputs,
        r.started_at,
        r.parent_id,
        r.item_index,
        r.finished_at,
        r.error,
        r.usage,
        r.meta,
        r.lease_owner,
        r.lease_expires,
        r.lease_epoch,
        int(r.is_batch),
        r.run_s,
        r.resumed_at,
    )


def _id_lists(run_ids: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """``run_ids`` in chunks for ``IN (...)`` lists: each chunk and its parameter marks.
    A chunk is padded (with its last id again) to a power of two, so that the statements
    of a few sizes are prepared once and reused from the connection's statement cache."""
    for start in range(0, len(run_ids), _IDS_PER_QUERY):
        chunk = list(run_ids[start : start + _IDS_PER_QUERY])
        size = 1 << (len(chunk) - 1).bit_length()
        chunk += chunk[-1:] * (size - len(chunk))
        yield chunk, _MARKS.get(size) or _MARKS.setdefault(size, ", ".join("?" * size))


_MARKS: dict[int, str] = {}


def _run_row(r: Sequence[Any], *, lenient: bool = False) -> RunRow:
    try:
        _check_format(r[-1], f"run {r[0]!r}")
    except StoreError as exc:
        if not lenient:
            raise
        row = _row_of(r)
        row.unreadable = str(exc)
        return row
    return _row_of(r)


def _row_of(r: Sequence[Any]) -> RunRow:
    return RunRow(
        run_id=r[0],
        flow=r[1],
        status=r[2],
        inputs=r[3],
        started_at=r[4],
        parent_id=r[5],
        item_index=r[6],
        finished_at=r[7],
        error=r[8],
        usage=r[9],
        meta=r[10],
        lease_owner=r[11],
        lease_expires=r[12],
        lease_epoch=r[13],
        is_batch=bool(r[14]),
        run_s=r[15],
        resumed_at=r[16],
    )


def _check_format(value: Any, what: str) -> None:
    if value != FORMAT:
        raise StoreError(f"{what} has record format {value!r}; this Trellis reads format {FORMAT}")
