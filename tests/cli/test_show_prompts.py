"""``trellis run --record-prompts`` and ``trellis show --prompts``: each attempt's messages
and reply, recorded with the run, printed under its step; a resume keeps recording them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .helpers import FLOWS, SIM, assert_one_error_line, invoke, write_items


def _editable(tmp_path: Path) -> str:
    target = tmp_path / "editable.py"
    shutil.copy(FLOWS / "editable.py", target)
    return f"{target}:flow"


def test_show_prints_each_attempts_prompt_and_reply(tmp_path: Path) -> None:
    target = _editable(tmp_path)
    args = ["run", target, "--input", '{"text": "the night train"}', "--run-id", "p1", *SIM]
    assert invoke(*args, "--record-prompts").exit_code == 0
    shown = invoke("show", "p1", "--prompts")
    assert shown.exit_code == 0, shown.stderr
    assert "attempt 1.1" in shown.stdout and "sim:small → ok" in shown.stdout
    assert "user: Summarise: the night train" in shown.stdout
    data = json.loads(invoke("show", "p1", "--json").stdout)
    (call,) = data["calls"]
    reply = call["output"][0]["parts"][0]["content"]
    assert f"assistant: {reply}"[:60] in shown.stdout.replace("\n", " ")
    assert "[finish: stop]" in shown.stdout
    plain = invoke("show", "p1")
    assert plain.exit_code == 0 and "attempt 1.1" not in plain.stdout


def test_show_prompts_of_a_run_without_them_says_how_to_record_them(tmp_path: Path) -> None:
    target = _editable(tmp_path)
    assert invoke("run", target, "--input", '{"text": "x"}', "--run-id", "n1", *SIM).exit_code == 0
    shown = invoke("show", "n1", "--prompts")
    assert shown.exit_code == 0
    assert "no prompts were recorded for this run" in shown.stdout
    assert "--record-prompts" in shown.stdout
    assert "prompt" not in json.loads(invoke("show", "n1", "--json").stdout)["calls"][0]


def test_a_resumed_run_goes_on_recording_prompts(tmp_path: Path) -> None:
    target = _editable(tmp_path)
    quota = ["--model", "small=sim:small?quota=1"]  # the first run fails at its LLM call
    args = ["run", target, "-i", '{"text": "t"}', "--run-id", "r1", *quota, "--record-prompts"]
    assert invoke(*args).exit_code == 1
    resumed = invoke("resume", "r1", *SIM)
    assert resumed.exit_code == 0, resumed.stderr
    calls = json.loads(invoke("show", "r1", "--json").stdout)["calls"]
    (call,) = calls  # the resumed run's live attempt, recorded as the first run asked
    assert call["outcome"] == "ok" and call["source"] == "live"
    assert call["prompt"][0]["parts"][0]["content"] == "Summarise: t"
    assert call["output"][0]["role"] == "assistant"


def test_show_prompts_of_a_batch_names_the_item_command(tmp_path: Path) -> None:
    target = _editable(tmp_path)
    items = write_items(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}])
    run = invoke(
        "run", target, "--input-file", str(items), "--run-id", "b1", *SIM, "--record-prompts",
        "--quiet",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert_one_error_line(invoke("show", "b1", "--prompts"), "b1 is a batch", "ITEM-ID --prompts")
    assert_one_error_line(invoke("show", "b1", "--prompts", "--all"), "--prompts")
