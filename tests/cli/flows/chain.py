"""A 3-step chain for the durable CLI tests: two LLM steps, then a plain step.

Every step appends ``<item>:<step>`` to the file named by ``$TRELLIS_TEST_COUNTER`` (when set)
as it starts, so a test can count how often each step of each item really executed.
"""

import os

from pydantic import BaseModel

import trellis as tl

flow = tl.Flow("chain", inputs={"item": str})


class Draft(BaseModel):
    title: str
    words: int


def _count(item: str, step: str) -> None:
    path = os.environ.get("TRELLIS_TEST_COUNTER")
    if path:
        with open(path, "a", encoding="utf-8") as counter:
            counter.write(f"{item}:{step}\n")


@flow.step
async def draft(item: str, llm: tl.LLM) -> Draft:
    _count(item, "draft")
    return await llm.generate(f"Draft a title about {item}", output=Draft, model="small")


@flow.step
async def review(item: str, draft: Draft, llm: tl.LLM) -> str:
    _count(item, "review")
    return await llm.generate(f"Review the title {draft.title!r} about {item}", model="small")


@flow.step
def publish(item: str, draft: Draft, review: str) -> dict[str, object]:
    _count(item, "publish")
    return {"item": item, "title": draft.title, "review_chars": len(review)}
