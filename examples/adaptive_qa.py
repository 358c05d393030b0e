"""Adaptive question answering: classify, route, and give each route its own pipeline.

Not every question deserves the same processing. A cheap classification decides the
route, and a router step turns it into one of three labels; each branch runs only when
the router picked it (``when=tl.branch("route", ...)``), and the branches not taken are
recorded as skipped, with the label they were skipped on::

    classification ──► route ─┬─ "direct"    ──► direct                   ─┐
                              ├─ "research"  ──► snippets ──► research     ├─► answer
                              └─ "reasoning" ──► reasoning (≤ 2 rounds)   ─┘

- ``direct``: a short answer from the model's own knowledge (``max_tokens`` kept small).
- ``research``: a plain-Python retrieval step (``search_knowledge_base``, a stand-in for
  your vector store) feeds snippets to an answer that cites its sources.
- ``reasoning``: a step-by-step answer, on the "large" model when the classifier was
  unsure, then checked by a validator. It is a bounded loop (``max_rounds=2``,
  ``until=`` the verdict is valid): if the check fails, round 2 answers again, told what
  was wrong; there is never a third attempt.
- ``answer`` reads the three branch outputs as Optional values and returns whichever ran.

Run it over the sample questions::

    trellis run examples/adaptive_qa.py:flow \\
        --input-file examples/data/questions.jsonl --config examples/trellis.toml

or one question on the offline simulator with ``python examples/adaptive_qa.py``.
"""

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl

#: Below this classification confidence, the reasoning branch uses the "large" model.
ESCALATE_BELOW = 0.7

Route = Literal["direct", "research", "reasoning"]


class Complexity(StrEnum):
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


class Classification(BaseModel):
    complexity: Complexity
    requires_external_data: bool
    confidence: float = Field(ge=0.0, le=1.0)


class DirectAnswer(BaseModel):
    answer: str


class Snippet(BaseModel):
    source: str
    text: str


class ResearchAnswer(BaseModel):
    answer: str
    sources: list[str]
    confidence: float = Field(ge=0.0, le=1.0)


class MultiStepAnswer(BaseModel):
    reasoning_steps: list[str]
    final_answer: str
    assumptions: list[str]


class Verdict(BaseModel):
    valid: bool
    problem: str = Field(description="what is wrong with the reasoning; empty when valid")


class CheckedAnswer(BaseModel):
    answer: MultiStepAnswer
    verdict: Verdict


class Answer(BaseModel):
    route: Route
    answer: str
    sources: list[str] = []
    validated: bool | None = None  # reasoning route only: did the final check pass?


# A tiny in-memory corpus standing in for a search index.
KNOWLEDGE_BASE: dict[str, str] = {
    "kb/exchange-rates": "Exchange rates change every trading day; check a live source "
    "such as a central bank feed for today's euro to US dollar rate.",
    "kb/energy-prices": "Residential electricity prices vary by region and month; national "
    "statistics offices publish monthly averages.",
    "kb/population": "World population passed eight billion in November 2022 according to "
    "United Nations estimates.",
    "kb/space": "The James Webb Space Telescope launched on 25 December 2021 and orbits the "
    "Sun near the second Lagrange point.",
    "kb/climate": "The Paris Agreement aims to limit global warming to well below 2 degrees "
    "Celsius above pre-industrial levels.",
}

flow = tl.Flow(
    "adaptive-qa",
    inputs={"question": str},
    description="Route each question to a direct, research or multi-step reasoning answer.",
)


@flow.step
async def classification(question: str, llm: tl.LLM) -> Classification:
    """How complex the question is, and whether it needs external data."""
    return await llm.generate(
        "Classify this question's complexity (simple, moderate or complex), whether "
        "answering it needs external or current data, and your confidence.\n\n"
        f"Question: {question}",
        output=Classification,
        model="small",
        temperature=0.1,
    )


@flow.step
def route(classification: Classification) -> Route:
    """Deterministic routing on the validated classification."""
    if classification.requires_external_data:
        return "research"
    if classification.complexity is Complexity.SIMPLE:
        return "direct"
    return "reasoning"


@flow.step(when=tl.branch("route", "direct"))
async def direct(question: str, llm: tl.LLM) -> DirectAnswer:
    """Fast path: a concise answer from the model's own knowledge."""
    return await llm.generate(
        f"Answer concisely: {question}", output=DirectAnswer, model="small", max_tokens=150
    )


@flow.step(name="snippets", when=tl.branch("route", "research"))
def search_knowledge_base(question: str) -> list[Snippet]:
    """Retrieve: the three knowledge-base entries sharing the most words with the question."""
    words = set(re.findall(r"[a-z]{3,}", question.lower()))

    def overlap(text: str) -> int:
        return len(words & set(re.findall(r"[a-z]{3,}", text.lower())))

    ranked = sorted(KNOWLEDGE_BASE.items(), key=lambda kv: overlap(kv[1]), reverse=True)
    return [Snippet(source=source, text=text) for source, text in ranked[:3]]


@flow.step
async def research(question: str, snippets: list[Snippet], llm: tl.LLM) -> ResearchAnswer:
    """Synthesise an answer from the retrieved snippets, citing them."""
    sources = "\n".join(f"[{s.source}] {s.text}" for s in snippets)
    return await llm.generate(
        "Answer the question using only these sources. Cite the source ids you used and "
        f"give a confidence.\n\nSources:\n{sources}\n\nQuestion: {question}",
        output=ResearchAnswer,
        model="small",
        temperature=0.2,
    )


@flow.step(
    when=tl.branch("route", "reasoning"),
    max_rounds=2,
    until=lambda checked: checked.verdict.valid,
)
async def reasoning(
    question: str,
    classification: Classification,
    attempt: tl.Round[CheckedAnswer],
    llm: tl.LLM,
) -> CheckedAnswer:
    """Answer step by step, then validate; a failed check earns one more careful round."""
    tier = "large" if classification.confidence < ESCALATE_BELOW else "small"
    if attempt.previous is None:
        prompt = f"Answer with step-by-step reasoning, stating your assumptions.\n\n{question}"
        temperature = 0.3
    else:
        prompt = (
            f"A previous answer had a logical problem: {attempt.previous.verdict.problem}\n"
            f"Answer carefully with explicit reasoning steps.\n\n{question}"
        )
        temperature = 0.1
    answer = await llm.generate(prompt, output=MultiStepAnswer, model=tier, temperature=temperature)
    verdict = await llm.generate(
        "Check whether these reasoning steps logically lead to the conclusion.\n"
        f"Steps: {answer.reasoning_steps}\nConclusion: {answer.final_answer}",
        output=Verdict,
        model="small",
        max_tokens=100,
    )
    return CheckedAnswer(answer=answer, verdict=verdict)


@flow.step
def answer(
    route: Route,
    direct: DirectAnswer | None,
    research: ResearchAnswer | None,
    reasoning: CheckedAnswer | None,
) -> Answer:
    """Whichever branch ran; the others were skipped and arrive as None."""
    if direct is not None:
        return Answer(route=route, answer=direct.answer)
    if research is not None:
        return Answer(route=route, answer=research.answer, sources=research.sources)
    assert reasoning is not None
    return Answer(
        route=route, answer=reasoning.answer.final_answer, validated=reasoning.verdict.valid
    )


if __name__ == "__main__":
    result = flow.run_sync(
        {"question": "Why does the Moon always show the same face to the Earth?"},
        models={"small": "sim:small", "large": "sim:large"},
    )
    result.raise_for_status()
    print(result["answer"].model_dump_json(indent=2))
    for decision in result.decisions:
        print(f"{decision.step}: {decision.kind} -> {decision.outcome} ({decision.reason})")
