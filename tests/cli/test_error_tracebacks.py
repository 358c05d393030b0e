"""A failed step's record keeps the user's traceback: in the result, the store, ``trellis show``,
``--json`` and a batch's ``error``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trellis as tl
from trellis.store.memory import MemoryStore

from .helpers import FLOWS, invoke, write_items

FAILING = f"{FLOWS / 'odd.py'}:failing"
ODD = str(FLOWS / "odd.py")


def _raising_line() -> int:
    lines = (FLOWS / "odd.py").read_text().splitlines()
    return 1 + next(i for i, line in enumerate(lines) if 'raise ValueError(f"cannot handle' in line)


def test_show_prints_the_users_frame_under_the_failed_step() -> None:
    ran = invoke("run", FAILING, "-i", '{"text": "x"}', "--run-id", "f1")
    assert ran.exit_code != 0
    shown = invoke("show", "f1")
    assert shown.exit_code == 0, shown.stderr
    text = shown.stdout
    assert "ValueError: cannot handle x" in text
    assert f"odd.py:{_raising_line()} in boom" in text
    assert 'raise ValueError(f"cannot handle {text}")' in text
    assert "engine/runner.py" not in text  # never Trellis's own frames


def test_json_and_batch_error_carry_the_traceback(tmp_path: Path) -> None:
    ran = invoke("run", FAILING, "-i", '{"text": "x"}', "--run-id", "f2", "--json")
    data = json.loads(ran.stdout)
    frames = data["error"]["traceback"]
    assert frames[-1]["function"] == "boom" and frames[-1]["line"] == _raising_line()
    assert frames[-1]["file"].endswith("odd.py")
    shown = json.loads(invoke("show", "f2", "--json").stdout)
    assert shown["error"]["traceback"] == frames
    items = write_items(tmp_path / "items.jsonl", [{"text": "a"}])
    assert invoke("run", FAILING, "-f", str(items), "--run-id", "b2").exit_code != 0
    [item] = json.loads(invoke("show", "b2", "--json").stdout)["batch"]["items"]
    assert item["error"]["traceback"][-1]["function"] == "boom"


def _when_raises(value: str) -> bool:
    return {"yes": True}[value]  # KeyError for anything else


async def test_a_raising_condition_and_an_async_step_keep_their_frames() -> None:
    flow = tl.Flow("conds", inputs={"text": str})

    @flow.step
    def first(text: str) -> str:
        return text

    @flow.step(when=lambda first: _when_raises(first))
    def second(first: str) -> str:
        return first

    @flow.step
    async def third(text: str) -> int:
        return int(text)  # ValueError

    store = MemoryStore()
    async with tl.Engine(store=store) as engine:
        result = await engine.run(flow, {"text": "no"}, run_id="c1")
        again = engine.load("c1", flow)
    for res in (result, again):
        cond = res.steps["second"].error
        assert cond is not None and cond.traceback
        assert cond.traceback[-1].function == "_when_raises"
        assert "KeyError" in cond.message
        step = res.steps["third"].error
        assert step is not None and step.traceback[-1].function == "third"
        assert step.traceback[-1].source == "return int(text)  # ValueError"
        assert step.traceback[-1].file == __file__


def test_a_trellis_error_without_user_code_has_no_frames() -> None:
    info = tl.ErrorInfo.from_exception(tl.TrellisError("no traceback"))
    assert info.traceback == () and info.to_dict()["traceback"] == []


@pytest.mark.parametrize("frames", [[], [{"file": "a.py", "line": 3, "function": "f"}]])
def test_error_records_round_trip_with_and_without_frames(frames: list[dict[str, object]]) -> None:
    from trellis.engine.journal import error_from_json

    text = json.dumps({"type": "ValueError", "message": "m", "traceback": frames})
    info = error_from_json(text)
    assert [f.to_dict() | {"source": None} for f in info.traceback] == [
        f | {"source": None} for f in frames
    ]
    assert error_from_json('{"type": "X", "message": "old record"}').traceback == ()
