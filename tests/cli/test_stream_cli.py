"""``trellis run --stream STEP``: one step's tokens as they arrive, on stderr."""

from __future__ import annotations

import json
from pathlib import Path

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
