"""Voting: a panel of differently-briefed reviewers votes in parallel; a judge breaks ties.

A request for a refund outside policy goes to four reviewers::

    panel ──► votes (one LLM per reviewer, in parallel) ──► tally ──► judge (ties only) ──► ruling

- ``panel`` (plain Python) is the list of reviewers. Each has its own brief (the system
  prompt), model role and temperature: a strict policy reviewer on the large model at
  temperature 0, a customer advocate at 0.8, and so on. Diverse reviewers make errors
  that are less correlated, which is what makes a vote worth more than one answer.
- ``votes`` runs once per reviewer (``map_over="panel"``), concurrently; its output is the
  list of typed votes in panel order.
- ``tally`` (plain Python) counts them. A strict majority decides.
- ``judge`` (LLM, role ``large``) runs only on a tie (``when=``): it reads the request and
  every reviewer's rationale and picks a side. Otherwise it is skipped, and the decision,
  with the tally it was made on, is in ``result.decisions``.
- ``ruling`` (plain Python) is the verdict, who decided it, and the votes.

Run it::

    trellis run examples/agents_vote.py:flow --config examples/trellis.toml \\
        --input '{"request": "Annual Team customer asks for a refund of 5 unused months"}'

or on the offline simulator: ``python examples/agents_vote.py``.
"""

from collections import Counter
from typing import Literal

from pydantic import BaseModel

import trellis as tl

Verdict = Literal["grant", "deny"]


class Reviewer(BaseModel):
    name: str
    brief: str  # the reviewer's system prompt
    model: str  # the model role it runs on
    temperature: float


class Ballot(BaseModel):
    verdict: Verdict
    rationale: str


class Vote(BaseModel):
    reviewer: str
    verdict: Verdict
    rationale: str


class Tally(BaseModel):
    counts: dict[str, int]
    majority: Verdict | None  # None: a tie, for the judge


class Ruling(BaseModel):
    verdict: Verdict
    decided_by: Literal["majority", "judge"]
    reasoning: str
    votes: list[Vote]


PANEL: list[Reviewer] = [
    Reviewer(
        name="policy",
        brief="You apply the written refund policy to the letter: refunds within 30 days.",
        model="large",
        temperature=0.0,
    ),
    Reviewer(
        name="advocate",
        brief="You speak for the customer and weigh long-term goodwill.",
        model="small",
        temperature=0.8,
    ),
    Reviewer(
        name="risk",
        brief="You look for signs of refund abuse and precedents it would set.",
        model="small",
        temperature=0.2,
    ),
    Reviewer(
        name="finance",
        brief="You weigh the refund's cost against the account's lifetime value.",
        model="small",
        temperature=0.4,
    ),
]

flow = tl.Flow(
    "agents-vote",
    inputs={"request": str},
    description="Four reviewers vote on a refund exception; a judge breaks ties.",
)


@flow.step
def panel() -> list[Reviewer]:
    return PANEL


@flow.step(map_over="panel")
async def votes(request: str, panel: Reviewer, llm: tl.LLM) -> Vote:
    """One reviewer's vote (``panel`` is one element of the panel's list)."""
    ballot = await llm.generate(
        "Should we grant this refund request? Vote grant or deny, and give your reason in "
        f"one or two sentences.\n\nRequest: {request}",
        output=Ballot,
        system=panel.brief,
        model=panel.model,
        temperature=panel.temperature,
    )
    return Vote(reviewer=panel.name, verdict=ballot.verdict, rationale=ballot.rationale)


@flow.step
def tally(votes: list[Vote]) -> Tally:
    counts = Counter(vote.verdict for vote in votes)
    (top, n), *others = counts.most_common()
    majority = top if not others or n > others[0][1] else None
    return Tally(counts=dict(counts), majority=majority)


def is_tie(tally: Tally) -> bool:
    return tally.majority is None


@flow.step(when=is_tie)
async def judge(request: str, votes: list[Vote], llm: tl.LLM) -> Ballot:
    arguments = "\n".join(f"- {v.reviewer} ({v.verdict}): {v.rationale}" for v in votes)
    return await llm.generate(
        "The review panel is split on this refund request. Weigh the arguments, not the "
        f"count, and decide: grant or deny.\n\nRequest: {request}\n\nArguments:\n{arguments}",
        output=Ballot,
        system="You are the head of customer operations and you make the final call.",
        model="large",
        temperature=0.0,
    )


@flow.step
def ruling(tally: Tally, votes: list[Vote], judge: Ballot | None) -> Ruling:
    if judge is not None:
        return Ruling(
            verdict=judge.verdict, decided_by="judge", reasoning=judge.rationale, votes=votes
        )
    assert tally.majority is not None, "the judge runs on every tie"
    n = tally.counts[tally.majority]
    return Ruling(
        verdict=tally.majority,
        decided_by="majority",
        reasoning=f"{n} of {len(votes)} reviewers voted {tally.majority}",
        votes=votes,
    )


if __name__ == "__main__":
    run = flow.run_sync(
        {
            "request": "A 4-year annual Team customer (18 seats) cancelled after 7 months of "
            "their renewal and asks for the 5 unused months back; the policy allows "
            "refunds within 30 days."
        },
        models={"small": "sim:small", "large": "sim:large"},
    )
    run.raise_for_status()
    for vote in run["votes"]:
        print(f"{vote.reviewer:>9}: {vote.verdict} ({vote.rationale})")
    for decision in run.decisions:
        print(f"{decision.step}: {decision.outcome} ({decision.reason})")
    print(run["ruling"].model_dump_json(indent=2, exclude={"votes"}))
