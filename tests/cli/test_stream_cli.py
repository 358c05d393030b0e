"""``trellis run --stream STEP``: one step's tokens as they arrive, on stderr."""

from __future__ import annotations

import io
import json
from pathlib import Path

from trellis.cli.tokens import TokenPrinter
from trellis.engine.events import AttemptFinished, TokenDelta
from trellis.engine.results import CallRecord

from .helpers import FLOWS, SIM, assert_one_error_line, invoke, write_items

CHAIN = f"{FLOWS / 'chain.py'}:flow"


def test_stream_prints_the_steps_tokens_on_stderr_and_keeps_stdout_json() -> None:
    result = invoke("run", CHAIN, "-i", '{"item": "x"}', *SIM, "--stream", "draft", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)  # stdout is still the result, untouched
    streamed = result.stderr.strip().splitlines()[0]
    assert json.loads(streamed) == shown["outputs"]["draft"]


def test_stream_names_a_missing_step_with_a_suggestion() -> None:
    result = invoke("run", CHAIN, "-i", '{"item": "x"}', *SIM, "--stream", "draf")
    assert_one_error_line(result, "--stream draf", "no step 'draf'", "did you mean 'draft'")


def test_stream_is_for_single_runs(tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.jsonl", [{"item": "a"}])
    result = invoke("run", CHAIN, "-f", str(items), *SIM, "--stream", "draft")
    assert_one_error_line(result, "--stream", "not a batch")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_stream_reaches_a_step_inside_a_mapped_subflow_by_its_path() -> None:
    """``--stream categorise/label``: the ``label`` step of every child run of sub-flow
    step ``categorise``, each child's text on a line of its own. Before, the path was
    refused, and ``--stream categorise`` printed nothing."""
    feedback = "Login crashes on submit. Billing charged me twice. Search is slow."
    result = invoke(
        "run", f"{EXAMPLES / 'orchestrated_feedback.py'}:flow",
        "-c", str(EXAMPLES / "trellis.toml"), "-i", json.dumps({"feedback": feedback}),
        "--no-store", "--stream", "categorise/label", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    categorised = json.loads(result.stdout)["outputs"]["categorise"]
    streamed = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(streamed) == len(categorised) >= 1
    assert sorted(s["category"] for s in streamed) == sorted(c["category"] for c in categorised)


def test_stream_refuses_a_path_through_a_step_that_is_not_a_subflow() -> None:
    result = invoke(
        "run", f"{EXAMPLES / 'orchestrated_feedback.py'}:flow",
        "-c", str(EXAMPLES / "trellis.toml"), "-i", '{"feedback": "x"}',
        "--no-store", "--stream", "extract/label",
    )  # fmt: skip
    assert_one_error_line(result, "--stream extract/label", "'extract'", "not a sub-flow step")
    wrong = invoke(
        "run", f"{EXAMPLES / 'orchestrated_feedback.py'}:flow",
        "-c", str(EXAMPLES / "trellis.toml"), "-i", '{"feedback": "x"}',
        "--no-store", "--stream", "categorise/labl",
    )  # fmt: skip
    assert_one_error_line(wrong, "no step 'labl'", "did you mean 'label'")


def test_attempts_streaming_at_once_are_printed_one_after_another() -> None:
    out = io.StringIO()
    printer = TokenPrinter("say", out)

    def delta(index: int, text: str, attempt: int = 1) -> TokenDelta:
        return TokenDelta(run_id="r", step="say", text=text, call=1, attempt=attempt, index=index)

    def finished(index: int, outcome: str = "ok", attempt: int = 1) -> AttemptFinished:
        record = CallRecord(
            step="say", call=1, attempt=attempt, model="m", role="small", outcome=outcome,
            input_tokens=0, output_tokens=0, cost_usd=0.0, latency_s=0.0, index=index,
        )  # fmt: skip
        return AttemptFinished(run_id="r", record=record)

    for event in (
        delta(0, "al"), delta(1, "be"), delta(2, "ga"), delta(1, "ta"),
        finished(1), delta(0, "pha"), delta(2, "m"), finished(0), delta(2, "ma"),
        finished(2, "timeout"), delta(2, "gamma", attempt=2), finished(2, attempt=2),
    ):  # fmt: skip
        printer(event)
    assert out.getvalue().splitlines() == [
        "alpha",
        "beta",
        "gamma  [attempt 1: timeout]",
        "gamma",
    ]


def test_executor_on_a_single_run_is_refused_not_ignored() -> None:
    result = invoke("run", CHAIN, "-i", '{"item": "x"}', *SIM, "--executor", "ray")
    assert_one_error_line(result, "--executor", "--input-file", "single run")
