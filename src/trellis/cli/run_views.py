"""How recorded runs look in a terminal: the ``trellis runs`` table, the ``trellis show``
tree of one run (steps, decisions, rounds, agent turns, questions) and a batch's items.

Views only: what they show comes from :mod:`trellis.engine.records` (the read model of
recorded runs); the commands that put them on screen are in :mod:`trellis.cli.inspect`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from trellis.cli.formats import fmt_cost, fmt_seconds
from trellis.cli.render import answer_commands, question_lines, render_waiting, store_args
from trellis.engine.human import leaf_questions
from trellis.engine.records import Waiting, interrupted, subflow_of
from trellis.engine.results import CallRecord, Decision, RunResult, Stats, StepRecord, jsonable
from trellis.engine.summary import WaitingStep, adjustment_warnings
from trellis.store.base import RunRow
from trellis.tracebacks import Frame, format_frames

__all__ = [
    "BATCH_EDGE_ROWS",
    "ItemRows",
    "render_batch",
    "render_run",
    "runs_table",
    "shown_status",
]

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
BATCH_EDGE_ROWS = 10  # a big batch's table shows its first and last this many items


class ItemRows:
    """Which of a batch's items its table shows: by default the first and last
    :data:`BATCH_EDGE_ROWS` (all of them when there are no more than twice that); every
    item (``--all``); or one page of ``limit`` items (``--page N``, counted from 1)."""

    def __init__(self, *, every: bool = False, page: int | None = None, limit: int = 50) -> None:
        self.every = every
        self.page = page
        self.limit = limit

    def spans(self, total: int) -> list[tuple[int, int]]:
        """The ``[start, stop)`` ranges of item positions shown, in order."""
        if self.every or (self.page is None and total <= 2 * BATCH_EDGE_ROWS):
            return [(0, total)]
        if self.page is not None:
            start = (self.page - 1) * self.limit
            return [(start, min(total, start + self.limit))]
        return [(0, BATCH_EDGE_ROWS), (total - BATCH_EDGE_ROWS, total)]

    def pages(self, total: int) -> int:
        return max(1, -(-total // self.limit))


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _cost_text(entry: Mapping[str, Any]) -> str:
    if entry["attempts"] == 0:
        return "[dim]–[/]"
    cost = fmt_cost(entry["cost_usd"])
    return f"[yellow]{cost}[/]" if entry["cost_usd"] is None else cost


def shown_status(entry: Mapping[str, Any], waiting: Waiting) -> str:
    """The status a table shows: ``interrupted`` for a run nobody executes any more, and
    ``waiting`` for a batch whose unfinished items all wait for a person (the engine
    records such a batch as failed)."""
    if entry["interrupted"]:
        return "interrupted"
    items = entry.get("items")
    if items and waiting.items and items["done"] + waiting.items == items["total"]:
        return "waiting"
    return str(entry["status"])


def _status_text(entry: Mapping[str, Any], waiting: Waiting) -> str:
    status = shown_status(entry, waiting)
    text = f"[{_STYLE.get(status, '')}]{status}[/]"
    if waiting.steps:
        text += f" [dim]({escape(', '.join(step for step, _ in waiting.steps))})[/]"
    return text


#: The ``trellis runs`` columns: (header, justify, essential). Essential columns are
#: always shown, in full (an id is never cut: it is what the other commands take); the
#: others are left out, last first, when the terminal is too narrow for them.
_RUN_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("id", "left", True),
    ("flow", "left", True),
    ("status", "left", True),
    ("started", "left", False),
    ("duration", "right", False),
    ("steps", "right", True),
    ("calls", "right", False),
    ("tokens", "right", False),
    ("cost", "right", True),
)
_FLOW_MIN_WIDTH = 8
#: Optional columns in the order they are dropped when the width runs out.
_DROPPED_FIRST = ("tokens", "calls", "started", "duration")


def _run_cells(e: Mapping[str, Any], waiting: Waiting) -> dict[str, str]:
    if e["items"] is not None:
        steps = f"{e['items']['done']}/{e['items']['total']} items"
        if waiting.items:
            steps += f" [yellow]⏸{waiting.items}[/]"
    else:
        steps = f"{e['steps']['done']}/{e['steps']['total']}"
    return {
        "id": escape(e["run_id"]),
        "flow": escape(e["flow"]),
        "status": _status_text(e, waiting),
        "started": _when(e["started_at"]),
        "duration": fmt_seconds(e["duration_s"]) if e["duration_s"] is not None else "–",
        "steps": steps,
        "calls": str(e["calls"]),
        "tokens": f"{e['input_tokens'] + e['output_tokens']:,}",
        "cost": _cost_text(e),
    }


def _fitting_columns(rows: list[dict[str, str]], width: int) -> list[str]:
    """The columns that fit in ``width`` cells: the essential ones, and the others as
    long as they fit (each column takes its widest cell, one cell of padding on each
    side and one for the rule between columns)."""
    needed = {
        name: max([len(name), *(Text.from_markup(r[name]).cell_len for r in rows)]) + 3
        for name, _, _ in _RUN_COLUMNS
    }
    needed["flow"] = max(needed["flow"], _FLOW_MIN_WIDTH + 3)
    shown = {name for name, _, _ in _RUN_COLUMNS}
    for name in _DROPPED_FIRST:
        if sum(needed[n] for n in shown) - 1 <= width:
            break
        shown.discard(name)
    return [name for name, _, _ in _RUN_COLUMNS if name in shown]


def runs_table(
    entries: list[dict[str, Any]], url: str, waiting: Mapping[str, Waiting], width: int = 200
) -> Table:
    """The ``trellis runs`` table, fitted to ``width`` (the terminal's): at 80 columns
    (CI logs, pipes) it keeps every id and flow whole and leaves out tokens, calls, start
    time and duration, in that order, as far as needed."""
    rows = [_run_cells(e, waiting[e["run_id"]]) for e in entries]
    columns = _fitting_columns(rows, width)
    table = Table(
        title=f"Runs in {escape(url)}",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name, justify, _ in _RUN_COLUMNS:
        if name not in columns:
            continue
        if name == "flow":  # the one column that may wrap (a very long flow name)
            table.add_column(name, overflow="fold", min_width=_FLOW_MIN_WIDTH)
        else:
            table.add_column(
                name,
                style="bold" if name == "id" else "",
                justify=justify,  # type: ignore[arg-type]
                no_wrap=True,
                min_width=max(Text.from_markup(r[name]).cell_len for r in rows),
            )
    for row in rows:
        table.add_row(*(row[name] for name in columns))
    return table


# -- one run ------------------------------------------------------------------------------


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
        facts.append(fmt_cost(usage.cost_usd, usage.unpriced_attempts))
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
    return f"{text} · {fmt_cost(usage.cost_usd, usage.unpriced_attempts)}"


def _turn_node(parent: Tree, turn: Mapping[str, Any]) -> None:
    """One agent turn: tokens and cost, the model's reply, each tool call with its result."""
    tool_calls = [c for c in turn.get("tool_calls") or () if isinstance(c, Mapping)]
    label = Text(f"turn {turn.get('turn', '?')}", style="bold")
    tokens = f"{turn.get('input_tokens', 0):,}/{turn.get('output_tokens', 0):,} tokens"
    cost = turn.get("cost_usd")
    known = cost if isinstance(cost, int | float) else None
    label.append(f"  {tokens} · {fmt_cost(known)}", style="dim")
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
        call_node = node.add(line)
        frames = _recorded_frames(call.get("traceback"))
        if frames:  # the tool raised: where, in the user's code
            call_node.add(_traceback_text(frames))


def _recorded_frames(value: Any) -> tuple[Frame, ...]:
    """A recorded traceback (a list of frame dicts); empty when absent or unreadable."""
    if not isinstance(value, list):
        return ()
    try:
        return tuple(Frame.from_dict(dict(f)) for f in value if isinstance(f, Mapping))
    except (KeyError, TypeError, ValueError):
        return ()


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


def _add_steps(
    tree: Tree, result: RunResult, width: int, store: str | None, expand: bool, prompts: bool
) -> None:
    """Every step of ``result`` under ``tree``; a sub-flow step's child runs as one line
    each (``expand``: with their own steps, nested). ``prompts``: each attempt's recorded
    messages and reply under its step."""
    for record in result.steps.values():
        node = _step_node(tree, record, result, width, store)
        if prompts:
            _add_prompts(node, [c for c in result.calls if c.step == record.name])
        for child in record.children:
            child_node = node.add(_child_line(child, expand))
            if expand:
                _add_steps(child_node, child, width - 4, store, expand, prompts)


def _add_prompts(node: Tree, calls: list[CallRecord]) -> None:
    """``trellis show --prompts``: each attempt with the messages it sent and its reply."""
    for c in calls:
        if c.prompt is None:
            continue
        label = Text(f"attempt {c.call}.{c.attempt}", style="bold cyan")
        where = "" if c.index is None else f" [{c.index}]"
        where += "" if c.round is None else f" round {c.round}"
        label.append(f"{where}  {c.model} → {c.outcome}", style="dim")
        attempt = node.add(label)
        for message in c.prompt:
            _message_node(attempt, message)
        for message in c.output or ():
            _message_node(attempt, message)
        if c.output is None:
            attempt.add(Text(f"(no reply: {c.outcome})", style="dim"))


def _message_node(node: Tree, message: Mapping[str, Any]) -> None:
    """One recorded message (GenAI parts): its role, then its text and tool calls."""
    role = str(message.get("role", "?"))
    line = Text(f"{role}: ", style="bold magenta" if role == "assistant" else "bold")
    texts: list[str] = []
    for part in message.get("parts") or ():
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("content", "")))
        elif kind == "tool_call":
            texts.append(f"→ {part.get('name')}({part.get('arguments', '')})")
        elif kind == "tool_call_response":
            texts.append(f"← {part.get('id')}: {part.get('response', '')}")
    line.append("\n".join(texts) if texts else "(empty)")
    finish = message.get("finish_reason")
    if finish:
        line.append(f"  [finish: {finish}]", style="dim")
    node.add(line)


def _child_line(child: RunResult, expanded: bool) -> Text:
    """A sub-flow's child run in one line: id, status, steps done, calls and cost."""
    done = sum(1 for r in child.steps.values() if r.status == "done")
    usage = child.usage
    line = Text("↳ sub-flow ", style="dim")
    line.append(child.flow, style="bold")
    line.append(f"  run {child.run_id}  ")
    line.append(
        f"{_MARK.get(child.status, '·')} {child.status}", style=_STYLE.get(child.status, "")
    )
    facts = f"  {done}/{len(child.steps)} steps done"
    if usage.attempts:
        cost = fmt_cost(usage.cost_usd, usage.unpriced_attempts)
        facts += f" · {usage.attempts} attempt(s) · cost {cost}"
    line.append(facts, style="dim")
    if not expanded:
        line.append("  (--expand to open)", style="dim")
    return line


def _step_node(
    tree: Tree, record: StepRecord, result: RunResult, width: int, store: str | None = None
) -> Tree:
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
        error_node = node.add(Text(f"{record.error.type}: {record.error.message}", style="red"))
        if record.error.traceback:
            error_node.add(_traceback_text(record.error.traceback))
    elif record.status in ("skipped", "cancelled") and record.reason and not decisions:
        node.add(Text(f"{record.status}: {record.reason}", style="dim"))
    if record.status == "waiting" and record.question is not None:
        # A sub-flow step: each question waiting inside it, answered by its path.
        for path, question in leaf_questions(record.name, record.question) or [
            (record.name, record.question)
        ]:
            where = node if path == record.name else node.add(Text(f"⏸ {path}", style="yellow"))
            _question_nodes(where, result.run_id, path, question, store)
    if record.status == "done":
        text = json.dumps(jsonable(record.output), ensure_ascii=False)
        limit = max(40, min(_PREVIEW, width))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        node.add(Text(f"→ {text}", style="dim"))
    return node


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


def render_run(
    console: Console,
    result: RunResult,
    row: RunRow,
    now: float,
    store: str | None = None,
    *,
    expand: bool = False,
    prompts: bool = False,
) -> None:
    status = "interrupted" if interrupted(row, now) else row.status
    head = Text()
    head.append(result.flow, style="bold")
    head.append(f"  run {result.run_id}  ")
    head.append(f"{_MARK.get(status, '·')} {status}", style=_STYLE.get(status, ""))
    if row.duration_s is not None:
        head.append(f" in {fmt_seconds(row.duration_s)}")
    head.append(f"  · started {_when(row.started_at)}", style="dim")
    subflow = subflow_of(row)
    if subflow is not None:
        head.append(f"  · sub-flow {subflow[1]!r} of run {subflow[0]}", style="dim")
    elif row.parent_id is not None:
        head.append(f"  · item {row.item_index} of batch {row.parent_id}", style="dim")
    tree = Tree(head)
    width = max(40, console.width - 12)
    _add_steps(tree, result, width, store, expand, prompts)
    console.print(tree)
    if prompts and not any(c.prompt is not None for c in result.calls):
        console.print(
            Text(
                "no prompts were recorded for this run: run it with --record-prompts "
                "(Engine(record_prompts=True)) to keep each attempt's messages and reply",
                style="yellow",
            )
        )
    usage = result.usage
    if usage.attempts:
        failures = ", ".join(f"{m} {n}" for m, n in sorted(usage.failures.items()))
        cost = fmt_cost(usage.cost_usd, usage.unpriced_attempts)
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


def _item_row(table: Table, e: Mapping[str, Any], waiting: Mapping[str, Waiting]) -> None:
    err = e["error"]
    table.add_row(
        str(e["item_index"]),
        escape(e["run_id"]),
        _status_text(e, waiting.get(e["run_id"], Waiting())),
        fmt_seconds(e["duration_s"]) if e["duration_s"] is not None else "–",
        f"{e['steps']['done']}/{e['steps']['total']}",
        str(e["calls"]),
        f"{e['input_tokens'] + e['output_tokens']:,}",
        _cost_text(e),
        escape(f"{err['type']}: {err['message']}".splitlines()[0][:100]) if err else "",
    )


def render_batch(
    console: Console,
    data: dict[str, Any],
    row: RunRow,
    entry: Mapping[str, Any],
    waiting: Mapping[str, Waiting],
    store: str,
    rows: ItemRows | None = None,
) -> None:
    """A batch: its item counts, a table of (some of) its items, its usage and the
    questions its waiting items ask."""
    rows = rows or ItemRows()
    batch = data["batch"]
    status = shown_status(entry, waiting[row.run_id])
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
    total = int(batch["total"])
    spans = rows.spans(total)
    # batch["items"]: the summaries of the items shown (every item's, from --json's reader)
    items = batch["items"]
    if len(items) == total:
        items = [e for start, stop in spans for e in items[start:stop]]
    shown = iter(items)
    for n, (start, stop) in enumerate(spans):
        if n:
            skipped = start - spans[n - 1][1]
            table.add_row("…", Text(f"{skipped:,} more item(s)", style="dim"))
        for _ in range(start, stop):
            _item_row(table, next(shown), waiting)
    console.print(table)
    if rows.page is not None:
        console.print(
            Text(
                f"page {rows.page} of {rows.pages(total)} ({rows.limit} items a page)",
                style="dim",
            )
        )
    elif len(spans) > 1:
        console.print(
            Text(
                f"showing the first and last {BATCH_EDGE_ROWS} of {total:,} items: "
                f"--all for every item, --page N [--limit M] for a page of them",
                style="dim",
            )
        )
    usage = data["usage"]
    cost = fmt_cost(usage["cost_usd"], int(usage.get("unpriced_attempts") or 0))
    console.print(
        Text(
            f"{usage['calls']} LLM call(s), {usage['attempts']} attempt(s) · tokens "
            f"{usage['input_tokens']:,} in / {usage['output_tokens']:,} out · cost {cost}",
            style="bold",
        )
    )
    questions = [
        WaitingStep(run_id, step, question)  # every waiting item's, shown in the table or not
        for run_id, of_run in waiting.items()
        for step, question in of_run.steps
    ]
    if questions:
        render_waiting(console, questions, store)
    elif row.status != "done":
        console.print(Text(f"resume it: trellis resume {row.run_id}", style="dim"))


def _traceback_text(frames: tuple[Frame, ...]) -> Text:
    """The user's frames, as Python prints a traceback (outermost first)."""
    text = Text("in user code (most recent call last):", style="dim")
    for line in format_frames(frames):
        text.append("\n" + line, style="dim" if line.startswith("    ") else "")
    return text
