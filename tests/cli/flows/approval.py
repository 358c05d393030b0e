"""An escalation that waits for a person: ``draft`` asks the model for a ticket title,
``review`` waits for an approval (``human.approve``), ``ticket`` creates the ticket only
when approved.

``ticket`` appends ``<issue>:<approved>`` to the file named by ``$TRELLIS_TEST_COUNTER``
(when set) each time it really runs, so a test can check a ticket is created exactly once;
it fails for the issue "tracker down".
"""

import os

from pydantic import BaseModel

import trellis as tl

flow = tl.Flow("approval", inputs={"issue": str})


class Ticket(BaseModel):
    issue: str
    title: str
    created: bool
    comment: str | None


@flow.step
async def draft(issue: str, llm: tl.LLM) -> str:
    return await llm.generate(f"Write a one-line ticket title for: {issue}", model="small")


@flow.step
async def review(issue: str, draft: str, human: tl.Human) -> tl.Approval:
    return await human.approve(
        f"Create an escalation ticket for {issue!r}?", details={"title": draft, "issue": issue}
    )


@flow.step
def ticket(issue: str, draft: str, review: tl.Approval) -> Ticket:
    path = os.environ.get("TRELLIS_TEST_COUNTER")
    if path:
        with open(path, "a", encoding="utf-8") as counter:
            counter.write(f"{issue}:{review.approved}\n")
    if issue == "tracker down":
        raise RuntimeError("the ticket tracker is down")
    return Ticket(issue=issue, title=draft, created=review.approved, comment=review.comment)
