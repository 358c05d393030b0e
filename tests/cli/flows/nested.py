"""A flow with a mapped sub-flow step, for ``trellis show`` of nested runs: each item of
``items`` is titled (an LLM step) and measured by the ``titled`` flow, as a child run."""

import trellis as tl

titled = tl.Flow("titled", inputs={"item": str})


@titled.step
async def title(item: str, llm: tl.LLM) -> str:
    return str(await llm.generate(f"A title about {item}", model="small"))


@titled.step
def size(title: str) -> int:
    return len(title)


flow = tl.Flow("nested", inputs={"items": list[str]})

flow.subflow(titled, name="per_item", inputs={"item": "items"}, map_over="items")


@flow.step
def total(per_item: list[int]) -> int:
    return sum(per_item)
