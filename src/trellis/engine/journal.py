"""The bridge between a run and its store: record as work completes, replay on resume.

- When a step settles its record (status, output, usage, decisions) is saved at once.
- When an ``llm.generate`` call returns, its value and every attempt are saved at once,
  keyed by where it was made: step, element, round, step attempt, and the call's order
  within that execution. A resumed step that makes the same call (same key, same request)
  gets the journaled value back instead of calling the model again.
- At resume, a completed step whose definition hash changed is an error, unless the
  caller asked to re-run changed steps: then it and everything downstream run again.
- Every write carries the run's lease epoch: once another process took the run over, the
  store refuses them (:class:`~trellis.errors.LeaseLostError`) and the run stops.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, to_json

from trellis.engine.results import (
    CallRecord,
    Decision,
    ErrorInfo,
    RunResult,
    Stats,
    StepRecord,
)
from trellis.errors import StepChangedError, StoreError
from trellis.flow.fingerprint import flow_fingerprints
from trellis.models.base import ModelRequest
from trellis.store.base import CallRow, RunRow, RunState, StepRow, Store
from trellis.store.codec import decode, encode
from trellis.tracebacks import Frame

if TYPE_CHECKING:
    from trellis.flow.graph import CompiledFlow

__all__ = ["Journal", "JournaledCall", "journaled_usage", "request_hash"]


@dataclass(frozen=True, slots=True)
class Restored:
    """A completed step brought back from the journal."""

    decisions: list[Decision]
    calls: list[CallRecord]


@dataclass(frozen=True, slots=True)
class JournaledCall:
    value: Any
    attempts: list[CallRecord]


class Journal:
    def __init__(
        self,
        store: Store,
        run_id: str,
        plan: CompiledFlow,
        *,
        rerun_changed: bool = False,
        epoch: int | None = None,
        empty: bool = False,
    ) -> None:
        """``empty``: the run has nothing recorded yet (just created): nothing is read."""
        self.store = store
        self.run_id = run_id
        self.plan = plan
        self.epoch = epoch  # the lease epoch every write carries (fencing)
        self.rerun_changed = rerun_changed
        #: How long earlier executions of this run ran (a resumed child run's: see child).
        self.earlier_s = 0.0
        self._fingerprints = flow_fingerprints(plan)
        self.replayed_steps = 0
        self.replayed_calls = 0
        self._calls: dict[str, CallRow] = {}
        self._calls_by_step: dict[str, list[CallRow]] = {}
        self._done: dict[int, StepRow] = {}
        if empty:
            return
        steps = {row.step: row for row in store.load_steps(run_id)}
        self._calls = {row.key: row for row in store.load_calls(run_id)}
        for call in self._calls.values():
            self._calls_by_step.setdefault(call.key.partition("|")[0], []).append(call)
        stale: set[int] = set()
        for i, spec in enumerate(plan.steps):
            row = steps.get(spec.name)
            # A skip is a decision downstream steps may have been computed on: a changed
            # skipped step invalidates them just as a changed completed one does.
            if row is None or row.status not in ("done", "skipped"):
                continue
            if row.definition != self._fingerprints[i]:
                if not rerun_changed:
                    raise StepChangedError(
                        f"step {spec.name!r} changed since run {run_id} recorded it; re-run "
                        "changed steps and what depends on them with --rerun-changed "
                        "(rerun_changed=True), or start a new run",
                        step=spec.name,
                    )
                stale.add(i)
            if row.status == "done":
                self._done[i] = row
        for i in _downstream(plan, stale):
            self._done.pop(i, None)

    # -- steps ----------------------------------------------------------------------------

    def recorded(self) -> Coroutine[Any, Any, None]:
        """To await: returns once everything the run wrote so far is committed (group
        commit: the store may have queued it); a refused write raises its error."""
        return self.store.committed(self.run_id)

    def when_recorded(self, callback: Callable[[], object]) -> bool:
        """If the store queued writes of the run (group commit): call ``callback`` once
        they are committed and return True (a step about to start then waits for them:
        it never runs before what it depends on is recorded); else False."""
        return self.store.when_committed(self.run_id, callback)

    @property
    def restorable(self) -> int:
        return len(self._done)

    def restore(self, i: int, record: StepRecord) -> Restored | None:
        """Fill ``record`` from the journal if step ``i`` completed before; return its
        decisions and calls, or ``None`` when the step must run."""
        row = self._done.get(i)
        if row is None:
            return None
        spec = self.plan.steps[i]
        record.status = "done"
        record.output = decode(row.output, spec.produces, f"step {spec.name!r}")
        _apply_details(record, row)
        self.replayed_steps += 1
        calls = [
            call_record_from_dict(a)
            for call in self._calls_by_step.get(spec.name, [])
            for a in decode(call.attempts, Any, f"call {call.key!r}")
        ]
        return Restored(_decisions(row), calls)

    def step_settled(self, i: int, record: StepRecord, decisions: list[Decision]) -> None:
        if (
            record.status == "done"
            and not decisions
            and not record.usage.attempts
            and record.attempts == 1
            and record.rounds is None
            and record.elements is None
            and not record.turns
        ):  # the common case, kept cheap: a plain step's output and timings
            self.store.save_done_step(
                self.run_id,
                record.name,
                self._fingerprints[i],
                _output_json(record),
                record.started_at,
                record.duration_s,
                epoch=self.epoch,
            )
            return
        self.store.save_step(
            step_row(self.run_id, record, self._fingerprints[i], decisions), epoch=self.epoch
        )

    def step_started(self, i: int, record: StepRecord, decisions: list[Decision]) -> None:
        """Record a routing decision as it is made (the step then runs)."""
        row = step_row(self.run_id, record, self._fingerprints[i], decisions)
        row.status = "running"
        self.store.save_step(row, epoch=self.epoch)

    # -- sub-flows: child runs -----------------------------------------------------------

    def child(
        self,
        run_id: str,
        step: str,
        plan: CompiledFlow,
        values: dict[str, Any],
        index: int | None,
    ) -> Journal:
        """The journal of a sub-flow's child run ``run_id``, recorded with this run as its
        parent (created the first time; its meta names the parent, the step and the
        sub-flow's step order, for readers of the record). A resume continues inside it.
        Its writes are fenced by the parent's lease only (the parent stops it when the
        lease is lost)."""
        row = self.store.get_run(run_id)
        now = time.time()
        if row is None:
            self.store.create_run(
                RunRow(
                    run_id=run_id,
                    flow=plan.name,
                    status="running",
                    inputs=encode(values, f"the inputs of sub-flow run {run_id!r}"),
                    started_at=now,
                    resumed_at=now,
                    parent_id=self.run_id,
                    item_index=index,
                    meta=json.dumps(
                        {
                            "subflow": {"parent": self.run_id, "step": step},
                            "steps": [s.name for s in plan.steps],
                        }
                    ),
                )
            )
        child = Journal(self.store, run_id, plan, rerun_changed=self.rerun_changed)
        if row is not None:
            child.earlier_s = run_time_before(self.store, row)
            self.store.update_run(run_id, status="running", resumed_at=now)
        return child

    def finish_child(self, result: RunResult) -> None:
        """Record how this (child) run ended (its run time includes its earlier
        executions')."""
        result.duration_s += self.earlier_s
        record_end(self.store, self.run_id, result)

    # -- calls ----------------------------------------------------------------------------

    def lookup(self, key: str, request: str, output_type: Any) -> JournaledCall | None:
        row = self._calls.get(key)
        if row is None or row.request != request:
            return None
        tp = Any if output_type is None else output_type
        value = decode(row.result, tp, f"journaled call {key!r}")
        attempts = [call_record_from_dict(a) for a in decode(row.attempts, Any, f"call {key!r}")]
        self.replayed_calls += 1
        return JournaledCall(value, attempts)

    def save_call(self, key: str, request: str, value: Any, attempts: list[CallRecord]) -> None:
        row = CallRow(
            run_id=self.run_id,
            key=key,
            request=request,
            result=encode(value, f"the reply of call {key!r}"),
            attempts=json_text([a.to_dict() for a in attempts]),
        )
        self.store.save_call(row, epoch=self.epoch)
        self._calls[key] = row


def json_text(value: Any) -> str:
    """A record's plain JSON (dicts, lists, numbers, text) as ``json.dumps`` writes it, but
    compact and by ``pydantic_core`` (several times faster); text JSON cannot carry as
    UTF-8 (a lone surrogate) goes through ``json.dumps``, which escapes it."""
    try:
        return to_json(value, inf_nan_mode="constants").decode()
    except PydanticSerializationError:
        return json.dumps(value)


def request_hash(model: str, request: ModelRequest) -> str:
    """What makes a journaled reply reusable: the model asked and the whole request."""
    h = hashlib.blake2b(digest_size=12)
    h.update(model.encode())
    for m in request.messages:
        h.update(f"\x1e{m.role}\x1f{m.content}\x1f{m.tool_call_id}".encode())
        for tc in m.tool_calls:
            h.update(f"\x1d{tc.id}\x1f{tc.name}\x1f{tc.arguments}".encode())
    h.update(_settings_json(request).encode())
    return h.hexdigest()


def _settings_json(request: ModelRequest) -> str:
    """``json.dumps([output_schema, temperature, max_tokens, seed, tools, tool_choice],
    sort_keys=True, default=str)``, the request's settings as its digest has always taken
    them (a journal recorded by an earlier version must still match), made from pieces
    seen before: a step sends the same schema object and settings with every call."""
    tools = [(t.name, t.description, t.parameters) for t in request.tools]
    choice = request.tool_choice
    key = None
    rest = None
    if not tools and (choice is None or type(choice) is str):
        # Types in the key: 0 and 0.0 are equal keys, but are written "0" and "0.0".
        t, m, seed = request.temperature, request.max_tokens, request.seed
        key = (type(t), t, type(m), m, type(seed), seed, choice)
        try:
            rest = _SETTINGS.get(key)
        except TypeError:  # a value that cannot be a key (not a number): not remembered
            key = None
    if rest is None:
        rest = json.dumps(
            [request.temperature, request.max_tokens, request.seed, tools, choice],
            sort_keys=True,
            default=str,
        )
        if key is not None:
            _remember(_SETTINGS, key, rest)
    # A list's JSON is "[" + its items' JSON joined by ", " + "]".
    return f"[{_schema_json(request.output_schema)}, {rest[1:]}"


def _schema_json(schema: dict[str, Any] | None) -> str:
    """An output schema's sorted JSON, remembered by the schema object (kept alive with
    it, so that its id is not reused): one per output type (``OutputSpec`` keeps it). A
    schema is not changed in place once sent (providers change a deep copy)."""
    if schema is None:
        return "null"
    seen = _SCHEMAS.get(id(schema))
    if seen is not None and seen[0] is schema:
        return seen[1]
    text = json.dumps(schema, sort_keys=True, default=str)
    _remember(_SCHEMAS, id(schema), (schema, text))
    return text


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()  # a process with more distinct settings than this starts over
    memo[key] = value


_MEMO_SIZE = 512
_SETTINGS: dict[tuple[Any, ...], str] = {}
_SCHEMAS: dict[int, tuple[dict[str, Any], str]] = {}


def step_row(
    run_id: str, record: StepRecord, definition: str, decisions: list[Decision]
) -> StepRow:
    # The hot path of a durable run: a plain completed step writes only its output.
    usage = record.usage
    details: dict[str, Any] | None = None
    if (
        record.attempts != 1
        or record.rounds is not None
        or record.elements is not None
        or record.element_failures
        or record.turns
        or record.question is not None
    ):
        details = {"attempts": record.attempts}
        for name in ("rounds", "elements"):
            value = getattr(record, name)
            if value is not None:
                details[name] = value
        if record.element_failures:
            details["element_failures"] = record.element_failures
        if record.turns:
            details["turns"] = record.turns
        if record.question is not None:
            details["question"] = record.question
    output = _output_json(record) if record.status == "done" else None
    return StepRow(
        run_id=run_id,
        step=record.name,
        status=record.status,
        definition=definition,
        output=output,
        reason=record.reason,
        error=json_text(record.error.to_dict()) if record.error else None,
        usage=json_text(usage.to_dict()) if usage.attempts else None,
        decisions=json_text([d.to_dict() for d in decisions]) if decisions else None,
        details=to_json(details).decode() if details else None,
        started_at=record.started_at,
        duration_s=record.duration_s,
    )


def _output_json(record: StepRecord) -> str:
    """A completed step's output as JSON: Pydantic's encoder directly (the hot path), and
    :func:`encode` for what it cannot take (an escaped retry, or a clear error)."""
    try:
        return to_json(record.output).decode()
    except Exception:
        return encode(record.output, f"the output of step {record.name!r}")


def record_from_row(row: StepRow, output_type: Any = Any) -> StepRecord:
    """A StepRecord rebuilt from the store (outputs typed when ``output_type`` is given)."""
    record = StepRecord(row.step)
    record.status = row.status  # type: ignore[assignment]
    record.reason = row.reason
    if row.status == "done":
        record.output = decode(row.output, output_type, f"step {row.step!r}")
    if row.error:
        record.error = error_from_json(row.error)
    _apply_details(record, row)
    return record


def error_from_json(text: str) -> ErrorInfo:
    data = decode(text, Any, "an error record")
    try:
        return ErrorInfo(
            type=data["type"],
            message=data["message"],
            step=data.get("step"),
            mode=data.get("mode"),
            budget=data.get("budget"),
            traceback=tuple(Frame.from_dict(f) for f in data.get("traceback") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"corrupt error record: {text[:80]!r}") from exc


def stats_from_json(text: str | None) -> Stats:
    stats = Stats()
    if not text:
        return stats
    data = decode(text, Any, "a usage record")
    try:
        stats.calls = int(data["calls"])
        stats.attempts = int(data["attempts"])
        stats.input_tokens = int(data["input_tokens"])
        stats.output_tokens = int(data["output_tokens"])
        stats.cost_usd = float(data["cost_usd_known_part"])
        stats.unpriced_attempts = int(data["unpriced_attempts"])
        stats.latency_s = float(data["latency_s"])
        stats.retries = int(data.get("retries", 0))
        for mode, count in data["failures"].items():
            stats.failures[mode] = int(count)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"corrupt usage record: {text[:80]!r}") from exc
    return stats


def decision_from_dict(data: dict[str, Any]) -> Decision:
    return Decision(
        step=data["step"],
        kind=data["kind"],
        outcome=data["outcome"],
        reason=data["reason"],
        values=data["values"],
    )


def _decisions(row: StepRow) -> list[Decision]:
    if not row.decisions:
        return []
    try:
        return [decision_from_dict(d) for d in decode(row.decisions, Any, "decisions")]
    except (KeyError, TypeError) as exc:
        raise StoreError(f"corrupt decision record for step {row.step!r}") from exc


def _apply_details(record: StepRecord, row: StepRow) -> None:
    record.usage = stats_from_json(row.usage)
    record.started_at = row.started_at
    record.duration_s = row.duration_s
    record.attempts = 1  # stored only when it is not 1
    if row.details:
        details = decode(row.details, Any, f"details of step {row.step!r}")
        record.attempts = int(details.get("attempts", record.attempts))
        record.rounds = details.get("rounds")
        record.elements = details.get("elements")
        record.element_failures = int(details.get("element_failures", 0))
        record.turns = list(details.get("turns", []))
        record.question = details.get("question")


def record_end(
    store: Store,
    run_id: str,
    result: RunResult,
    *,
    epoch: int | None = None,
    owner: str | None = None,
) -> None:
    """Record how a run ended: its status, end time, run time (``result.duration_s``: a
    resumed run's includes its earlier executions'), error and usage (``epoch``: fenced);
    with ``owner``, its lease is released in the same write (:meth:`Store.finish_run`)."""
    status: RunState = result.status if result.status in ("done", "waiting") else "failed"
    end = store.update_run if owner is None else functools.partial(store.finish_run, owner=owner)
    end(
        run_id,
        status=status,
        finished_at=time.time(),
        error=json_text(result.error.to_dict()) if result.error else None,
        usage=json_text(result.usage.to_dict()),
        epoch=epoch,
        run_s=result.duration_s,
    )


def run_time_before(store: Store, row: RunRow) -> float:
    """How long the recorded run ``row`` has executed so far, which its resume adds its
    own time to: the run time recorded at its last end, and, when its latest execution
    never recorded an end (its process was killed), that execution's time up to the last
    of its steps (a batch's: items) that finished. Idle time between executions is not
    counted. A record from before run times were kept counts from its start to its end."""
    if row.status == "pending":
        return 0.0
    if row.status != "running":
        return row.duration_s or 0.0
    earlier = row.run_s or 0.0
    since = row.resumed_at
    if since is None:
        return earlier
    if row.is_batch:
        ends = [
            c.finished_at
            for c in store.list_runs(parent_id=row.run_id)
            if c.finished_at is not None and c.finished_at >= since
        ]
    else:
        ends = [
            s.started_at + (s.duration_s or 0.0)
            for s in store.load_steps(row.run_id)
            if s.started_at is not None and s.started_at >= since
        ]
    return earlier + max(0.0, max(ends, default=since) - since)


def call_record_from_dict(data: dict[str, Any], *, replayed: bool = True) -> CallRecord:
    """A journaled attempt. ``replayed``: it is being replayed into a resumed run (its
    source becomes "journal"); otherwise it keeps the source it was recorded with."""
    try:
        return CallRecord(
            step=data["step"],
            call=data["call"],
            attempt=data["attempt"],
            model=data["model"],
            role=data["role"],
            outcome=data["outcome"],
            input_tokens=data["input_tokens"],
            output_tokens=data["output_tokens"],
            cost_usd=data["cost_usd"],
            latency_s=data["latency_s"],
            wait_s=data.get("wait_s", 0.0),
            index=data.get("index"),
            round=data.get("round"),
            error=data.get("error"),
            reply=data.get("reply"),
            source="journal" if replayed else str(data.get("source", "live")),
            adjustments=[str(a) for a in data.get("adjustments") or ()],
            prompt=_parts(data.get("prompt")),
            output=_parts(data.get("output")),
        )
    except (KeyError, TypeError) as exc:
        raise StoreError(f"corrupt call record: {str(data)[:80]}") from exc


def journaled_usage(calls: Iterable[CallRow]) -> Stats:
    """The usage of journaled calls: one call each, and every attempt it recorded."""
    stats = Stats()
    for call in calls:
        stats.calls += 1
        for data in decode(call.attempts, Any, f"call {call.key!r}"):
            stats.add_attempt(call_record_from_dict(data))
    return stats


def _parts(value: Any) -> list[dict[str, Any]] | None:
    """A recorded prompt or output: a list of messages, or None when not recorded."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise TypeError("recorded messages are not a list of objects")
    return value


def _downstream(plan: CompiledFlow, roots: set[int]) -> set[int]:
    seen = set(roots)
    stack = list(roots)
    while stack:
        for j in plan.dependents[stack.pop()]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return seen
