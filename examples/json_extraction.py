"""Structured extraction: typed fields out of messy records, validated, re-asked on failure.

Records (emails, invoices, driver notes, receipts) are turned into an :class:`OrderRecord`.
The Pydantic model *is* the contract:

- ``kind`` and ``order_id`` are required: the reply must contain them, ``order_id`` as
  ``null`` when the record has none. The other fields are optional and may be left out.
- ``amount >= 0`` and the currency pattern are part of the JSON schema sent to the model;
  the email check is a Python validator the schema cannot express.

``llm.generate(..., output=OrderRecord)`` parses and validates every reply. A reply that
is not JSON (*malformed*) or breaks the schema or a validator (*invalid*) is sent back to
the model with the exact error, up to ``reasks`` times (3 here, set by the step's
``RetryPolicy``). If the last re-ask still fails, the step fails with
``OutputValidationError`` holding every bad reply; every attempt is also in
``result.calls`` and counted in ``result.usage.failures``.

``review`` is plain Python on the validated record: it lists the optional fields that were
not found and flags records a person should look at.

Run it over the sample records::

    trellis run examples/json_extraction.py:flow \\
        --input-file examples/data/records.jsonl --config examples/trellis.toml

or one record: ``python examples/json_extraction.py``.
"""

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

import trellis as tl

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


class OrderRecord(BaseModel):
    kind: Literal["order", "invoice", "receipt", "shipping", "refund", "account", "other"]
    order_id: str | None = Field(
        description="order, invoice or receipt number as written; null if there is none"
    )
    name: str | None = Field(default=None, description="the customer's or company's name")
    email: str | None = None
    amount: float | None = Field(default=None, ge=0, description="total charged or due")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217")
    date: dt.date | None = Field(default=None, description="the date of the order or event")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL.fullmatch(value):
            raise ValueError(f"{value!r} is not an email address; use null if there is none")
        return value.lower() if value else value


class Extraction(BaseModel):
    record: OrderRecord
    missing: list[str]  # optional fields the record did not contain
    needs_review: bool  # no order id, or an amount without a currency


OPTIONAL_FIELDS = ("name", "email", "amount", "currency", "date")

flow = tl.Flow(
    "json-extraction",
    inputs={"text": str},
    description="Extract order fields from messy text, with validation and bounded re-asks.",
)


@flow.step(retry=tl.RetryPolicy(reasks=3, timeout=30), model="small")
async def extract(text: str, llm: tl.LLM) -> OrderRecord:
    """One LLM call; malformed or invalid replies are re-asked up to 3 times."""
    return await llm.generate(
        f"Extract the order details from this record.\n\n{text}",
        output=OrderRecord,
        system=(
            "You extract data from customer-service records. Copy identifiers exactly; "
            "write amounts as plain numbers; use ISO dates (YYYY-MM-DD) and ISO currency "
            "codes; leave out any field the record does not contain."
        ),
        temperature=0.0,
    )


@flow.step
def review(extract: OrderRecord) -> Extraction:
    missing = [f for f in OPTIONAL_FIELDS if getattr(extract, f) is None]
    unpriced = extract.amount is not None and extract.currency is None
    return Extraction(
        record=extract, missing=missing, needs_review=extract.order_id is None or unpriced
    )


if __name__ == "__main__":
    sample = (
        "hey its marcus (marcus.lee88@example.net), i was charged 2x for order #A-55902, "
        "24.50 each, on feb 9. pls refund one"
    )
    result = flow.run_sync(
        {"text": sample},
        models={"small": "sim:small?malformed_json=0.3&invalid_json=0.3", "large": "sim:large"},
    )
    print(result["review"].model_dump_json(indent=2))
    usage = result.usage
    print(f"{usage.calls} call, {usage.attempts} attempt(s), failures: {dict(usage.failures)}")
