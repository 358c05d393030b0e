"""A small routed flow on model roles 'small' and 'large' (used by the CLI tests)."""

# A sibling import: the CLI puts this file's folder on sys.path.
from cli_flow_types import Sentiment, Topics

import trellis as tl

flow = tl.Flow("triage", inputs={"feedback": str})


@flow.step
async def sentiment(feedback: str, llm: tl.LLM) -> Sentiment:
    """Classify the feedback's sentiment."""
    prompt = f"Classify the sentiment: {feedback}"
    return await llm.generate(prompt, output=Sentiment, model="small")


@flow.step
async def topics(feedback: str, sentiment: Sentiment, llm: tl.LLM) -> Topics:
    tier = "large" if sentiment.confidence < 0.5 else "small"
    return await llm.generate(f"List the topics of: {feedback}", output=Topics, model=tier)


@flow.step(when=lambda sentiment: sentiment.label == "negative")
def escalate(feedback: str, topics: Topics) -> str:
    return f"ticket: {feedback[:20]} ({len(topics.topics)} topics)"


@flow.step
def report(sentiment: Sentiment, escalate: str | None) -> dict[str, object]:
    return {"label": sentiment.label, "escalated": escalate is not None}
