"""Approvals inside a mapped sub-flow: each issue of ``issues`` is drafted (an LLM step)
and approved by a person in its own child run of the ``review`` flow; ``summary`` joins
the outcomes. An issue starting with "auto" is approved without asking.

``publish`` appends ``<issue>:<approved>`` to the file named by ``$TRELLIS_TEST_COUNTER``
(when set) each time it really runs, so a test can check nothing runs twice.
"""

import os

import trellis as tl

review = tl.Flow("review", inputs={"issue": str})


@review.step
async def draft(issue: str, llm: tl.LLM) -> str:
    return await llm.generate(f"Write a one-line fix for: {issue}", model="small")


@review.step
async def approve(issue: str, draft: str, human: tl.Human) -> tl.Approval:
    if issue.startswith("auto"):
        return tl.Approval(approved=True, comment="automatic")
    return await human.approve(f"Publish the fix for {issue!r}?", details={"fix": draft})


@review.step
def publish(issue: str, approve: tl.Approval) -> str:
    path = os.environ.get("TRELLIS_TEST_COUNTER")
    if path:
        with open(path, "a", encoding="utf-8") as counter:
            counter.write(f"{issue}:{approve.approved}\n")
    return f"{issue}: {'published' if approve.approved else 'held'}"


flow = tl.Flow("fixes", inputs={"issues": list[str]})
flow.subflow(review, name="reviews", inputs={"issue": "issues"}, map_over="issues")


@flow.step
def summary(reviews: list[str]) -> str:
    return "; ".join(reviews)
