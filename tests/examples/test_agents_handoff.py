"""examples/agents_handoff.py: triage hands each conversation to exactly one specialist."""

from __future__ import annotations

import asyncio
import json
from types import ModuleType
from typing import Any

import pytest

import trellis as tl

from .conftest import EXAMPLES_DIR, load_example, read_jsonl

SECRET = "ACCOUNT-TEAM-ONLY: churn risk, offer 20% off at renewal"
SPECIALISTS = ("billing", "technical", "general")
TOOLSETS = {  # the tools a request offers -> the specialist that sent it
    frozenset({"lookup_invoices", "issue_refund"}): "billing",
    frozenset({"check_service_status", "search_kb"}): "technical",
    frozenset({"search_kb"}): "general",
}
CONVERSATION = [
    {"role": "customer", "text": "We were charged twice for the Team plan on March 1st."},
    {"role": "agent", "text": "Sorry about that, let me look."},
]


@pytest.fixture(scope="module")
def handoff() -> ModuleType:
    return load_example("agents_handoff")


@pytest.fixture(scope="module")
def sim_results(handoff: ModuleType) -> list[tl.RunResult]:
    """One pass over the sample conversations on the simulator."""
    items = read_jsonl(EXAMPLES_DIR / "data" / "support_conversations.jsonl")

    async def run_all() -> list[tl.RunResult]:
        results: dict[int, tl.RunResult] = {}
        async with tl.Engine(models={"small": "sim:small?seed=8"}) as engine:
            async for index, result in engine.run_many(handoff.flow, items, concurrency=12):
                results[index] = result
        return [results[i] for i in range(len(items))]

    return asyncio.run(run_all())


def _calls(*calls: tuple[str, dict[str, Any]], turn: int) -> tl.ModelResponse:
    return tl.ModelResponse(
        text="",
        usage=tl.Usage(80, 12),
        finish_reason="tool_calls",
        tool_calls=tuple(
            tl.ToolCall(f"t{turn}_{n}", name, json.dumps(args))
            for n, (name, args) in enumerate(calls)
        ),
    )


class Script:
    """Triage routes to ``department`` with private notes; the specialist plays ``turns``
    (tool-call rounds), then resolves. Every specialist request is kept."""

    def __init__(self, department: str, turns: list[list[tuple[str, dict[str, Any]]]]) -> None:
        self.department = department
        self.turns = turns
        self.specialist_requests: list[tuple[str, tl.ModelRequest]] = []
        self.model = tl.FunctionModel(self.reply)

    def reply(self, request: tl.ModelRequest) -> Any:
        if not request.tools:
            assert request.schema_name == "Triage"
            return {"department": self.department, "summary": "s", "internal_notes": SECRET}
        who = TOOLSETS[frozenset(t.name for t in request.tools)]
        self.specialist_requests.append((who, request))
        turn = sum(1 for m in request.messages if m.role == "assistant" and m.tool_calls)
        if turn < len(self.turns):
            return _calls(*self.turns[turn], turn=turn)
        return {"reply": f"{who} here, sorted.", "actions": ["checked"], "resolved": True}


async def _run(handoff: ModuleType, script: Script, customer_id: str = "C-1001") -> tl.RunResult:
    async with tl.Engine(models={"small": script.model}) as engine:
        return await engine.run(
            handoff.flow, {"customer_id": customer_id, "conversation": CONVERSATION}
        )


def test_specialists_declare_only_the_context_they_need(handoff: ModuleType) -> None:
    steps = handoff.flow.steps
    assert [p.name for p in steps["billing"].params] == ["customer_id", "conversation"]
    assert [p.name for p in steps["technical"].params] == ["conversation"]
    assert [p.name for p in steps["general"].params] == ["conversation"]
    for name in SPECIALISTS:
        assert "triage" not in steps[name].reads
        assert steps[name].when.router == "route"
        assert steps[name].when.labels == (name,)


def test_exactly_one_specialist_per_conversation_on_the_simulator(
    sim_results: list[tl.RunResult],
) -> None:
    assert len(sim_results) == 12
    for result in sim_results:
        assert result.ok, result.error
        route = result["route"]
        assert route == result["triage"].department == result["case"].handled_by
        ran = [s for s in SPECIALISTS if result.steps[s].status == "done"]
        assert ran == [route]
        assert all(result.steps[s].status == "skipped" for s in SPECIALISTS if s != route)
        # the handoff is recorded as a routing decision, with the value it was made on
        branches = {d.step: d for d in result.decisions if d.kind == "branch"}
        assert set(branches) == set(SPECIALISTS)
        for name, decision in branches.items():
            assert decision.values == {"route": route}
            assert decision.outcome == ("run" if name == route else "skip")
        # only the specialist that ran has a transcript, and it used only its own tools
        turns = result.steps[route].turns
        assert turns and not turns[-1]["tool_calls"]  # the last turn is the final answer
        offered = next(tools for tools, who in TOOLSETS.items() if who == route)
        assert {c["name"] for t in turns for c in t["tool_calls"]} <= offered
        assert all(not result.steps[s].turns for s in SPECIALISTS if s != route)
    routes = [r["route"] for r in sim_results]
    assert set(routes) == set(SPECIALISTS)  # the sample exercises every route


@pytest.mark.parametrize("department", SPECIALISTS)
async def test_the_specialist_never_sees_the_triage_notes(
    handoff: ModuleType, department: str
) -> None:
    script = Script(department, turns=[])
    result = await _run(handoff, script)
    result.raise_for_status()
    assert {who for who, _ in script.specialist_requests} == {department}
    for _, request in script.specialist_requests:
        prompt = request.prompt_text()
        assert SECRET not in prompt
        assert "charged twice for the Team plan" in prompt
    assert result["case"].internal_notes == SECRET  # the case file, and only it, has them
    assert result["case"].reply == f"{department} here, sorted."


async def test_refunds_are_validated_and_scoped_to_the_customer(
    handoff: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    refunds: list[Any] = []
    monkeypatch.setattr(handoff, "REFUNDS", refunds)
    script = Script(
        "billing",
        turns=[
            [("lookup_invoices", {})],
            [("issue_refund", {"invoice_id": "INV-3102", "amount": 216.0, "reason": "dup"})],
            [
                ("issue_refund", {"invoice_id": "INV-3045", "amount": 50.0, "reason": "x"}),
                ("issue_refund", {"invoice_id": "INV-3102", "amount": 100.0, "reason": "dup"}),
            ],
        ],
    )
    result = await _run(handoff, script, customer_id="C-1001")
    result.raise_for_status()

    # only the valid refund, of this customer's invoice, was issued
    assert refunds == [
        handoff.Refund(customer_id="C-1001", invoice_id="INV-3102", amount=100.0, reason="dup")
    ]
    turns = result.steps["billing"].turns
    assert [len(t["tool_calls"]) for t in turns] == [1, 1, 2, 0]
    [lookup] = turns[0]["tool_calls"]
    assert "INV-3101" in lookup["result"] and "INV-3045" not in lookup["result"]
    [over_limit] = turns[1]["tool_calls"]
    assert "result" not in over_limit  # never executed
    assert "amount" in over_limit["error"] and "not run" in over_limit["error"]
    other_customer, ok = turns[2]["tool_calls"]
    assert other_customer["result"].startswith("no paid invoice 'INV-3045'")
    assert ok["result"] == "refunded $100.00 of invoice INV-3102"
    # the model was told why the over-limit call failed
    _, third = script.specialist_requests[2]
    [answer] = [m.content for m in third.messages if m.tool_call_id == "t1_0"]
    assert "less than or equal to 100" in answer


def test_billing_tools_guard_the_account(
    handoff: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "REFUNDS", [])
    lookup, refund = handoff.billing_tools("C-1007")
    assert [i.id for i in lookup.fn()] == ["INV-3110", "INV-3111"]
    assert refund.spec.parameters["properties"]["amount"]["maximum"] == handoff.REFUND_LIMIT
    with pytest.raises(tl.ToolArgumentsError, match="amount"):
        refund.validate('{"invoice_id": "INV-3111", "amount": 144, "reason": "all of it"}')
    args = refund.validate('{"invoice_id": "INV-3110", "amount": 40, "reason": "cancelled"}')
    assert refund.fn(**args) == "refunded $40.00 of invoice INV-3110"
    assert refund.fn(**args) == "cannot refund $40.00: $9.00 of INV-3110 is refundable"
    assert refund.fn(invoice_id="INV-3101", amount=5.0, reason="x").startswith("no paid invoice")
    assert len(handoff.REFUNDS) == 1
