"""Human in the loop: a step that waits for a person without holding anything in memory.

``human.ask`` looks in the run's journal for an answer to this question (keyed like an LLM
call: step, element, round, attempt, order). With none, it raises :class:`WaitingForInput`;
the runner marks the step ``waiting`` with the question (prompt, JSON schema, details),
steps that depend on it stay pending, independent ones run on, and the run ends with
status ``waiting``. :meth:`Engine.reply` records an answer and resumes the run; ``ask``
then validates it against ``output``. An invalid answer is discarded and the step waits
again, with the validation error in its question for the caller to report.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from trellis.engine.results import jsonable
from trellis.engine.scope import StepScope
from trellis.errors import ConfigurationError
from trellis.flow.inject import Human
from trellis.flow.types import describe

__all__ = ["REPLY", "EngineHuman", "WaitingForInput"]

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
