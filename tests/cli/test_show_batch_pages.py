"""`trellis show BATCH` on a big batch: the first and last items, `--all`, `--page`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .helpers import assert_one_error_line, invoke

CHAIN = f"{Path(__file__).parent / 'flows' / 'chain.py'}:flow"


def shown_items(stdout: str) -> list[int]:
    """The item ids in the table (``big.N``), in order."""
    return [int(n) for n in re.findall(r"\bbig\.(\d+)\b", stdout)]


def test_a_big_batch_shows_its_first_and_last_items_all_and_pages(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(25)))
    run = invoke("run", CHAIN, "-f", str(items), "--run-id", "big", "-m", "small=sim:small")
    assert run.exit_code == 0, run.stderr

    shown = invoke("show", "big")
    assert shown.exit_code == 0, shown.stderr
    assert "25 items: 25 done" in shown.stdout
    assert shown_items(shown.stdout) == [*range(10), *range(15, 25)]
    assert "5 more item(s)" in shown.stdout and "--all" in shown.stdout

    every = invoke("show", "big", "--all")
    assert shown_items(every.stdout) == list(range(25))
    assert "more item(s)" not in every.stdout

    page = invoke("show", "big", "--page", "3", "--limit", "10")
    assert page.exit_code == 0, page.stderr
    assert shown_items(page.stdout) == list(range(20, 25))
    assert "page 3 of 3" in page.stdout
    assert shown_items(invoke("show", "big", "--page", "1").stdout) == list(range(25))

    past = invoke("show", "big", "--page", "4", "--limit", "10")
    assert past.exit_code != 0
    assert_one_error_line(past, "--page 4 is past the last page")
    both = invoke("show", "big", "--all", "--page", "1")
    assert both.exit_code != 0
    assert_one_error_line(both, "--all and --page")

    # --json is not paged: every item, in the documented shape
    data = json.loads(invoke("show", "big", "--json").stdout)
    assert [i["run_id"] for i in data["batch"]["items"]] == [f"big.{i}" for i in range(25)]


def test_a_small_batch_lists_every_item(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(20)))
    invoke("run", CHAIN, "-f", str(items), "--run-id", "big", "-m", "small=sim:small")
    shown = invoke("show", "big")
    assert shown_items(shown.stdout) == list(range(20))
    assert "more item(s)" not in shown.stdout


def test_a_big_batch_asks_the_questions_of_items_it_does_not_list(tmp_path: Path) -> None:
    approval = f"{Path(__file__).parent / 'flows' / 'approval.py'}:flow"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"issue": f"bug {i}"}) + "\n" for i in range(25)))
    invoke("run", approval, "-f", str(items), "--run-id", "big", "-m", "small=sim:small")
    shown = invoke("show", "big")
    assert shown.exit_code == 0, shown.stderr
    assert "batch big  waiting" in shown.stdout
    assert 12 not in shown_items(shown.stdout.split("Items")[1].split("LLM call")[0])
    assert "trellis approve big.12 review" in shown.stdout  # item 12 is not in the table
