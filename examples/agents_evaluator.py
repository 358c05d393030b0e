"""Evaluator–optimizer: a writer drafts, a critic reviews, until the critic passes.

A customer-facing status update for an incident goes through one looping step::

    refine (round 1: write ─► critique, round 2: revise ─► critique, ...) ──► update

- ``refine`` runs at most ``MAX_ROUNDS`` times (``max_rounds=``) and stops as soon as
  ``until=`` holds: the critic passed the latest draft. Each round makes two LLM calls:
  the writer (role ``small``, some temperature) drafts, or revises the previous draft
  against the critic's issues; the critic (role ``large``, temperature 0) checks the
  draft against a fixed rubric and returns a typed :class:`Critique`.
- The injected ``tl.Round`` says which round this is and what the earlier rounds returned
  (``round.previous``). Each round returns every revision so far, so the step's output
  (and ``trellis show RUN``) holds every draft with its critique, oldest first.
- Each round's outcome is a loop decision in ``result.decisions`` ("continue", then
  "stop", with the reason: the critic passed, or ``max_rounds`` was reached); each LLM
  call is recorded with its round (``CallRecord.round``).
- ``update`` (plain Python) publishes the last draft, flagged for a person when the
  critic never passed it.

Run it::

    trellis run examples/agents_evaluator.py:flow --config examples/trellis.toml \\
        --input '{"incident": "API returned 500s on /v2/reports from 09:40 to 11:05 UTC"}'

or on the offline simulator: ``python examples/agents_evaluator.py``.
"""

from pydantic import BaseModel, Field

import trellis as tl

MAX_ROUNDS = 4

RUBRIC = """\
Review this customer-facing incident update. It passes only if it:
1. says plainly what customers could not do, and since when;
2. states the current status (investigating, fix rolling out, resolved);
3. says when the next update will come;
4. blames no one and uses no internal jargon;
5. is at most 80 words.
List every rule it breaks as an issue; passed is true only when there are none."""


class Critique(BaseModel):
    passed: bool
    score: int = Field(ge=1, le=10)
    issues: list[str]  # what to fix; empty when it passed


class Revision(BaseModel):
    round: int
    draft: str
    critique: Critique


class Drafts(BaseModel):
    revisions: list[Revision]  # every round's draft and critique, oldest first

    @property
    def latest(self) -> Revision:
        return self.revisions[-1]


class StatusUpdate(BaseModel):
    text: str
    rounds: int
    needs_review: bool  # the critic never passed it: a person should look first


flow = tl.Flow(
    "agents-evaluator",
    inputs={"incident": str},
    description="Write a status update and revise it until a critic passes it.",
)


def critic_passed(drafts: Drafts) -> bool:
    return drafts.latest.critique.passed


@flow.step(max_rounds=MAX_ROUNDS, until=critic_passed)
async def refine(incident: str, round: tl.Round[Drafts], llm: tl.LLM) -> Drafts:
    earlier = round.previous.revisions if round.previous else []
    if earlier:
        last = earlier[-1]
        issues = "\n".join(f"- {issue}" for issue in last.critique.issues)
        prompt = (
            f"Revise this incident update so that it fixes every issue the reviewer raised."
            f"\n\nFacts: {incident}\n\nDraft:\n{last.draft}\n\nIssues:\n{issues}"
        )
    else:
        prompt = f"Write a short status-page update for customers.\n\nFacts: {incident}"
    draft = await llm.generate(prompt, model="small", temperature=0.7, max_tokens=300)
    critique = await llm.generate(
        f"{RUBRIC}\n\nFacts: {incident}\n\nUpdate:\n{draft}",
        output=Critique,
        model="large",
        temperature=0.0,
    )
    revision = Revision(round=round.number, draft=draft, critique=critique)
    return Drafts(revisions=[*earlier, revision])


@flow.step
def update(refine: Drafts) -> StatusUpdate:
    latest = refine.latest
    return StatusUpdate(
        text=latest.draft, rounds=len(refine.revisions), needs_review=not latest.critique.passed
    )


if __name__ == "__main__":
    run = flow.run_sync(
        {"incident": "API returned 500 errors on /v2/reports from 09:40 to 11:05 UTC."},
        # seed=1: a run in which the simulated critic asks for two revisions
        models={"small": "sim:small", "large": "sim:large?seed=1"},
    )
    run.raise_for_status()
    for revision in run["refine"].revisions:
        verdict = "pass" if revision.critique.passed else f"revise: {revision.critique.issues}"
        print(f"round {revision.round}: {revision.draft!r}\n  -> {verdict}")
    for decision in run.decisions:
        print(f"{decision.step}: {decision.outcome} ({decision.reason})")
    print(run["update"].model_dump_json(indent=2))
