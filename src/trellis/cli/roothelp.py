"""``trellis --help`` (and ``trellis`` alone) without typer or rich.

The top-level help screen is the most common command and the one a person waits for
most: it only lists the commands. Building the typer application (every command's
options) and importing rich to print that list took most of its start-up, so
:func:`main` prints this screen itself, laid out as typer's rich help lays it out.
``tests/cli/test_root_help.py`` holds the two to the same text: a command added to
``app.py`` must be listed in :data:`COMMANDS` too. A width under :data:`MIN_WIDTH`
(where rich would squeeze the option columns) goes through typer as before.

This module imports only the standard library (``tests/cli/test_startup_modules.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys

#: The application's help (``typer.Typer(help=...)`` in ``app.py`` uses it).
APP_HELP = (
    "Trellis: reliable multi-step LLM workflows.\n\n"
    "Run a flow once or over a JSONL batch, with model roles bound from trellis.toml "
    "or --model, budgets, retries by failure mode and a cost / route summary."
)

#: Each command and the first paragraph of its help, in the order ``app.py`` adds them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("check", "Validate a flow and list its inputs and steps in the order they run."),
    ("run", "Run a flow once (`--input`) or over a JSONL file of items (`--input-file`)."),
    ("mock-server", "Serve an OpenAI- and Anthropic-compatible API backed by the simulator."),
    (
        "eval",
        "Score a flow's variants over labelled data: score with a bootstrap 95% interval, "
        "cost, calls per model, routes, tokens and latency per variant, relative to a "
        "reference; optionally a parameter sweep chosen on a train split and reported on "
        "the test split. Every item is recorded in the store as a run of its variant's "
        "batch, and the eval itself (with every item's score) as the run EVAL_ID.",
    ),
    (
        "fork",
        "Re-run a recorded run or batch (`trellis run`) with other bindings or changed code.",
    ),
    (
        "diff",
        "Show per step (per item for batches) what differs between two recorded runs: the "
        "route (a step's status), its output, cost and latency. Exit code 0.",
    ),
    ("resume", "Resume an interrupted run or batch recorded by `trellis run`."),
    ("approve", "Approve (or `--reject`) what a waiting step asks, and resume its run."),
    (
        "reply",
        "Answer what a waiting step asks (`human.ask(...)`) with typed input, and resume "
        "its run.",
    ),
    (
        "runs",
        "List recorded runs, newest first: id, flow, status, start, duration, steps "
        "finished, LLM calls, tokens and cost.",
    ),
    ("show", "Show one recorded run as a tree of its steps, in the order they run."),
    (
        "ui",
        "Browse recorded runs in a local web UI: runs, batches, each run's graph, timeline "
        "and steps, two runs compared; answer waiting steps from the page.",
    ),
    ("cache", "Inspect or empty the LLM response cache kept in the store (filled by --cache)."),
)

#: The root options: (long name, short name, help).
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--version", "", "Print the installed Trellis version and exit."),
    ("--help", "-h", "Show this message and exit."),
)

#: Narrower than this, typer renders the screen (rich shrinks the option columns).
MIN_WIDTH = 60

#: The arguments that ask for this screen (``no_args_is_help``: none at all, exit code 2).
HELP_ARGS: tuple[tuple[str, ...], ...] = ((), ("--help",), ("-h",))

_RESET = "\x1b[0m"


def _style(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}{_RESET}" if color and code and text else text


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap, as rich wraps (no hyphen breaks; over-long words folded)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


def _visible(text: str) -> str:
    return text.replace("`", "") if text.count("`") % 2 == 0 else text


def _program_name() -> str:
    """What click's ``_detect_program_name`` prints: ``trellis``, ``python -m trellis``."""
    main = sys.modules.get("__main__")
    path = sys.argv[0] if sys.argv and sys.argv[0] else "trellis"
    package = getattr(main, "__package__", None)
    if package in (None, ""):
        return os.path.basename(path)
    module = str(package)
    name = os.path.splitext(os.path.basename(path))[0]
    if name != "__main__":
        module = f"{module}.{name}"
    return f"python -m {module.lstrip('.')}"


def terminal_width() -> int:
    """The width rich's console would take: ``TERMINAL_WIDTH`` (typer's), else
    ``COLUMNS``, else the terminal's, else 80."""
    for name in ("TERMINAL_WIDTH",):
        value = os.environ.get(name)
        if value:
            return int(value)
    if os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
        return 80
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = os.environ.get("COLUMNS")
    if columns and columns.isdigit():
        width = int(columns)
    return max(1, width or 80)


def wants_color() -> bool:
    """Whether rich would style the screen: a terminal (or typer's FORCE_COLOR...)."""
    if os.environ.get("_TYPER_FORCE_DISABLE_TERMINAL"):
        return False
    env = os.environ
    forced = bool(env.get("GITHUB_ACTIONS") or env.get("FORCE_COLOR") or env.get("PY_COLORS"))
    if not forced:
        try:
            if not sys.stdout.isatty():
                return False
        except (AttributeError, ValueError):
            return False
    return "NO_COLOR" not in env and env.get("TERM", "").lower() not in ("dumb", "unknown")


def _panel(title: str, rows: list[str], width: int, color: bool) -> list[str]:
    """A rounded box around ``rows`` (each already ``width - 4`` visible characters)."""
    side = _style("│", "2", color)
    out = [
        _style("╭─", "2", color)
        + _style(f" {title} ", "2", color)
        + _style("─" * (width - len(title) - 5) + "╮", "2", color)
    ]
    out += [f"{side} {row} {side}" for row in rows]
    out.append(_style("╰" + "─" * (width - 2) + "╯", "2", color))
    return out


def render(width: int, color: bool, prog: str = "trellis") -> str:
    """The help screen, ``width`` columns wide (each line padded to it, as rich pads)."""
    inner = width - 4
    lines = [" " * width]
    usage = f"Usage: {prog} [OPTIONS] COMMAND [ARGS]..."
    pad = " " * (width - 1 - len(usage))
    if color:
        lines.append(
            _style(" ", "1", color)
            + _style("Usage: ", "1;33", color)
            + _style(usage[len("Usage: ") :] + pad, "1", color)
        )
        lines[0] = _style(lines[0], "1", color)
    else:
        lines.append(f" {usage}{pad}")
    lines.append(_style(" " * width, "1", color))
    for i, paragraph in enumerate(APP_HELP.split("\n\n")):
        if i:
            lines.append(" " * width)
        for line in _wrap(paragraph, width - 2):
            text = _style(line, "" if i == 0 else "2", color)
            lines.append(f" {text}{' ' * (width - 1 - len(line))}")
    lines.append(" " * width)

    help_width = inner - 27
    option_rows: list[str] = []
    for long, short, text in OPTIONS:
        for n, line in enumerate(_wrap(text, help_width)):
            if n:
                option_rows.append(" " * 27 + line.ljust(help_width))
                continue
            names = _style(long, "1;36", color) + " " * (11 - len(long))
            shorts = _style(short, "1;32", color) + " " * (8 - len(short))
            kind = (
                _style("<", "1;2;33", color) + _style("bool", "1;33", color)
                + _style(">", "1;2;33", color)
                if color
                else "<bool>"
            )
            option_rows.append(f"{names}{shorts}{kind}  {line.ljust(help_width)}")
    lines += _panel("Options", option_rows, width, color)

    name_width = max(len(name) for name, _ in COMMANDS)
    text_width = inner - name_width - 2
    command_rows: list[str] = []
    for name, text in COMMANDS:
        for n, line in enumerate(_wrap(_visible(text), text_width)):
            first = name if n == 0 else ""
            cell = _style(first.ljust(name_width + 1), "1;36", color)
            command_rows.append(f"{cell} {line.ljust(text_width)}")
    lines += _panel("Commands", command_rows, width, color)
    return "\n".join(lines) + "\n\n"  # typer ends the screen with an empty line


def print_root_help() -> bool:
    """Print the screen if rich would lay it out as :func:`render` does; ``False`` when
    the caller should let typer print it."""
    width = terminal_width()
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if width < MIN_WIDTH or encoding != "utf8":  # rich would draw the boxes in ASCII
        return False
    color = wants_color()
    text = render(width, color, _program_name())
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    sys.stdout.write(text)
    sys.stdout.flush()
    return True
