"""An in-memory store: the same semantics as SQLite, nothing survives the process."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from trellis.errors import StoreError
from trellis.store.base import (
    CacheStats,
    CallRow,
    LeaseClaim,
    RunRow,
    RunState,
    StepRow,
    Store,
    checked_limit,
    stale_write,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    def __init__(self) -> None:
        self.url = "memory:"
        self._runs: dict[str, RunRow] = {}
        self._order: list[str] = []
        self._steps: dict[str, dict[str, StepRow]] = {}
        self._calls: dict[str, dict[str, CallRow]] = {}
        self._cache: dict[str, tuple[str, float | None, int]] = {}

    def create_run(self, row: RunRow) -> None:
        self.create_runs([row])

    def create_runs(self, rows: Iterable[RunRow]) -> None:
        rows = list(rows)
        seen: set[str] = set()
        for row in rows:
            if row.run_id in self._runs or row.run_id in seen:
                raise StoreError(f"run {row.run_id!r} already exists")
            seen.add(row.run_id)
        for row in rows:
            self._runs[row.run_id] = dataclasses.replace(row)
            self._order.append(row.run_id)

    def get_run(self, run_id: str) -> RunRow | None:
        row = self._runs.get(run_id)
        return dataclasses.replace(row) if row else None

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
        row = self._fenced(run_id, epoch)
        row.status = status
        row.finished_at = finished_at
        row.error = error
        if usage is not None:
            row.usage = usage
        if started_at is not None:
            row.started_at = started_at
        if run_s is not None:
            row.run_s = run_s
        if resumed_at is not None:
            row.resumed_at = resumed_at

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        batches: bool | None = None,
        limit: int | None = None,
        lenient: bool = False,  # every record here is of this version's format
    ) -> list[RunRow]:
        limit = checked_limit(limit)
        rows = [self._runs[r] for r in self._order]
        if parent_id is not None:
            rows = sorted(
                (r for r in rows if r.parent_id == parent_id), key=lambda r: r.item_index or 0
            )
        else:  # newest first; among equal start times, the most recently created first
            rows = [r for _, r in sorted(enumerate(rows), key=lambda p: (p[1].started_at, p[0]))]
            rows.reverse()
            if top_level:
                rows = [r for r in rows if r.parent_id is None]
        rows = [
            r
            for r in rows
            if (flow is None or r.flow == flow)
            and (status is None or r.status == status)
            and (batches is None or r.is_batch == batches)
        ]
        return [dataclasses.replace(r) for r in rows[:limit]]

    def _fenced(self, run_id: str, epoch: int | None) -> RunRow:
        """The run's row, after checking that a write with ``epoch`` is not stale."""
        row = self._runs.get(run_id)
        if row is None:
            raise StoreError(f"no run {run_id!r}")
        if epoch is not None and epoch < row.lease_epoch:
            raise stale_write(run_id, epoch, row.lease_epoch, row.lease_owner)
        return row

    def claim_lease(self, run_id: str, owner: str, now: float, ttl: float) -> LeaseClaim:
        row = self._runs.get(run_id)
        if row is None:
            raise StoreError(f"no run {run_id!r}")
        held = row.lease_owner is not None and row.lease_owner != owner
        if held and row.lease_expires is not None and row.lease_expires > now:
            return LeaseClaim(False, row.lease_epoch, row.lease_owner)
        row.lease_owner, row.lease_expires = owner, now + ttl
        row.lease_epoch += 1
        return LeaseClaim(True, row.lease_epoch)

    def renew_lease(
        self, run_id: str, owner: str, now: float, ttl: float, epoch: int | None = None
    ) -> bool:
        row = self._runs.get(run_id)
        if row is None or row.lease_owner != owner:
            return False
        if epoch is not None and epoch != row.lease_epoch:
            return False
        row.lease_expires = now + ttl
        return True

    def release_lease(self, run_id: str, owner: str, epoch: int | None = None) -> None:
        row = self._runs.get(run_id)
        if row is None or row.lease_owner != owner:
            return
        if epoch is None or epoch == row.lease_epoch:
            row.lease_owner, row.lease_expires = None, None

    def save_step(self, row: StepRow, *, epoch: int | None = None) -> None:
        if epoch is not None:
            self._fenced(row.run_id, epoch)
        self._steps.setdefault(row.run_id, {})[row.step] = dataclasses.replace(row)

    def load_steps(self, run_id: str) -> list[StepRow]:
        return [dataclasses.replace(r) for r in self._steps.get(run_id, {}).values()]

    def save_call(self, row: CallRow, *, epoch: int | None = None) -> None:
        if epoch is not None:
            self._fenced(row.run_id, epoch)
        self._calls.setdefault(row.run_id, {})[row.key] = dataclasses.replace(row)

    def load_calls(self, run_id: str) -> list[CallRow]:
        return [dataclasses.replace(r) for r in self._calls.get(run_id, {}).values()]

    def cache_get(self, key: str, now: float) -> str | None:
        entry = self._cache.get(key)
        if entry is None or (entry[1] is not None and entry[1] <= now):
            return None
        self._cache[key] = (entry[0], entry[1], entry[2] + 1)
        return entry[0]

    def cache_put(self, key: str, value: str, now: float, expires_at: float | None) -> None:
        self._cache[key] = (value, expires_at, 0)

    def cache_stats(self, now: float) -> CacheStats:
        expired = sum(1 for _, exp, _ in self._cache.values() if exp is not None and exp <= now)
        return CacheStats(
            entries=len(self._cache),
            expired=expired,
            hits=sum(h for _, _, h in self._cache.values()),
            bytes=sum(len(v.encode()) for v, _, _ in self._cache.values()),
        )

    def cache_clear(self, *, expired_only: bool = False, now: float = 0.0) -> int:
        if not expired_only:
            n = len(self._cache)
            self._cache.clear()
            return n
        dead = [k for k, (_, exp, _) in self._cache.items() if exp is not None and exp <= now]
        for k in dead:
            del self._cache[k]
        return len(dead)
