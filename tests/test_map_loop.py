"""Fan-out (``map_over``), the concurrency bound, and bounded loops (``max_rounds``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

import trellis as tl


class InFlight:
    """Counts concurrent executions and remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1


# -- map ----------------------------------------------------------------------------------------


async def test_map_results_keep_input_order_when_elements_finish_in_reverse() -> None:
    finished: list[int] = []
    flow = tl.Flow("m", inputs={"n": int})

    @flow.step
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @flow.step(map_over="numbers")
    async def square(numbers: int, ctx: tl.RunContext) -> int:
        await asyncio.sleep(0.02 * (8 - numbers))  # far apart: a loaded CPU keeps the order
        finished.append(numbers)
        assert ctx.index == numbers
        return numbers * numbers

    result = await flow.run({"n": 8})
    assert finished == list(reversed(range(8))), "elements should finish in reverse order"
    assert result["square"] == [i * i for i in range(8)]
    record = result.steps["square"]
    assert record.elements == 8
    assert record.element_failures == 0
    assert record.attempts == 8


async def test_map_elements_run_concurrently() -> None:
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return list(range(10))

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        await asyncio.sleep(0.05)
        return items

    started = time.perf_counter()
    result = await flow.run()
    assert result["each"] == list(range(10))
    assert time.perf_counter() - started < 0.3


async def test_map_over_an_empty_list() -> None:
    calls: list[int] = []
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return []

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        calls.append(items)
        return items

    @flow.step
    def count(each: list[int]) -> int:
        return len(each)

    result = await flow.run()
    assert result.ok
    assert result["each"] == []
    assert result["count"] == 0
    assert result.steps["each"].elements == 0
    assert calls == []


async def test_map_over_a_tuple_and_other_params_are_shared() -> None:
    flow = tl.Flow("m", inputs={"suffix": str})

    @flow.step
    def words() -> tuple[str, ...]:
        return ("a", "b", "c")

    @flow.step(map_over="words")
    def tag(words: str, suffix: str) -> str:
        return words + suffix

    result = await flow.run({"suffix": "!"})
    assert result["tag"] == ["a!", "b!", "c!"]


async def test_map_on_error_fail_cancels_siblings_and_fails_the_step() -> None:
    finished: list[int] = []
    cancelled: list[int] = []
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return [0, 1, 2, 3]

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        if items == 2:
            await asyncio.sleep(0.01)
            raise ValueError("element 2 is bad")
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            cancelled.append(items)
            raise
        finished.append(items)
        return items

    @flow.step
    def after(each: list[int]) -> int:
        return sum(each)

    started = time.perf_counter()
    result = await flow.run()
    assert time.perf_counter() - started < 0.4, "siblings were not cancelled"
    assert finished == []
    assert sorted(cancelled) == [0, 1, 3]
    record = result.steps["each"]
    assert record.status == "failed"
    assert record.error is not None
    assert "element 2 is bad" in record.error.message
    assert result.steps["after"].status == "cancelled"
    assert result.status == "failed"


async def test_map_on_error_collect_puts_failures_at_their_indices() -> None:
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return [1, 0, 2, 0, 4]

    @flow.step(map_over="items", on_error="collect")
    async def invert(items: int) -> float:
        await asyncio.sleep(0.001 * items)
        return 1 / items

    @flow.step
    def good(invert: list[float | tl.ElementFailure]) -> list[float]:
        return [x for x in invert if not isinstance(x, tl.ElementFailure)]

    result = await flow.run()
    assert result.ok
    out = result["invert"]
    assert out[0] == 1.0
    assert out[2] == 0.5
    assert out[4] == 0.25
    for index in (1, 3):
        failure = out[index]
        assert isinstance(failure, tl.ElementFailure)
        assert failure.index == index
        assert failure.error == "ZeroDivisionError"
        assert "division" in failure.message
    assert result.steps["invert"].element_failures == 2
    assert result.steps["invert"].elements == 5
    assert result["good"] == [1.0, 0.5, 0.25]


async def test_map_collect_counts_output_type_errors_as_element_failures() -> None:
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return [1, 2, 3]

    @flow.step(map_over="items", on_error="collect")
    def label(items: int) -> str:
        return "odd" if items % 2 else items  # type: ignore[return-value]

    result = await flow.run()
    out = result["label"]
    assert out[0] == "odd"
    assert out[2] == "odd"
    assert isinstance(out[1], tl.ElementFailure)
    assert out[1].error == "OutputTypeError"


async def test_map_fail_mode_validates_each_element_output() -> None:
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return [1, 2]

    @flow.step(map_over="items")
    def label(items: int) -> str:
        return items  # type: ignore[return-value]

    result = await flow.run()
    assert result.steps["label"].error is not None
    assert result.steps["label"].error.type == "OutputTypeError"


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_map_never_exceeds_the_flow_concurrency(limit: int) -> None:
    tracker = InFlight()
    flow = tl.Flow("m", concurrency=limit)

    @flow.step
    def items() -> list[int]:
        return list(range(9))

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        await tracker.hold(0.005)
        return items

    result = await flow.run()
    assert result["each"] == list(range(9))
    assert tracker.peak == limit


async def test_concurrency_bounds_plain_async_steps_and_maps_together() -> None:
    tracker = InFlight()
    flow = tl.Flow("m", concurrency=2)

    @flow.step
    def items() -> list[int]:
        return list(range(6))

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        await tracker.hold(0.005)
        return items

    for k in range(4):

        async def plain() -> int:
            await tracker.hold(0.005)
            return 1

        flow.step(name=f"plain{k}")(plain)

    started = time.perf_counter()
    result = await flow.run()
    assert result.ok
    assert tracker.peak == 2
    # 10 executions of 5 ms, two at a time: at least 25 ms.
    assert time.perf_counter() - started >= 0.024


async def test_concurrency_bound_survives_a_failed_map() -> None:
    flow = tl.Flow("m", concurrency=1)

    @flow.step
    def items() -> list[int]:
        return [0, 1, 2, 3]

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        await asyncio.sleep(0)
        if items == 0:
            raise ValueError("boom")
        await asyncio.sleep(0.01)
        return items

    @flow.step
    async def slow() -> int:
        await asyncio.sleep(0.03)
        return 1

    @flow.step
    async def later(slow: int) -> int:
        return slow + 1

    result = await asyncio.wait_for(flow.run(), timeout=2)
    assert result.steps["each"].status == "failed"
    assert result["later"] == 2


async def test_without_a_concurrency_bound_everything_runs_at_once() -> None:
    tracker = InFlight()
    flow = tl.Flow("m")

    @flow.step
    def items() -> list[int]:
        return list(range(12))

    @flow.step(map_over="items")
    async def each(items: int) -> int:
        await tracker.hold(0.01)
        return items

    await flow.run()
    assert tracker.peak == 12


# -- loops --------------------------------------------------------------------------------------


@dataclass
class Draft:
    text: str
    score: int


def _refine_flow(seen: list[tl.Round[Draft]], max_rounds: int, good_at: int) -> tl.Flow:
    flow = tl.Flow("loop", inputs={"topic": str})

    @flow.step(max_rounds=max_rounds, until=lambda d: d.score >= good_at)
    async def refine(topic: str, round: tl.Round[Draft], ctx: tl.RunContext) -> Draft:
        seen.append(round)
        assert ctx.round == round.number
        previous = round.previous.text if round.previous else topic
        return Draft(previous + "+", round.number)

    @flow.step
    def final(refine: Draft) -> str:
        return refine.text

    return flow


async def test_loop_stops_when_until_is_satisfied() -> None:
    seen: list[tl.Round[Draft]] = []
    result = await _refine_flow(seen, max_rounds=5, good_at=2).run({"topic": "t"})
    assert result.ok
    assert result["refine"] == Draft("t++", 2)
    assert result["final"] == "t++"
    assert result.steps["refine"].rounds == 2
    assert [r.number for r in seen] == [1, 2]
    loop = [(d.kind, d.outcome, d.values) for d in result.decisions if d.step == "refine"]
    assert loop == [
        ("loop", "continue", {"round": 1, "output": Draft("t+", 1)}),
        ("loop", "stop", {"round": 2, "output": Draft("t++", 2)}),
    ]


async def test_loop_returns_the_last_output_at_max_rounds() -> None:
    seen: list[tl.Round[Draft]] = []
    result = await _refine_flow(seen, max_rounds=3, good_at=99).run({"topic": "t"})
    assert result["refine"] == Draft("t+++", 3)
    assert result.steps["refine"].rounds == 3
    decisions = [d for d in result.decisions if d.step == "refine"]
    assert [d.outcome for d in decisions] == ["continue", "continue", "stop"]
    assert "max_rounds" in decisions[-1].reason


async def test_round_previous_and_history() -> None:
    seen: list[tl.Round[Draft]] = []
    await _refine_flow(seen, max_rounds=3, good_at=99).run({"topic": "t"})
    first, second, third = seen
    assert first.number == 1 and first.first
    assert first.previous is None and first.history == ()
    assert second.previous == Draft("t+", 1)
    assert not second.first
    assert second.history == (Draft("t+", 1),)
    assert third.previous == Draft("t++", 2)
    assert third.history == (Draft("t+", 1), Draft("t++", 2))


async def test_loop_without_until_runs_max_rounds() -> None:
    rounds: list[int] = []
    flow = tl.Flow("loop")

    @flow.step(max_rounds=4)
    def count(round: tl.Round[int]) -> int:
        rounds.append(round.number)
        return round.number * 10

    result = await flow.run()
    assert result["count"] == 40
    assert rounds == [1, 2, 3, 4]
    assert result.steps["count"].rounds == 4


async def test_loop_until_raising_fails_the_step() -> None:
    flow = tl.Flow("loop")

    @flow.step(max_rounds=3, until=lambda out: out["missing"])
    def step() -> dict[str, int]:
        return {}

    result = await flow.run()
    assert result.steps["step"].status == "failed"
    assert result.steps["step"].error is not None
    assert "until" in result.steps["step"].error.message


async def test_loop_round_output_is_validated() -> None:
    flow = tl.Flow("loop")

    @flow.step(max_rounds=3)
    def step(round: tl.Round[int]) -> int:
        return "x" if round.number == 2 else round.number  # type: ignore[return-value]

    result = await flow.run()
    assert result.steps["step"].error is not None
    assert result.steps["step"].error.type == "OutputTypeError"
