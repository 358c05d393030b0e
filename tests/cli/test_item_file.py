"""Input files are checked whole, then read again as their items are used (an
:class:`ItemFile` keeps where each line is and a hash of it, not the items): a file
changed in between is one clear error naming it, never other inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import trellis as tl
from trellis.cli.batch import Statuses
from trellis.cli.errors import CliError
from trellis.cli.inputs import ItemFile, read_items
from trellis.store import SQLiteStore

from .helpers import FLOWS, SIM, assert_one_error_line, invoke, read_jsonl


def text_flow() -> tl.Flow:
    flow = tl.Flow("t", inputs={"text": str})

    @flow.step
    def echo(text: str) -> str:
        return text

    return flow


def write(path: Path, *texts: str, blank: bool = False) -> Path:
    lines = [json.dumps({"text": t}) for t in texts]
    if blank:
        lines.insert(1, "   ")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_items_are_read_again_with_their_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", "a", "b", "c", blank=True)
    with ItemFile.open(text_flow(), path) as items:
        assert len(items) == 3
        assert [i.inputs for i in items] == [{"text": t} for t in "abc"]
        assert [i.where for i in items] == [f"{path}:{n}" for n in (1, 3, 4)]
        assert items[2].inputs == {"text": "c"} and items[-1].where == f"{path}:4"
        assert items.where(1) == f"{path}:3"
        assert [i.inputs for i in items[1:]] == [{"text": "b"}, {"text": "c"}]
        with pytest.raises(IndexError):
            items[3]
    assert [i.inputs for i in read_items(text_flow(), path)] == [{"text": t} for t in "abc"]


def test_crlf_and_unicode_line_ends_count_lines_as_before(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"text": "a"}\r\n{"text": "\xc3\xa9"}\r{"text": "c"}\xe2\x80\xa8{"text": "d"}'
    )
    with ItemFile.open(text_flow(), path) as items:
        assert [(i.inputs["text"], i.where) for i in items] == [
            ("a", f"{path}:1"),
            ("é", f"{path}:2"),
            ("c", f"{path}:3"),
            ("d", f"{path}:4"),
        ]


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.write_text(p.read_text().replace('"b"', '"x"')),  # same length
        lambda p: p.write_text(p.read_text().replace('"b"', '"longer"')),
        lambda p: p.write_text(p.read_text() + json.dumps({"text": "d"}) + "\n"),
        lambda p: p.write_text(json.dumps({"text": "a"}) + "\n"),
    ],
)
def test_a_file_changed_between_passes_is_a_clear_error(tmp_path: Path, change: object) -> None:
    path = write(tmp_path / "in.jsonl", "a", "b", "c")
    with ItemFile.open(text_flow(), path) as items:
        assert items[0].inputs == {"text": "a"}
        change(path)  # type: ignore[operator]
        with pytest.raises(CliError, match="changed while the batch was using it") as info:
            [item.inputs for item in items]
        assert repr(str(path)) in str(info.value)


def test_the_first_problem_is_still_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n[1]\n{"text": \n', encoding="utf-8")
    with pytest.raises(CliError, match=r"in\.jsonl:3: expected a JSON object"):
        ItemFile.open(text_flow(), path)
    path.write_bytes(b'{"text": \n{"text": "\xff"}\n')  # not UTF-8 is said first, as before
    with pytest.raises(CliError, match="is not UTF-8 text"):
        ItemFile.open(text_flow(), path)
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(CliError, match="has no items"):
        ItemFile.open(text_flow(), path)


def test_statuses_keep_a_byte_an_item() -> None:
    statuses = Statuses(4)
    assert list(statuses) == [None] * 4 and len(statuses) == 4
    statuses[1] = "done"
    statuses[3] = "waiting"
    statuses[0] = "done"
    assert list(statuses) == ["done", "done", None, "waiting"]
    assert statuses[3] == "waiting" and statuses[2] is None and statuses[-1] == "waiting"
    assert statuses[1:3] == ["done", None]


def test_cli_batch_whose_file_changes_before_it_is_recorded_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"item": f"i{i}"}) + "\n" for i in range(5)))
    opened = ItemFile.open.__func__  # type: ignore[attr-defined]

    def open_then_change(cls: type[ItemFile], flow: tl.Flow, where: Path) -> ItemFile:
        items: ItemFile = opened(cls, flow, where)
        where.write_text(where.read_text().replace('"i3"', '"i9"'))
        return items

    monkeypatch.setattr(ItemFile, "open", classmethod(open_then_change))
    target = f"{FLOWS / 'chain.py'}:flow"
    result = invoke("run", target, "-f", str(path), "--run-id", "b", *SIM, "--quiet")
    assert_one_error_line(result, repr(str(path)), "changed", "line 4")
    monkeypatch.undo()
    with SQLiteStore(tmp_path / ".trellis" / "trellis.db") as store:
        assert store.get_run("b") is None  # nothing was recorded
        assert store.list_runs(parent_id="b") == []
    # Run again as it now is: recorded and run, its output lines in input order.
    out = tmp_path / "out.jsonl"
    result = invoke("run", target, "-f", str(path), "--run-id", "b", *SIM, "-o", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    lines = read_jsonl(out)
    assert [line["inputs"]["item"] for line in lines] == ["i0", "i1", "i2", "i9", "i4"]
    assert [line["index"] for line in lines] == list(range(5))
