"""Orchestrator–workers: a planner splits a request, tool-using workers answer in parallel.

One research request goes through:

    plan ──► subtasks ──► research (one agent per subtask, in parallel) ──► synthesize
    request ─────────────────────────────────────────────────────────────────────┘

1. ``plan`` (LLM, role ``large``): a typed :class:`Plan`, i.e. 2–5 independent subtasks and
   the planner's own notes on its approach.
2. ``subtasks`` (plain Python) projects the list out of the plan.
3. ``research`` runs once per subtask (``map_over="subtasks"``), concurrently, at most
   ``concurrency=4`` step executions at a time. Each element is a tool-calling agent
   (``llm.agent``) with two plain, deterministic Python tools over the team's notes:
   ``search_notes`` and ``calculate``. The model's tool arguments are validated against
   each function's signature before it runs: an invalid call goes back to the model as an
   error and is never executed. The output is the list of findings in subtask order.
4. ``synthesize`` (LLM, role ``large``) reads the request and the findings, and nothing
   else: not the planner's notes, not the agents' transcripts.

Every agent turn (model reply, tool calls with their arguments and results, tokens, cost)
is kept in ``result.steps["research"].turns``; ``max_turns`` bounds each agent and the
flow's ``tl.Budget(max_turns=...)`` bounds all of them together.

Run it over the sample requests::

    trellis run examples/agents_orchestrator.py:flow \\
        --input-file examples/data/research_requests.jsonl --config examples/trellis.toml

or one request on the offline simulator: ``python examples/agents_orchestrator.py``.
"""

import ast
import operator
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, Field

import trellis as tl


class Subtask(BaseModel):
    title: str
    question: str  # self-contained: a worker sees only this, not the whole request


class Plan(BaseModel):
    approach: str  # the planner's notes; no other step reads them
    subtasks: list[Subtask] = Field(min_length=2, max_length=5)


class WorkerAnswer(BaseModel):
    answer: str
    sources: list[str]  # ids of the notes the answer rests on


class Finding(BaseModel):
    subtask: str
    answer: str
    sources: list[str]


class Report(BaseModel):
    summary: str
    key_points: list[str]


class Note(BaseModel):
    id: str
    title: str
    text: str


#: The team's research notes: a stand-in for a search index or a wiki.
NOTES: list[Note] = [
    Note(
        id="N1",
        title="Pricing: Team plan",
        text="The Team plan costs $12 per seat per month; the average team has 18 seats.",
    ),
    Note(
        id="N2",
        title="Customers by plan",
        text="We have 4,200 paying Team accounts and 310 Enterprise accounts.",
    ),
    Note(
        id="N3",
        title="Churn",
        text="Monthly logo churn is 2.1% on Team and 0.6% on Enterprise.",
    ),
    Note(
        id="N4",
        title="Price sensitivity survey",
        text="In the 2024 survey, 22% of Team admins said a price rise above 15% would make "
        "them evaluate alternatives.",
    ),
    Note(
        id="N5",
        title="Competitor pricing",
        text="Northwind charges $15 per seat; Fabrikam charges $10 per seat but has no SSO.",
    ),
    Note(
        id="N6",
        title="Support volume",
        text="Support handles about 3,400 tickets a month; 38% are billing questions.",
    ),
    Note(
        id="N7",
        title="Infrastructure cost",
        text="Hosting costs $1.40 per seat per month, flat across plans.",
    ),
    Note(
        id="N8",
        title="SSO adoption",
        text="61% of Enterprise accounts and 9% of Team accounts have enabled SSO.",
    ),
]

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def search_notes(query: str, limit: Annotated[int, Field(ge=1, le=5)] = 3) -> list[Note] | str:
    """Search the team's research notes by keywords.

    Args:
        query: keywords to look for, e.g. "team plan price"
        limit: the most notes to return
    """
    wanted = _words(query)
    scored = [(len(wanted & _words(f"{n.title} {n.text}")), n) for n in NOTES]
    hits = [n for score, n in sorted(scored, key=lambda s: -s[0]) if score > 0]
    return hits[:limit] or f"no notes match {query!r}"


_OPERATORS: dict[type[ast.AST], Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers, + - * / and parentheses are allowed")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (never do arithmetic in your head).

    Args:
        expression: numbers with + - * / and parentheses, e.g. "4200 * 18 * 12"
    """
    # A bad expression is reported back as text: the model can correct it, and it does not
    # use up the tool's failure budget (a tool that *raises* does: tl.tool(retries=...)).
    try:
        return f"{expression} = {_evaluate(ast.parse(expression, mode='eval').body):,.2f}"
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"cannot evaluate {expression!r}: {exc}"


flow = tl.Flow(
    "agents-orchestrator",
    inputs={"request": str},
    concurrency=4,  # at most four step executions (here: worker agents) at once
    budget=tl.Budget(max_turns=40),  # all agents' model turns in one run, together
    description="Plan a research request, answer each subtask with a tool-using agent, "
    "then synthesize.",
)


@flow.step
async def plan(request: str, llm: tl.LLM) -> Plan:
    """The orchestrator: split the request into independent, self-contained subtasks."""
    return await llm.generate(
        "Split this research request into 2 to 5 independent subtasks that can be answered "
        "separately from our internal notes. Make each question self-contained: the person "
        "answering it will not see the original request.\n\n"
        f"Request: {request}",
        output=Plan,
        model="large",
        temperature=0.2,
    )


@flow.step
def subtasks(plan: Plan) -> list[Subtask]:
    return plan.subtasks


@flow.step(map_over="subtasks")
async def research(subtasks: Subtask, llm: tl.LLM) -> Finding:
    """A worker: one agent per subtask (``subtasks`` is one element of the plan's list)."""
    answer = await llm.agent(
        f"Answer this question from our research notes: {subtasks.question}",
        system="You are a research analyst. Look facts up with search_notes and do every "
        "calculation with calculate. Cite the ids of the notes you used.",
        tools=[search_notes, calculate],
        output=WorkerAnswer,
        model="small",
        max_turns=6,
    )
    return Finding(subtask=subtasks.title, answer=answer.answer, sources=answer.sources)


@flow.step
async def synthesize(request: str, research: list[Finding], llm: tl.LLM) -> Report:
    """Combine the workers' findings, in plan order, into one answer to the request."""
    findings = "\n".join(
        f"{n}. {f.subtask}: {f.answer} (sources: {', '.join(f.sources) or 'none'})"
        for n, f in enumerate(research, 1)
    )
    return await llm.generate(
        "Answer the research request using only these findings. Say where they are "
        f"incomplete.\n\nRequest: {request}\n\nFindings:\n{findings}",
        output=Report,
        model="large",
    )


if __name__ == "__main__":
    run = flow.run_sync(
        {"request": "What would raising the Team plan price to $14 per seat do to revenue?"},
        models={"small": "sim:small", "large": "sim:large"},
    )
    run.raise_for_status()
    for finding in run["research"]:
        print(f"- {finding.subtask}: {finding.answer}")
    print(run["synthesize"].model_dump_json(indent=2))
    for turn in sorted(run.steps["research"].turns, key=lambda t: (t["index"], t["turn"])):
        calls = ", ".join(f"{c['name']}({c['arguments']})" for c in turn["tool_calls"])
        print(f"worker {turn['index']} turn {turn['turn']}: {calls or 'final answer'}")
    print(f"{run.usage.calls} model calls, ${run.usage.cost_usd:.6f}")
