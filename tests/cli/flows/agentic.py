"""Agent steps and an evaluator-optimizer loop, for ``trellis show``.

- ``research`` is a tool-calling agent on the simulator (``sim:small`` plays an agent when
  given tools: a few deterministic tool rounds, then a typed answer). ``weather`` always
  raises, so its error goes back to the model.
- ``refine`` is a writer / critic loop that stops when the critic passes a draft of round 2
  or later (at most 3 rounds), so its rounds show in ``trellis show``.
- ``confirm`` runs an agent, then waits for a person's approval: once approved, the step
  runs again and its agent's turns and tool calls are replayed from the journal.
"""

from pydantic import BaseModel

import trellis as tl

flow = tl.Flow("agentic", inputs={"city": str})


class Forecast(BaseModel):
    city: str
    summary: str


class Critique(BaseModel):
    passed: bool
    advice: str


class Draft(BaseModel):
    text: str
    passed: bool


@tl.tool(retries=5)
def weather(city: str) -> str:
    """The current weather of a city.

    Args:
        city: The city's name.
    """
    raise LookupError(f"the weather station for {city} is offline")


@tl.tool
async def local_time(city: str) -> str:
    """The local time in a city.

    Args:
        city: The city's name.
    """
    return f"12:00 in {city}"


@flow.step
async def research(city: str, llm: tl.LLM) -> Forecast:
    return await llm.agent(
        f"What is the weather and the local time in {city}? Use the weather and local_time tools.",
        tools=[weather, local_time],
        output=Forecast,
        model="small",
        max_turns=6,
    )


@flow.step(max_rounds=3, until=lambda draft: draft.passed)
async def refine(research: Forecast, round: tl.Round[Draft], llm: tl.LLM) -> Draft:
    previous = round.previous.text if round.previous else "(none)"
    text = await llm.generate(
        f"Write a short weather note from {research.summary!r}; previous draft: {previous}",
        model="small",
    )
    critique = await llm.generate(
        f"Critique this weather note: {text}", output=Critique, model="small"
    )
    return Draft(text=text, passed=critique.passed and round.number >= 2)


@flow.step
async def confirm(city: str, refine: Draft, llm: tl.LLM, human: tl.Human) -> str:
    checked = await llm.agent(
        f"Check the local time in {city} with the local_time tool.",
        tools=[local_time],
        model="small",
        max_turns=6,
    )
    decision = await human.approve(f"Publish the note for {city}?", details={"note": refine.text})
    return f"{'published' if decision.approved else 'held'}: {checked[:40]}"
