"""An agent whose tool fails once (the UI sample's agent run): the customer lookup's first
call raises, as a flaky CRM would, so the run page shows a tool call that raised, with
the traceback of the tool's own code, and the agent carrying on after it."""

import itertools

from pydantic import BaseModel

import trellis as tl

_LOOKUPS = itertools.count()  # per process: the first lookup of a `trellis run` fails


class Answer(BaseModel):
    reply: str
    escalate: bool


@tl.tool(retries=2)
def lookup_customer(email: str) -> dict[str, object]:
    """The customer's plan and seats, from the CRM.

    Args:
        email: the customer's email address
    """
    if next(_LOOKUPS) == 0:
        raise ConnectionError("CRM did not answer within 2 s")
    return {"email": email, "plan": "Team", "seats": 12, "open_tickets": 1}


flow = tl.Flow("support-agent", inputs={"message": str})


@flow.step
async def answer(message: str, llm: tl.LLM) -> Answer:
    """Look the customer up, then answer them (or escalate)."""
    return await llm.agent(  # type: ignore[no-any-return]
        f"Answer this customer message; look the customer up first.\n\n{message}",
        tools=[lookup_customer],
        output=Answer,
        max_turns=6,
    )
