"""A flow with no LLM calls: deterministic, fast, and failing on demand (CLI tests)."""

import asyncio

import trellis as tl

flow = tl.Flow("plain", inputs={"text": str, "delay_ms": int})


@flow.step
async def shout(text: str, delay_ms: int = 0) -> str:
    """Upper-case the text, after an optional delay (so items can finish out of order)."""
    await asyncio.sleep(delay_ms / 1000)
    if text == "boom":
        raise ValueError("cannot shout 'boom'")
    return text.upper()


@flow.step
def length(shout: str) -> int:
    return len(shout)
