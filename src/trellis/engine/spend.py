"""What a durable batch has spent across all its processes, so that a batch budget holds
over a kill and any number of resumes.

A batch whose engine has a budget keeps a tally (LLM requests, tokens, USD) in the store,
as one record of the batch's parent run, written when the batch (re)starts and updated as
each request is reserved (so requests in flight when the process is killed are counted)
and as each one settles. A resume
preloads the batch's guard with that tally (:meth:`BudgetGuard.preload`); journal
replays are part of it, so they are not counted twice. A batch recorded without a tally
(started without a budget, or by an older Trellis) is counted from its items' records
instead: their usage, else their journaled attempts; what those records never held — the
failed attempts of a step that was re-run, requests in flight at a kill — it cannot know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trellis.engine.budget import BudgetGuard
from trellis.engine.journal import call_record_from_dict, stats_from_json
from trellis.errors import StoreError
from trellis.store.base import CallRow, Store
from trellis.store.codec import decode

__all__ = ["TALLY_KEY", "Spend", "recorded_spend", "track_batch_spend"]

#: The key of the tally record among the batch's parent run's call records.
TALLY_KEY = "trellis:batch-spend"


@dataclass(frozen=True, slots=True)
class Spend:
    """LLM requests (attempts), tokens and USD."""

    calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    def most(self, other: Spend) -> Spend:
        """The larger of each figure (two partial views of the same spending)."""
        return Spend(
            max(self.calls, other.calls), max(self.tokens, other.tokens), max(self.usd, other.usd)
        )


def _tally(store: Store, batch_id: str) -> Spend:
    for row in store.load_calls(batch_id):
        if row.key == TALLY_KEY:
            data = decode(row.result, Any, f"the spending tally of batch {batch_id!r}")
            try:
                return Spend(int(data["calls"]), int(data["tokens"]), float(data["usd"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(
                    f"corrupt record: the spending tally of batch {batch_id!r}: {exc}"
                ) from exc
    return Spend()


def _from_items(store: Store, batch_id: str) -> Spend:
    calls = tokens = 0
    usd = 0.0
    for child in store.list_runs(parent_id=batch_id):
        if child.usage:
            stats = stats_from_json(child.usage)
            calls += stats.attempts
            tokens += stats.input_tokens + stats.output_tokens
            usd += stats.cost_usd
            continue
        for row in store.load_calls(child.run_id):
            for data in decode(row.attempts, Any, f"call {row.key!r} of {child.run_id}"):
                record = call_record_from_dict(data, replayed=False)
                if record.source == "cache":  # a cache hit sent no request
                    continue
                calls += 1
                tokens += record.total_tokens
                usd += record.cost_usd or 0.0
    return Spend(calls, tokens, usd)


def recorded_spend(store: Store, batch_id: str) -> Spend:
    """What batch ``batch_id`` spent so far, by its tally and its items' records."""
    return _tally(store, batch_id).most(_from_items(store, batch_id))


def track_batch_spend(store: Store, batch_id: str, guard: BudgetGuard) -> Spend:
    """Count the batch's earlier spending against ``guard`` (the batch's budget) and keep
    the tally up to date from now on; returns the earlier spending."""
    before = recorded_spend(store, batch_id)
    guard.preload(before.calls, before.tokens, before.usd)

    def save(g: BudgetGuard) -> None:
        tally = {"calls": g.calls, "tokens": g.spent_tokens, "usd": g.spent_usd}
        store.save_call(
            CallRow(
                run_id=batch_id, key=TALLY_KEY, request="", result=json.dumps(tally), attempts="[]"
            )
        )

    guard.on_change = save
    save(guard)  # at once: what the items' records show now may be overwritten by re-runs
    return before
