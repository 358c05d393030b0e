"""Handoff: a triage step hands each conversation to exactly one specialist agent.

::

    triage ──► route ──► billing   (agent: lookup_invoices, issue_refund)  ─┐
                    ├──► technical (agent: check_service_status, search_kb) ├──► case
                    └──► general   (agent: search_kb)                      ─┘

1. ``triage`` (LLM) reads the conversation and returns a typed :class:`Triage`: the
   department, a summary, and internal notes for the account team (churn risk, tone).
2. ``route`` (plain Python) returns the department as a ``Literal``. Each specialist is
   declared with ``when=tl.branch("route", ...)``, so exactly one of them runs; the others
   are skipped. The handoff is recorded in ``result.decisions`` like any routing decision,
   with the value it was made on.
3. The specialists are tool-calling agents (``llm.agent``). A step reads only what its
   parameters name: a specialist gets the customer id and the conversation, never the
   triage's internal notes. Its tools are scoped the same way: ``billing_tools`` binds
   them to the customer, so the billing agent cannot see or refund anyone else's
   invoices. ``issue_refund`` declares ``amount`` as ``0 < amount <= REFUND_LIMIT``: a call
   over the limit fails validation, goes back to the model as an error and never runs.
   (Refunds that need more go to a person: see ``examples/approval.py``.)
4. ``case`` (plain Python) files the outcome: the specialist's reply and actions, and the
   triage's internal notes, which only the case file gets.

Run it over the sample conversations::

    trellis run examples/agents_handoff.py:flow \\
        --input-file examples/data/support_conversations.jsonl --config examples/trellis.toml

or one conversation on the offline simulator: ``python examples/agents_handoff.py``.
"""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field

import trellis as tl

Department = Literal["billing", "technical", "general"]

#: The most a billing agent may refund on its own, in USD.
REFUND_LIMIT = 100.0


class ChatMessage(BaseModel):
    role: Literal["customer", "agent"]
    text: str


class Triage(BaseModel):
    department: Department
    summary: str
    internal_notes: str  # for the account team only; never handed to a specialist


class Resolution(BaseModel):
    reply: str  # the message to send the customer
    actions: list[str]  # what the specialist did
    resolved: bool


class Case(BaseModel):
    customer_id: str
    handled_by: Department
    reply: str
    actions: list[str]
    resolved: bool
    internal_notes: str


# -- a stand-in for the billing system, the status page and the knowledge base ---------------


class Invoice(BaseModel):
    id: str
    month: str
    amount: float
    status: Literal["paid", "open"]


class Refund(BaseModel):
    customer_id: str
    invoice_id: str
    amount: float
    reason: str


INVOICES: dict[str, list[Invoice]] = {
    "C-1001": [
        Invoice(id="INV-3101", month="2025-03", amount=216.0, status="paid"),
        Invoice(id="INV-3102", month="2025-03", amount=216.0, status="paid"),
    ],
    "C-1004": [
        Invoice(id="INV-2977", month="2025-01", amount=240.0, status="paid"),
        Invoice(id="INV-3045", month="2025-02", amount=300.0, status="paid"),
    ],
    "C-1007": [
        Invoice(id="INV-3110", month="2025-03", amount=49.0, status="paid"),
        Invoice(id="INV-3111", month="2025-03", amount=144.0, status="paid"),
    ],
    "C-1010": [
        Invoice(id="INV-3020", month="2025-02", amount=96.0, status="paid"),
        Invoice(id="INV-3120", month="2025-03", amount=96.0, status="open"),
    ],
}
REFUNDS: list[Refund] = []  # refunds issued, in order

SERVICE_STATUS: dict[str, str] = {
    "api": "degraded: elevated 500 errors on /v2/reports since 09:40 UTC, fix rolling out",
    "dashboard": "operational",
    "sso": "operational",
    "webhooks": "delayed: deliveries are queued up to 3 hours behind",
    "exports": "operational",
}
Service = Literal["api", "dashboard", "sso", "webhooks", "exports"]

KB: dict[str, str] = {
    "KB-101 Inviting teammates": "Admins invite people from Settings > Members > Invite.",
    "KB-114 SSO 'invalid assertion'": "Usually an expired IdP certificate: upload the new "
    "certificate under Settings > Security > SSO.",
    "KB-130 Webhook retries": "Failed deliveries are retried with backoff for 24 hours.",
    "KB-152 PDF export": "Boards over 200 cards export in the background; large exports "
    "are emailed when ready.",
    "KB-201 GDPR and the DPA": "Our DPA is signed online at example.com/legal/dpa.",
    "KB-210 Non-profit pricing": "Registered non-profits get 50% off Team; apply via support.",
    "KB-220 Onboarding sessions": "Free live onboarding for teams of 5 or more, booked online.",
}


def billing_tools(customer_id: str) -> list[tl.Tool]:
    """The billing agent's tools, bound to one customer's account."""
    invoices = {invoice.id: invoice for invoice in INVOICES.get(customer_id, [])}

    @tl.tool
    def lookup_invoices() -> list[Invoice]:
        """List the customer's recent invoices (id, month, amount in USD, status)."""
        return list(invoices.values())

    @tl.tool
    def issue_refund(
        invoice_id: str,
        amount: Annotated[float, Field(gt=0, le=REFUND_LIMIT)],
        reason: str,
    ) -> str:
        """Refund part or all of one of the customer's paid invoices.

        Args:
            invoice_id: the invoice, e.g. "INV-3101"
            amount: USD to refund; more than the limit needs a person's approval
            reason: why, in a few words
        """
        invoice = invoices.get(invoice_id)
        if invoice is None or invoice.status != "paid":
            return f"no paid invoice {invoice_id!r} on this account; see lookup_invoices"
        left = invoice.amount - sum(r.amount for r in REFUNDS if r.invoice_id == invoice_id)
        if amount > left:
            return f"cannot refund ${amount:.2f}: ${left:.2f} of {invoice_id} is refundable"
        REFUNDS.append(
            Refund(customer_id=customer_id, invoice_id=invoice_id, amount=amount, reason=reason)
        )
        return f"refunded ${amount:.2f} of invoice {invoice_id}"

    return [lookup_invoices, issue_refund]


@tl.tool
def check_service_status(service: Service) -> str:
    """The current status of one of our services, from the status page."""
    return f"{service}: {SERVICE_STATUS[service]}"


@tl.tool
def search_kb(query: str) -> str:
    """Search the help-centre articles.

    Args:
        query: keywords, e.g. "sso assertion"
    """
    words = set(re.findall(r"[a-z]{3,}", query.lower()))
    hits = [
        f"{title}: {text}"
        for title, text in KB.items()
        if words & set(re.findall(r"[a-z]{3,}", f"{title} {text}".lower()))
    ]
    return "\n".join(hits[:3]) or f"no article matches {query!r}"


# -- the flow -------------------------------------------------------------------------------


def _transcript(conversation: list[ChatMessage]) -> str:
    return "\n".join(f"{m.role}: {m.text}" for m in conversation)


flow = tl.Flow(
    "agents-handoff",
    inputs={"customer_id": str, "conversation": list[ChatMessage]},
    description="Triage a support conversation and hand it to one specialist agent.",
)


@flow.step
async def triage(conversation: list[ChatMessage], llm: tl.LLM) -> Triage:
    return await llm.generate(
        "Triage this support conversation. department: billing (charges, invoices, "
        "refunds), technical (outages, errors, bugs) or general (anything else). Add a "
        "one-line summary, and internal notes for the account team (churn risk, tone).\n\n"
        f"{_transcript(conversation)}",
        output=Triage,
        model="small",
    )


@flow.step
def route(triage: Triage) -> Department:
    return triage.department


@flow.step(when=tl.branch("route", "billing"))
async def billing(customer_id: str, conversation: list[ChatMessage], llm: tl.LLM) -> Resolution:
    return await llm.agent(
        f"Customer {customer_id}:\n\n{_transcript(conversation)}",
        system="You are a billing specialist. Check the invoices before you act. Refund "
        f"duplicate or wrong charges up to ${REFUND_LIMIT:.0f}; for more, tell the customer "
        "a colleague will approve it.",
        tools=billing_tools(customer_id),
        output=Resolution,
        model="small",
        max_turns=6,
    )


@flow.step(when=tl.branch("route", "technical"))
async def technical(conversation: list[ChatMessage], llm: tl.LLM) -> Resolution:
    return await llm.agent(
        _transcript(conversation),
        system="You are a support engineer. Check the status of the affected service, "
        "look for a help-centre article, and give the customer concrete next steps.",
        tools=[check_service_status, search_kb],
        output=Resolution,
        model="small",
        max_turns=6,
    )


@flow.step(when=tl.branch("route", "general"))
async def general(conversation: list[ChatMessage], llm: tl.LLM) -> Resolution:
    return await llm.agent(
        _transcript(conversation),
        system="You are a friendly support agent. Answer from the help centre.",
        tools=[search_kb],
        output=Resolution,
        model="small",
        max_turns=4,
    )


@flow.step
def case(
    customer_id: str,
    triage: Triage,
    billing: Resolution | None,
    technical: Resolution | None,
    general: Resolution | None,
) -> Case:
    """File the outcome; the two specialists that were skipped arrive as ``None``."""
    handled_by = triage.department
    resolution = {"billing": billing, "technical": technical, "general": general}[handled_by]
    assert resolution is not None, "tl.branch ran the routed specialist"
    return Case(
        customer_id=customer_id,
        handled_by=handled_by,
        reply=resolution.reply,
        actions=resolution.actions,
        resolved=resolution.resolved,
        internal_notes=triage.internal_notes,
    )


if __name__ == "__main__":
    complaint = "I was charged twice for our Team plan this month. Please refund the duplicate."
    conversation = [
        {"role": "customer", "text": complaint},
        {"role": "agent", "text": "Sorry about that, let me check your invoices."},
    ]
    run = flow.run_sync(
        {"customer_id": "C-1001", "conversation": conversation},
        models={"small": "sim:small", "large": "sim:large"},
    )
    run.raise_for_status()
    print(run["case"].model_dump_json(indent=2))
    for decision in run.decisions:  # the handoff: one branch runs, the others are skipped
        print(f"{decision.step}: {decision.outcome} ({decision.reason})")
    specialist = run["case"].handled_by
    for turn in run.steps[specialist].turns:
        calls = ", ".join(f"{c['name']}({c['arguments']})" for c in turn["tool_calls"])
        print(f"{specialist} turn {turn['turn']}: {calls or 'final answer'}")
    print(f"refunds issued: {REFUNDS}")
