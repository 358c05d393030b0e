"""Bad input and odd states on the command line: clear errors, nothing lost.

Lone surrogates, NaN, output files (atomic, never the input), pathological JSON, store
URLs, unreadable run records, budgets across resumes and ``--max-seconds`` on a blocking
step. Each test reproduces a problem that used to crash, lose data or overspend.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trellis as tl
from trellis.cli.batch import result_lines, write_results
from trellis.cli.errors import CliError
from trellis.cli.inputs import Item
from trellis.cli.jsonout import json_text
from trellis.engine.budget import BudgetGuard
from trellis.engine.results import RunResult
from trellis.errors import BudgetExceededError, StoreError
from trellis.store import MemoryStore, open_store

from .helpers import assert_one_error_line, invoke

FLOWS = Path(__file__).parent / "flows"
ECHO = f"{FLOWS / 'odd.py'}:echo"
NAN = f"{FLOWS / 'odd.py'}:not_a_number"
BLOCKING = f"{FLOWS / 'odd.py'}:blocking"
SURROGATE = "a\ud800b"


def strict_json(text: str) -> Any:
    """JSON as a strict parser reads it: NaN / Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- lone surrogates -------------------------------------------------------------------------


def test_a_lone_surrogate_in_an_input_line_is_kept_and_written_escaped(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "in.jsonl", ['{"text": "a\\ud800b"}', '{"text": "ok"}'])
    result = invoke("run", ECHO, "-f", str(items), "-o", "out.jsonl", "--run-id", "b1")
    assert result.exit_code == 0, result.output
    raw = (tmp_path / "out.jsonl").read_bytes()
    lines = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [line["inputs"]["text"] for line in lines] == [SURROGATE, "ok"]
    assert lines[0]["outputs"]["said"] == SURROGATE
    assert b"\\ud800" in raw  # the JSON escape: the file is valid UTF-8

    # What the store accepted stays readable and writable: show (JSON and table), resume.
    shown = invoke("show", "b1.0", "--json")
    assert shown.exit_code == 0, shown.output
    assert strict_json(shown.stdout)["steps"]["said"]["output"] == SURROGATE
    table = invoke("show", "b1.0")
    assert table.exit_code == 0, table.output
    assert "\\ud800" in table.stdout
    resumed = invoke("resume", "b1", "-o", "again.jsonl", "--json")
    assert resumed.exit_code == 0, resumed.output
    strict_json(resumed.stdout)
    again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert again[0]["outputs"]["said"] == SURROGATE
    listed = invoke("runs", "--all", "--json")
    assert listed.exit_code == 0, listed.output


def test_a_lone_surrogate_in_input_prints_as_json_and_as_a_table() -> None:
    as_json = invoke("run", ECHO, "--input", '{"text": "a\\ud800b"}', "--json")
    assert as_json.exit_code == 0, as_json.output
    assert strict_json(as_json.stdout)["outputs"]["said"] == SURROGATE
    table = invoke("run", ECHO, "--input", '{"text": "a\\ud800b"}')
    assert table.exit_code == 0, table.output
    assert "Traceback" not in table.output


# -- NaN -------------------------------------------------------------------------------------


def test_json_output_never_prints_nan(tmp_path: Path) -> None:
    result = invoke("run", NAN, "--input", '{"text": "x"}', "--json", "--run-id", "r1")
    assert result.exit_code == 0, result.output
    assert "NaN" not in result.stdout
    assert strict_json(result.stdout)["outputs"]["ratio"] is None
    shown = invoke("show", "r1", "--json")
    assert shown.exit_code == 0, shown.output
    assert strict_json(shown.stdout)["outputs"]["ratio"] is None

    items = write_lines(tmp_path / "in.jsonl", ['{"text": "x"}', '{"text": ""}'])
    batch = invoke("run", NAN, "-f", str(items), "-o", "out.jsonl", "--json")
    assert batch.exit_code == 0, batch.output
    strict_json(batch.stdout)
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        assert strict_json(line)["outputs"]["ratio"] is None
    listed = invoke("runs", "--all", "--json")
    strict_json(listed.stdout)


# -- output files ----------------------------------------------------------------------------


def _finished(tmp_path: Path) -> list[str | None]:
    """One finished item's output line, as a batch keeps it."""
    item = Item({"text": "new"}, "in.jsonl:1")
    result = RunResult(run_id="r", flow="echo", inputs={"text": "new"}, steps={}, status="done")
    return result_lines([item], [result])


def test_a_failed_write_keeps_the_previous_output_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CliError, match="No space left on device"):
        write_results(out, _finished(tmp_path))
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_an_output_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("x" * 10_000)
    assert write_results(out, _finished(tmp_path)) == 1
    assert json.loads(out.read_text())["inputs"] == {"text": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


@pytest.mark.parametrize("how", ["same", "relative", "hardlink"])
def test_output_naming_the_input_file_is_refused(tmp_path: Path, how: str) -> None:
    items = write_lines(tmp_path / "in.jsonl", ['{"text": "a"}'])
    before = items.read_bytes()
    target = {"same": str(items), "relative": "./sub/../in.jsonl", "hardlink": "link.jsonl"}[how]
    (tmp_path / "sub").mkdir()
    if how == "hardlink":
        os.link(items, tmp_path / "link.jsonl")
    result = invoke("run", ECHO, "-f", str(items), "-o", target)
    assert_one_error_line(result, "is the input file")
    assert items.read_bytes() == before
    assert not (tmp_path / ".trellis").exists()  # refused before anything ran


def test_resume_refuses_an_output_naming_the_recorded_input(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "in.jsonl", ['{"text": "a"}'])
    assert invoke("run", ECHO, "-f", str(items), "--run-id", "b2").exit_code == 0
    before = items.read_bytes()
    assert_one_error_line(invoke("resume", "b2", "-o", str(items)), "is the input file")
    assert items.read_bytes() == before


# -- the one JSON encoder: a property test ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def _expected(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_expected(v) for v in value]
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    return value


@given(json_values)
def test_json_text_is_always_strict_utf8_json_and_loses_nothing_but_nan(value: Any) -> None:
    text = json_text(value, indent=2)
    text.encode("utf-8")  # never raises: lone surrogates are escaped
    assert strict_json(text) == _expected(value)


# -- pathological inputs ---------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
HUGE = "1" * 4400


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (DEEP, "nested more than 200 levels deep"),
        ("[" * 300 + "]" * 300, "nested more than 200 levels deep"),  # parses, cannot be stored
        (HUGE, "4300 digits"),
    ],
    ids=["5000-deep", "300-deep", "4400-digits"],
)
def test_pathological_json_is_one_error_line(tmp_path: Path, value: str, message: str) -> None:
    items = write_lines(tmp_path / "in.jsonl", ['{"text": "fine"}', f'{{"text": {value}}}'])
    assert_one_error_line(invoke("run", ECHO, "-f", str(items)), "in.jsonl:2: ", message)
    assert_one_error_line(invoke("run", ECHO, "-i", f'{{"text": {value}}}'), "--input: ", message)


def test_a_reply_of_pathological_json_is_one_error_line() -> None:
    asking = f"{FLOWS / 'asking.py'}:flow"
    started = invoke("run", asking, "-i", '{"issue": "slow"}', "--run-id", "w1")
    assert started.exit_code == 3, started.output
    for value, message in ((DEEP, "nested more than 200"), (HUGE, "4300 digits")):
        refused = invoke("reply", "w1", "triage", "-i", value)
        assert_one_error_line(refused, "--input: ", message)
    assert invoke("show", "w1", "--json").exit_code == 0


# -- store URLs ------------------------------------------------------------------------------


def test_store_memory_without_a_colon_is_the_memory_store(tmp_path: Path) -> None:
    result = invoke("run", ECHO, "-i", '{"text": "a"}', "--store", "memory", "--json")
    assert result.exit_code == 0, result.output
    assert strict_json(result.stdout)["outputs"]["said"] == "a"
    assert list(tmp_path.iterdir()) == []  # no file named "memory"
    assert isinstance(open_store("memory"), MemoryStore)


@pytest.mark.parametrize("spec", ["mystore", "sqlite", "trellis", "mysql://db/x", "sqlite:x.db"])
def test_a_bare_word_or_unknown_scheme_is_not_a_store(tmp_path: Path, spec: str) -> None:
    commands = (["run", ECHO, "-i", '{"text": "a"}'], ["runs"], ["show", "x"], ["cache", "stats"])
    for command in commands:
        assert_one_error_line(invoke(*command, "--store", spec), repr(spec), "memory:")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store(spec)


@pytest.mark.parametrize("spec", ["t.db", "t.sqlite", "runs/t", "./t", "sqlite:///t.db"])
def test_paths_and_sqlite_urls_are_stores(spec: str) -> None:
    result = invoke("run", ECHO, "-i", '{"text": "a"}', "--store", spec, "--run-id", "s1")
    assert result.exit_code == 0, result.output
    assert invoke("show", "s1", "--store", spec).exit_code == 0


# -- unreadable run records ------------------------------------------------------------------


def _two_good_runs() -> None:
    for run_id in ("good1", "good2"):
        result = invoke("run", ECHO, "-i", '{"text": "a"}', "--run-id", run_id)
        assert result.exit_code == 0, result.output


def _insert_raw(run_id: str, *, format_: Any = 1, usage: str | None = None) -> None:
    with sqlite3.connect(".trellis/trellis.db") as db:
        db.execute(
            "INSERT INTO runs (run_id, flow, status, inputs, started_at, usage, format) "
            "VALUES (?, 'echo', 'done', '{}', 1.0, ?, ?)",
            (run_id, usage, format_),
        )


@pytest.mark.parametrize(
    ("format_", "usage"), [(99, None), ("garbage", None), (1, "{not json")], ids=str
)
def test_one_unreadable_run_record_does_not_break_the_listing(format_: Any, usage: Any) -> None:
    _two_good_runs()
    _insert_raw("bad1", format_=format_, usage=usage)

    listed = invoke("runs", "--json")
    assert listed.exit_code == 0, listed.output
    entries = {e["run_id"]: e for e in strict_json(listed.stdout)["runs"]}
    assert set(entries) == {"good1", "good2", "bad1"}
    assert entries["good1"]["status"] == "done"
    assert entries["bad1"]["status"] == "unreadable"
    assert entries["bad1"]["error"]["message"]

    table = invoke("runs")
    assert table.exit_code == 0, table.output
    assert "Traceback" not in table.output
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert "unreadable" in rows["bad1"]
    assert "done" in rows["good2"]
    assert "trellis show bad1" in table.stdout

    assert_one_error_line(invoke("show", "bad1"), "bad1")
    assert_one_error_line(invoke("show", "bad1", "--json"), "bad1")
    assert invoke("show", "good1").exit_code == 0


# -- --max-seconds on a blocking step --------------------------------------------------------

TRELLIS = [sys.executable, "-c", "from trellis.cli import main; main()"]


async def test_max_seconds_stops_a_run_whose_plain_step_blocks() -> None:
    flow = tl.Flow("blocks", inputs={"seconds": float})

    @flow.step
    def sleepy(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @flow.step
    def after(sleepy: float) -> float:
        return sleepy * 2

    started = time.monotonic()
    result = await tl.Engine().run(flow, {"seconds": 3.0}, budget=tl.Budget(max_seconds=0.3))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "BudgetExceededError"
    assert result.error.budget == "max_seconds"
    assert result.steps["sleepy"].status == "cancelled"
    assert result.steps["after"].status == "cancelled"

    # Without a deadline, and with one that is not reached, the step runs to its end.
    fast = await tl.Engine().run(flow, {"seconds": 0.01}, budget=tl.Budget(max_seconds=5))
    assert fast.ok and fast.outputs["after"] == 0.02
    assert (await tl.Engine().run(flow, {"seconds": 0.01})).outputs["after"] == 0.02


async def test_max_seconds_stops_a_run_whose_mapped_plain_step_blocks() -> None:
    """A sync step mapped with ``map_over=`` runs each element in a thread under a
    deadline, as an unmapped one does: before, a blocking element held the event loop, so
    the run ended only when the element returned (3 s), and then as done."""
    flow = tl.Flow("blocks_mapped", inputs={"seconds": list[float]})

    @flow.step(map_over="seconds")
    def sleepy(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    started = time.monotonic()
    result = await tl.Engine().run(flow, {"seconds": [3.0, 3.0]}, budget=tl.Budget(max_seconds=0.3))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert result.status == "failed"
    assert result.error is not None and result.error.budget == "max_seconds"
    assert result.steps["sleepy"].status == "cancelled"

    fast = await tl.Engine().run(flow, {"seconds": [0.01, 0.02]}, budget=tl.Budget(max_seconds=5))
    assert fast.ok and fast.outputs["sleepy"] == [0.01, 0.02]


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_max_seconds_on_the_command_line_exits_promptly(tmp_path: Path) -> None:
    """The step sleeps 30 s; the process must end (exit 1) within a few seconds: the
    step's thread must not keep it alive."""
    env = {**os.environ, "TRELLIS_TEST_SLEEP": "30"}
    env.pop("TRELLIS_STORE", None)
    started = time.monotonic()
    done = subprocess.run(
        [*TRELLIS, "run", BLOCKING, "-i", '{"text": "x"}', "--max-seconds", "1", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert elapsed < 10, elapsed
    error = strict_json(done.stdout)["error"]
    assert (error["type"], error["budget"]) == ("BudgetExceededError", "max_seconds")


# -- batch budgets across a kill and resumes -------------------------------------------------

CHAIN = f"{FLOWS / 'chain.py'}:flow"  # two LLM calls per item, then a plain step


def _served(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _done_items(db: Path, batch: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE parent_id = ? AND status = 'done'", (batch,)
            ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return int(row[0])


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_batch_budget_holds_across_a_kill_and_two_resumes(tmp_path: Path) -> None:
    """40 items of 2 calls each under --budget-calls 20, killed after 3 items, resumed
    twice: the simulator serves at most 20 requests in all. Requests in flight at the kill
    (at most one per item running, 4) are counted as they are reserved, so they need no
    allowance. Then `resume --budget-calls 30` lets exactly 10 more through."""
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"it{i:02d}"}) + "\n" for i in range(40)))
    db = tmp_path / "t.db"
    log = tmp_path / "calls.log"
    store = ["--store", f"sqlite:///{db}"]
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("TRELLIS_STORE", None)
    binding = f"small=sim:small?latency_ms=100-200&call_log={log}"
    options = ["--run-id", "bb", "--budget-calls", "20", "--lease-ttl", "1", "--no-progress"]
    first = subprocess.Popen(
        [*TRELLIS, "run", CHAIN, "-f", str(items), "-m", binding, "-n", "4", *store, *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _done_items(db, "bb") < 3:
            assert first.poll() is None, "the batch ended before the kill"
            assert time.monotonic() < deadline, "no progress in 60 s"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    served_at_kill = _served(log)
    assert 6 <= served_at_kill < 20, served_at_kill

    resumed = invoke("resume", "bb", *store, "--no-progress")
    assert resumed.exit_code == 1, resumed.output  # items stopped by the budget fail
    assert "spent by earlier runs of batch bb count against it" in resumed.stderr
    assert "BudgetExceededError" in resumed.stdout
    assert _served(log) <= 20
    again = invoke("resume", "bb", *store, "--no-progress", "--json")
    assert again.exit_code == 1, again.output
    assert _served(log) <= 20
    assert _served(log) >= 18  # the budget was used, not given up early

    more = invoke("resume", "bb", *store, "--no-progress", "--budget-calls", "30")
    assert more.exit_code in (0, 1), more.output
    assert 28 <= _served(log) <= 30


async def test_a_preloaded_batch_guard_counts_replays_once() -> None:
    batch = BudgetGuard(tl.Budget(max_calls=5), label="batch")
    seen: list[int] = []
    batch.on_change = lambda g: seen.append(g.calls)
    batch.preload(calls=4, tokens=100, usd=0.5)
    item = BudgetGuard(None, parent=batch)
    item.charge(tokens=40, cost=0.2, calls=2)  # a journal replay: part of the preload
    assert (batch.calls, batch.spent_tokens, batch.spent_usd) == (4, 100, 0.5)
    assert (item.calls, item.spent_tokens) == (2, 40)
    reservation = await item.reserve(10, 0.0)  # the 5th request fits
    assert seen == [5]
    item.settle(reservation, 12, 0.0)
    assert seen == [5, 5] and batch.spent_tokens == 112
    with pytest.raises(BudgetExceededError, match="max_calls=5"):
        await item.reserve(10, 0.0)


def test_a_step_error_quoting_a_lone_surrogate_is_recorded(tmp_path: Path) -> None:
    """The exception's message is free text stored in SQLite (UTF-8): it used to stop the
    run with a store error and leave it unfinished."""
    failing = f"{FLOWS / 'odd.py'}:failing"
    result = invoke("run", failing, "-i", '{"text": "a\\ud800b"}', "--run-id", "f1", "--json")
    assert result.exit_code == 1, result.output
    assert strict_json(result.stdout)["error"]["type"] == "StepError"
    shown = strict_json(invoke("show", "f1", "--json").stdout)
    assert shown["status"] == "failed"
    assert "a\\ud800b" in shown["steps"]["boom"]["reason"]  # kept, as its escape
    assert shown["steps"]["boom"]["error"]["message"].endswith(SURROGATE)  # JSON: exact


def test_an_id_that_is_not_utf8_is_one_error_line() -> None:
    """``--run-id $'\\xff'`` reaches Python as a lone surrogate (surrogateescape)."""
    run = invoke("run", ECHO, "-i", '{"text": "a"}', "--run-id", "\udcff")
    assert_one_error_line(run, "not UTF-8")
    assert invoke("run", ECHO, "-i", '{"text": "a"}', "--run-id", "ok").exit_code == 0
    for command in (["show", "\udcff"], ["resume", "\udcff"]):
        assert_one_error_line(invoke(*command), "not UTF-8")


def test_a_budget_given_on_resume_counts_the_items_records(tmp_path: Path) -> None:
    """A batch started without a budget keeps no tally: a budget given on resume counts
    what its items' records show (here 4 refused requests, one per item)."""
    items = write_lines(tmp_path / "in.jsonl", [json.dumps({"item": f"i{n}"}) for n in range(4)])
    log = tmp_path / "calls.log"
    refusing = ["-m", f"small=sim:small?refusal=1&call_log={log}"]
    first = invoke("run", CHAIN, "-f", str(items), *refusing, "--run-id", "nb", "--no-progress")
    assert first.exit_code == 1, first.output
    assert _served(log) == 4
    spent = invoke("resume", "nb", "--budget-calls", "4", "--no-progress")
    assert spent.exit_code == 1, spent.output
    assert "4 request(s)" in spent.stderr
    assert _served(log) == 4  # nothing more was sent
    two_more = invoke("resume", "nb", "--budget-calls", "6", "--no-progress")
    assert two_more.exit_code == 1, two_more.output
    assert _served(log) == 6


def test_an_output_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.jsonl"
    target.write_text("old\n")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    assert write_results(link, _finished(tmp_path)) == 1
    assert link.is_symlink()
    assert json.loads(target.read_text())["inputs"] == {"text": "new"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.jsonl"]


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_an_output_to_a_device_is_written_directly(tmp_path: Path) -> None:
    assert write_results(Path("/dev/null"), _finished(tmp_path)) == 1
    assert Path("/dev/null").is_char_device()  # written to, not replaced by a file
