"""``trellis runs`` and ``trellis show``: what the store recorded, as tables or JSON.

Nothing here imports the flows: everything comes from the store (run rows, step records,
the LLM call journal) and the ``meta`` the CLI recorded (the flow's step order). The JSON
shapes are documented in ``docs/cli.md`` and kept stable:

- ``trellis runs --json``: ``{"runs": [entry, ...]}``, see :func:`run_entry`.
- ``trellis show RUN --json``: ``RunResult.to_dict()``; for a batch, plus ``"batch"``.

``trellis show`` puts a waiting step's question (prompt, expected type, details) with the
command that answers it, an agent step's transcript turn by turn (the model's reply, each
tool call with its arguments and result or error, tokens and cost) and a looping step's
rounds (calls, turns and the loop decision of each round).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from trellis.cli.errors import CliError
from trellis.cli.jsonout import json_text
from trellis.cli.render import (
    answer_commands,
    fmt_seconds,
    fmt_usd,
    question_lines,
    render_waiting,
    store_args,
)
from trellis.cli.store_options import (
    StoreOption,
    fail,
    is_batch,
    open_existing_store,
    read_meta,
    store_url,
)
from trellis.cli.summary import WaitingStep, adjustment_warnings
from trellis.engine.durable import load_result
from trellis.engine.journal import (
    call_record_from_dict,
    error_from_json,
    record_from_row,
    stats_from_json,
)
from trellis.engine.results import CallRecord, Decision, RunResult, Stats, StepRecord, jsonable
from trellis.errors import StoreError, TrellisError
from trellis.store.base import RunRow, Store
from trellis.store.codec import decode

__all__ = [
    "batch_items",
    "recorded_calls",
    "recorded_result",
    "run_entry",
    "runs",
    "show",
]

StatusFilter = Literal["done", "failed", "running", "pending", "waiting"]

_STYLE = {
    "unreadable": "bold red",
    "done": "green",
    "waiting": "bold yellow",
    "failed": "bold red",
    "running": "cyan",
    "interrupted": "yellow",
    "pending": "dim",
    "skipped": "yellow",
    "cancelled": "magenta",
}
_MARK = {
    "done": "✓",
    "skipped": "–",
    "failed": "✗",
    "cancelled": "⊘",
    "running": "…",
    "waiting": "⏸",
}
_PREVIEW = 160
_REPLY = 200  # characters of an agent turn's reply shown
_ARGUMENTS = 120  # of a tool call's arguments
_TOOL_RESULT = 160  # of a tool call's result or error
_AGENTS = 8  # agent transcripts shown per step (a mapped step may have one per element)


# -- reading the store ---------------------------------------------------------------------


class _Meta:
    """Step order from the CLI's meta (a batch item: its batch's), looked up once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, dict[str, Any]] = {}

    def of(self, row: RunRow) -> dict[str, Any]:
        key = row.parent_id if row.parent_id is not None and not row.meta else row.run_id
        meta = self._cache.get(key)
        if meta is None:
            if key == row.run_id:
                meta = read_meta(row)
            else:
                parent = self.store.get_run(key)
                meta = read_meta(parent) if parent is not None else {}
            self._cache[key] = meta
        return meta

    def steps(self, row: RunRow) -> list[str]:
        steps = self.of(row).get("steps")
        return [str(s) for s in steps] if isinstance(steps, list) else []


def recorded_calls(store: Store, run_id: str) -> list[CallRecord]:
    """Every recorded attempt of a run, with the source it was recorded with ("live" or
    "cache"), in step / call / attempt order."""
    calls: list[CallRecord] = []
    for row in store.load_calls(run_id):
        for data in decode(row.attempts, Any, f"call {row.key!r}"):
            call = call_record_from_dict(data)
            call.source = str(data.get("source") or "live")
            calls.append(call)
    return calls


def _order_calls(calls: list[CallRecord], order: list[str]) -> list[CallRecord]:
    rank = {name: i for i, name in enumerate(order)}

    def key(c: CallRecord) -> tuple[int, str, int, int, int, int]:
        return (
            rank.get(c.step, len(rank)),
            c.step,
            c.index if c.index is not None else -1,
            c.round if c.round is not None else -1,
            c.call,
            c.attempt,
        )

    return sorted(calls, key=key)


def _usage(store: Store, row: RunRow) -> Stats:
    """The run's recorded usage; for a run that did not finish, summed from its journal."""
    if row.usage:
        return stats_from_json(row.usage)
    stats = Stats()
    for call in store.load_calls(row.run_id):
        attempts = decode(call.attempts, Any, f"call {call.key!r}")
        stats.calls += 1
        for data in attempts:
            stats.add_attempt(call_record_from_dict(data))
    return stats


def recorded_result(store: Store, row: RunRow, order: list[str]) -> RunResult:
    """A recorded run as a :class:`RunResult`: steps in execution order (steps not reached
    yet are ``pending``), calls with their recorded source, usage from the journal when the
    run did not finish."""
    result = load_result(store, row.run_id)
    if not order:  # not recorded by the CLI: the order the steps started in
        order = sorted(
            result.steps,
            key=lambda n: (result.steps[n].started_at is None, result.steps[n].started_at or 0.0),
        )
    names = list(order) + [n for n in result.steps if n not in order]
    result.steps = {n: result.steps.get(n) or StepRecord(n) for n in names}
    rank = {name: i for i, name in enumerate(names)}
    result.decisions.sort(key=lambda d: rank.get(d.step, len(rank)))
    result.calls = _order_calls(recorded_calls(store, row.run_id), names)
    if not row.usage:
        result.usage = _usage(store, row)
    if row.status == "pending":
        result.status = "running"
    return result


def _interrupted(row: RunRow, now: float) -> bool:
    """A run recorded as running whose process no longer holds its lease."""
    return row.status == "running" and (row.lease_expires is None or row.lease_expires <= now)


def _error(row: RunRow) -> dict[str, Any] | None:
    if not row.error:
        return None
    try:
        return error_from_json(row.error).to_dict()
    except StoreError:
        return {"type": "Unknown", "message": row.error[:200], "step": None, "mode": None}


def batch_items(store: Store, batch_id: str) -> list[RunRow]:
    return store.list_runs(parent_id=batch_id)


def run_entry(
    store: Store, row: RunRow, metas: _Meta | None = None, now: float = 0.0
) -> dict[str, Any]:
    """One ``trellis runs --json`` entry (the documented, stable shape)."""
    metas = metas or _Meta(store)
    now = now or time.time()
    items: dict[str, int] | None = None
    if is_batch(store, row):
        kind = "batch"
        children = batch_items(store, row.run_id)
        counts = Counter(c.status for c in children)
        items = {
            "total": len(children),
            "done": counts["done"],
            "failed": counts["failed"],
            "running": counts["running"],
            "pending": counts["pending"],
        }
        usage = Stats()
        done_steps = total_steps = 0
        for child in children:
            usage.merge(_usage(store, child))
            d, t = _step_counts(store, child, metas)
            done_steps += d
            total_steps += t
    else:
        kind = "item" if row.parent_id is not None else "run"
        usage = _usage(store, row)
        done_steps, total_steps = _step_counts(store, row, metas)
    finished = row.finished_at
    return {
        "run_id": row.run_id,
        "flow": row.flow,
        "status": row.status,
        "interrupted": _interrupted(row, now),
        "kind": kind,
        "parent_id": row.parent_id,
        "item_index": row.item_index,
        "started_at": row.started_at,
        "finished_at": finished,
        "duration_s": round(finished - row.started_at, 6) if finished is not None else None,
        "steps": {"done": done_steps, "total": total_steps},
        "items": items,
        "calls": usage.calls,
        "attempts": usage.attempts,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": round(usage.cost_usd, 10) if usage.cost_known else None,
        "error": _error(row),
    }


#: What reading one corrupt or foreign record can raise (a listing shows it as unreadable).
_UNREADABLE = (TrellisError, ValueError, TypeError, KeyError, AttributeError)


def _listed_entry(store: Store, row: RunRow, metas: _Meta, now: float) -> dict[str, Any]:
    """``run_entry``, or for a record that cannot be read an entry saying so (status
    ``unreadable``, the reason as its error), so that one bad record never hides the rest."""
    reason = row.unreadable
    if reason is None:
        try:
            return run_entry(store, row, metas, now)
        except _UNREADABLE as exc:
            reason = str(exc) or type(exc).__name__
    return {
        "run_id": str(row.run_id),
        "flow": str(row.flow),
        "status": "unreadable",
        "interrupted": False,
        "kind": "item" if row.parent_id is not None else "run",
        "parent_id": row.parent_id if isinstance(row.parent_id, str) else None,
        "item_index": row.item_index if isinstance(row.item_index, int) else None,
        "started_at": row.started_at if isinstance(row.started_at, int | float) else None,
        "finished_at": None,
        "duration_s": None,
        "steps": {"done": 0, "total": 0},
        "items": None,
        "calls": 0,
        "attempts": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": None,
        "error": {"type": "StoreError", "message": reason, "step": None, "mode": None},
    }


@dataclass(frozen=True, slots=True)
class _Waiting:
    """What a recorded run waits for: a run's waiting steps (each ``(step, question)``),
    a batch's number of waiting items."""

    steps: tuple[tuple[str, dict[str, Any]], ...] = ()
    items: int = 0

    @classmethod
    def of(cls, store: Store, row: RunRow, batch: bool) -> _Waiting:
        if batch:
            return cls(items=len(store.list_runs(parent_id=row.run_id, status="waiting")))
        if row.status != "waiting":
            return cls()
        return cls(
            steps=tuple(
                (srow.step, record_from_row(srow).question or {})
                for srow in store.load_steps(row.run_id)
                if srow.status == "waiting"
            )
        )


def _step_counts(store: Store, row: RunRow, metas: _Meta) -> tuple[int, int]:
    """(steps finished: done or skipped, steps of the flow)."""
    rows = store.load_steps(row.run_id)
    done = sum(1 for s in rows if s.status in ("done", "skipped"))
    total = len(metas.steps(row)) or len(rows)
    return done, max(total, done)


# -- trellis runs ----------------------------------------------------------------------------


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _cost_text(entry: Mapping[str, Any]) -> str:
    if entry["attempts"] == 0:
        return "[dim]–[/]"
    cost = entry["cost_usd"]
    return "[yellow]unknown[/]" if cost is None else fmt_usd(cost)


def _shown_status(entry: Mapping[str, Any], waiting: _Waiting) -> str:
    """The status a table shows: ``interrupted`` for a run nobody executes any more, and
    ``waiting`` for a batch whose unfinished items all wait for a person (the engine
    records such a batch as failed)."""
    if entry["interrupted"]:
        return "interrupted"
    items = entry.get("items")
    if items and waiting.items and items["done"] + waiting.items == items["total"]:
        return "waiting"
    return str(entry["status"])


def _status_text(entry: Mapping[str, Any], waiting: _Waiting) -> str:
    status = _shown_status(entry, waiting)
    text = f"[{_STYLE.get(status, '')}]{status}[/]"
    if waiting.steps:
        text += f" [dim]({escape(', '.join(step for step, _ in waiting.steps))})[/]"
    return text


def _runs_table(entries: list[dict[str, Any]], url: str, waiting: Mapping[str, _Waiting]) -> Table:
    table = Table(
        title=f"Runs in {escape(url)}",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("flow", overflow="fold", min_width=8)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for e in entries:
        if e["items"] is not None:
            steps = f"{e['items']['done']}/{e['items']['total']} items"
            if waiting[e["run_id"]].items:
                steps += f" [yellow]⏸{waiting[e['run_id']].items}[/]"
        else:
            steps = f"{e['steps']['done']}/{e['steps']['total']}"
        duration = fmt_seconds(e["duration_s"]) if e["duration_s"] is not None else "–"
        table.add_row(
            escape(e["run_id"]),
            escape(e["flow"]),
            _status_text(e, waiting[e["run_id"]]),
            _when(e["started_at"]),
            duration,
            steps,
            str(e["calls"]),
            f"{e['input_tokens'] + e['output_tokens']:,}",
            _cost_text(e),
        )
    return table


def runs(
    flow: Annotated[
        str | None,
        typer.Option("--flow", metavar="NAME", help="Only runs of this flow.", show_default=False),
    ] = None,
    status: Annotated[
        StatusFilter | None,
        typer.Option(
            "--status",
            help=(
                "Only runs with this recorded status (an interrupted run is still "
                "'running': its process died before it finished). `waiting`: runs waiting "
                "for a person, batch items included (`trellis approve` / `trellis reply` "
                "answer them)."
            ),
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-l", min=1, metavar="N", help="Show at most N runs.")
    ] = 20,
    include_items: Annotated[
        bool,
        typer.Option(
            "--all", help="Include the items of batches (child runs) as runs of their own."
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='Print {"runs": [...]} (shape in docs/cli.md) instead of a table.'
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """List recorded runs, newest first: id, flow, status, start, duration, steps finished,
    LLM calls, tokens and cost.

    A batch is one row (its items are counted in the steps column); `--all` lists the
    items too. A run whose process died shows as `interrupted`: `trellis resume ID`
    finishes it. A waiting run names the step(s) waiting for a person (`trellis show ID`
    puts the question); `--status waiting` lists them, batch items included.
    Cost is `unknown` when a model had no price.

    Example: `trellis runs --flow triage --status failed --json`
    """
    try:
        opened = open_existing_store(store)
        waiting: dict[str, _Waiting] = {}
        if opened is None:
            entries: list[dict[str, Any]] = []
            url = store_url(store)
        else:
            url = opened.url
            try:
                # The items of a batch are what waits: --status waiting lists them too.
                top_level = not include_items and status != "waiting"
                rows = opened.list_runs(
                    flow=flow, status=status, top_level=top_level, limit=limit, lenient=True
                )
                metas = _Meta(opened)
                now = time.time()
                entries = [_listed_entry(opened, row, metas, now) for row in rows]
                if not as_json:
                    for row, entry in zip(rows, entries, strict=True):
                        batch = entry["kind"] == "batch"
                        try:
                            waiting[row.run_id] = _Waiting.of(opened, row, batch)
                        except _UNREADABLE:
                            waiting[row.run_id] = _Waiting()
            except TrellisError as exc:
                raise CliError(str(exc)) from None
            finally:
                opened.close()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json_text({"runs": entries}, indent=2))
        return
    console = Console()
    if not entries:
        what = " matching the filters" if (flow or status) else ""
        console.print(f"no runs{what} in {escape(url)}", highlight=False)
        return
    console.print(_runs_table(entries, url, waiting))
    unreadable = [e["run_id"] for e in entries if e["status"] == "unreadable"]
    if unreadable:
        console.print(
            Text(
                f"{len(unreadable)} record(s) could not be read (`trellis show "
                f"{unreadable[0]}` says why)",
                style="dim",
            ),
            highlight=False,
            soft_wrap=True,
        )


# -- trellis show ----------------------------------------------------------------------------


def _values_text(values: Mapping[str, Any]) -> str:
    if not values:
        return ""
    parts = []
    for name, value in values.items():
        text = json.dumps(jsonable(value), ensure_ascii=False)
        if len(text) > 120:
            text = text[:117] + "…"
        parts.append(f"{name}={text}")
    return "; ".join(parts)


def _step_label(record: StepRecord, calls: list[CallRecord]) -> Text:
    status = record.status
    text = Text(f"{_MARK.get(status, '·')} ", style=_STYLE.get(status, ""))
    text.append(record.name, style="bold")
    text.append(f"  {status}", style=_STYLE.get(status, ""))
    facts: list[str] = []
    models = list(dict.fromkeys(c.model for c in calls))
    if models:
        facts.append(", ".join(models))
    usage = record.usage
    if calls and not usage.attempts:  # a step that did not finish: count its journal
        usage = Stats()
        for c in calls:
            usage.add_attempt(c)
    if usage.attempts:
        n = usage.calls or len({(c.index, c.round, c.call) for c in calls})
        text_calls = f"{n} call{'s' if n != 1 else ''}"
        if usage.attempts != n:
            text_calls += f", {usage.attempts} attempts"
        facts.append(text_calls)
        facts.append(f"{usage.input_tokens:,}/{usage.output_tokens:,} tokens")
        cost = fmt_usd(usage.cost_usd)
        facts.append(cost if usage.cost_known else f"≥ {cost} (unpriced calls)")
        facts.append(f"LLM latency {fmt_seconds(usage.latency_s)}")
    if record.rounds:
        facts.append(f"{record.rounds} round{'s' if record.rounds != 1 else ''}")
    if record.elements is not None:
        failed = f", {record.element_failures} failed" if record.element_failures else ""
        facts.append(f"{record.elements} elements{failed}")
    if record.attempts > max(1, record.elements or 0, record.rounds or 0):
        facts.append(f"ran {record.attempts} times")
    if record.duration_s is not None:
        facts.append(fmt_seconds(record.duration_s))
    if facts:
        text.append("  " + " · ".join(facts), style="dim")
    return text


def _clip(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decision_text(d: Decision, *, with_values: bool = True) -> Text:
    line = Text(f"{d.kind} → {d.outcome}", style="bold cyan")
    line.append(f": {d.reason}")
    values = _values_text(d.values) if with_values else ""
    if values:
        line.append(f"  (on {values})", style="dim")
    return line


def _usage_facts(calls: list[CallRecord]) -> str:
    """``2 calls · 300/41 tokens · $0.000120`` over some attempts."""
    usage = Stats()
    for c in calls:
        usage.add_attempt(c)
    n = len({(c.index, c.round, c.call) for c in calls})
    text = f"{n} call{'s' if n != 1 else ''}"
    if usage.attempts != n:
        text += f", {usage.attempts} attempts"
    text += f" · {usage.input_tokens:,}/{usage.output_tokens:,} tokens"
    cost = fmt_usd(usage.cost_usd)
    return f"{text} · {cost if usage.cost_known else f'≥ {cost} (unpriced calls)'}"


def _turn_node(parent: Tree, turn: Mapping[str, Any]) -> None:
    """One agent turn: tokens and cost, the model's reply, each tool call with its result."""
    tool_calls = [c for c in turn.get("tool_calls") or () if isinstance(c, Mapping)]
    label = Text(f"turn {turn.get('turn', '?')}", style="bold")
    tokens = f"{turn.get('input_tokens', 0):,}/{turn.get('output_tokens', 0):,} tokens"
    cost = turn.get("cost_usd")
    label.append(f"  {tokens} · {'unpriced' if cost is None else fmt_usd(cost)}", style="dim")
    node = parent.add(label)
    reply = str(turn.get("reply") or "")
    if reply.strip():
        kind = "reply" if tool_calls else "final answer"
        line = Text(f"{kind}: ", style="bold")
        line.append(_clip(reply, _REPLY))
        node.add(line)
    elif not tool_calls:
        node.add(Text("final answer: (empty)", style="dim"))
    for call in tool_calls:
        error = call.get("error")
        line = Text("✗ " if error is not None else "✓ ", style="red" if error else "green")
        line.append(str(call.get("name", "?")), style="bold")
        line.append(f"({_clip(str(call.get('arguments', '')), _ARGUMENTS)})")
        if error is not None:
            line.append(f" → {_clip(str(error), _TOOL_RESULT)}", style="red")
        else:
            line.append(f" → {_clip(str(call.get('result', '')), _TOOL_RESULT)}")
        facts = [str(call.get("source") or "live")]
        latency = call.get("latency_s")
        if isinstance(latency, int | float) and call.get("source") != "journal":
            facts.append(fmt_seconds(float(latency)))
        line.append(f"  {' · '.join(facts)}", style="dim")
        node.add(line)


def _add_turns(node: Tree, turns: list[dict[str, Any]]) -> None:
    """Agent transcripts, one group per agent (and element of a mapped step)."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for turn in turns:
        groups.setdefault((turn.get("index"), turn.get("agent")), []).append(turn)
    for n, ((index, agent), group) in enumerate(groups.items()):
        if n == _AGENTS:
            node.add(Text(f"… {len(groups) - n} more agent transcripts (see --json)", style="dim"))
            break
        tools = sum(len(t.get("tool_calls") or ()) for t in group)
        label = Text("agent", style="bold magenta")
        if len(groups) > 1:
            label.append(f" {agent}" if index is None else f" (element {index})", style="bold")
        label.append(
            f"  {len(group)} turn{'s' if len(group) != 1 else ''}, "
            f"{tools} tool call{'s' if tools != 1 else ''}",
            style="dim",
        )
        parent = node.add(label)
        for turn in group:
            _turn_node(parent, turn)


def _rounds_of(record: StepRecord, calls: list[CallRecord], decisions: list[Decision]) -> list[int]:
    rounds: set[int] = {c.round for c in calls if c.round is not None}
    rounds.update(t["round"] for t in record.turns if isinstance(t.get("round"), int))
    for d in decisions:
        value = d.values.get("round") if d.kind == "loop" else None
        if isinstance(value, int):
            rounds.add(value)
    return sorted(rounds)


def _step_node(
    tree: Tree, record: StepRecord, result: RunResult, width: int, store: str | None = None
) -> None:
    calls = [c for c in result.calls if c.step == record.name]
    node = tree.add(_step_label(record, calls))
    decisions = [d for d in result.decisions if d.step == record.name]
    rounds = _rounds_of(record, calls, decisions)
    for d in decisions:
        if not (rounds and d.kind == "loop"):
            node.add(_decision_text(d))
    for number in rounds:  # a looping step: each round's calls, agent turns and decision
        in_round = [c for c in calls if c.round == number]
        label = Text(f"round {number}", style="bold")
        if in_round:
            label.append(f"  {_usage_facts(in_round)}", style="dim")
        round_node = node.add(label)
        _add_turns(round_node, [t for t in record.turns if t.get("round") == number])
        for d in decisions:
            if d.kind == "loop" and d.values.get("round") == number:
                round_node.add(_decision_text(d, with_values=set(d.values) != {"round"}))
    _add_turns(node, [t for t in record.turns if t.get("round") not in rounds])
    by_model: dict[str, Counter[str]] = {}
    for c in calls:
        by_model.setdefault(c.model, Counter())[c.outcome] += 1
    failed = Counter(c.outcome for c in calls if c.outcome != "ok")
    if len(by_model) > 1:  # a fallback answered: per model
        for model, outcomes in by_model.items():
            ok = outcomes.pop("ok", 0)
            line = Text(f"{model}: {ok} ok")
            if outcomes:
                line.append(
                    " · failed: " + ", ".join(f"{m} {n}" for m, n in sorted(outcomes.items())),
                    style="yellow",
                )
            node.add(line)
    for warning in adjustment_warnings(calls):
        node.add(Text(f"adjusted: {warning}", style="yellow"))
    cached = sum(1 for c in calls if c.source == "cache")
    if cached:
        node.add(Text(f"{cached} repl{'ies' if cached != 1 else 'y'} from the cache (no cost)"))
    if failed:
        node.add(
            Text(
                "failed attempts by mode: "
                + ", ".join(f"{m} {n}" for m, n in sorted(failed.items())),
                style="yellow",
            )
        )
    if record.error is not None:
        node.add(Text(f"{record.error.type}: {record.error.message}", style="red"))
    elif record.status in ("skipped", "cancelled") and record.reason and not decisions:
        node.add(Text(f"{record.status}: {record.reason}", style="dim"))
    if record.status == "waiting" and record.question is not None:
        _question_nodes(node, result.run_id, record.name, record.question, store)
    if record.status == "done":
        text = json.dumps(jsonable(record.output), ensure_ascii=False)
        limit = max(40, min(_PREVIEW, width))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        node.add(Text(f"→ {text}", style="dim"))


def _question_nodes(
    node: Tree, run_id: str, step: str, question: Mapping[str, Any], store: str | None
) -> None:
    """A waiting step's question (prompt, expected type, details) and how to answer it."""
    for label, value in question_lines(question):
        line = Text(f"{label}: ", style="bold yellow" if label == "asks" else "bold")
        line.append(value, style="red" if label == "refused" else "")
        node.add(line)
    if store is not None and store.startswith("memory:"):
        return
    for n, command in enumerate(answer_commands(run_id, step, question, store)):
        line = Text("answer: " if n == 0 else "    or: ", style="bold")
        line.append(command, style="cyan")
        node.add(line)


def _render_run(
    console: Console, result: RunResult, row: RunRow, now: float, store: str | None = None
) -> None:
    status = "interrupted" if _interrupted(row, now) else row.status
    head = Text()
    head.append(result.flow, style="bold")
    head.append(f"  run {result.run_id}  ")
    head.append(f"{_MARK.get(status, '·')} {status}", style=_STYLE.get(status, ""))
    if row.finished_at is not None:
        head.append(f" in {fmt_seconds(row.finished_at - row.started_at)}")
    head.append(f"  · started {_when(row.started_at)}", style="dim")
    if row.parent_id is not None:
        head.append(f"  · item {row.item_index} of batch {row.parent_id}", style="dim")
    tree = Tree(head)
    width = max(40, console.width - 12)
    for record in result.steps.values():
        _step_node(tree, record, result, width, store)
    console.print(tree)
    usage = result.usage
    if usage.attempts:
        failures = ", ".join(f"{m} {n}" for m, n in sorted(usage.failures.items()))
        cost = fmt_usd(usage.cost_usd) if usage.cost_known else f"≥ {fmt_usd(usage.cost_usd)}"
        console.print(
            Text(
                f"{usage.calls} LLM call(s), {usage.attempts} attempt(s)"
                + (f" (failed: {failures})" if failures else "")
                + f" · tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out"
                + f" · cost {cost}",
                style="bold",
            )
        )
    else:
        console.print(Text("no LLM calls", style="bold"))
    if result.error is not None:
        where = f" in step {result.error.step!r}" if result.error.step else ""
        console.print(
            Text.assemble(
                (f"failed{where}: ", "bold red"), f"{result.error.type}: {result.error.message}"
            )
        )
    if row.status == "waiting":
        n = len(WaitingStep.of(result))
        console.print(
            Text(
                f"⏸ waiting for input: {n} question{'s' if n != 1 else ''}; the command(s) "
                "above answer them",
                style="bold yellow",
            )
        )
    elif row.status != "done":
        suffix = store_args(store) if store is not None else ""
        console.print(Text(f"resume it: trellis resume {row.run_id}{suffix}", style="dim"))


def _batch_json(store: Store, row: RunRow, metas: _Meta, now: float) -> dict[str, Any]:
    result = load_result(store, row.run_id)
    children = batch_items(store, row.run_id)
    entries = [run_entry(store, child, metas, now) for child in children]
    usage = Stats()
    for child in children:
        usage.merge(_usage(store, child))
    result.usage = usage
    data = result.to_dict()
    data["batch"] = {
        "total": len(children),
        "by_status": dict(Counter(c.status for c in children)),
        "items": entries,
    }
    return data


def _render_batch(
    console: Console,
    data: dict[str, Any],
    row: RunRow,
    entry: Mapping[str, Any],
    waiting: Mapping[str, _Waiting],
    store: str,
) -> None:
    batch = data["batch"]
    status = _shown_status(entry, waiting[row.run_id])
    head = Text()
    head.append(data["flow"], style="bold")
    head.append(f"  batch {row.run_id}  ")
    head.append(status, style=_STYLE.get(status, ""))
    head.append(f"  · started {_when(row.started_at)}", style="dim")
    console.print(head)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(batch["by_status"].items()))
    console.print(f"{batch['total']} items: {counts}", highlight=False)
    table = Table(title="Items", title_justify="left", title_style="bold")
    for name, justify in (
        ("#", "right"),
        ("run id", "left"),
        ("status", "left"),
        ("duration", "right"),
        ("steps", "right"),
        ("calls", "right"),
        ("tokens", "right"),
        ("cost", "right"),
        ("error", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in batch["items"]:
        err = e["error"]
        table.add_row(
            str(e["item_index"]),
            escape(e["run_id"]),
            _status_text(e, waiting.get(e["run_id"], _Waiting())),
            fmt_seconds(e["duration_s"]) if e["duration_s"] is not None else "–",
            f"{e['steps']['done']}/{e['steps']['total']}",
            str(e["calls"]),
            f"{e['input_tokens'] + e['output_tokens']:,}",
            _cost_text(e),
            escape(f"{err['type']}: {err['message']}".splitlines()[0][:100]) if err else "",
        )
    console.print(table)
    usage = data["usage"]
    cost = "unknown" if usage["cost_usd"] is None else fmt_usd(usage["cost_usd"])
    console.print(
        Text(
            f"{usage['calls']} LLM call(s), {usage['attempts']} attempt(s) · tokens "
            f"{usage['input_tokens']:,} in / {usage['output_tokens']:,} out · cost {cost}",
            style="bold",
        )
    )
    questions = [
        WaitingStep(e["run_id"], step, question)
        for e in batch["items"]
        for step, question in waiting.get(e["run_id"], _Waiting()).steps
    ]
    if questions:
        render_waiting(console, questions, store)
    elif row.status != "done":
        console.print(Text(f"resume it: trellis resume {row.run_id}", style="dim"))


def show(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A run or batch id (see `trellis runs`).", show_default=False
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help=(
                'Print the run as JSON: RunResult.to_dict() (a batch: plus "batch"); '
                "see docs/cli.md."
            ),
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Show one recorded run as a tree of its steps, in the order they run.

    Per step: status, model(s) used, calls and attempts, tokens, cost, latency, failed
    attempts by failure mode, mapped elements, routing decisions with the values they were
    made on, errors and skip reasons, and the output. A looping step: each round's calls
    and loop decision. An agent step: its turns — the model's reply, each tool call with
    its arguments and result or error (live, or replayed from the journal), tokens and
    cost per turn. A step waiting for a person: the question (prompt, expected type,
    details) and the `trellis approve` / `trellis reply` command that answers it. For a
    batch: item counts by status, a table of its items (`trellis show ITEM-ID` for one of
    them) and the questions its waiting items ask.

    Example: `trellis show 20250101-120000-1a2b3c4d --json`
    """
    try:
        opened = open_existing_store(store)
        if opened is None:
            raise CliError(f"no run {run!r} in {store_url(store)}")
        try:
            row = opened.get_run(run)
            if row is None:
                raise CliError(f"no run {run!r} in {opened.url}")
            metas = _Meta(opened)
            now = time.time()
            entry: dict[str, Any] = {}
            waiting: dict[str, _Waiting] = {}
            if is_batch(opened, row):
                data = _batch_json(opened, row, metas, now)
                entry = run_entry(opened, row, metas, now)
                waiting[row.run_id] = _Waiting.of(opened, row, True)
                for child in batch_items(opened, row.run_id):
                    waiting[child.run_id] = _Waiting.of(opened, child, False)
                result = None
            else:
                result = recorded_result(opened, row, metas.steps(row))
                data = result.to_dict()
        except _UNREADABLE as exc:
            message = str(exc) or type(exc).__name__
            if repr(run) not in message:
                message = f"run {run!r} cannot be read: {message}"
            raise CliError(message) from None
        finally:
            opened.close()
    except CliError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json_text(data, indent=2))
        return
    console = Console()
    if result is None:
        _render_batch(console, data, row, entry, waiting, opened.url)
    else:
        _render_run(console, result, row, now, opened.url)
