"""Research and write: each step sees the state it declares, and nothing else.

An article pipeline keeps intermediate results, but not every step should see all of
them. Each step's parameters *are* its context: the engine passes exactly the values
they name, and the flow's graph is built from them::

    research(topic)                       ─┐
    keywords(topic, research)              ├─ intermediate state
    outline(topic, research, keywords)    ─┘
    write(outline, research)              ◄── no keywords, no topic

- ``research`` gathers findings on the topic.
- ``keywords`` is an intermediate step: search terms and angles that shape the outline.
- ``outline`` reads the topic, the research and the keywords.
- ``write`` reads only the outline and the research. The keywords (and the topic)
  reached it only through the outline, so the draft is written from the plan, not from
  every scrap of intermediate state, which keeps its prompt, and its cost, small.

Run it over the sample topics::

    trellis run examples/research_writer.py:flow \\
        --input-file examples/data/topics.jsonl --config examples/trellis.toml

or one topic on the offline simulator with ``python examples/research_writer.py``.
"""

from pydantic import BaseModel

import trellis as tl


class Finding(BaseModel):
    claim: str
    evidence: str


class Research(BaseModel):
    findings: list[Finding]


class Keywords(BaseModel):
    keywords: list[str]
    angle: str


class Section(BaseModel):
    heading: str
    points: list[str]


class Outline(BaseModel):
    title: str
    sections: list[Section]


class Article(BaseModel):
    title: str
    body: str


flow = tl.Flow(
    "research-writer",
    inputs={"topic": str},
    description="Research a topic, outline an article, then write it.",
)


@flow.step
async def research(topic: str, llm: tl.LLM) -> Research:
    """Findings on the topic, each with its evidence."""
    return await llm.generate(
        f"List the most important findings on this topic, each with its evidence.\n\n"
        f"Topic: {topic}",
        output=Research,
        model="small",
    )


@flow.step
async def keywords(topic: str, research: Research, llm: tl.LLM) -> Keywords:
    """Search keywords and an editorial angle, used to shape the outline."""
    claims = "\n".join(f"- {f.claim}" for f in research.findings)
    return await llm.generate(
        f"Suggest search keywords and one editorial angle for an article on: {topic}\n"
        f"Findings:\n{claims}",
        output=Keywords,
        model="small",
    )


@flow.step
async def outline(topic: str, research: Research, keywords: Keywords, llm: tl.LLM) -> Outline:
    """An article outline built on the research, with the chosen angle."""
    claims = "\n".join(f"- {f.claim}" for f in research.findings)
    return await llm.generate(
        f"Outline an article on: {topic}\nAngle: {keywords.angle}\n"
        f"Keywords: {', '.join(keywords.keywords)}\nFindings:\n{claims}",
        output=Outline,
        model="small",
    )


@flow.step
async def write(outline: Outline, research: Research, llm: tl.LLM) -> Article:
    """The article, written from the outline and the research only."""
    plan = "\n".join(
        f"## {s.heading}\n" + "\n".join(f"- {p}" for p in s.points) for s in outline.sections
    )
    evidence = "\n".join(f"- {f.claim}: {f.evidence}" for f in research.findings)
    return await llm.generate(
        f"Write the article '{outline.title}' following this outline, using the "
        f"evidence where it supports a point.\n\n{plan}\n\nEvidence:\n{evidence}",
        output=Article,
        model="large",
        temperature=0.7,
    )


if __name__ == "__main__":
    result = flow.run_sync(
        {"topic": "How small businesses can adopt AI tools without a data team"},
        models={"small": "sim:small", "large": "sim:large"},
    )
    result.raise_for_status()
    print(result["write"].model_dump_json(indent=2))
