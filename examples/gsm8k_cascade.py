"""GSM8K cascade: the small model answers, a deterministic validator checks its chain of
thought, and the large model answers only when the validator rejects it.

The data are real recorded answers (RouteLLM's Mixtral-8x7B and GPT-4 replies to the 1,319
GSM8K test questions, see ``examples/data/gsm8k/README.md``), replayed with the ``replay:``
provider, so the whole evaluation runs offline, for free, in seconds::

    trellis eval examples/gsm8k_cascade.py:flow -c examples/data/gsm8k/trellis.toml \\
        --dataset examples/data/gsm8k/items.jsonl --label gold \\
        --score examples/gsm8k_cascade.py:lenient --no-store \\
        --variant small-only="small=small,large=small,strictness=0" \\
        --variant large-only="small=large,large=large,strictness=0" \\
        --variant cascade="small=small,large=large" --reference large-only \\
        --sweep strictness=1:8:1 --split train=0.5 --target "score>=0.95*ref" --repeats 20

The validator (:func:`check_reasoning`) reads the question and the reply, never the label.
Its checks, from the most to the least telling:

1. **extractable**: a final answer can be extracted (``#### N``, "the answer is N",
   ``\\boxed{N}``, a bold number, or the last number of the reply);
2. **arithmetic**: every calculation the model wrote (``a op b ... = c``, and GSM8K's
   ``<<a*b=c>>`` annotations) is recomputed; a wrong result is an error;
3. **consistent**: the final answer is the result of one of those calculations, or a
   number the reply states before its conclusion;
4. **whole**: the answer is a non-negative whole number (every GSM8K answer is);
5. **decided**: the reply does not hedge ("assuming", "approximately", "cannot", ...);
6. **complete**: every number of the question appears in the reply (all data used);
7. **checkable**: the reply shows at least one calculation to check;
8. **marked**: the answer is stated explicitly (``####``, "the answer is", boxed, bold).

``strictness`` (a ``tl.Param``, 0-8) is how many of these checks must pass, in that
order: 0 never escalates (the small model alone), 8 escalates whenever any check fails.
``trellis eval --sweep strictness=1:8:1`` tries each level; ``--split``/``--target``
choose the cheapest level meeting the target on one half and report it on the other.

Two graders (``--score examples/gsm8k_cascade.py:strict`` or ``:lenient``): ``strict`` is
RouteLLM's (the last integer of the reply), which marks many right GPT-4 answers wrong
(GPT-4 often ends with a sentence after the number, or writes ``$18.00``); ``lenient``
takes the answer the validator extracts and compares numbers.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

import trellis as tl

SYSTEM = (
    "Solve the grade-school math problem. Reason step by step, writing each calculation, "
    "and end with the final answer on its own line as '#### <number>'."
)

flow = tl.Flow(
    "gsm8k_cascade",
    inputs={"question": str},
    params=[
        tl.Param(
            "strictness",
            default=6,
            low=0,
            high=8,
            description="how many validator checks the small model's answer must pass",
        )
    ],
    description="Small model first; a chain-of-thought validator; the large model on failure.",
)


class Check(BaseModel):
    """What the validator found in one reply."""

    answer: float | None  # the extracted final answer
    extracted_by: str  # "marker" (####, answer is, boxed, bold), "last-number" or "none"
    calculations: int  # calculations found and recomputed
    arithmetic_errors: int
    consistent: bool  # the answer is a calculation's result or a stated number
    hedged: bool  # the reply hedges ("assuming", "approximately", ...)
    unused_numbers: list[float]  # numbers of the question the reply never mentions
    problems: list[str]

    @property
    def checks(self) -> list[bool]:
        """The eight checks, in the order ``strictness`` applies them."""
        whole = self.answer is not None and self.answer >= 0 and self.answer == int(self.answer)
        return [
            self.answer is not None,
            self.arithmetic_errors == 0,
            self.consistent,
            whole,
            not self.hedged,
            not self.unused_numbers,
            self.calculations > 0,
            self.extracted_by == "marker",
        ]

    def passes(self, strictness: int) -> bool:
        """True when the first ``strictness`` checks pass."""
        checks = self.checks
        return all(checks[: max(0, min(strictness, len(checks)))])


class Final(BaseModel):
    answer: float | None
    answered_by: Literal["small", "large"]
    reply: str


# -- the validator: deterministic, no model --------------------------------------------------

_NUM = r"-?\$?\d[\d,]*(?:\.\d+)?%?"
_MARKERS = (
    re.compile(r"####\s*(" + _NUM + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUM + r")\s*\}"),
    re.compile(r"answer\s*(?:is|:)\s*:?\s*\**\s*(" + _NUM + ")", re.IGNORECASE),
    re.compile(r"\*\*\s*(" + _NUM + r")\s*\*\*"),
)
_ANY_NUMBER = re.compile(_NUM)
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
# "expression = result": an arithmetic expression of numbers (with $ , % and units
# stripped) and + - * / x × ÷ ( ), then "=" and a number.
_EQUATION = re.compile(
    r"((?:\(?\s*\$?\d[\d,]*(?:\.\d+)?%?\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*\$?\d[\d,]*(?:\.\d+)?%?\s*\)?)"
    r"\s*=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)"
)
_OPS: Mapping[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip("%").strip().rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def extract_answer(reply: str) -> tuple[float | None, str]:
    """The final answer of a reply and how it was found."""
    for pattern in _MARKERS:
        found = pattern.findall(reply)
        if found:
            value = number(found[-1])
            if value is not None:
                return value, "marker"
    numbers = _ANY_NUMBER.findall(reply)
    if numbers:
        value = number(numbers[-1])
        if value is not None:
            return value, "last-number"
    return None, "none"


def _evaluate(expression: str) -> float | None:
    text = expression.strip().replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=\d)\s*x\s*(?=[\d(])", "*", text)
    text = re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        raise ValueError("not arithmetic")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _close(written: float, computed: float) -> bool:
    """Equal up to the rounding a person writes (2 decimals, or to the integer)."""
    if math.isclose(written, computed, rel_tol=1e-6, abs_tol=1e-6):
        return True
    if abs(written - round(computed, 2)) < 1e-6 or abs(written - round(computed)) < 1e-6:
        return abs(written - computed) <= max(0.5, 0.01 * abs(computed))
    return False


_HEDGE = re.compile(
    r"\b(assum|approximately|not (?:possible|enough|clear)|cannot|can't|however|but since|"
    r"round|unclear|interpret|doesn't make sense|impossible)",
    re.IGNORECASE,
)
_PLAIN_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> set[float]:
    return {v for v in (number(n) for n in _PLAIN_NUMBER.findall(text)) if v is not None}


def check_reasoning(reply: str, question: str = "") -> Check:
    """Recompute the reply's arithmetic and check that it supports its final answer."""
    answer, how = extract_answer(reply)
    problems: list[str] = []
    results: list[float] = []
    errors = 0
    found = [(m.group(1), m.group(2)) for m in _ANNOTATION.finditer(reply)]
    found += [(m.group(1), m.group(2)) for m in _EQUATION.finditer(_ANNOTATION.sub("", reply))]
    for expression, written_text in found:
        written = number(written_text)
        computed = _evaluate(expression)
        if written is None or computed is None:
            continue
        results.append(written)
        if not _close(written, computed):
            errors += 1
            problems.append(f"{expression.strip()} = {written_text.strip()} (is {computed:g})")
    if answer is None:
        problems.append("no final answer")
    stated = [v for v in (number(n) for n in _ANY_NUMBER.findall(reply)) if v is not None]
    consistent = answer is not None and (
        any(math.isclose(answer, r, abs_tol=1e-6) for r in results)
        or any(math.isclose(answer, v, abs_tol=1e-6) for v in stated[:-1])
    )
    if answer is not None and not consistent:
        problems.append(f"the answer {answer:g} is not the result of any calculation")
    if not found:
        problems.append("no calculation to check")
    hedged = _HEDGE.search(reply) is not None
    if hedged:
        problems.append("the reply hedges")
    unused = sorted(_numbers(question) - _numbers(reply))
    if unused:
        problems.append(f"numbers of the question never used: {unused}")
    return Check(
        answer=answer,
        extracted_by=how,
        calculations=len(results),
        arithmetic_errors=errors,
        consistent=consistent,
        hedged=hedged,
        unused_numbers=unused,
        problems=problems,
    )


# -- the flow --------------------------------------------------------------------------------


@flow.step
async def small_answer(question: str, llm: tl.LLM) -> str:
    """The small model's reply, chain of thought included."""
    return await llm.generate(question, system=SYSTEM, model="small")


@flow.step
def check(question: str, small_answer: str) -> Check:
    """The deterministic validator."""
    return check_reasoning(small_answer, question)


@flow.step(when=lambda check, strictness: not check.passes(strictness))
async def large_answer(question: str, llm: tl.LLM) -> str:
    """The large model's reply: only when the validator rejected the small one."""
    return await llm.generate(question, system=SYSTEM, model="large")


@flow.step
def final(small_answer: str, check: Check, large_answer: str | None = None) -> Final:
    if large_answer is None:
        return Final(answer=check.answer, answered_by="small", reply=small_answer)
    answer, _ = extract_answer(large_answer)
    return Final(answer=answer, answered_by="large", reply=large_answer)


# -- graders: ``score(outputs, label)`` for ``trellis eval --score`` -------------------------

_INTEGER = re.compile(r"-?\d+")


def _reply(outputs: Mapping[str, Any]) -> str:
    result = outputs.get("final")
    return result.reply if isinstance(result, Final) else str(result or "")


def strict(outputs: Mapping[str, Any], label: Any) -> bool:
    """RouteLLM's grading: the last integer of the reply (commas removed) equals the gold."""
    integers = _INTEGER.findall(_reply(outputs).replace(",", ""))
    return bool(integers) and float(integers[-1]) == float(str(label).replace(",", ""))


def lenient(outputs: Mapping[str, Any], label: Any) -> bool:
    """The extracted final answer (####, 'answer is', boxed, bold, else the last number)
    equals the gold as a number ($18.00 is 18)."""
    answer, _ = extract_answer(_reply(outputs))
    gold = number(str(label))
    return answer is not None and gold is not None and math.isclose(answer, gold, abs_tol=1e-6)


if __name__ == "__main__":
    demo = (
        "She has 16 - 3 - 4 = 9 eggs left. She sells them for 9 * 2 = $18.\n#### 18",
        "She has 16 - 3 - 4 = 8 eggs left.\n#### 16",
    )
    for text in demo:
        print(check_reasoning(text, "16 eggs; she eats 3 and bakes 4; $2 each").model_dump())
