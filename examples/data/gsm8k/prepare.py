"""Build this folder's files from RouteLLM's recorded GSM8K answers.

    python examples/data/gsm8k/prepare.py ../shared/data/routellm-gsm8k

writes ``items.jsonl`` (``question``, ``gold``: the number after ``####`` of the reference
solution) and ``recorded.jsonl`` (one recorded call per model and question, in the format
of the ``replay:`` provider). Model names: ``mixtral-8x7b`` and ``gpt-4-1106``.

Usage is recorded with :func:`count_tokens`, a deterministic BPE-like count (words,
numbers in groups of up to three digits, punctuation, whitespace runs) rather than
characters/4, which undercounts model output by about 40%. RouteLLM did not record token
counts; the counts are an estimate, the same for both models, and stated as such in
``docs/gsm8k.md``. No costs are recorded: the price table prices the usage.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

SMALL, LARGE = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
NAMES = {SMALL: "mixtral-8x7b", LARGE: "gpt-4-1106"}
#: The system prompt the example sends (counted in the recorded input tokens).
_PIECE = re.compile(r" ?[A-Za-z]+| ?\d{1,3}|\s+|[^\sA-Za-z\d]")


def count_tokens(text: str) -> int:
    """About as many tokens as a GPT-style BPE tokenizer gives for English and arithmetic."""
    return len(_PIECE.findall(text))


def main(source: Path, out: Path) -> None:
    golds = {}
    for line in (source / "gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        golds[row["question"]] = row["answer"].split("####")[-1].strip().replace(",", "")
    with (source / "gsm8k_responses.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    items, recorded = [], []
    for row in rows:
        question = row["prompt"]
        items.append({"question": question, "gold": golds[question]})
        for model in (SMALL, LARGE):
            response = row[f"{model}_response"].strip()
            recorded.append(
                {
                    "model": NAMES[model],
                    "prompt": question,
                    "response": response,
                    "usage": {
                        "input_tokens": count_tokens(question) + 40,  # + the instructions
                        "output_tokens": count_tokens(response),
                    },
                    "routellm_correct": row[model] == "True",
                }
            )
    dump = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)
    (out / "items.jsonl").write_text(dump, encoding="utf-8")
    dump = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recorded)
    (out / "recorded.jsonl").write_text(dump, encoding="utf-8")
    print(f"{len(items)} items, {len(recorded)} recorded calls -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent)
