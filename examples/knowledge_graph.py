"""Knowledge graph: two specialised LLM steps feeding one deterministic step.

Task decomposition: each node of the flow does one cognitive operation with a typed
output, and the graph of steps comes from what each step reads::

    text ──► entities ──► relationships ──► graph
      └──────────┴──────────────┘ (graph reads entities and relationships, not the text)

- ``entities`` extracts persons, organizations, locations and dates.
- ``relationships`` reads the text *and* the entities, and returns typed
  ``(subject, relation, object)`` triples between them.
- ``graph`` is plain Python, no model call: it turns entities into nodes with stable ids
  and triples into edges. A model can name an endpoint that is not one of the entities;
  such an edge is dropped and counted (``dropped_edges``) rather than silently kept, so a
  dangling reference never reaches the graph.

Run it over the sample articles::

    trellis run examples/knowledge_graph.py:flow \\
        --input-file examples/data/articles.jsonl --config examples/trellis.toml

or one article on the offline simulator with ``python examples/knowledge_graph.py``. The
simulator invents names, so on it most edges are (correctly) dropped; a real model links
the entities it was given.
"""

import re
from typing import Literal

from pydantic import BaseModel

import trellis as tl

EntityType = Literal["person", "organization", "location", "date"]


class Entities(BaseModel):
    persons: list[str]
    organizations: list[str]
    locations: list[str]
    dates: list[str]

    def typed(self) -> list[tuple[str, EntityType]]:
        """Every entity with its type, in a stable order."""
        groups: list[tuple[list[str], EntityType]] = [
            (self.persons, "person"),
            (self.organizations, "organization"),
            (self.locations, "location"),
            (self.dates, "date"),
        ]
        return [(name, kind) for names, kind in groups for name in names]


class Triple(BaseModel):
    subject: str
    relation: str
    object: str


class Relationships(BaseModel):
    triples: list[Triple]


class Node(BaseModel):
    id: str
    label: str
    type: EntityType


class Edge(BaseModel):
    source: str  # a node id
    target: str  # a node id
    type: str


class KnowledgeGraph(BaseModel):
    nodes: list[Node]
    edges: list[Edge]
    dropped_edges: int  # triples whose subject or object is not an extracted entity


flow = tl.Flow(
    "knowledge-graph",
    inputs={"text": str},
    description="Extract entities and relationships, then build a knowledge graph.",
)


@flow.step
async def entities(text: str, llm: tl.LLM) -> Entities:
    """Named entities, grouped by type."""
    return await llm.generate(
        "Extract the named entities from the text: persons, organizations, locations and "
        f"dates, each written exactly as in the text.\n\nText: {text}",
        output=Entities,
        model="small",
    )


@flow.step
async def relationships(text: str, entities: Entities, llm: tl.LLM) -> Relationships:
    """Relationships between the extracted entities, as typed triples."""
    listed = "\n".join(f"- {name} ({kind})" for name, kind in entities.typed())
    return await llm.generate(
        "Given these entities, list the relationships the text states between them as "
        "(subject, relation, object) triples. Use only the entity names listed, spelled "
        f"exactly as listed.\n\nEntities:\n{listed}\n\nText: {text}",
        output=Relationships,
        model="small",
    )


def node_id(kind: str, name: str) -> str:
    """A stable id such as ``person:amara-okonkwo``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")
    return f"{kind}:{slug}"


@flow.step
def graph(entities: Entities, relationships: Relationships) -> KnowledgeGraph:
    """Build the graph deterministically: no model call, no surprises."""
    nodes: dict[str, Node] = {}
    by_name: dict[str, str] = {}  # case-folded entity name -> node id
    for name, kind in entities.typed():
        key = name.strip().casefold()
        if not key or key in by_name:
            continue
        ident = node_id(kind, name)
        if ident in nodes:  # "A.B." and "A B" slug alike: keep both, ids stay unique
            ident = f"{ident}-{len(nodes)}"
        by_name[key] = ident
        nodes[ident] = Node(id=ident, label=name.strip(), type=kind)
    edges: list[Edge] = []
    for triple in relationships.triples:
        source = by_name.get(triple.subject.strip().casefold())
        target = by_name.get(triple.object.strip().casefold())
        if source is not None and target is not None:
            edges.append(Edge(source=source, target=target, type=triple.relation))
    return KnowledgeGraph(
        nodes=list(nodes.values()),
        edges=edges,
        dropped_edges=len(relationships.triples) - len(edges),
    )


if __name__ == "__main__":
    article = (
        "On March 14, 2024, Helix Robotics acquired Norrvik Sensors, a lidar startup based "
        "in Gothenburg. Helix chief executive Amara Okonkwo announced the deal in Austin."
    )
    result = flow.run_sync({"text": article}, models={"small": "sim:small", "large": "sim:large"})
    result.raise_for_status()
    print(result["graph"].model_dump_json(indent=2))
