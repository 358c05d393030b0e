"""Document analysis: explicit state, selective context, per-step token accounting.

A long-running analysis is tempting to write around one growing state object that every
step reads. Here the "state schema" is the steps' typed outputs, and each step declares
exactly the context it needs in its parameters; the engine passes nothing else::

    document ──► sentiment ─┐
        ├──────► entities ──┼──► insights ──► report
        └───────────────────┘        (report reads sentiment + insights, not the document)

- ``sentiment`` and ``entities`` read only the document, so they run in parallel.
- ``insights`` reads the document and both analyses.
- ``report`` reads the sentiment and the insights, *not* the document: the full text
  is the most expensive thing to resend, and the report does not need it.

Token accounting needs no bookkeeping code: every step's usage is recorded
(``result.steps["report"].usage.input_tokens``, ``.output_tokens``, ``.cost_usd``) and
the run's total is their sum (``result.usage``).

Run it over the sample documents::

    trellis run examples/document_analysis.py:flow \\
        --input-file examples/data/documents.jsonl --config examples/trellis.toml

or one document on the offline simulator with ``python examples/document_analysis.py``,
which prints the tokens each step used.
"""

from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl


class DocumentSentiment(BaseModel):
    tone: Literal["positive", "negative", "neutral", "mixed"]
    confidence: float = Field(ge=0.0, le=1.0)
    summary: str


class Entities(BaseModel):
    people: list[str]
    organizations: list[str]
    products: list[str]
    figures: list[str] = Field(description="key numbers, with what they measure")


class Insights(BaseModel):
    key_insights: list[str]
    risks: list[str]
    open_questions: list[str]


class Report(BaseModel):
    title: str
    executive_summary: str
    recommendations: list[str]


flow = tl.Flow(
    "document-analysis",
    inputs={"document": str},
    description="Sentiment, entities and insights of a document, then a short report.",
)


@flow.step
async def sentiment(document: str, llm: tl.LLM) -> DocumentSentiment:
    """The document's overall tone."""
    return await llm.generate(
        f"Assess the overall tone of this document and summarise it in one sentence.\n\n{document}",
        output=DocumentSentiment,
        model="small",
    )


@flow.step
async def entities(document: str, llm: tl.LLM) -> Entities:
    """People, organizations, products and key figures."""
    return await llm.generate(
        f"List the people, organizations, products and key figures in this document.\n\n{document}",
        output=Entities,
        model="small",
    )


@flow.step
async def insights(
    document: str, sentiment: DocumentSentiment, entities: Entities, llm: tl.LLM
) -> Insights:
    """What matters in the document, given its tone and entities."""
    return await llm.generate(
        f"Tone: {sentiment.tone} ({sentiment.summary})\n"
        f"Organizations: {', '.join(entities.organizations)}\n"
        f"Key figures: {', '.join(entities.figures)}\n"
        "Extract the key insights, the risks and the open questions of this document.\n\n"
        f"{document}",
        output=Insights,
        model="large",
    )


@flow.step
async def report(sentiment: DocumentSentiment, insights: Insights, llm: tl.LLM) -> Report:
    """A short report for a reader who will not read the document; built without it."""
    findings = "\n".join(f"- {item}" for item in insights.key_insights)
    risks = "\n".join(f"- {item}" for item in insights.risks)
    return await llm.generate(
        f"Write a short report with a title, an executive summary and recommendations.\n"
        f"Tone of the source: {sentiment.tone}. {sentiment.summary}\n"
        f"Key insights:\n{findings}\nRisks:\n{risks}",
        output=Report,
        model="small",
    )


if __name__ == "__main__":
    document = (
        "Q3 revenue reached $18.4 million, up 14% year over year. Gross margin improved to "
        "68%, but net revenue retention of 109% missed the 112% target because small "
        "merchants downgraded. We expect Q4 revenue between $19.2 and $19.8 million."
    )
    result = flow.run_sync(
        {"document": document}, models={"small": "sim:small", "large": "sim:large"}
    )
    result.raise_for_status()
    print(result["report"].model_dump_json(indent=2))
    for name, record in result.steps.items():
        usage = record.usage
        print(
            f"{name:>10}: {usage.input_tokens:5} in {usage.output_tokens:5} out "
            f"${usage.cost_usd:.6f}"
        )
    print(
        f"{'run':>10}: {result.usage.input_tokens:5} in {result.usage.output_tokens:5} out "
        f"${result.usage.cost_usd:.6f}"
    )
