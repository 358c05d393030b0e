"""A flow that fails in user code (the UI sample's failed run): ``parse_total`` raises
on an amount it cannot read, and the error (with its traceback, when recorded) shows on
the run page."""

from pydantic import BaseModel

import trellis as tl


class Extracted(BaseModel):
    vendor: str
    total: str


flow = tl.Flow("invoice-check", inputs={"invoice": str})


@flow.step
async def extract(invoice: str, llm: tl.LLM) -> Extracted:
    return await llm.generate(f"Extract the vendor and total of: {invoice}", output=Extracted)


@flow.step
def parse_total(extract: Extracted) -> float:
    """Read the total as a number: raises on a total written in words."""
    return float(extract.total.replace("$", "").replace(",", ""))


@flow.step
def approve_payment(parse_total: float) -> str:
    return "auto-approved" if parse_total < 1000 else "needs review"
