"""A routed flow for ``trellis show``: a router, a branch, a ``when`` and a skipped step."""

from typing import Literal

from pydantic import BaseModel

import trellis as tl

flow = tl.Flow("routed", inputs={"text": str})


class Triage(BaseModel):
    label: Literal["bug", "question"]
    confidence: float


@flow.step
async def triage(text: str, llm: tl.LLM) -> Triage:
    return await llm.generate(f"Triage this message: {text}", output=Triage, model="small")


@flow.step
def route(triage: Triage) -> Literal["bug", "question"]:
    return triage.label


@flow.step(when=tl.branch("route", "bug"))
def file_bug(text: str) -> str:
    return f"BUG: {text}"


@flow.step(when=tl.branch("route", "question"))
def answer(text: str) -> str:
    return f"Q: {text}"


@flow.step(when=lambda triage: triage.confidence > 2.0)
def escalate(text: str) -> str:
    return f"escalated: {text}"
