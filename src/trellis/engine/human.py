"""Human in the loop: a step that waits for a person without holding anything in memory.

``human.ask`` looks in the run's journal for an answer to this question (keyed like an LLM
call: step, element, round, attempt, order). With none, it raises :class:`WaitingForInput`;
the runner marks the step ``waiting`` with the question (prompt, JSON schema, details),
steps that depend on it stay pending, independent ones run on, and the run ends with
status ``waiting``. :meth:`Engine.reply` records an answer and resumes the run; ``ask``
then validates it against ``output``. An invalid answer is discarded and the step waits
again, with the validation error in its question for the caller to report.

**Inside a sub-flow** the child run waits (recorded with status ``waiting``) and so does
the parent's sub-flow step: its question (:func:`subflow_question`) lists every question
waiting below it, each addressed by its *step path* from the parent run
(``review/approve``, ``reviews[2]/approve``; deeper sub-flows add segments). A path is the
child run's id (``<run>/<step>[i]``) relative to the parent, plus the waiting step, so the
parent's run id with the path and a child's run id with its step name address the same
question (:func:`find_question` accepts both). An answer is written into the child's
journal and the *parent* is resumed: it re-enters the sub-flow step, whose child restores
its completed steps and calls and asks again, now with the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from trellis.engine.journal import record_from_row
from trellis.engine.results import RunResult, jsonable
from trellis.engine.scope import StepScope
from trellis.errors import ConfigurationError, InputError, StoreError
from trellis.flow.inject import Human
from trellis.flow.types import describe
from trellis.store.base import RunRow, Store

__all__ = [
    "REPLY",
    "EngineHuman",
    "Question",
    "WaitingForInput",
    "find_question",
    "leaf_questions",
    "subflow_question",
    "top_of",
]

T = TypeVar("T")

#: The request tag of a recorded answer; a discarded answer is overwritten with another.
REPLY = "human-reply"
_DISCARDED = "human-reply-discarded"


class WaitingForInput(BaseException):
    """Raised through the step's code to park it; never seen by users' ``except Exception``."""

    def __init__(self, question: dict[str, Any]) -> None:
        super().__init__(question.get("prompt", ""))
        self.question = question


class EngineHuman(Human):
    __slots__ = ("_scope",)

    def __init__(self, scope: StepScope) -> None:
        self._scope = scope

    async def ask(self, prompt: str, *, output: type[T], details: Any = None) -> T:
        scope = self._scope
        journal = scope.run.journal
        if journal is None:
            raise ConfigurationError(
                f"step {scope.record.name!r} waits for a person, which needs a recorded run: "
                "create the engine with store=... (the CLI records runs by default)"
            )
        key = scope.journal_key() + "|human"
        adapter: TypeAdapter[T] = TypeAdapter(output)
        question: dict[str, Any] = {
            "key": key,
            "prompt": prompt,
            "type": describe(output),
            "schema": adapter.json_schema(),
            "details": jsonable(details),
            "index": scope.index,
            "round": scope.round,
        }
        answer = journal.lookup(key, REPLY, Any)
        if answer is not None:
            try:
                return adapter.validate_python(answer.value)
            except ValidationError as exc:
                journal.save_call(key, _DISCARDED, answer.value, [])
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                    for e in exc.errors(include_url=False)[:5]
                )
                question["error"] = f"the answer is not a valid {describe(output)}: {problems}"
        raise WaitingForInput(question)


# -- questions inside sub-flows ------------------------------------------------------------


def leaf_questions(
    step: str, question: Mapping[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The questions a waiting step stands for, each with its step path: the step's own
    (``(step, question)``), or for a sub-flow step every question waiting inside it."""
    if not question:
        return []
    nested = question.get("subflow")
    if isinstance(nested, list):
        return [(str(q.get("path")), dict(q)) for q in nested if isinstance(q, dict)]
    return [(step, dict(question))]


def subflow_question(step: str, children: Iterable[RunResult]) -> dict[str, Any]:
    """The question of sub-flow step ``step`` whose children wait: every leaf question
    waiting in them (deeper sub-flows flattened), with its path from the parent run, the
    run that asks it and the step there."""
    nested: list[dict[str, Any]] = []
    for child in children:
        if child.status != "waiting":
            continue
        prefix = step + child.run_id.rpartition("/" + step)[2]  # "step" or "step[i]"
        for name, record in child.steps.items():
            if record.status != "waiting":
                continue
            for path, leaf in leaf_questions(name, record.question):
                owner = leaf.get("run_id", child.run_id)
                inner = leaf.get("step", name)
                nested.append({**leaf, "path": f"{prefix}/{path}", "run_id": owner, "step": inner})
    first = nested[0]["prompt"] if nested else ""
    more = f" (and {len(nested) - 1} more)" if len(nested) > 1 else ""
    return {
        "prompt": f"inside sub-flow step {step!r}: {first}{more}",
        "type": "sub-flow",
        "subflow": nested,
    }


@dataclass(frozen=True, slots=True)
class Question:
    """A waiting question, found by its address: ``run_id`` (the top-level run, which a
    reply resumes) and ``path`` from it; ``owner`` / ``step``: the run whose step asks it
    (``owner == run_id`` for a question of the run's own step)."""

    run_id: str
    path: str
    owner: str
    step: str
    question: dict[str, Any]


def _parent_of(row: RunRow) -> str | None:
    """The parent run of a sub-flow's child run row (``None``: not a sub-flow child)."""
    if row.parent_id is None or not row.meta:
        return None
    try:
        meta = json.loads(row.meta)
    except json.JSONDecodeError:
        return None
    if isinstance(meta, dict) and isinstance(meta.get("subflow"), dict):
        return str(row.parent_id)
    return None


def top_of(store: Store, run_id: str, step: str) -> tuple[str, str]:
    """``(top-level run id, step path)`` of the address ``run_id`` + ``step``: a sub-flow's
    child run (``<run>/reviews[2]`` with ``approve``) is re-addressed from its parent
    (``<run>`` with ``reviews[2]/approve``), up to the run that is not a sub-flow's."""
    row = store.get_run(run_id)
    while row is not None:
        parent = _parent_of(row)
        if parent is None or not row.run_id.startswith(parent + "/"):
            break
        step = f"{row.run_id[len(parent) + 1 :]}/{step}"
        row = store.get_run(parent)
    return (row.run_id if row is not None else run_id), step


def find_question(store: Store, run_id: str, step: str) -> Question:
    """The question waiting at ``step`` (a step name or a path into sub-flows) of run
    ``run_id`` (or of a sub-flow's child run). :class:`InputError` says what waits when
    nothing does there."""
    run_id, path = top_of(store, run_id, step)
    row = store.get_run(run_id)
    if row is None:
        raise InputError(f"no run {run_id!r} in the store {store.url}")
    if row.status != "waiting":
        raise InputError(f"run {run_id!r} is {row.status}, not waiting for input")
    waiting: dict[str, dict[str, Any]] = {}
    for srow in store.load_steps(run_id):
        if srow.status == "waiting":
            for where, leaf in leaf_questions(srow.step, record_from_row(srow).question):
                waiting[where] = leaf
    question = waiting.get(path)
    if question is None:
        names = ", ".join(sorted(waiting)) or "none"
        raise InputError(
            f"step {path!r} of run {run_id!r} is not waiting for input (waiting: {names})"
        )
    if "/" not in path:
        return Question(run_id, path, run_id, path, question)
    owner, inner = question.get("run_id"), question.get("step")
    if not isinstance(owner, str) or not isinstance(inner, str):
        raise StoreError(f"run {run_id!r}: {path!r} waits without naming the run that asks")
    return Question(run_id, path, owner, inner, question)
