"""The shared store: PostgreSQL through psycopg 3 and a ``psycopg_pool`` connection pool.

Selected by ``postgresql://user@host:port/db`` (or ``postgres://``) as ``--store``,
``TRELLIS_STORE`` or ``tl.Engine(store=...)``; needs the ``[postgres]`` extra. Several
processes on several machines may share one database: leases and fencing are enforced by
the database itself.

- **Synchronous, pooled.** The :class:`~trellis.store.base.Store` interface is synchronous
  (each method is one or two short statements, called on the engine's event-loop thread), so
  this is a sync ``ConnectionPool`` of autocommit connections: a single statement is its
  own transaction; multi-statement operations use an explicit one. The thread that opened
  the store keeps one pooled connection (and a cursor) checked out between calls, since a
  pool round trip costs a good part of a short statement; other threads check one out per
  call. A completed step is first recorded with a plain (fenced) ``INSERT``, and upserted
  only when the step already has a record.
- **Schema.** Numbered migrations recorded in ``trellis_meta`` (``app``, ``schema_version``),
  applied under a transaction-scoped advisory lock so that processes opening a new database
  at once take turns. A database written by a newer Trellis, or whose ``runs`` / ``steps`` /
  ``calls`` / ``cache`` tables are not a Trellis store's, is a clear :class:`StoreError`.
  Other tables in the same schema are left alone.
- **Values.** Every value is a bound parameter; JSON lives in ``jsonb`` and text is kept
  exactly (:mod:`trellis.store.pgtext`); nothing is pickled.
- **Fencing.** The contract of ``store/base.py``, atomically: a fenced insert is
  ``INSERT ... SELECT ... WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = %s AND
  lease_epoch <= %s FOR SHARE)``: the share lock on the run's row makes a concurrent lease
  grant wait for the write (or the write wait for the grant, and then see its epoch). A
  fenced update is ``UPDATE ... WHERE lease_epoch <= %s``. A lease grant is one conditional
  ``UPDATE ... RETURNING lease_epoch``; racing claimants queue on the row lock and
  re-evaluate the condition after the winner commits, so exactly one wins.
- **Dropped connections.** Every write is one transaction: a connection lost mid-write
  leaves nothing of it behind. Idempotent operations (all but creating runs) are retried
  once on a fresh connection; creating runs is not (a lost commit acknowledgement would make
  the retry fail with "already exists"), it fails with a :class:`StoreError` instead.
- **Secrets.** A password in the URL is used to connect and never kept in :attr:`url`,
  ``repr`` or any error message; prefer ``PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

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
from trellis.store.pgtext import decode_json, encode_json, escape, unescape
from trellis.store.pgurl import is_postgres_url, password_of, redact_url
from trellis.store.sql import Dialect, run_listing

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
    from psycopg_pool import ConnectionPool

    _IDLE = TransactionStatus.IDLE
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

_APP = "trellis"
_TABLES = ("runs", "steps", "calls", "cache")
_MIGRATION_LOCK = 0x7472656C6C6973  # pg_advisory_xact_lock key: "trellis"

#: Numbered migrations; the database's ``schema_version`` is how many have been applied.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            run_id text PRIMARY KEY,
            flow text NOT NULL,
            status text NOT NULL,
            inputs jsonb NOT NULL,
            started_at double precision NOT NULL,
            parent_id text,
            item_index integer,
            finished_at double precision,
            error jsonb,
            usage jsonb,
            meta jsonb,
            lease_owner text,
            lease_expires double precision,
            lease_epoch bigint NOT NULL DEFAULT 0,
            raw smallint NOT NULL DEFAULT 0,
            format integer NOT NULL,
            created bigint GENERATED ALWAYS AS IDENTITY
        )""",
        "CREATE INDEX runs_parent ON runs (parent_id, item_index)",
        "CREATE INDEX runs_started ON runs (started_at, created)",
        """CREATE TABLE steps (
            run_id text NOT NULL,
            step text NOT NULL,
            status text NOT NULL,
            definition text NOT NULL,
            output jsonb,
            reason text,
            error jsonb,
            usage jsonb,
            decisions jsonb,
            details jsonb,
            started_at double precision,
            duration_s double precision,
            raw smallint NOT NULL DEFAULT 0,
            format integer NOT NULL,
            PRIMARY KEY (run_id, step)
        )""",
        """CREATE TABLE calls (
            run_id text NOT NULL,
            key text NOT NULL,
            request text NOT NULL,
            result jsonb NOT NULL,
            attempts jsonb NOT NULL,
            raw smallint NOT NULL DEFAULT 0,
            format integer NOT NULL,
            PRIMARY KEY (run_id, key)
        )""",
        """CREATE TABLE cache (
            key text PRIMARY KEY,
            value jsonb NOT NULL,
            bytes bigint NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision,
            hits bigint NOT NULL DEFAULT 0,
            raw smallint NOT NULL DEFAULT 0,
            format integer NOT NULL
        )""",
    ),
    # 2: "is this run a batch's parent" as a column of its own (as SQLite's migration 4);
    # existing batches are marked once by the rules that inferred it before.
    (
        "ALTER TABLE runs ADD COLUMN is_batch boolean NOT NULL DEFAULT false",
        """UPDATE runs SET is_batch = true WHERE parent_id IS NULL AND (
            meta->>'batch' = 'true'
            OR run_id IN (SELECT parent_id FROM runs WHERE parent_id IS NOT NULL)
        )""",
    ),
    # 3: run time apart from the start, and when the latest execution began (as SQLite's
    # migration 5)
    (
        "ALTER TABLE runs ADD COLUMN run_s double precision",
        "ALTER TABLE runs ADD COLUMN resumed_at double precision",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Bits of each table's ``raw`` mask: which JSON column holds escaped text, not a document.
_R_INPUTS, _R_ERROR, _R_USAGE, _R_META = 1, 2, 4, 8
_S_OUTPUT, _S_ERROR, _S_USAGE, _S_DECISIONS, _S_DETAILS = 1, 2, 4, 8, 16
_C_RESULT, _C_ATTEMPTS = 1, 2
_K_VALUE = 1

_RUN_SELECT = (
    "SELECT run_id, flow, status, inputs::text, started_at, parent_id, item_index, "
    "finished_at, error::text, usage::text, meta::text, lease_owner, lease_expires, "
    "lease_epoch, raw, format, is_batch, run_s, resumed_at FROM runs"
)
_POSTGRES = Dialect(
    mark="%s",
    newest_first="started_at DESC, created DESC",
    top_level="parent_id IS NULL",
    text=escape,
)
_RUN_INSERT = (
    "INSERT INTO runs (run_id, flow, status, inputs, started_at, parent_id, item_index, "
    "finished_at, error, usage, meta, lease_owner, lease_expires, lease_epoch, raw, format, "
    "is_batch, run_s, resumed_at) "
    "VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, "
    "%s, %s, %s, %s, %s, %s)"
)
# A fenced write's guard: the run exists and its epoch is not newer than the writer's. The
# share lock orders the write and a concurrent grant (see the module docstring).
_FENCE = (
    "EXISTS (SELECT 1 FROM runs WHERE run_id = %s::text AND lease_epoch <= %s::bigint FOR SHARE)"
)
_STEP_COLUMNS = (
    "run_id, step, status, definition, output, reason, error, usage, decisions, details, "
    "started_at, duration_s, raw, format"
)
_STEP_VALUES = (  # typed: the INSERT ... SELECT form needs every parameter's type
    "%s::text, %s::text, %s::text, %s::text, %s::jsonb, %s::text, %s::jsonb, %s::jsonb, "
    "%s::jsonb, %s::jsonb, %s::float8, %s::float8, %s::smallint, %s::integer"
)
_STEP_UPSERT = (
    " ON CONFLICT (run_id, step) DO UPDATE SET status = EXCLUDED.status, "
    "definition = EXCLUDED.definition, output = EXCLUDED.output, reason = EXCLUDED.reason, "
    "error = EXCLUDED.error, usage = EXCLUDED.usage, decisions = EXCLUDED.decisions, "
    "details = EXCLUDED.details, started_at = EXCLUDED.started_at, "
    "duration_s = EXCLUDED.duration_s, raw = EXCLUDED.raw, format = EXCLUDED.format"
)
_STEP_SQL = f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES ({_STEP_VALUES}){_STEP_UPSERT}"
_STEP_FENCED_SQL = (
    f"INSERT INTO steps ({_STEP_COLUMNS}) SELECT {_STEP_VALUES} WHERE {_FENCE}{_STEP_UPSERT}"
)
_DONE_COLUMNS = "run_id, step, status, definition, output, started_at, duration_s, raw, format"
_DONE_VALUES = (
    "%s::text, %s::text, 'done', %s::text, %s::jsonb, %s::float8, %s::float8, %s::smallint, "
    "%s::integer"
)
_DONE_SQL = f"INSERT INTO steps ({_DONE_COLUMNS}) VALUES ({_DONE_VALUES}){_STEP_UPSERT}"
# The hot path tries a plain insert first (most steps are recorded once; ON CONFLICT costs
# about a third of the statement on the server) and upserts when the step exists.
_DONE_NEW_SQL = f"INSERT INTO steps ({_DONE_COLUMNS}) VALUES ({_DONE_VALUES})"
_DONE_NEW_FENCED_SQL = f"INSERT INTO steps ({_DONE_COLUMNS}) SELECT {_DONE_VALUES} WHERE {_FENCE}"
_DONE_FENCED_SQL = (
    f"INSERT INTO steps ({_DONE_COLUMNS}) SELECT {_DONE_VALUES} WHERE {_FENCE}{_STEP_UPSERT}"
)
_CALL_VALUES = "%s::text, %s::text, %s::text, %s::jsonb, %s::jsonb, %s::smallint, %s::integer"
_CALL_UPSERT = (
    " ON CONFLICT (run_id, key) DO UPDATE SET request = EXCLUDED.request, "
    "result = EXCLUDED.result, attempts = EXCLUDED.attempts, raw = EXCLUDED.raw, "
    "format = EXCLUDED.format"
)
_CALL_INTO = "INSERT INTO calls (run_id, key, request, result, attempts, raw, format)"
_CALL_SQL = f"{_CALL_INTO} VALUES ({_CALL_VALUES}){_CALL_UPSERT}"
_CALL_FENCED_SQL = f"{_CALL_INTO} SELECT {_CALL_VALUES} WHERE {_FENCE}{_CALL_UPSERT}"

T = TypeVar("T")


class _NotJsonb(StoreError):
    """Postgres refused a value sent as ``jsonb`` as it is (see ``save_done_step``)."""


class _StepExists(StoreError):
    """The plain insert of ``save_done_step`` found the step recorded: upsert instead."""


class PostgresStore(Store):
    """A :class:`Store` in a PostgreSQL database (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        application_name: str = "trellis",
    ) -> None:
        if psycopg is None:  # pragma: no cover
            raise StoreError(
                "the PostgreSQL store needs psycopg 3: pip install 'trellis-flows[postgres]'"
            )
        if not is_postgres_url(url):
            raise StoreError(f"not a PostgreSQL URL: {redact_url(url)!r}")
        self.url = redact_url(url)
        self._secret = password_of(url)
        self._conninfo = url
        self._timeout = connect_timeout
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": application_name,
            "connect_timeout": max(1, round(connect_timeout)),
        }
        try:
            with psycopg.connect(url, **kwargs) as conn:
                self._migrate(conn)
        except StoreError:
            raise
        except psycopg.Error as exc:
            raise self._error("cannot open the store", exc) from None
        self._owner = threading.get_ident()
        self._held: psycopg.Connection[Any] | None = None
        self._held_cursor: psycopg.Cursor[Any] | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=max(1, max_connections),
            timeout=connect_timeout,
            num_workers=1,
            name="trellis-store",
            open=True,
        )
        # Wait for the first connection before any use: a request queued while the pool
        # opens would make it grow, and the pool hands its connections out in turn, so one
        # thread would then wake two server processes alternately (slower on a busy host).
        try:
            self._pool.wait(timeout=connect_timeout)
        except psycopg.Error as exc:
            self._pool.close()
            raise self._error("cannot open the store", exc) from None

    # -- errors and connections -------------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StoreError:
        detail = " ".join(str(exc).split()) or type(exc).__name__  # libpq's lines: one
        message = f"store {self.url}: {what}: {detail}"
        if self._secret:
            message = message.replace(self._secret, "***")
        if isinstance(exc, psycopg.OperationalError) and "password" in message.lower():
            message += " (the password is never recorded: set PGPASSWORD or ~/.pgpass)"
        return StoreError(message)

    def _checkout(self) -> tuple[psycopg.Connection[Any], bool]:
        """A connection for this call, and whether it is the owner thread's held one.

        The thread that opened the store (the engine's event-loop thread: nearly every
        call) keeps one pooled connection checked out between calls: a pool round trip
        (``getconn`` + ``putconn``) costs as much as a third of a short statement. Other
        threads check a connection out per call. A held connection found broken goes back
        to the pool (which discards it) and is replaced."""
        if threading.get_ident() != self._owner:
            return self._pool.getconn(), False
        conn = self._held
        if conn is None or conn.closed:
            self._held = None
            if conn is not None:
                self._pool.putconn(conn)
            conn = self._held = self._pool.getconn()
        return conn, True

    def _cursor(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """A cursor on ``conn``: the held connection's is kept (the hot path), others new."""
        if conn is not self._held or threading.get_ident() != self._owner:
            return conn.cursor()
        cur = self._held_cursor
        if cur is None or cur.connection is not conn:
            cur = self._held_cursor = conn.cursor()
        return cur

    def _checkin(self, conn: psycopg.Connection[Any], held: bool) -> None:
        if not held:
            self._pool.putconn(conn)
        elif conn.closed or conn.info.transaction_status != _IDLE:
            self._held = None  # never keep a broken or mid-transaction connection
            self._pool.putconn(conn)

    def _do(
        self, what: str, work: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True
    ) -> T:
        """Run ``work`` on a pooled connection; psycopg errors become :class:`StoreError`.
        A connection lost on the way (server restart, terminated backend, network cut) is
        retried once on a fresh connection when ``retry`` (the operation is idempotent)."""
        for attempt in (1, 2):
            conn: psycopg.Connection[Any] | None = None
            try:
                conn, held = self._checkout()
                try:
                    return work(conn)
                finally:
                    self._checkin(conn, held)
            except StoreError:
                raise
            except psycopg.OperationalError as exc:
                lost = conn is not None and conn.closed
                if lost and retry and attempt == 1:
                    self._pool.check()  # the others may be gone too (a server restart)
                    continue
                if lost:
                    raise self._error(
                        f"{what} failed: the connection was lost (nothing of this write "
                        "was kept unless it had committed)",
                        exc,
                    ) from None
                raise self._error(f"{what} failed", exc) from None
            except psycopg.Error as exc:
                raise self._error(f"{what} failed", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """Create or upgrade the schema; concurrent openers take turns on an advisory lock
        and repeat the check under it."""
        if self._read_version(conn) == SCHEMA_VERSION:
            return  # the common case: no lock taken
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            version = self._read_version(conn)
            if version is None:
                conn.execute(
                    "CREATE TABLE trellis_meta (key text PRIMARY KEY, value text NOT NULL)"
                )
                conn.execute(
                    "INSERT INTO trellis_meta VALUES ('app', %s), ('schema_version', '0')", (_APP,)
                )
                version = 0
            for number in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(
                    "UPDATE trellis_meta SET value = %s WHERE key = 'schema_version'",
                    (str(number + 1),),
                )

    def _read_version(self, conn: psycopg.Connection[Any]) -> int | None:
        """The schema version; ``None`` when the schema has no Trellis tables yet."""
        tables = {
            str(r[0])
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        if "trellis_meta" not in tables:
            clash = sorted(tables & set(_TABLES))
            if clash:
                raise StoreError(
                    f"store {self.url}: the database has tables {clash} but is not a Trellis "
                    "store (no trellis_meta); use another database or schema"
                )
            return None
        meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM trellis_meta")}
        if meta.get("app") != _APP:
            raise StoreError(
                f"store {self.url}: not a Trellis store (trellis_meta app={meta.get('app')!r})"
            )
        try:
            version = int(meta.get("schema_version", "x"))
        except ValueError:
            raise StoreError(f"store {self.url}: corrupt schema_version {meta!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} was written by a newer Trellis (schema version {version}, "
                f"this version knows up to {SCHEMA_VERSION}); upgrade Trellis to open it"
            )
        return version

    @property
    def schema_version(self) -> int:
        def read(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT value FROM trellis_meta WHERE key = 'schema_version'")
            return int(row.fetchone()[0])  # type: ignore[index]

        return self._do("schema_version", read)

    # -- runs -----------------------------------------------------------------------------

    def create_run(self, row: RunRow) -> None:
        self.create_runs([row])

    def create_runs(self, rows: Iterable[RunRow]) -> None:
        values = (_run_values(r) for r in rows)  # inserted as they are made

        def insert(conn: psycopg.Connection[Any]) -> None:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(_RUN_INSERT, values)
            except pg_errors.UniqueViolation as exc:
                raise StoreError(f"cannot create run(s): {exc.diag.message_detail or exc}") from exc

        self._do("create_runs", insert, retry=False)

    def get_run(self, run_id: str) -> RunRow | None:
        def read(conn: psycopg.Connection[Any]) -> RunRow | None:
            row = conn.execute(_RUN_SELECT + " WHERE run_id = %s", (escape(run_id),)).fetchone()
            return _run_row(row) if row else None

        return self._do("get_run", read)

    def pending_runs(self, run_ids: Sequence[str]) -> list[RunRow]:
        keys = [escape(run_id) for run_id in run_ids]

        def read(conn: psycopg.Connection[Any]) -> list[RunRow]:
            cur = conn.execute(
                _RUN_SELECT + " WHERE run_id = ANY(%s) AND status = 'pending' AND lease_epoch = 0",
                (keys,),
            )
            return [_run_row(r) for r in cur]

        return self._do("pending_runs", read)

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
        error_json, error_bit = encode_json(error, _R_ERROR)
        usage_json, usage_bit = encode_json(usage, _R_USAGE)
        keep = 0x7FFF & ~(_R_ERROR | (_R_USAGE if usage is not None else 0))

        def update(conn: psycopg.Connection[Any]) -> None:
            cur = conn.execute(
                "UPDATE runs SET status = %s, finished_at = %s, error = %s::jsonb, "
                "usage = COALESCE(%s::jsonb, usage), raw = (raw & %s) | %s, "
                "started_at = COALESCE(%s, started_at), run_s = COALESCE(%s, run_s), "
                "resumed_at = COALESCE(%s, resumed_at) "
                "WHERE run_id = %s AND (%s::bigint IS NULL OR lease_epoch <= %s::bigint)",
                (
                    status,
                    finished_at,
                    error_json,
                    usage_json,
                    keep,
                    error_bit | usage_bit,
                    started_at,
                    run_s,
                    resumed_at,
                    escape(run_id),
                    epoch,
                    epoch,
                ),
            )
            if cur.rowcount != 1:
                self._refused(conn, run_id, epoch)

        self._do("update_run", update)

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
        sql, args = run_listing(  # fixed fragments only; every value is a parameter
            _RUN_SELECT,
            _POSTGRES,
            flow=flow,
            status=status,
            parent_id=parent_id,
            top_level=top_level,
            batches=batches,
            limit=limit,
        )

        def read(conn: psycopg.Connection[Any]) -> list[RunRow]:
            return [_run_row(r, lenient=lenient) for r in conn.execute(sql, args)]

        return self._do("list_runs", read)

    # -- leases ---------------------------------------------------------------------------

    def claim_lease(self, run_id: str, owner: str, now: float, ttl: float) -> LeaseClaim:
        key, who = escape(run_id), escape(owner)

        def claim(conn: psycopg.Connection[Any]) -> LeaseClaim:
            granted = conn.execute(
                "UPDATE runs SET lease_owner = %s, lease_expires = %s, "
                "lease_epoch = lease_epoch + 1 WHERE run_id = %s AND "
                "(lease_owner IS NULL OR lease_owner = %s OR lease_expires IS NULL OR "
                "lease_expires <= %s) RETURNING lease_epoch",
                (who, now + ttl, key, who, now),
            ).fetchone()
            if granted is not None:
                return LeaseClaim(True, int(granted[0]))
            row = conn.execute(
                "SELECT lease_owner, lease_epoch FROM runs WHERE run_id = %s", (key,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no run {run_id!r}")
            return LeaseClaim(False, int(row[1]), None if row[0] is None else unescape(row[0]))

        # Retried after a lost connection: a grant that had committed is ours and granted
        # again (same owner), with the next epoch.
        return self._do("claim_lease", claim)

    def renew_lease(
        self, run_id: str, owner: str, now: float, ttl: float, epoch: int | None = None
    ) -> bool:
        def renew(conn: psycopg.Connection[Any]) -> bool:
            cur = conn.execute(
                "UPDATE runs SET lease_expires = %s WHERE run_id = %s AND lease_owner = %s "
                "AND (%s::bigint IS NULL OR lease_epoch = %s::bigint)",
                (now + ttl, escape(run_id), escape(owner), epoch, epoch),
            )
            return cur.rowcount == 1

        return self._do("renew_lease", renew)

    def release_lease(self, run_id: str, owner: str, epoch: int | None = None) -> None:
        def release(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE runs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE run_id = %s AND lease_owner = %s "
                "AND (%s::bigint IS NULL OR lease_epoch = %s::bigint)",
                (escape(run_id), escape(owner), epoch, epoch),
            )

        self._do("release_lease", release)

    def _refused(self, conn: psycopg.Connection[Any], run_id: str, epoch: int | None) -> None:
        """Why a fenced write changed no row: an unknown run, or a stale epoch."""
        row = conn.execute(
            "SELECT lease_epoch, lease_owner FROM runs WHERE run_id = %s", (escape(run_id),)
        ).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r}")
        if epoch is not None and epoch < int(row[0]):
            owner = None if row[1] is None else unescape(row[1])
            raise stale_write(run_id, epoch, int(row[0]), owner)
        raise StoreError(f"run {run_id!r}: the write changed nothing")  # pragma: no cover

    # -- steps and calls ------------------------------------------------------------------

    def save_step(self, row: StepRow, *, epoch: int | None = None) -> None:
        output, b1 = encode_json(row.output, _S_OUTPUT)
        error, b2 = encode_json(row.error, _S_ERROR)
        usage, b3 = encode_json(row.usage, _S_USAGE)
        decisions, b4 = encode_json(row.decisions, _S_DECISIONS)
        details, b5 = encode_json(row.details, _S_DETAILS)
        values: tuple[Any, ...] = (
            escape(row.run_id),
            escape(row.step),
            row.status,
            escape(row.definition),
            output,
            None if row.reason is None else escape(row.reason),
            error,
            usage,
            decisions,
            details,
            row.started_at,
            row.duration_s,
            b1 | b2 | b3 | b4 | b5,
            FORMAT,
        )
        self._write_fenced("save_step", row.run_id, _STEP_SQL, _STEP_FENCED_SQL, values, epoch)

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
        # The hot path of a durable run: the output (JSON from the engine's codec) is sent
        # as it is and Postgres is the judge; text it refuses as jsonb is sent again in
        # the checked encoding (see pgtext) -- a refused single statement changed nothing.
        head = (escape(run_id), escape(step), escape(definition))
        values: tuple[Any, ...] = (*head, output, started_at, duration_s, 0, FORMAT)
        try:
            self._write_fenced(
                "save_step",
                run_id,
                _DONE_NEW_SQL,
                _DONE_NEW_FENCED_SQL,
                values,
                epoch,
                optimistic=True,
            )
            return
        except _NotJsonb:
            doc, raw = encode_json(output, _S_OUTPUT)
            values = (*head, doc, started_at, duration_s, raw, FORMAT)
        except _StepExists:
            pass
        self._write_fenced("save_step", run_id, _DONE_SQL, _DONE_FENCED_SQL, values, epoch)

    def save_call(self, row: CallRow, *, epoch: int | None = None) -> None:
        result, b1 = encode_json(row.result, _C_RESULT)
        attempts, b2 = encode_json(row.attempts, _C_ATTEMPTS)
        values = (
            escape(row.run_id),
            escape(row.key),
            escape(row.request),
            result,
            attempts,
            b1 | b2,
            FORMAT,
        )
        self._write_fenced("save_call", row.run_id, _CALL_SQL, _CALL_FENCED_SQL, values, epoch)

    def _write_fenced(
        self,
        what: str,
        run_id: str,
        plain_sql: str,
        fenced_sql: str,
        values: tuple[Any, ...],
        epoch: int | None,
        *,
        optimistic: bool = False,
    ) -> None:
        """One upsert: plain without an epoch, else guarded by the run's epoch (atomic).
        ``optimistic``: a JSON value Postgres refuses raises :class:`_NotJsonb`, an
        existing row :class:`_StepExists` (a refused statement changed nothing)."""
        sql, params = (
            (plain_sql, values) if epoch is None else (fenced_sql, (*values, values[0], epoch))
        )

        def write(conn: psycopg.Connection[Any]) -> None:
            try:
                cur = self._cursor(conn).execute(sql, params)
            except pg_errors.DataError as exc:
                if optimistic:
                    raise _NotJsonb(str(exc)) from exc
                raise
            except pg_errors.UniqueViolation as exc:
                if optimistic:
                    raise _StepExists(str(exc)) from exc
                raise
            if epoch is not None and cur.rowcount != 1:
                self._refused(conn, run_id, epoch)

        self._do(what, write)

    def load_steps(self, run_id: str) -> list[StepRow]:
        def read(conn: psycopg.Connection[Any]) -> list[StepRow]:
            rows = conn.execute(
                "SELECT step, status, definition, output::text, reason, error::text, "
                "usage::text, decisions::text, details::text, started_at, duration_s, raw, "
                "format FROM steps WHERE run_id = %s",
                (escape(run_id),),
            ).fetchall()
            out = []
            for r in rows:
                step = unescape(r[0])
                _check_format(r[12], f"step {step!r} of run {run_id!r}")
                raw = r[11]
                out.append(
                    StepRow(
                        run_id=run_id,
                        step=step,
                        status=r[1],
                        definition=unescape(r[2]),
                        output=decode_json(r[3], raw, _S_OUTPUT),
                        reason=None if r[4] is None else unescape(r[4]),
                        error=decode_json(r[5], raw, _S_ERROR),
                        usage=decode_json(r[6], raw, _S_USAGE),
                        decisions=decode_json(r[7], raw, _S_DECISIONS),
                        details=decode_json(r[8], raw, _S_DETAILS),
                        started_at=r[9],
                        duration_s=r[10],
                    )
                )
            return out

        return self._do("load_steps", read)

    def load_calls(self, run_id: str) -> list[CallRow]:
        def read(conn: psycopg.Connection[Any]) -> list[CallRow]:
            rows = conn.execute(
                "SELECT key, request, result::text, attempts::text, raw, format FROM calls "
                "WHERE run_id = %s",
                (escape(run_id),),
            ).fetchall()
            out = []
            for r in rows:
                key = unescape(r[0])
                _check_format(r[5], f"call {key!r} of run {run_id!r}")
                out.append(
                    CallRow(
                        run_id=run_id,
                        key=key,
                        request=unescape(r[1]),
                        result=decode_json(r[2], r[4], _C_RESULT),  # type: ignore[arg-type]
                        attempts=decode_json(r[3], r[4], _C_ATTEMPTS),  # type: ignore[arg-type]
                    )
                )
            return out

        return self._do("load_calls", read)

    # -- response cache ------------------------------------------------------------------------

    def cache_get(self, key: str, now: float) -> str | None:
        def get(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute(
                "UPDATE cache SET hits = hits + 1 WHERE key = %s AND "
                "(expires_at IS NULL OR expires_at > %s) RETURNING value::text, raw, format",
                (escape(key), now),
            ).fetchone()
            if row is None:
                return None
            _check_format(row[2], "a cache entry")
            return decode_json(row[0], row[1], _K_VALUE)

        return self._do("cache_get", get)

    def cache_put(self, key: str, value: str, now: float, expires_at: float | None) -> None:
        doc, raw = encode_json(value, _K_VALUE)
        size = len(value.encode("utf-8", "surrogatepass"))
        self._do(
            "cache_put",
            lambda conn: conn.execute(
                "INSERT INTO cache (key, value, bytes, created_at, expires_at, hits, raw, format) "
                "VALUES (%s, %s::jsonb, %s, %s, %s, 0, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "value = EXCLUDED.value, bytes = EXCLUDED.bytes, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, hits = 0, "
                "raw = EXCLUDED.raw, format = EXCLUDED.format",
                (escape(key), doc, size, now, expires_at, raw, FORMAT),
            ),
        )

    def cache_stats(self, now: float) -> CacheStats:
        def stats(conn: psycopg.Connection[Any]) -> CacheStats:
            row = conn.execute(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE expires_at IS NOT NULL AND "
                "expires_at <= %s), COALESCE(SUM(hits), 0), COALESCE(SUM(bytes), 0) FROM cache",
                (now,),
            ).fetchone()
            assert row is not None
            return CacheStats(
                entries=int(row[0]), expired=int(row[1]), hits=int(row[2]), bytes=int(row[3])
            )

        return self._do("cache_stats", stats)

    def cache_clear(self, *, expired_only: bool = False, now: float = 0.0) -> int:
        def clear(conn: psycopg.Connection[Any]) -> int:
            if expired_only:
                cur = conn.execute(
                    "DELETE FROM cache WHERE expires_at IS NOT NULL AND expires_at <= %s", (now,)
                )
            else:
                cur = conn.execute("DELETE FROM cache")
            return cur.rowcount

        return self._do("cache_clear", clear)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._pool.putconn(held)
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"


def _run_values(r: RunRow) -> tuple[Any, ...]:
    inputs, b1 = encode_json(r.inputs, _R_INPUTS)
    error, b2 = encode_json(r.error, _R_ERROR)
    usage, b3 = encode_json(r.usage, _R_USAGE)
    meta, b4 = encode_json(r.meta, _R_META)
    return (
        escape(r.run_id),
        escape(r.flow),
        r.status,
        inputs,
        r.started_at,
        None if r.parent_id is None else escape(r.parent_id),
        r.item_index,
        r.finished_at,
        error,
        usage,
        meta,
        None if r.lease_owner is None else escape(r.lease_owner),
        r.lease_expires,
        r.lease_epoch,
        b1 | b2 | b3 | b4,
        FORMAT,
        bool(r.is_batch),
        r.run_s,
        r.resumed_at,
    )


def _run_row(r: Sequence[Any], *, lenient: bool = False) -> RunRow:
    """A run row; with ``lenient``, a record of an unknown format (or JSON that does not
    decode) is returned with ``unreadable`` set instead of raising."""
    run_id = unescape(r[0])
    try:
        _check_format(r[15], f"run {run_id!r}")
        return _decode_run_row(run_id, r)
    except StoreError as exc:
        if not lenient:
            raise
        row = RunRow(run_id=run_id, flow=unescape(r[1]), status=r[2], inputs="{}", started_at=r[4])
        row.unreadable = str(exc)
        return row


def _decode_run_row(run_id: str, r: Sequence[Any]) -> RunRow:
    raw = r[14]
    return RunRow(
        run_id=run_id,
        flow=unescape(r[1]),
        status=r[2],
        inputs=decode_json(r[3], raw, _R_INPUTS),  # type: ignore[arg-type]
        started_at=r[4],
        parent_id=None if r[5] is None else unescape(r[5]),
        item_index=r[6],
        finished_at=r[7],
        error=decode_json(r[8], raw, _R_ERROR),
        usage=decode_json(r[9], raw, _R_USAGE),
        meta=decode_json(r[10], raw, _R_META),
        lease_owner=None if r[11] is None else unescape(r[11]),
        lease_expires=r[12],
        lease_epoch=int(r[13]),
        is_batch=bool(r[16]),
        run_s=r[17],
        resumed_at=r[18],
    )


def _check_format(value: Any, what: str) -> None:
    if value != FORMAT:
        raise StoreError(f"{what} has record format {value!r}; this Trellis reads format {FORMAT}")
