"""A small cascade for the eval tests: the small model answers with a confidence; when it is
below ``min_confidence`` the large model answers instead."""

from __future__ import annotations

import re

import trellis as tl

flow = tl.Flow(
    "toy_cascade",
    inputs={"question": str},
    params=[tl.Param("min_confidence", default=0.5, low=0.0, high=1.0)],
)

#: Every input any step received, for the label-isolation test.
SEEN: list[dict[str, object]] = []


@flow.step
async def small(question: str, llm: tl.LLM) -> str:
    SEEN.append({"question": question})
    return await llm.generate(question, model="small")


@flow.step
def confidence(small: str) -> float:
    found = re.search(r"confidence (\d\.\d+)", small)
    return float(found.group(1)) if found else 0.0


@flow.step(when=lambda confidence, min_confidence: confidence < min_confidence)
async def large(question: str, llm: tl.LLM) -> str:
    return await llm.generate(question, model="large")


@flow.step
def answer(small: str, large: str | None = None) -> str:
    text = large if large is not None else small
    return text.split(" confidence")[0].strip()
