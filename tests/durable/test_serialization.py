"""What a durable run records is JSON, tagged and typed; nothing is ever pickled.

Step outputs and LLM replies go through SQLite and come back as the types the step is
annotated with (Pydantic models, dataclasses, enums, dates, ``Literal``...), text with NUL,
lone surrogates and emoji included. A value JSON cannot hold fails its step with a clear
:class:`SerializationError`.
"""

from __future__ import annotations

import ast
import datetime as dt
import enum
import json
import math
import pickle
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import trellis
import trellis as tl
from trellis.errors import SerializationError
from trellis.store import MemoryStore, SQLiteStore

from . import Counts, durable_engine, priced_model

#: Text JSON-over-UTF-8 finds awkward: NUL, lone surrogates (both halves), emoji, escapes.
AWKWARD = 'nul:\x00 lone:\ud800 \udfff emoji:😀 accents:ünï quote:" backslash:\\ \u2028 end'


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Tag(BaseModel):
    name: str
    color: Color


class Report(BaseModel):
    title: str
    kind: Literal["brief", "full"]
    tags: list[Tag]
    scores: dict[str, float]
    written: dt.datetime
    parent: Report | None = None


@dataclass
class Point:
    x: int
    y: float
    label: str = ""


@dataclass
class Shape:
    points: list[Point]
    level: Level
    when: dt.date
    extra: dict[str, Point] = field(default_factory=dict)


WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
REPORT = Report(
    title=AWKWARD,
    kind="full",
    tags=[Tag(name="a\x00b", color=Color.BLUE)],
    scores={"ü": 0.5, "😀": -1.25},
    written=WHEN,
    parent=Report(title="inner", kind="brief", tags=[], scores={}, written=WHEN),
)
SHAPE = Shape(
    points=[Point(1, 2.5, AWKWARD), Point(-3, 0.0)],
    level=Level.HIGH,
    when=dt.date(2023, 12, 31),
    extra={"origin": Point(0, 0.0)},
)
EXPECTED: dict[str, Any] = {
    "text": AWKWARD,
    "report": REPORT,
    "shape": SHAPE,
    "color": Color.RED,
    "level": Level.LOW,
    "moment": WHEN,
    "day": dt.date(2000, 2, 29),
    "span": dt.timedelta(days=1, seconds=3, microseconds=7),
    "money": Decimal("12.345"),
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "choice": "full",
    "pair": (3, AWKWARD),
    "numbers": {1, 2, 3},
    "nothing": None,
    "nested": {"points": [Point(1, 1.0)], "more": [[Tag(name="t", color=Color.RED)]]},
    "raw": b"plain bytes",
    "infinite": math.inf,
}


def typed_flow(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    """One step per kind of value, and a consumer checking what it receives."""
    flow = tl.Flow("typed", inputs={"seed": int})

    @flow.step
    def text(seed: int) -> str:
        counts.hit("text")
        return AWKWARD

    @flow.step
    def report(seed: int) -> Report:
        counts.hit("report")
        return REPORT

    @flow.step
    def shape(seed: int) -> Shape:
        return SHAPE

    @flow.step
    def color(seed: int) -> Color:
        return Color.RED

    @flow.step
    def level(seed: int) -> Level:
        return Level.LOW

    @flow.step
    def moment(seed: int) -> dt.datetime:
        return WHEN

    @flow.step
    def day(seed: int) -> dt.date:
        return dt.date(2000, 2, 29)

    @flow.step
    def span(seed: int) -> dt.timedelta:
        return dt.timedelta(days=1, seconds=3, microseconds=7)

    @flow.step
    def money(seed: int) -> Decimal:
        return Decimal("12.345")

    @flow.step
    def ident(seed: int) -> uuid.UUID:
        return uuid.UUID("12345678-1234-5678-1234-567812345678")

    @flow.step
    def choice(seed: int) -> Literal["brief", "full"]:
        return "full"

    @flow.step
    def pair(seed: int) -> tuple[int, str]:
        return (3, AWKWARD)

    @flow.step
    def numbers(seed: int) -> set[int]:
        return {1, 2, 3}

    @flow.step
    def nothing(seed: int) -> Report | None:
        return None

    @flow.step
    def nested(seed: int) -> dict[str, list[Any]]:
        return {"points": [Point(1, 1.0)], "more": [[Tag(name="t", color=Color.RED)]]}

    @flow.step
    def raw(seed: int) -> bytes:
        return b"plain bytes"

    @flow.step
    def infinite(seed: int) -> float:
        return math.inf

    @flow.step
    def check(
        text: str,
        report: Report,
        shape: Shape,
        color: Color,
        level: Level,
        moment: dt.datetime,
        day: dt.date,
        span: dt.timedelta,
        money: Decimal,
        ident: uuid.UUID,
        choice: Literal["brief", "full"],
        pair: tuple[int, str],
        numbers: set[int],
        nothing: Report | None,
        raw: bytes,
        infinite: float,
    ) -> list[str]:
        counts.hit("check")
        if crash["check"]:
            raise RuntimeError("crash: the resumed run gets these values from the store")
        got = dict(locals())
        return [
            name
            for name, value in got.items()
            if name in EXPECTED
            and (value != EXPECTED[name] or type(value) is not type(EXPECTED[name]))
        ]

    return flow


def assert_typed_outputs(outputs: dict[str, Any]) -> None:
    for name, expected in EXPECTED.items():
        value = outputs[name]
        if name == "nested":  # annotated dict[str, list[Any]]: what is Any comes back as JSON
            assert value == {
                "points": [{"x": 1, "y": 1.0, "label": ""}],
                "more": [[{"name": "t", "color": "red"}]],
            }
            continue
        assert value == expected, name
        assert type(value) is type(expected), (name, type(value))
    assert outputs["report"].tags[0].color is Color.BLUE
    assert outputs["report"].parent.written == WHEN
    assert outputs["report"].written.utcoffset() == dt.timedelta(hours=2)
    assert isinstance(outputs["shape"].points[0], Point)
    assert outputs["shape"].level is Level.HIGH
    assert outputs["check"] == []


async def test_step_outputs_round_trip_typed_through_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    counts, crash = Counts(), {"check": True}
    async with durable_engine(path) as engine:
        first = await engine.run(typed_flow(counts, crash), {"seed": 1}, run_id="t")
    assert first.steps["check"].status == "failed"
    crash["check"] = False
    async with durable_engine(path) as engine:  # a new process: values come from the file
        resumed = await engine.run(typed_flow(counts, crash), None, run_id="t")
        recorded = await engine.run(typed_flow(counts, crash), None, run_id="t")
        loaded = engine.load("t", typed_flow(counts, crash))
    assert resumed.ok, resumed.error
    assert counts == {"text": 1, "report": 1, "check": 2}, "restored, not re-run"
    for result in (resumed, recorded, loaded):
        assert_typed_outputs(result.outputs)


async def test_awkward_text_is_stored_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with durable_engine(path) as engine:
        await engine.run(typed_flow(Counts(), {"check": False}), {"seed": 1}, run_id="t")
    with SQLiteStore(path) as store:
        (row,) = [s for s in store.load_steps("t") if s.step == "text"]
    assert row.output is not None
    assert "\x00" not in row.output, "NUL is escaped in the JSON text"
    row.output.encode("utf-8")  # valid UTF-8 on disk: no lone surrogate left raw
    assert json.loads(row.output) == AWKWARD


def replies_flow(counts: Counts, crash: dict[str, bool]) -> tl.Flow:
    flow = tl.Flow("replies", inputs={"topic": str})

    @flow.step
    async def converse(topic: str, llm: tl.LLM) -> tuple[str, Report]:
        counts.hit("converse")
        text = await llm.generate(f"text about {topic}", model="m")
        report = await llm.generate(f"report about {topic}", output=Report, model="m")
        if crash["converse"]:
            raise RuntimeError("crash after both calls")
        return text, report

    return flow


def awkward_model() -> tl.FunctionModel:
    def reply(request: tl.ModelRequest) -> Any:
        if request.schema_name:
            return REPORT.model_dump(mode="json")
        return AWKWARD

    return priced_model(reply)


@pytest.mark.parametrize("store_kind", ["sqlite", "memory"])
async def test_llm_replies_with_awkward_text_replay_exactly(
    tmp_path: Path, store_kind: str
) -> None:
    counts, crash = Counts(), {"converse": True}
    model = awkward_model()
    store = SQLiteStore(tmp_path / "t.db") if store_kind == "sqlite" else MemoryStore()
    try:
        async with tl.Engine(store=store, models={"m": model}) as engine:
            first = await engine.run(replies_flow(counts, crash), {"topic": "x"}, run_id="r")
            assert not first.ok and len(model.calls) == 2
            crash["converse"] = False
            result = await engine.run(replies_flow(counts, crash), None, run_id="r")
    finally:
        store.close()
    assert len(model.calls) == 2, "both replies came from the journal"
    assert {c.source for c in result.calls} == {"journal"}
    text, report = result["converse"]
    assert text == AWKWARD
    assert report == REPORT and isinstance(report, Report)
    assert report.tags[0].color is Color.BLUE


async def test_cached_replies_with_awkward_text_come_back_exactly(tmp_path: Path) -> None:
    model = awkward_model()
    async with durable_engine(tmp_path / "t.db", {"m": model}, cache=True) as engine:
        await engine.run(replies_flow(Counts(), {"converse": False}), {"topic": "x"})
    async with durable_engine(tmp_path / "t.db", {"m": model}, cache=True) as engine:
        result = await engine.run(replies_flow(Counts(), {"converse": False}), {"topic": "x"})
    assert len(model.calls) == 2
    assert {c.source for c in result.calls} == {"cache"}
    assert result["converse"] == (AWKWARD, REPORT)


# -- values JSON cannot hold ----------------------------------------------------------------------


class Opaque:
    """A plain object: hashable, but nothing JSON (or Pydantic) knows how to write."""


@pytest.fixture
def a_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        yield sock
    finally:
        sock.close()


UNSTORABLE: dict[str, Any] = {
    "set of objects": lambda: {Opaque(), Opaque()},
    "plain object": Opaque,
    "function": lambda: lambda: None,
    "bytes that are not UTF-8": lambda: b"\xff\xfe\x00",
    "dict with object keys": lambda: {Opaque(): 1},
}


def unstorable_flow(make: Any, counts: Counts) -> tl.Flow:
    flow = tl.Flow("unstorable", inputs={"n": int})

    @flow.step
    def fine(n: int) -> int:
        counts.hit("fine")
        return n

    @flow.step
    def bad(fine: int) -> Any:
        counts.hit("bad")
        return make()

    @flow.step
    def after(bad: Any) -> str:
        counts.hit("after")
        return "never"

    return flow


@pytest.mark.parametrize("what", list(UNSTORABLE))
@pytest.mark.parametrize("store_kind", ["sqlite", "memory"])
async def test_a_value_json_cannot_hold_fails_its_step_clearly(
    tmp_path: Path, what: str, store_kind: str
) -> None:
    counts = Counts()
    store = SQLiteStore(tmp_path / "t.db") if store_kind == "sqlite" else MemoryStore()
    try:
        async with tl.Engine(store=store) as engine:
            result = await engine.run(
                unstorable_flow(UNSTORABLE[what], counts), {"n": 1}, run_id="u"
            )
        steps = {s.step: s for s in store.load_steps("u")}
    finally:
        store.close()
    assert result.status == "failed"
    record = result.steps["bad"]
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.type == "SerializationError"
    assert "cannot record the output of step 'bad' as JSON" in record.error.message
    assert "never pickles" in record.error.message
    assert isinstance(record.exception, SerializationError)
    assert result.error is not None and result.error.type == "SerializationError"
    assert result.steps["after"].status == "cancelled"
    assert counts == {"fine": 1, "bad": 1}
    assert (steps["fine"].status, steps["bad"].status) == ("done", "failed")
    assert steps["bad"].output is None


async def test_a_socket_output_fails_its_step_clearly(a_socket: socket.socket) -> None:
    counts = Counts()
    async with tl.Engine(store=MemoryStore()) as engine:
        result = await engine.run(unstorable_flow(lambda: a_socket, counts), {"n": 1})
    assert result.steps["bad"].error is not None
    assert result.steps["bad"].error.type == "SerializationError"
    assert "socket" in result.steps["bad"].error.message


async def test_without_a_store_nothing_is_serialised() -> None:
    counts = Counts()
    async with tl.Engine() as engine:
        result = await engine.run(unstorable_flow(UNSTORABLE["set of objects"], counts), {"n": 1})
    assert result.ok
    assert counts == {"fine": 1, "bad": 1, "after": 1}


async def test_run_inputs_json_cannot_hold_are_refused_before_anything_is_recorded(
    tmp_path: Path,
) -> None:
    flow = tl.Flow("anything", inputs={"value": Any})

    @flow.step
    def use(value: Any) -> str:
        return "ran"

    async with durable_engine(tmp_path / "t.db") as engine:
        with pytest.raises(SerializationError, match="inputs"):
            await engine.run(flow, {"value": Opaque()}, run_id="in")
        with pytest.raises(SerializationError, match="item 1"):
            async for _ in engine.run_many(
                flow, [{"value": 1}, {"value": Opaque()}], batch_id="batch"
            ):
                pass
        assert engine.store is not None
        assert engine.store.list_runs() == [], "nothing half-recorded"


# -- never pickle -------------------------------------------------------------------------------


def _no_pickle(*args: object, **kwargs: object) -> Any:
    raise AssertionError("pickle was used")


async def test_a_durable_run_never_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, _no_pickle)
    monkeypatch.setattr(pickle, "Pickler", _no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", _no_pickle)
    counts, crash = Counts(), {"check": True}
    model = awkward_model()
    async with durable_engine(tmp_path / "t.db", {"m": model}, cache=True) as engine:
        await engine.run(typed_flow(counts, crash), {"seed": 1}, run_id="t")
        crash["check"] = False
        resumed = await engine.run(typed_flow(counts, crash), None, run_id="t")
        recorded = await engine.run(typed_flow(counts, crash), None, run_id="t")
        for run_id in ("a", "b"):
            replies = await engine.run(
                replies_flow(Counts(), {"converse": False}), {"topic": "x"}, run_id=run_id
            )
            assert replies.ok, replies.error
        batch = [
            r
            async for _, r in engine.run_many(
                typed_flow(Counts(), crash), [{"seed": 2}], batch_id="batch1"
            )
        ]
    assert resumed.ok and recorded.ok and batch[0].ok
    assert_typed_outputs(recorded.outputs)


def test_no_trellis_module_imports_a_pickler() -> None:
    banned = {
        "pickle",
        "cPickle",
        "_pickle",
        "dill",
        "cloudpickle",
        "shelve",
        "marshal",
        "jsonpickle",
    }
    root = Path(trellis.__file__).parent
    offenders = []
    for source in sorted(root.rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{source.relative_to(root)}: {n}" for n in names if n.split(".")[0] in banned
            ]
    assert offenders == []
