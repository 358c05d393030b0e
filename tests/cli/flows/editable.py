"""A two-step flow that tests copy and edit: ``first`` calls the model, ``second`` fails
while a file named ``fail-second`` exists in the working directory."""

from pathlib import Path

import trellis as tl

flow = tl.Flow("editable", inputs={"text": str})


@flow.step
async def first(text: str, llm: tl.LLM) -> str:
    return await llm.generate(f"Summarise: {text}", model="small")


@flow.step
def second(first: str) -> int:
    if Path("fail-second").exists():
        raise RuntimeError("asked to fail")
    return len(first)
