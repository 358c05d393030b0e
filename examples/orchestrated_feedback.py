"""Orchestrated feedback handling: extract, fan out per issue, route on urgency, respond.

One support ticket goes through:

1. ``extract`` (LLM): sentiment, urgency and the list of distinct issues it raises.
2. ``issues`` / ``route`` (plain Python): project what later steps need out of the
   extraction. A step reads only what it names, so each LLM prompt gets only its context.
3. ``categorise`` runs the sub-flow ``issue_flow`` once *per issue*, concurrently
   (``flow.subflow(..., map_over="issues")``): its ``label`` step (LLM, role ``small``)
   picks the team, ``categorised`` (its declared result) pairs the label with the issue.
   Each issue is a child run of the ticket's run (``<run>/categorise[i]``, nested in
   ``trellis show``, resumed inside on a crash); its cost rolls up into the ticket's.
   The step's output is a list in the issues' order. With ``on_error="collect"``, an
   issue whose sub-flow fails becomes a ``tl.ElementFailure`` at its index instead of
   failing the ticket: the other issues still get categorised.
4. ``assign`` (plain Python): each category's owner from the team directory; a failed
   element goes to the manual triage queue.
5. ``urgent_response`` (role ``large``) or ``standard_response`` (role ``small``): the
   ``route`` step returns a label and ``tl.branch`` runs exactly one of the two. The other
   is recorded as skipped, with the reason, in ``result.decisions``.
6. ``result`` (plain Python): the outcome, from whichever response ran.

Run it over the sample tickets::

    trellis run examples/orchestrated_feedback.py:flow \\
        --input-file examples/data/tickets.jsonl --config examples/trellis.toml

or one ticket: ``python examples/orchestrated_feedback.py``.
"""

from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl

Category = Literal["technical", "billing", "feature_request", "support"]


class TicketAnalysis(BaseModel):
    sentiment: Literal["positive", "neutral", "negative", "mixed"]
    urgency: Literal["low", "medium", "high"]
    issues: list[str] = Field(min_length=1, max_length=5)  # one short sentence each


class CategoryLabel(BaseModel):
    category: Category
    rationale: str


class CategorisedIssue(BaseModel):
    issue: str
    category: Category
    rationale: str


class Assignment(BaseModel):
    issue: str
    category: Category | None  # None: categorising this issue failed
    owner: str


class Reply(BaseModel):
    subject: str
    body: str


class TicketOutcome(BaseModel):
    sentiment: str
    urgency: str
    path: Literal["urgent", "standard"]
    assignments: list[Assignment]
    reply: Reply


TEAM_DIRECTORY: dict[str, str] = {
    "technical": "platform-engineering",
    "billing": "billing-ops",
    "feature_request": "product-management",
    "support": "customer-success",
}
TRIAGE_QUEUE = "manual-triage"  # owner of issues that could not be categorised

flow = tl.Flow(
    "orchestrated-feedback",
    inputs={"feedback": str},
    description="Per-issue categorisation and owners, with an urgency-dependent reply.",
)


@flow.step
async def extract(feedback: str, llm: tl.LLM) -> TicketAnalysis:
    return await llm.generate(
        "Read this support ticket. Give its sentiment, its urgency (high: work is blocked, "
        "money or data is being lost, or a deadline is near) and each distinct issue it "
        f"raises as one short sentence.\n\nTicket: {feedback}",
        output=TicketAnalysis,
        model="small",
    )


@flow.step
def issues(extract: TicketAnalysis) -> list[str]:
    return extract.issues


@flow.step
def route(extract: TicketAnalysis) -> Literal["urgent", "standard"]:
    return "urgent" if extract.urgency == "high" else "standard"


# One issue's categorisation, a flow of its own, used below as a sub-flow per issue.
issue_flow = tl.Flow("categorise-issue", inputs={"issue": str})


@issue_flow.step
async def label(issue: str, llm: tl.LLM) -> CategoryLabel:
    return await llm.generate(
        "Which team should handle this customer issue? technical: bugs, outages, "
        "performance; billing: charges, invoices, plans; feature_request: something new; "
        f"support: the support experience itself.\n\nIssue: {issue}",
        output=CategoryLabel,
        model="small",
    )


@issue_flow.step
def categorised(issue: str, label: CategoryLabel) -> CategorisedIssue:
    """The sub-flow's result (its only final step)."""
    return CategorisedIssue(issue=issue, category=label.category, rationale=label.rationale)


# Runs once per issue: ``issues`` (a list) feeds the sub-flow's ``issue`` input.
flow.subflow(
    issue_flow,
    name="categorise",
    inputs={"issue": "issues"},
    map_over="issues",
    on_error="collect",
)


@flow.step
def assign(
    issues: list[str], categorise: list[CategorisedIssue | tl.ElementFailure]
) -> list[Assignment]:
    """Owner per issue from the directory; failed elements go to manual triage."""
    out = []
    for issue, item in zip(issues, categorise, strict=True):
        if isinstance(item, tl.ElementFailure):
            out.append(Assignment(issue=issue, category=None, owner=TRIAGE_QUEUE))
        else:
            owner = TEAM_DIRECTORY[item.category]
            out.append(Assignment(issue=issue, category=item.category, owner=owner))
    return out


def _summary(assignments: list[Assignment]) -> str:
    return "\n".join(f"- {a.issue} (handled by {a.owner})" for a in assignments)


@flow.step(when=tl.branch("route", "urgent"))
async def urgent_response(feedback: str, assign: list[Assignment], llm: tl.LLM) -> Reply:
    return await llm.generate(
        "Write a short, direct reply to an urgent support ticket. Acknowledge the impact, "
        "say the issues were escalated to the teams below and that an engineer will "
        f"follow up within the hour.\n\nTicket: {feedback}\n\nIssues:\n{_summary(assign)}",
        output=Reply,
        model="large",
    )


@flow.step(when=tl.branch("route", "standard"))
async def standard_response(feedback: str, assign: list[Assignment], llm: tl.LLM) -> Reply:
    return await llm.generate(
        "Write a friendly reply to this support ticket. Thank the customer and say which "
        f"team will look at each point.\n\nTicket: {feedback}\n\nIssues:\n{_summary(assign)}",
        output=Reply,
        model="small",
    )


@flow.step
def result(
    extract: TicketAnalysis,
    assign: list[Assignment],
    urgent_response: Reply | None,
    standard_response: Reply | None,
) -> TicketOutcome:
    """Exactly one response ran; the other arrives as ``None``."""
    reply = urgent_response or standard_response
    assert reply is not None, "tl.branch runs exactly one response step"
    return TicketOutcome(
        sentiment=extract.sentiment,
        urgency=extract.urgency,
        path="urgent" if urgent_response is not None else "standard",
        assignments=assign,
        reply=reply,
    )


if __name__ == "__main__":
    ticket = (
        "URGENT: nobody on our team can log in since this morning, and our October invoice "
        "still shows the old seat count."
    )
    run = flow.run_sync(
        {"feedback": ticket},
        models={"small": "sim:small", "large": "sim:large"},
    )
    print(run["result"].model_dump_json(indent=2))
    for decision in run.decisions:
        print(f"{decision.step}: {decision.outcome} ({decision.reason})")
