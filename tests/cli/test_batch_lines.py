"""A batch keeps its items' output lines in a spool on disk, not in memory: whatever order
the items finish in (and whichever never finish), the output is in item order."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.cli.batch import LineSpool, write_results

LINES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_lines_come_back_in_item_order_whatever_order_they_were_put(data: st.DataObject) -> None:
    size = data.draw(st.integers(0, 30))
    finished = data.draw(st.lists(st.integers(0, max(size - 1, 0)), unique=True, max_size=size))
    lines = {i: data.draw(LINES) for i in finished if size}
    spool = LineSpool(size)
    try:
        for index in data.draw(st.permutations(list(lines))):
            spool.put(index, lines[index])
        assert list(spool) == [lines[i] for i in sorted(lines)]
        assert list(spool) == list(spool)  # read again: the same
    finally:
        spool.close()


def test_the_output_file_is_written_from_the_spool_in_item_order(tmp_path: Path) -> None:
    spool = LineSpool(4)
    for index, line in ((2, '{"index": 2}'), (0, '{"index": 0, "text": "é"}'), (3, "{}")):
        spool.put(index, line)
    out = tmp_path / "out.jsonl"
    assert write_results(out, spool) == 3
    spool.close()
    assert out.read_text(encoding="utf-8").splitlines() == [
        '{"index": 0, "text": "é"}',
        '{"index": 2}',
        "{}",
    ]
