"""Parallel analysis: independent aspects of one document, analysed at the same time.

Four LLM steps (``tone``, ``risks``, ``key_points``, ``audience``) each read only the
document, so none waits for another: the engine starts them together. Nothing in the flow
says "parallel"; the graph does. ``concurrency=2`` on the flow bounds how many of them
run at once (a rate-limit or cost guard), so four 1-second calls take about 2 seconds,
not 1 and not 4. ``aggregate`` reads all four outputs, so it runs once they are all done,
and is plain Python: combining typed results needs no model.

Each aspect gets a focused prompt and its own output type; ``risks`` uses the ``large``
role because weighing risks is the hardest of the four.

Run it over the sample documents::

    trellis run examples/parallel_analysis.py:flow \\
        --input-file examples/data/documents.jsonl --config examples/trellis.toml

or one document: ``python examples/parallel_analysis.py``.
"""

from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl


class Tone(BaseModel):
    label: Literal["neutral", "positive", "negative", "urgent", "cautious"]
    formality: Literal["formal", "informal"]


class Risk(BaseModel):
    description: str
    severity: Literal["low", "medium", "high"]


class Risks(BaseModel):
    risks: list[Risk] = Field(max_length=5)


class KeyPoints(BaseModel):
    points: list[str] = Field(min_length=1, max_length=5)


class Audience(BaseModel):
    primary: str  # who the document is written for
    expertise: Literal["general", "practitioner", "expert"]


class Analysis(BaseModel):
    tone: str
    audience: str
    key_points: list[str]
    top_risks: list[str]  # high-severity risks first
    summary: str


flow = tl.Flow(
    "parallel-analysis",
    inputs={"document": str},
    concurrency=2,
    description="Tone, risks, key points and audience in parallel, then one report.",
)


@flow.step
async def tone(document: str, llm: tl.LLM) -> Tone:
    return await llm.generate(
        f"Describe the tone of this document.\n\n{document}", output=Tone, model="small"
    )


@flow.step
async def risks(document: str, llm: tl.LLM) -> Risks:
    return await llm.generate(
        f"List the main risks this document reveals, each with a severity.\n\n{document}",
        output=Risks,
        model="large",
    )


@flow.step
async def key_points(document: str, llm: tl.LLM) -> KeyPoints:
    return await llm.generate(
        f"List the key points of this document, most important first.\n\n{document}",
        output=KeyPoints,
        model="small",
    )


@flow.step
async def audience(document: str, llm: tl.LLM) -> Audience:
    return await llm.generate(
        f"Who is this document written for?\n\n{document}", output=Audience, model="small"
    )


SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


@flow.step
def aggregate(tone: Tone, risks: Risks, key_points: KeyPoints, audience: Audience) -> Analysis:
    """Combine the four aspects into one report (plain Python, no model call)."""
    ranked = sorted(risks.risks, key=lambda r: SEVERITY_ORDER[r.severity])
    high = sum(r.severity == "high" for r in ranked)
    summary = (
        f"Tone {tone.label}, {tone.formality}; written for {audience.primary} "
        f"({audience.expertise} readers); {len(key_points.points)} key point(s); "
        f"{len(ranked)} risk(s), {high} of them high."
    )
    return Analysis(
        tone=f"{tone.label} ({tone.formality})",
        audience=audience.primary,
        key_points=key_points.points,
        top_risks=[f"[{r.severity}] {r.description}" for r in ranked],
        summary=summary,
    )


if __name__ == "__main__":
    memo = (
        "Memo: starting next quarter, all travel must be booked through the new portal. "
        "Bookings made elsewhere will not be reimbursed. Questions go to finance."
    )
    result = flow.run_sync(
        {"document": memo},
        models={"small": "sim:small?latency_ms=300", "large": "sim:large?latency_ms=300"},
    )
    print(result["aggregate"].model_dump_json(indent=2))
    print(f"4 calls of 300 ms, 2 at a time: {result.duration_s:.2f} s")
