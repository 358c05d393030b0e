"""Rich rendering of one run's result and of a batch summary, and how a waiting step's
question is put to a person (its prompt, expected type, and the command that answers it).
Nothing here runs anything."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trellis.cli.formats import fmt_cost, fmt_seconds, fmt_usd
from trellis.cli.stores import store_url
from trellis.engine.records import is_approval
from trellis.engine.results import RunResult, StepRecord, jsonable
from trellis.engine.summary import BatchSummary, StepRoutes, WaitingStep, adjustment_warnings
from trellis.models.schema_refs import SchemaError, resolve
from trellis.models.schema_sample import placeholder_value

__all__ = [
    "answer_commands",
    "fmt_seconds",
    "fmt_usd",
    "is_approval",
    "question_lines",
    "render_result",
    "render_summary",
    "render_waiting",
    "sample_answer",
    "store_args",
    "turn_facts",
]

_MAX_OUTPUT = 4000
_STATUS_STYLE = {
    "done": "green",
    "skipped": "yellow",
    "failed": "bold red",
    "cancelled": "magenta",
    "pending": "dim",
    "running": "cyan",
    "waiting": "bold yellow",
}


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items())


def _output_text(value: object, width: int) -> str:
    data = jsonable(value)
    if isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, ensure_ascii=False)
        if len(text) > width:
            text = json.dumps(data, indent=2, ensure_ascii=False)
    if len(text) > _MAX_OUTPUT:
        text = text[:_MAX_OUTPUT] + f"… ({len(text) - _MAX_OUTPUT} more characters; see --json)"
    return text


_MARK = {"done": "✓", "skipped": "–", "failed": "✗", "cancelled": "⊘", "waiting": "⏸"}


def _step_header(name: str, record: StepRecord) -> Text:
    style = _STATUS_STYLE.get(record.status, "")
    text = Text(f"{_MARK.get(record.status, '·')} ", style=style)
    text.append(name, style="bold")
    text.append(f"  {record.status}", style=style)
    if record.status in ("skipped", "cancelled") and record.reason:
        text.append(f": {record.reason}", style="dim")
    facts: list[str] = []
    usage = record.usage
    if usage.attempts:
        calls = f"{usage.calls} call{'s' if usage.calls != 1 else ''}"
        if usage.attempts != usage.calls:
            calls += f" ({usage.attempts} attempts"
            calls += f": {_counts(usage.failures)})" if usage.failures else ")"
        facts.append(calls)
        facts.append(f"{usage.input_tokens:,}/{usage.output_tokens:,} tokens")
        facts.append(fmt_cost(usage.cost_usd, usage.unpriced_attempts))
    if record.rounds:
        facts.append(f"{record.rounds} round{'s' if record.rounds != 1 else ''}")
    if record.elements is not None:
        failed = f", {record.element_failures} failed" if record.element_failures else ""
        facts.append(f"{record.elements} elements{failed}")
    if record.turns:
        facts.append(turn_facts(record.turns))
    if record.attempts > max(1, record.elements or 0, record.rounds or 0):
        facts.append(f"ran {record.attempts} times")
    if record.duration_s is not None:
        facts.append(fmt_seconds(record.duration_s))
    if facts:
        text.append("  " + " · ".join(facts), style="dim")
    return text


def _step_body(record: StepRecord, width: int) -> Text | None:
    if record.status == "done":
        return Text(_output_text(record.output, width))
    if record.status == "failed" and record.error is not None:
        return Text(f"{record.error.type}: {record.error.message}", style="red")
    if record.status == "waiting" and record.question is not None:
        text = Text()
        for n, (label, value) in enumerate(question_lines(record.question)):
            if n:
                text.append("\n")
            text.append(f"{label}: ", style="bold yellow" if label == "asks" else "bold")
            text.append(value, style="red" if label == "refused" else "")
        return text
    if record.status == "pending" and record.reason:
        return Text(record.reason, style="dim")
    return None


def turn_facts(turns: Sequence[Mapping[str, Any]]) -> str:
    """``3 agent turns, 4 tool calls (1 error)`` for a step's transcript."""
    calls = [c for t in turns for c in t.get("tool_calls") or ()]
    errors = sum(1 for c in calls if c.get("error") is not None)
    text = f"{len(turns)} agent turn{'s' if len(turns) != 1 else ''}, "
    text += f"{len(calls)} tool call{'s' if len(calls) != 1 else ''}"
    if errors:
        text += f" ({errors} error{'s' if errors != 1 else ''})"
    return text


# -- waiting for a person ------------------------------------------------------------------


def store_args(url: str) -> str:
    """`` --store URL`` for a command line, or nothing for the default store."""
    return "" if url == store_url(None) else f" --store {shlex.quote(url)}"


def sample_answer(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> Any:
    """A plausible value of a JSON schema, for the sample command line: required fields
    only (every field when none is required), the first option of a choice (the schema
    sampler's :func:`~trellis.models.schema_sample.placeholder_value`)."""
    root = schema if defs is None else {**schema, "$defs": defs}
    return placeholder_value(root)


def _type_text(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in enum)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return " | ".join(_type_text(o, defs) for o in options if isinstance(o, Mapping))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"list[{_type_text(items, defs) if isinstance(items, Mapping) else 'any'}]"
    return str(kind) if kind else "any"


def _fields(schema: Mapping[str, Any]) -> str | None:
    """``approved: boolean (required); comment: string | null = null`` for an object."""
    defs = schema.get("$defs") or {}
    with contextlib.suppress(SchemaError):  # a $ref it cannot follow: the schema as it is
        schema = resolve(schema, schema)
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return None
    required = set(schema.get("required") or ())
    parts = []
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        text = f"{name}: {_type_text(prop, defs)}"
        if name in required:
            text += " (required)"
        elif "default" in prop:
            text += f" = {json.dumps(prop['default'], ensure_ascii=False)}"
        if isinstance(prop.get("description"), str):
            text += f" — {prop['description']}"
        parts.append(text)
    return "; ".join(parts)


def question_lines(question: Mapping[str, Any], limit: int = 400) -> list[tuple[str, str]]:
    """(label, text) lines putting a waiting step's question: what it asks, the type it
    expects (with an object's fields), its details, and why the last answer was refused."""
    lines = [("asks", str(question.get("prompt", "")))]
    expects = str(question.get("type") or "any")
    schema = question.get("schema")
    if isinstance(schema, Mapping):
        fields = _fields(schema)
        if fields:
            expects += f" {{{fields}}}"
    lines.append(("expects", expects))
    details = question.get("details")
    if details is not None:
        text = json.dumps(details, ensure_ascii=False)
        if len(text) > limit:
            text = text[: limit - 1] + "… (see --json)"
        lines.append(("details", text))
    where = [f"{k} {question[k]}" for k in ("index", "round") if question.get(k) is not None]
    if where:
        lines.append(("at", ", ".join(w.replace("index", "element") for w in where)))
    if question.get("error"):
        lines.append(("refused", f"the last answer: {question['error']}"))
    return lines


def answer_commands(
    run_id: str, step: str, question: Mapping[str, Any], store: str | None = None
) -> list[str]:
    """The command lines that answer a waiting step (``store``: the store's URL)."""
    suffix = store_args(store) if store is not None else ""
    head = f"{shlex.quote(run_id)} {shlex.quote(step)}"
    if is_approval(question):
        return [
            f"trellis approve {head}{suffix}",
            f"trellis approve {head} --reject --comment 'why'{suffix}",
        ]
    schema = question.get("schema")
    sample = sample_answer(schema) if isinstance(schema, Mapping) else None
    text = json.dumps(sample, ensure_ascii=False)
    return [f"trellis reply {head} --input {shlex.quote(text)}{suffix}"]


def render_waiting(console: Console, waiting: Sequence[WaitingStep], store: str | None) -> None:
    """What waits for a person, and the commands that answer it."""
    if not waiting:
        return
    runs = len({w.run_id for w in waiting})
    if runs > 1:
        what = f"{runs} runs wait for input"
    else:
        what = f"waiting for input: {len(waiting)} question{'s' if len(waiting) != 1 else ''}"
    console.print(Text(f"⏸ {what}", style="bold yellow"), highlight=False)
    if store is not None and store.startswith("memory:"):
        console.print(
            Text("  (an in-memory store: nobody can answer from another process)", style="dim")
        )
        return
    for w in waiting:
        line = Text(f"  {w.run_id} {w.step}: ", style="bold")
        line.append(f"{w.question.get('prompt', '')} ({w.question.get('type', 'any')})")
        console.print(line, highlight=False, soft_wrap=True)
        for command in answer_commands(w.run_id, w.step, w.question, store):
            console.print(Text(f"    {command}"), highlight=False, soft_wrap=True)


# -- one run -----------------------------------------------------------------------------


def render_adjustments(console: Console, warnings: Sequence[str]) -> None:
    """One warning line per request adjustment (see ``adjustment_warnings``)."""
    for warning in warnings:
        console.print(Text(f"warning: {warning}", style="yellow"), highlight=False)


def render_result(console: Console, result: RunResult, store: str | None = None) -> None:
    """One run's result; a waiting run ends with the commands that answer it (``store``:
    the URL of the store it is recorded in)."""
    status = _STATUS_STYLE.get(result.status, "")
    mark = "✓" if result.ok else _MARK.get(result.status, "✗")
    console.print(
        f"[bold]{escape(result.flow)}[/]  run {result.run_id}  "
        f"[{status}]{mark} {result.status}[/] in {fmt_seconds(result.duration_s)}",
        highlight=False,
    )
    width = max(20, console.width - 6)
    for name, record in result.steps.items():
        console.print(_step_header(name, record), highlight=False)
        body = _step_body(record, width)
        if body is not None:
            indented = Text("    ").join(body.split("\n", include_separator=True))
            console.print(Text("    ") + indented, highlight=False, soft_wrap=True)
    usage = result.usage
    if not usage.attempts:
        line = f"no LLM calls · {fmt_seconds(result.duration_s)}"
    else:
        line = (
            f"{usage.calls} LLM call(s), {usage.attempts} attempt(s)"
            + (f" (failed attempts: {_counts(usage.failures)})" if usage.failures else "")
            + f" · tokens {usage.input_tokens:,} in / {usage.output_tokens:,} out"
            + f" · cost {fmt_cost(usage.cost_usd, usage.unpriced_attempts)}"
            + f" · {fmt_seconds(result.duration_s)}"
        )
    console.print(Text(line, style="bold"), highlight=False)
    render_adjustments(console, adjustment_warnings(result.calls))
    if result.error is not None:
        where = f" in step {result.error.step!r}" if result.error.step else ""
        console.print(
            Text.assemble(
                (f"failed{where}: ", "bold red"), f"{result.error.type}: {result.error.message}"
            )
        )
    render_waiting(console, WaitingStep.of(result), store)


# -- a batch -----------------------------------------------------------------------------


def _decisions(route: StepRoutes) -> str:
    parts = []
    for kind, outcomes in route.decisions.items():
        if kind == "skip":  # skipped because something it reads was skipped
            parts.append(f"input skipped {sum(outcomes.values())}")
            continue
        parts.append(f"{kind}: " + ", ".join(f"{o} {n}" for o, n in outcomes.items()))
    return "; ".join(parts)


def _calls(route: StepRoutes) -> str:
    text = ", ".join(f"{role}×{n}" for role, n in route.calls_by_role.items())
    if route.fallbacks:
        text += f" [yellow]({route.fallbacks} answered by a fallback)[/]"
    return text


def _routes_table(summary: BatchSummary) -> Table:
    table = Table(title="Routes", title_justify="left", title_style="bold")
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("ran", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("cancelled", justify="right")
    table.add_column("decisions")
    table.add_column("calls by role")
    for route in summary.steps:
        notes = []
        if route.waiting:
            notes.append(f"[bold yellow]{route.waiting} waiting for input[/]")
        if route.rounds:
            notes.append(f"{route.rounds} rounds")
        if route.elements:
            failed = f", {route.element_failures} failed" if route.element_failures else ""
            notes.append(f"{route.elements} elements{failed}")
        decisions = _decisions(route)
        if notes:
            decisions = "; ".join([d for d in (decisions, *notes) if d])
        table.add_row(
            route.step,
            str(route.ran),
            _zero_dim(route.skipped, "yellow"),
            _zero_dim(route.failed, "red"),
            _zero_dim(route.cancelled, "magenta"),
            decisions,
            _calls(route),
        )
    return table


def _zero_dim(value: int, style: str) -> str:
    return "[dim]0[/]" if value == 0 else f"[{style}]{value}[/]"


def _cost_table(summary: BatchSummary) -> Table:
    table = Table(title="Cost by model", title_justify="left", title_style="bold")
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("tokens in", justify="right")
    table.add_column("tokens out", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("share", justify="right")
    for m in summary.models:
        share = f"{100 * m.cost_usd / summary.cost_usd:.0f}%" if summary.cost_usd else ""
        cost = fmt_cost(m.cost_usd, m.unpriced_attempts)
        if not m.cost_known and m.cost_usd == 0:
            share = ""
        table.add_row(
            m.model,
            str(m.attempts),
            f"{m.input_tokens:,}",
            f"{m.output_tokens:,}",
            cost,
            share,
        )
    return table


def summary_renderables(summary: BatchSummary, title: str) -> list[RenderableType]:
    out: list[RenderableType] = []
    status = f"[green]{summary.done} done[/]"
    if summary.failed:
        status += f", [bold red]{summary.failed} failed[/]"
    if summary.waiting:
        status += f", [bold yellow]{summary.waiting} waiting for input[/]"
    out.append(Text.from_markup(f"[bold]{escape(title)}[/] — {summary.total} items: {status}"))
    if summary.failures:
        lines = ["[bold]Failures[/]"]
        for key, n in summary.failures.items():
            example = (summary.failure_examples.get(key) or "").strip().split("\n")[0]
            lines.append(f"  [red]{escape(key)}[/] ×{n}  [dim]{escape(example)}[/]")
        if summary.not_started:
            lines.append(f"  [dim]{summary.not_started} item(s) never started[/]")
        out.append(Text.from_markup("\n".join(lines)))
    if summary.steps:
        out.append(_routes_table(summary))
    retries = _counts(summary.retries) if summary.retries else "none"
    out.append(
        Text.from_markup(
            f"[bold]Retries[/]  {summary.attempts} attempts for {summary.calls} calls · "
            f"failed attempts by mode: {retries}"
        )
    )
    if summary.models:
        out.append(_cost_table(summary))
    per_item = summary.cost_per_item
    cost_line = (
        f"[bold]Tokens[/] {summary.input_tokens:,} in / {summary.output_tokens:,} out · "
        f"[bold]cost[/] {escape(fmt_cost(summary.cost_usd, summary.unpriced_attempts))}"
    )
    if per_item is not None:
        cost_line += f" · {fmt_usd(per_item)} per item"
    lines = [cost_line]
    cf = summary.counterfactual
    if cf is not None:
        verdict = (
            f"routing saved {fmt_usd(cf.saved_usd)} ({cf.saved_pct:.0f}%)"
            if cf.saved_usd >= 0
            else f"routing cost {fmt_usd(-cf.saved_usd)} more"
        )
        left_out = (
            f"; {cf.left_out_attempts} attempt(s) of when=/branch steps left out, so an "
            "escalated item counts once"
            if cf.left_out_attempts
            else ""
        )
        lines.append(
            f"estimated cost if every call had gone to {escape(cf.model)}: "
            f"{fmt_usd(cf.cost_usd)} — {verdict}\n"
            f"[dim](method: the always-run steps' calls re-priced at {escape(cf.model)}'s "
            f"price with this batch's tokens{left_out}; a measured baseline: trellis eval)[/]"
        )
    out.append(Text.from_markup("\n".join(lines)))
    lat = summary.latency
    timing = []
    if lat is not None:
        timing.append(
            f"[bold]Latency per item[/] p50 {fmt_seconds(lat.p50)} · p95 "
            f"{fmt_seconds(lat.p95)} · max {fmt_seconds(lat.max)}"
        )
    if summary.wall_s is not None:
        rate = f" · {summary.items_per_s:.1f} items/s" if summary.items_per_s else ""
        timing.append(f"[bold]wall[/] {fmt_seconds(summary.wall_s)}{rate}")
    if timing:
        out.append(Text.from_markup("   ".join(timing)))
    if summary.adjustments:
        out.append(Text("\n".join(f"warning: {w}" for w in summary.adjustments), style="yellow"))
    return out


def render_summary(
    console: Console, summary: BatchSummary, title: str, store: str | None = None
) -> None:
    """A batch's summary; waiting items end it with the commands that answer them
    (``store``: the URL of the store the batch is recorded in)."""
    parts = summary_renderables(summary, title)
    spaced: list[RenderableType] = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    console.print(Group(*spaced), highlight=False)
    if summary.questions:
        console.print()
        render_waiting(console, summary.questions, store)
