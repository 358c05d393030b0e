"""Human in the loop: a person approves an escalation ticket before it is created.

::

    draft_ticket ──► approval (waits for a person) ──► create_ticket (if approved) ──► notify

1. ``draft_ticket`` (LLM) turns the feedback into a typed :class:`TicketDraft`.
2. ``approval`` asks a person: ``human.approve("Create this escalation ticket?",
   details=draft)``. The run stops there with status ``waiting``; the question, with the
   draft as its details, is recorded in the store (``result.steps["approval"].question``)
   and nothing stays in memory. Steps that need the answer stay pending.
3. Someone answers, from any process, any time later: ``trellis approve RUN approval``
   (``--reject``, ``--comment``) or ``engine.reply(flow, run_id, "approval", answer)``.
   The run resumes from the store: the draft is not regenerated, and the answer is
   validated as a ``tl.Approval`` (a wrong one is refused and the run keeps waiting).
4. ``create_ticket`` (plain Python) runs only when approved (``when=``); it "creates" the
   ticket in a stand-in tracker, exactly once. On a rejection it is skipped, and the
   decision is recorded with the answer it was made on.
5. ``notify`` (plain Python) says what happened either way.

A waiting run needs a store; the CLI records every run (``.trellis/trellis.db``)::

    trellis run examples/approval.py:flow --config examples/trellis.toml \\
        --input '{"feedback": "Our whole team has been locked out of SSO since 9am."}'
    # -> waiting: it prints the question and the command that answers it
    trellis show RUN                       # the draft the person is asked about
    trellis approve RUN approval           # or: --reject --comment "not a sev1"

or in Python, with an in-memory store: ``python examples/approval.py``.
"""

import asyncio
import json
from typing import Literal

from pydantic import BaseModel

import trellis as tl


class TicketDraft(BaseModel):
    title: str
    severity: Literal["sev1", "sev2", "sev3"]
    team: Literal["billing-ops", "platform-engineering", "customer-success"]
    summary: str


class Ticket(BaseModel):
    id: str
    title: str
    severity: str
    team: str
    summary: str


class Notice(BaseModel):
    outcome: Literal["created", "rejected"]
    message: str


#: A stand-in for the ticket tracker's API: the tickets created, in order.
TICKETS: list[Ticket] = []

flow = tl.Flow(
    "approval",
    inputs={"feedback": str},
    description="Draft an escalation ticket and create it once a person approves.",
)


@flow.step
async def draft_ticket(feedback: str, llm: tl.LLM) -> TicketDraft:
    return await llm.generate(
        "Draft an escalation ticket for this customer feedback: a short title, a severity "
        "(sev1: many customers blocked; sev2: one customer blocked or money at stake; "
        "sev3: the rest), the team that owns it, and a summary an engineer can act on."
        f"\n\nFeedback: {feedback}",
        output=TicketDraft,
        model="small",
    )


@flow.step
async def approval(draft_ticket: TicketDraft, human: tl.Human) -> tl.Approval:
    """Wait for a person. ``details`` is what they see with the question."""
    return await human.approve("Create this escalation ticket?", details=draft_ticket)


def approved(approval: tl.Approval) -> bool:
    return approval.approved


@flow.step(when=approved)
def create_ticket(draft_ticket: TicketDraft, ctx: tl.RunContext) -> Ticket:
    """Create the ticket. Its id comes from the run, so a retry could not make a second."""
    ticket = Ticket(id=f"ESC-{ctx.run_id[-8:].upper()}", **draft_ticket.model_dump())
    TICKETS.append(ticket)
    return ticket


@flow.step
def notify(approval: tl.Approval, create_ticket: Ticket | None) -> Notice:
    if create_ticket is None:
        why = f": {approval.comment}" if approval.comment else ""
        return Notice(outcome="rejected", message=f"Escalation not created{why}.")
    return Notice(
        outcome="created",
        message=f"Created {create_ticket.id} ({create_ticket.severity}) for "
        f"{create_ticket.team}: {create_ticket.title}",
    )


async def main() -> None:
    models = {"small": "sim:small", "large": "sim:large"}
    async with tl.Engine(models=models, store=tl.MemoryStore()) as engine:
        run = await engine.run(
            flow, {"feedback": "Our whole team has been locked out of SSO since 9am."}
        )
        question = run.steps["approval"].question
        assert run.status == "waiting" and question is not None
        print(f"run {run.run_id} is {run.status}: {question['prompt']}")
        print(json.dumps(question["details"], indent=2))

        # ... later, possibly in another process with an engine on the same store:
        answer = tl.Approval(approved=True, comment="Confirmed with the SSO on-call.")
        run = await engine.reply(flow, run.run_id, "approval", answer)
        print(f"run {run.run_id} is {run.status}: {run['notify'].message}")


if __name__ == "__main__":
    asyncio.run(main())
