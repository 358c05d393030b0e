"""Rich rendering of one run's result and of a batch summary. Nothing here computes."""

from __future__ import annotations

import json
from collections.abc import Mapping

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trellis.cli.summary import BatchSummary, StepRoutes
from trellis.engine.results import RunResult, StepRecord, jsonable

__all__ = ["fmt_seconds", "fmt_usd", "render_result", "render_summary"]

_MAX_OUTPUT = 4000
_STATUS_STYLE = {
    "done": "green",
    "skipped": "yellow",
    "failed": "bold red",
    "cancelled": "magenta",
    "pending": "dim",
    "running": "cyan",
}


def fmt_usd(value: float) -> str:
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.6f}"
    return f"${value:,.4f}"


def fmt_seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.2f}s"
    return f"{int(value // 60)}m{value % 60:04.1f}s"


def _cost(cost: float, unpriced: int) -> str:
    if unpriced:
        return f"≥ {fmt_usd(cost)} ({unpriced} call{'s' if unpriced != 1 else ''} unpriced)"
    return fmt_usd(cost)


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


_MARK = {"done": "✓", "skipped": "–", "failed": "✗", "cancelled": "⊘"}


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
        facts.append(_cost(usage.cost_usd, usage.unpriced_attempts))
    if record.rounds:
        facts.append(f"{record.rounds} round{'s' if record.rounds != 1 else ''}")
    if record.elements is not None:
        failed = f", {record.element_failures} failed" if record.element_failures else ""
        facts.append(f"{record.elements} elements{failed}")
    if record.attempts > 1:
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
    return None


# -- one run -----------------------------------------------------------------------------


def render_result(console: Console, result: RunResult) -> None:
    status = _STATUS_STYLE.get(result.status, "")
    mark = "✓" if result.ok else "✗"
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
            + f" · cost {_cost(usage.cost_usd, usage.unpriced_attempts)}"
            + f" · {fmt_seconds(result.duration_s)}"
        )
    console.print(Text(line, style="bold"), highlight=False)
    if result.error is not None:
        where = f" in step {result.error.step!r}" if result.error.step else ""
        console.print(
            Text.assemble(
                (f"failed{where}: ", "bold red"), f"{result.error.type}: {result.error.message}"
            )
        )


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
        cost = fmt_usd(m.cost_usd) if m.cost_known else _cost(m.cost_usd, m.unpriced_attempts)
        if not m.cost_known and m.cost_usd == 0:
            cost, share = "unpriced", ""
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
        f"[bold]cost[/] {escape(_cost(summary.cost_usd, summary.unpriced_attempts))}"
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
        lines.append(
            f"cost if everything used {escape(cf.model)}: {fmt_usd(cf.cost_usd)} — {verdict}"
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
    return out


def render_summary(console: Console, summary: BatchSummary, title: str) -> None:
    parts = summary_renderables(summary, title)
    spaced: list[RenderableType] = []
    for part in parts:
        if spaced:
            spaced.append(Text(""))
        spaced.append(part)
    console.print(Group(*spaced), highlight=False)
