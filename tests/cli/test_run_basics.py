"""The ``trellis`` command line: targets, single runs, batches, summaries, exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from rich.console import Console

import trellis as tl
from trellis.cli.render import render_summary
from trellis.engine.summary import BatchSummary, percentile, summarize

from .helpers import assert_one_error_line, invoke, read_jsonl, write_items

FLOWS = Path(__file__).parents[1] / "cli_flows"
TRIAGE = f"{FLOWS / 'triage.py'}:flow"
PLAIN = f"{FLOWS / 'plain.py'}:flow"
SIM = ["--model", "small=sim:small", "--model", "large=sim:large"]

FEEDBACK = [
    "I love the new dashboard",
    "The app crashes every time I open settings",
    "Billing charged me twice",
    "Support was fast and helpful",
    "Meh, it works I guess",
    "Export to CSV is broken since the update",
    "Please add dark mode",
    "The onboarding emails are too frequent",
    "Search results are slow on large projects",
    "Great value for the price",
    "I cannot reset my password",
    "Your mobile app drains my battery",
]


def test_version_and_help() -> None:
    version = invoke("--version")
    assert version.exit_code == 0
    assert version.stdout.strip() == f"trellis {tl.__version__}"
    for args in (["--help"], ["run", "--help"], ["check", "--help"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.stdout
        assert "Usage: trellis" in result.stdout
    run_help = invoke("run", "--help").stdout
    for option in ("--input-file", "--output", "--model", "--budget-usd", "--max-seconds"):
        assert option in run_help


def test_check_lists_steps_in_order_with_options() -> None:
    result = invoke("check", TRIAGE)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "flow triage" in out and "is valid: 4 steps, 1 input" in out
    assert "feedback: str (required)" in out
    positions = [
        out.index(f"{n}. {step} ->")
        for n, step in enumerate(["sentiment", "topics", "escalate", "report"], start=1)
    ]
    assert positions == sorted(positions)
    assert "reads: feedback (input), sentiment" in out  # topics
    assert "when: condition on sentiment" in out
    assert "async, calls an LLM" in out
    assert "Classify the feedback's sentiment." in out  # the step's docstring


def test_check_reports_an_invalid_flow_in_one_line() -> None:
    assert_one_error_line(
        invoke("check", str(FLOWS / "invalid.py")),
        "flow 'invalid'",
        "is invalid",
        "reads 'txt'",
        "did you mean 'text'?",
    )


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        ("missing_flow_file.py:flow", ["missing_flow_file.py does not exist"]),
        (
            f"{FLOWS / 'broken.py'}:flow",
            ["cannot import", "ModuleNotFoundError", "trellis_cli_test_missing_module"],
        ),
        (f"{FLOWS / 'triage.py'}:flw", ["has no attribute 'flw' (flows found: flow)"]),
        (f"{FLOWS / 'triage.py'}:Sentiment", ["is a class, not a tl.Flow (flows found: flow)"]),
        ("no_such_module_xyz:flow", ["no module named 'no_such_module_xyz'"]),
        (f"{FLOWS / 'invalid.py'}:flow", ["is invalid", "neither a step nor a flow input"]),
    ],
)
def test_bad_targets_exit_2_with_one_line(target: str, fragments: list[str]) -> None:
    assert_one_error_line(invoke("run", target, "--input", "{}"), *fragments)


def test_target_forms_file_without_attribute_and_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file with exactly one flow needs no ':flow'.
    assert invoke("check", str(FLOWS / "plain.py")).exit_code == 0
    # Several flows: the user must pick one.
    two = tmp_path / "two.py"
    two.write_text("import trellis as tl\na = tl.Flow('a')\nb = tl.Flow('b')\n")
    assert_one_error_line(invoke("check", str(two)), "several flows (a, b)")
    # package.module:flow, imported from the current directory.
    monkeypatch.chdir(FLOWS)  # (--no-store: nothing written into the source tree)
    result = invoke("run", "plain:flow", "--input", '{"text": "hi"}', "--json", "--no-store")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["outputs"] == {"shout": "HI", "length": 2}


# -- one run -------------------------------------------------------------------------------


def test_single_run_prints_each_step() -> None:
    result = invoke("run", PLAIN, "--input", '{"text": "hello"}')
    assert result.exit_code == 0, result.stderr
    assert "✓ done" in result.stdout
    assert "✓ shout  done" in result.stdout and "HELLO" in result.stdout
    assert "✓ length  done" in result.stdout and "5" in result.stdout

    llm = invoke("run", TRIAGE, "--input", '{"feedback": "The app crashes"}', *SIM)
    assert llm.exit_code == 0, llm.stderr
    for fragment in ("sentiment  done", "topics  done", "report  done", "tokens", "cost $"):
        assert fragment in llm.stdout
    assert "escalate  skipped: " in llm.stdout or "escalate  done" in llm.stdout


def test_single_run_json_is_the_result_dict() -> None:
    result = invoke(
        "run", TRIAGE, "--input", '{"feedback": "Billing charged me twice"}', *SIM, "--json"
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["flow"] == "triage" and data["status"] == "done"
    assert set(data["steps"]) == {"sentiment", "topics", "escalate", "report"}
    assert data["outputs"]["sentiment"]["label"] in ("positive", "negative", "neutral")
    assert data["usage"]["calls"] == 2
    assert {c["model"] for c in data["calls"]} <= {"sim:small", "sim:large"}


def test_single_run_that_fails_exits_1() -> None:
    result = invoke("run", PLAIN, "--input", '{"text": "boom"}')
    assert result.exit_code == 1
    assert "✗ shout  failed" in result.stdout
    assert "cannot shout 'boom'" in result.stdout
    assert "length  cancelled: upstream step 'shout' failed" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--input", "{"], ["--input is not valid JSON"]),
        (["--input", "[1]"], ["--input must be a JSON object", "got list"]),
        (["--input", '{"txt": "x"}'], ["unknown input(s) ['txt']"]),
        ([], ["needs inputs (text)", "--input"]),
        (["--input", "{}", "--input-file", "x.jsonl"], ["either --input", "not both"]),
        (["--input", '{"text": "x"}', "--output", "o.jsonl"], ["--output needs --input-file"]),
    ],
)
def test_bad_inputs_exit_2(args: list[str], fragments: list[str]) -> None:
    assert_one_error_line(invoke("run", PLAIN, *args), *fragments)


# -- configuration -------------------------------------------------------------------------


def test_missing_explicit_config_exits_2() -> None:
    assert_one_error_line(
        invoke("run", PLAIN, "--input", '{"text": "x"}', "--config", "nope.toml"),
        "config file 'nope.toml' does not exist",
    )


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("small", "must look like ROLE=provider:model"),
        ("small=sim", "must look like 'provider:model'"),
        ("small=sim:small?latncy=3", "unknown sim option 'latncy' (did you mean 'latency_ms'?)"),
        ("small=nope:small", "unknown model provider 'nope'"),
    ],
)
def test_bad_model_bindings_exit_2(spec: str, fragment: str) -> None:
    result = invoke("run", TRIAGE, "--input", '{"feedback": "x"}', "--model", spec)
    assert_one_error_line(result, fragment)


def test_default_config_file_and_model_override(tmp_path: Path) -> None:
    (tmp_path / "trellis.toml").write_text(
        '[models]\nsmall = "sim:medium"\nlarge = { model = "sim:medium", latency_ms = "0" }\n'
    )
    args = ["run", TRIAGE, "--input", '{"feedback": "Please add dark mode"}', "--json"]
    from_file = json.loads(invoke(*args).stdout)
    assert {c["model"] for c in from_file["calls"]} == {"sim:medium"}

    overridden = invoke(*args, "--model", "small=sim:large")
    assert overridden.exit_code == 0, overridden.stderr
    calls = json.loads(overridden.stdout)["calls"]
    assert [c["model"] for c in calls if c["step"] == "sentiment"] == ["sim:large"]


def test_unbound_role_is_one_error_not_a_failure_per_item(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", [{"feedback": f} for f in FEEDBACK])
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run",
        TRIAGE,
        "--input-file",
        str(items),
        "--output",
        str(out),
        "--model",
        "small=sim:small",
    )
    assert_one_error_line(result, "model role 'large' is not bound", "--model large=")
    assert not out.exists()
    # Nothing bound at all: the first call already fails, in a single run too.
    assert_one_error_line(
        invoke("run", TRIAGE, "--input", '{"feedback": "x"}'), "model role 'small' is not bound"
    )


# -- batches -------------------------------------------------------------------------------


def test_batch_writes_results_in_input_order(tmp_path: Path) -> None:
    # Earlier items sleep longer, so they finish last.
    items = [
        {"text": "a", "delay_ms": 60},
        {"text": "bb", "delay_ms": 40},
        {"text": "boom"},
        {"text": "dddd", "delay_ms": 0},
    ]
    path = write_items(tmp_path / "items.jsonl", items, blank_after=1)
    out = tmp_path / "out.jsonl"
    result = invoke("run", PLAIN, "-f", str(path), "-o", str(out), "-n", "4")
    assert result.exit_code == 1, result.stderr  # one item failed
    lines = read_jsonl(out)
    assert [line["index"] for line in lines] == [0, 1, 2, 3]
    assert [line["inputs"] for line in lines] == items
    assert [line["status"] for line in lines] == ["done", "done", "failed", "done"]
    assert [line["outputs"].get("length") for line in lines] == [1, 2, None, 4]
    assert lines[0]["outputs"] == {"shout": "A", "length": 1}
    assert lines[0]["skipped"] == {} and lines[0]["error"] is None
    assert lines[2]["error"]["type"] == "StepError"
    assert lines[2]["error"]["step"] == "shout"
    assert set(lines[0]) >= {
        "index",
        "run_id",
        "status",
        "inputs",
        "outputs",
        "skipped",
        "error",
        "usage",
    }
    assert lines[0]["usage"]["calls"] == 0
    assert "4 items: 3 done, 1 failed" in result.stdout
    assert "StepError ×1" in result.stdout
    assert f"4 line(s) written to {out}" in result.stdout


def test_batch_json_summary_and_exit_0(tmp_path: Path) -> None:
    path = write_items(tmp_path / "items.jsonl", [{"feedback": f} for f in FEEDBACK])
    result = invoke("run", TRIAGE, "--input-file", str(path), *SIM, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["done"], summary["failed"]) == (12, 12, 0)
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["sentiment"]["calls_by_role"] == {"small": 12}
    assert sum(steps["topics"]["calls_by_role"].values()) == 12
    escalate = steps["escalate"]
    assert escalate["ran"] + escalate["skipped"] == 12
    assert escalate["decisions"]["when"].get("run", 0) == escalate["ran"]
    assert summary["calls"] == 24 and summary["attempts"] >= 24


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"text": "a"}\n\n{"text": \n{"text": "c"}\n', "items.jsonl:3: invalid JSON"),
        ('{"text": "a"}\n[1, 2]\n', "items.jsonl:2: expected a JSON object"),
        ('{"text": "a"}\n{"txt": "b"}\n', "items.jsonl:2: flow 'plain': unknown input(s)"),
        ("\n\n", "has no items"),
    ],
)
def test_bad_input_file_exits_2_before_running(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(content)
    out = tmp_path / "out.jsonl"
    result = invoke("run", PLAIN, "--input-file", str(path), "--output", str(out))
    assert_one_error_line(result, fragment)
    assert not out.exists()


def test_budget_usd_stops_the_batch_cleanly(tmp_path: Path) -> None:
    path = write_items(tmp_path / "items.jsonl", [{"feedback": f} for f in FEEDBACK])
    out = tmp_path / "out.jsonl"
    result = invoke(
        "run",
        TRIAGE,
        "-f",
        str(path),
        "-o",
        str(out),
        *SIM,
        "--budget-usd",
        "0.001",
        "--concurrency",
        "2",
    )
    assert result.exit_code == 1, result.stderr
    lines = read_jsonl(out)
    assert [line["index"] for line in lines] == list(range(len(FEEDBACK)))
    budget_errors = [
        line for line in lines if line["error"] and line["error"]["type"] == "BudgetExceededError"
    ]
    assert budget_errors and all(e["error"]["budget"] == "max_usd" for e in budget_errors)
    spent = sum(line["usage"]["cost_usd"] or 0.0 for line in lines)
    assert spent <= 0.001
    assert "BudgetExceededError (max_usd)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_max_seconds_limits_each_run(tmp_path: Path) -> None:
    path = write_items(
        tmp_path / "items.jsonl", [{"text": "slow", "delay_ms": 2000}, {"text": "fast"}]
    )
    out = tmp_path / "out.jsonl"
    result = invoke("run", PLAIN, "-f", str(path), "-o", str(out), "--max-seconds", "0.05")
    assert result.exit_code == 1
    slow, fast = read_jsonl(out)
    assert slow["error"]["budget"] == "max_seconds"
    assert fast["status"] == "done"


def test_quiet_batch_prints_one_line(tmp_path: Path) -> None:
    path = write_items(tmp_path / "items.jsonl", [{"text": "a"}, {"text": "b"}])
    result = invoke("run", PLAIN, "-f", str(path), "--quiet")
    assert result.exit_code == 0
    assert result.stdout.strip() == "2 items: 2 done, 0 failed · 0 attempts · $0"


# -- the summary, computed -------------------------------------------------------------------


class Label(BaseModel):
    label: Literal["easy", "hard"]


fixture_flow = tl.Flow("fixture", inputs={"text": str})


@fixture_flow.step
async def classify(text: str, llm: tl.LLM) -> Label:
    return await llm.generate(text, output=Label, model="small")


@fixture_flow.step(when=lambda classify: classify.label == "hard")
async def deep(text: str, llm: tl.LLM) -> str:
    return await llm.generate(text, model="large")


@fixture_flow.step
def final(text: str, classify: Label, deep: str | None) -> str:
    if text.startswith("bad"):
        raise ValueError("bad item")
    return deep or classify.label


FIXTURE_ITEMS = ["easy one", "hard one", "retry hard", "slow easy", "bad easy"]
PRICES = {"fn:small": {"input": 1.0, "output": 2.0}, "fn:large": {"input": 10.0, "output": 20.0}}


async def _fixture_results(
    prices: dict[str, dict[str, float]] | None = PRICES,
) -> tuple[list[tl.RunResult], tl.PriceTable]:
    seen: set[str] = set()

    def small(request: tl.ModelRequest) -> tl.ModelResponse:
        prompt = request.messages[0].content
        first = prompt not in seen
        seen.add(prompt)
        if prompt.startswith("slow") and first:
            raise tl.RateLimitError("slow down", retry_after=0.0)
        if prompt.startswith("retry") and len(request.messages) == 1:
            return tl.ModelResponse(text="oops, not JSON", usage=tl.Usage(100, 10))
        label = "hard" if "hard" in prompt else "easy"
        return tl.ModelResponse(text=json.dumps({"label": label}), usage=tl.Usage(100, 10))

    def large(request: tl.ModelRequest) -> tl.ModelResponse:
        return tl.ModelResponse(text="a deep answer", usage=tl.Usage(200, 50))

    models = {
        "small": tl.FunctionModel(small, name="fn:small"),
        "large": tl.FunctionModel(large, name="fn:large"),
    }
    config = tl.Config(prices=prices or {})
    async with tl.Engine(config=config, models=models) as engine:
        results = [
            r
            async for _, r in engine.run_many(
                fixture_flow, [{"text": t} for t in FIXTURE_ITEMS], concurrency=2
            )
        ]
        return results, engine.config.prices


def fixture_summary(**kw: Any) -> BatchSummary:
    results, prices = asyncio.run(_fixture_results(**kw))
    return summarize(results, prices=prices, wall_s=2.0)


def test_summary_items_routes_and_retries() -> None:
    s = fixture_summary()
    assert (s.total, s.done, s.failed, s.not_started) == (5, 4, 1, 0)
    assert s.failures == {"StepError": 1}
    assert "bad item" in s.failure_examples["StepError"]
    steps = {r.step: r for r in s.steps}
    assert list(steps) == ["classify", "deep", "final"]
    assert (steps["classify"].done, steps["classify"].calls_by_role) == (5, {"small": 5})
    deep = steps["deep"]
    assert (deep.ran, deep.skipped, deep.calls_by_role) == (2, 3, {"large": 2})
    assert deep.decisions == {"when": {"run": 2, "skip": 3}}
    assert (steps["final"].done, steps["final"].failed) == (4, 1)
    assert steps["classify"].answers_by_model == {"fn:small": 5}
    assert steps["classify"].fallbacks == 0
    # 5 + 2 calls; classify took one re-ask (malformed) and one rate-limit retry.
    assert (s.calls, s.attempts) == (7, 9)
    assert s.retries == {"malformed": 1, "rate_limit": 1}
    assert s.failed_attempts == 2
    assert s.items_per_s == 2.5
    assert s.latency is not None and s.latency.items == 5


def test_summary_cost_by_model_and_counterfactual() -> None:
    s = fixture_summary()
    # small: 6 attempts with tokens (100 in / 10 out) + one rate limit with none.
    # large: 2 attempts (200 in / 50 out).
    assert (s.input_tokens, s.output_tokens) == (1000, 160)
    small_cost = (600 * 1.0 + 60 * 2.0) / 1e6
    large_cost = (400 * 10.0 + 100 * 20.0) / 1e6
    assert s.cost_usd == pytest.approx(small_cost + large_cost)
    assert s.cost_known
    assert s.cost_per_item == pytest.approx((small_cost + large_cost) / 5)
    assert [m.model for m in s.models] == ["fn:large", "fn:small"]  # most expensive first
    large_usage, small_usage = s.models
    assert (large_usage.attempts, large_usage.cost_usd) == (2, pytest.approx(large_cost))
    assert (small_usage.attempts, small_usage.input_tokens) == (7, 600)
    cf = s.counterfactual
    assert cf is not None and cf.model == "fn:large"
    # The always-run step (classify) re-priced at the large price; the `deep` step ran on
    # a when= condition: its 2 attempts are left out (an all-large run may not make them).
    everything_large = (600 * 10.0 + 60 * 20.0) / 1e6
    assert cf.cost_usd == pytest.approx(everything_large)
    assert cf.left_out_attempts == 2
    assert cf.actual_usd == pytest.approx(small_cost + large_cost)
    assert cf.saved_usd == pytest.approx(everything_large - small_cost - large_cost)
    assert cf.saved_pct == pytest.approx(100 * cf.saved_usd / everything_large)

    out = io.StringIO()
    render_summary(Console(file=out, width=120), s, "fixture")
    text = out.getvalue()
    assert "fixture — 5 items: 4 done, 1 failed" in text
    assert "when: run 2, skip 3" in text and "large×2" in text
    assert "9 attempts for 7 calls" in text and "malformed 1, rate_limit 1" in text
    flat = " ".join(text.split())
    assert "estimated cost if every call had gone to fn:large: $0.007200 — routing saved" in flat
    assert "(7%)" in flat and "2 attempt(s) of when=/branch steps left out" in flat
    assert "wall 2.00s · 2.5 items/s" in text


def test_summary_with_unpriced_models() -> None:
    s = fixture_summary(prices={"fn:small": {"input": 1.0, "output": 2.0}})
    assert not s.cost_known and s.unpriced_attempts == 2
    assert s.counterfactual is None  # only one priced model
    out = io.StringIO()
    render_summary(Console(file=out, width=120), s, "fixture")
    assert "≥ $0.000720 (2 calls unpriced)" in out.getvalue()
    assert "cost if everything" not in out.getvalue()


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 100) == 2.0


# -- the real console script -------------------------------------------------------------------


@pytest.mark.slow  # real processes or waits: `make quick` skips it
def test_console_script_with_piped_stdout(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "trellis"
    if not exe.exists():
        pytest.skip("the trellis console script is not installed")
    items = write_items(tmp_path / "items.jsonl", [{"text": "a"}, {"text": "bb"}])
    out = tmp_path / "out.jsonl"
    # A forced terminal on stderr turns the progress bar on while stdout is a pipe.
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "100"}
    run = subprocess.run(
        [str(exe), "run", PLAIN, "-f", str(items), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert [line["outputs"]["length"] for line in read_jsonl(out)] == [1, 2]
    assert "2 items" in run.stdout

    bad = subprocess.run(
        [str(exe), "run", f"{FLOWS / 'triage.py'}:nope", "--input", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {FLOWS / 'triage.py'} has no attribute 'nope' (flows found: flow)"
    ]
