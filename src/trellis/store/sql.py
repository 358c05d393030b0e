"""What the SQL stores (SQLite and PostgreSQL) share: the one translation of a run
listing's filters (``Store.list_runs``) into a query whose every value is a parameter.

The dialects differ only in their parameter marker, how a text or a flag is bound, the
tie-breaker of "newest first" and how "not a batch item" is best written for the
store's indexes; the filters and their meaning are written once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trellis.store.base import checked_limit

__all__ = ["Dialect", "run_listing"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL store writes a run listing."""

    mark: str  # the driver's parameter marker: "?" (sqlite3) or "%s" (psycopg)
    newest_first: str  # ORDER BY: newest first, ties: the most recently created first
    top_level: str  # the condition "not a batch item"
    text: Callable[[str], Any] = str  # how a text value is bound
    flag: Callable[[bool], Any] = bool  # how a boolean is bound


def run_listing(
    select: str,
    dialect: Dialect,
    *,
    flow: str | None,
    status: str | None,
    parent_id: str | None,
    top_level: bool,
    batches: bool | None,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """``select`` (fixed text, no values) with the listing's WHERE, ORDER BY and LIMIT,
    and the values bound to them. ``parent_id`` lists a batch's items in item order."""
    mark = dialect.mark
    where: list[str] = []
    args: list[Any] = []
    if flow is not None:
        where.append(f"flow = {mark}")
        args.append(dialect.text(flow))
    if status is not None:
        where.append(f"status = {mark}")
        args.append(status)
    if batches is not None:
        where.append(f"is_batch = {mark}")
        args.append(dialect.flag(batches))
    if parent_id is not None:
        where.append(f"parent_id = {mark}")
        args.append(dialect.text(parent_id))
        order = "item_index"
    else:
        order = dialect.newest_first
        if top_level:
            where.append(dialect.top_level)
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    limit = checked_limit(limit)
    if limit is not None:
        sql += f" LIMIT {mark}"
        args.append(limit)
    return sql, args
