"""A step that asks a person for typed input (``human.ask``): a priority and an owner."""

from typing import Literal

from pydantic import BaseModel, Field

import trellis as tl

flow = tl.Flow("asking", inputs={"issue": str})


class Triage(BaseModel):
    priority: Literal["low", "high"]
    owner: str = Field(description="who handles it")
    hours: int = 1


@flow.step
async def triage(issue: str, human: tl.Human) -> Triage:
    return await human.ask(f"Triage {issue!r}", output=Triage, details={"issue": issue})


@flow.step
def summary(triage: Triage) -> str:
    return f"{triage.priority} for {triage.owner} ({triage.hours}h)"
