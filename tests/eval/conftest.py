"""Shared fixtures of the eval tests: a labelled dataset and recorded answers to replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FLOW = str(Path(__file__).parent / "flows" / "cascade.py") + ":flow"
N_ITEMS = 40


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, Path]:
    """40 questions "i+i?" (gold 2i). The small model is right on even i, with confidence
    0.9 when right and 0.3 (i % 4 == 1) or 0.7 (i % 4 == 3) when wrong; the large model
    is always right. Small costs $0.001 a call, large $0.01."""
    items, recorded = [], []
    for i in range(N_ITEMS):
        question = f"What is {i}+{i}?"
        items.append({"question": question, "gold": 2 * i, "id": f"q{i}"})
        right = i % 2 == 0
        conf = 0.9 if right else (0.3 if i % 4 == 1 else 0.7)
        small_answer = 2 * i if right else 2 * i + 1
        recorded.append(
            {
                "model": "small",
                "prompt": question,
                "response": f"{small_answer} confidence {conf}",
                "usage": {"input_tokens": 10, "output_tokens": 5},
                "cost_usd": 0.001,
            }
        )
        recorded.append(
            {
                "model": "large",
                "prompt": question,
                "response": f"{2 * i} confidence 0.99",
                "usage": {"input_tokens": 10, "output_tokens": 20},
                "cost_usd": 0.01,
            }
        )
    rec = _write(tmp_path / "recorded.jsonl", recorded)
    config = tmp_path / "trellis.toml"
    config.write_text(
        f'[models]\nsmall = "replay:small?file={rec}"\nlarge = "replay:large?file={rec}"\n',
        encoding="utf-8",
    )
    return {
        "dataset": _write(tmp_path / "items.jsonl", items),
        "recorded": rec,
        "config": config,
        "store": tmp_path / "runs.db",
    }
