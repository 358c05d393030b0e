"""The GSM8K cascade example: its validator, its graders, and an eval over the recorded
answers (replayed: offline, free)."""

from __future__ import annotations

from types import ModuleType

import pytest

import trellis as tl
from trellis.eval import Variant, load_dataset, run_eval, summarize
from trellis.eval.scorers import Scorer

from .conftest import EXAMPLES_DIR, load_example

DATA = EXAMPLES_DIR / "data" / "gsm8k"


@pytest.fixture(scope="module")
def gsm() -> ModuleType:
    return load_example("gsm8k_cascade")


def test_the_validator_recomputes_arithmetic(gsm: ModuleType) -> None:
    question = "Janet's ducks lay 16 eggs. She eats 3 and bakes 4. Each egg sells for $2."
    good = "16 - 3 - 4 = 9 eggs are left. 9 * 2 = $18.\n#### 18"
    check = gsm.check_reasoning(good, question)
    assert (check.answer, check.calculations, check.arithmetic_errors) == (18, 2, 0)
    assert check.consistent and check.passes(8)
    wrong = "16 - 3 - 4 = 8 eggs are left. 8 * 2 = $16.\n#### 16"
    bad = gsm.check_reasoning(wrong, question)
    assert bad.arithmetic_errors == 1 and "16 - 3 - 4 = 8 (is 9)" in bad.problems
    assert bad.passes(1) and not bad.passes(2)
    annotated = gsm.check_reasoning("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18")
    assert annotated.calculations >= 1 and annotated.arithmetic_errors == 0


def test_the_validator_checks_extraction_and_consistency(gsm: ModuleType) -> None:
    assert gsm.extract_answer("so the answer is $1,200.") == (1200, "marker")
    assert gsm.extract_answer("I get \\boxed{42} at the end") == (42, "marker")
    assert gsm.extract_answer("that makes 7 apples") == (7, "last-number")
    assert gsm.extract_answer("no idea")[1] == "none"
    assert not gsm.check_reasoning("no idea").passes(1)
    inconsistent = gsm.check_reasoning("2 + 3 = 5 apples.\n#### 6")
    assert not inconsistent.consistent and not inconsistent.passes(3)
    fraction = gsm.check_reasoning("10 / 4 = 2.5 hours.\n#### 2.5")
    assert fraction.passes(3) and not fraction.passes(4), "GSM8K answers are whole numbers"
    hedged = gsm.check_reasoning("Assuming 2 * 3 = 6 cups.\n#### 6")
    assert hedged.hedged and not hedged.passes(5)
    unused = gsm.check_reasoning("2 * 3 = 6.\n#### 6", "2 boxes of 3 and 5 more")
    assert unused.unused_numbers == [5.0] and not unused.passes(6)
    assert gsm.check_reasoning("2 * 3 = 6, so 6").passes(7)
    assert not gsm.check_reasoning("2 * 3 = 6, so 6").passes(8), "no explicit marker"


def test_strict_and_lenient_graders(gsm: ModuleType) -> None:
    final = gsm.Final(answer=None, answered_by="large", reply="")

    def outputs(reply: str) -> dict[str, object]:
        return {"final": final.model_copy(update={"reply": reply})}

    right = outputs("So she makes $18.00 every day.")
    assert not gsm.strict(right, "18"), "RouteLLM's grader takes the last integer: 00"
    assert gsm.lenient(right, "18")
    assert gsm.strict(outputs("#### 18"), "18") and gsm.lenient(outputs("#### 18"), "18")
    assert not gsm.lenient(outputs("#### 17"), "18")


async def test_the_cascade_on_recorded_answers(gsm: ModuleType) -> None:
    config = tl.Config.from_toml(DATA / "trellis.toml")
    data = load_dataset(DATA / "items.jsonl", "gold", flow_inputs=["question"], limit=50)
    variants = [
        Variant("small-only", {"large": "small"}, {"strictness": 0}),
        Variant("large-only", {"small": "large"}, {"strictness": 0}),
        Variant("cascade", {}, {"strictness": 8}),
    ]
    result = await run_eval(
        gsm.flow, data, variants, Scorer("lenient", gsm.lenient), config=_local(config)
    )
    s = {run.variant.name: summarize(run) for run in result.variants}
    small, large, cascade = s["small-only"], s["large-only"], s["cascade"]
    assert small.items == large.items == cascade.items == 50
    assert small.failed == large.failed == cascade.failed == 0
    assert small.score < cascade.score <= large.score + 0.05
    assert small.cost_usd is not None and large.cost_usd is not None
    assert cascade.cost_usd is not None
    assert small.cost_usd < cascade.cost_usd < large.cost_usd
    assert 0 < cascade.escalated_items < 50
    assert large.calls_by_model == {"replay:gpt-4-1106": 50}, "measured, not re-priced"


def _local(config: tl.Config) -> tl.Config:
    """The example's bindings with the recording's path made absolute (tests run anywhere)."""
    recorded = str(DATA / "recorded.jsonl")
    return config.with_models(
        {
            "small": f"replay:mixtral-8x7b?file={recorded}",
            "large": f"replay:gpt-4-1106?file={recorded}",
        }
    )


def test_the_data_has_its_licence_and_attribution() -> None:
    assert (DATA / "LICENSE").is_file()
    readme = (DATA / "README.md").read_text()
    assert "RouteLLM" in readme and "Apache-2.0" in readme and "MIT" in readme
    assert len((DATA / "items.jsonl").read_text().splitlines()) == 1319
