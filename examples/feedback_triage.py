"""Feedback triage: decompose one vague "analyse this feedback" prompt into typed steps.

Instead of one large prompt whose JSON you hope to parse, each step has one job and a
validated Pydantic output, and the flow routes on those validated values:

    sentiment ──► topics ──► action_plan ──► escalation (only if negative AND high) ──► triage
        └──────────────────────────┴──────────────────────────────────────────────────────┘

- ``sentiment`` runs on the cheap "small" role.
- ``topics`` is *escalated* to the "large" role when the sentiment is uncertain
  (confidence below 0.7): spend on the expensive model only where it helps.
- ``action_plan`` reads sentiment, topics and the feedback, at temperature 0.3 for
  consistent action items.
- ``escalation`` is plain Python (no model call): it opens a ticket, and runs only when
  its ``when=`` condition holds. Otherwise it is recorded as *skipped*, together with the
  values the decision was made on (``result.decisions``).
- ``triage`` combines everything; it reads ``escalation`` as ``Ticket | None``, so it runs
  whether or not a ticket was opened.

Every model reply is validated against its schema; malformed or invalid JSON is fed back
to the model (a re-ask, up to three times here), and every attempt is accounted.

Run it over the sample data (the roles "small" and "large" are bound in the config)::

    trellis run examples/feedback_triage.py:flow \\
        --input-file examples/data/feedback.jsonl --config examples/trellis.toml

or run one item on the offline simulator with ``python examples/feedback_triage.py``.
"""

import hashlib
from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl

#: Below this sentiment confidence, topic extraction uses the "large" model.
ESCALATE_BELOW = 0.7


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str


class Topics(BaseModel):
    topics: list[str]
    primary_concern: str


class ActionPlan(BaseModel):
    items: list[str]
    priority: Literal["high", "medium", "low"]
    reasoning: str


class Ticket(BaseModel):
    ticket_id: str
    queue: str
    summary: str
    actions: list[str]


class Triage(BaseModel):
    sentiment: Sentiment
    topics: Topics
    plan: ActionPlan
    escalation: Ticket | None = None


flow = tl.Flow(
    "feedback-triage",
    inputs={"feedback": str},
    retry=tl.RetryPolicy(reasks=3),
    description="Classify, extract topics, plan actions and escalate customer feedback.",
)


@flow.step
async def sentiment(feedback: str, llm: tl.LLM) -> Sentiment:
    """Classify the feedback's sentiment, with a confidence and a short reason."""
    return await llm.generate(
        f"Classify the sentiment of this customer feedback as positive, negative or "
        f"neutral. Give a confidence between 0 and 1 and one sentence of reasoning.\n\n"
        f"Feedback: {feedback}",
        output=Sentiment,
        model="small",
    )


@flow.step
async def topics(feedback: str, sentiment: Sentiment, llm: tl.LLM) -> Topics:
    """Extract topics; ambiguous feedback (low confidence) goes to the large model."""
    if sentiment.confidence < ESCALATE_BELOW:
        prompt = (
            "This feedback is ambiguous. Read it carefully and extract the nuanced topics "
            f"it raises, and the customer's primary concern.\n\nFeedback: {feedback}"
        )
        return await llm.generate(prompt, output=Topics, model="large")
    prompt = f"Extract the main topics and the primary concern.\n\nFeedback: {feedback}"
    return await llm.generate(prompt, output=Topics, model="small")


@flow.step
async def action_plan(
    feedback: str, sentiment: Sentiment, topics: Topics, llm: tl.LLM
) -> ActionPlan:
    """Turn the analysis into prioritised action items for the product team."""
    return await llm.generate(
        f"Sentiment: {sentiment.label} (confidence {sentiment.confidence:.2f}).\n"
        f"Primary concern: {topics.primary_concern}. Topics: {', '.join(topics.topics)}.\n"
        "Propose concrete action items for the product team and a priority "
        f"(high, medium or low).\n\nFeedback: {feedback}",
        output=ActionPlan,
        model="small",
        temperature=0.3,
    )


def needs_escalation(sentiment: Sentiment, action_plan: ActionPlan) -> bool:
    """Escalate unhappy customers whose issue the plan rates as high priority."""
    return sentiment.label == "negative" and action_plan.priority == "high"


@flow.step(when=needs_escalation)
def escalation(feedback: str, topics: Topics, action_plan: ActionPlan) -> Ticket:
    """Open an escalation ticket: deterministic code, no model call."""
    digest = hashlib.sha256(feedback.encode("utf-8")).hexdigest()[:8].upper()
    return Ticket(
        ticket_id=f"ESC-{digest}",
        queue="customer-escalations",
        summary=topics.primary_concern,
        actions=action_plan.items,
    )


@flow.step
def triage(
    sentiment: Sentiment, topics: Topics, action_plan: ActionPlan, escalation: Ticket | None
) -> Triage:
    """The combined result; ``escalation`` is None when no ticket was needed."""
    return Triage(sentiment=sentiment, topics=topics, plan=action_plan, escalation=escalation)


if __name__ == "__main__":
    result = flow.run_sync(
        {"feedback": "I was charged twice this month and support has not replied in a week."},
        models={"small": "sim:small", "large": "sim:large"},
    )
    result.raise_for_status()
    print(result["triage"].model_dump_json(indent=2))
    for decision in result.decisions:
        print(f"{decision.step}: {decision.outcome} ({decision.reason})")
    print(
        f"{result.usage.calls} calls, {result.usage.total_tokens} tokens, "
        f"${result.usage.cost_usd:.6f}"
    )
