"""Trellis: reliable multi-step LLM workflows.

A flow is a graph of small typed steps: LLM calls with validated structured outputs, and
plain Python. Trellis runs independent steps in parallel, routes on validated results,
retries by failure mode, enforces budgets and accounts every token and cent::

    import trellis as tl

    flow = tl.Flow("triage", inputs={"feedback": str})

    @flow.step
    async def sentiment(feedback: str, llm: tl.LLM) -> Sentiment:
        return await llm.generate(f"Classify: {feedback}", output=Sentiment, model="small")

    result = flow.run_sync({"feedback": "..."}, models={"small": "sim:small"})
"""

# The public names load lazily (PEP 562): ``import trellis`` costs a few milliseconds, and
# a command or program pays only for the parts it touches (``trellis --help`` does not load
# the engine, Ray's executor or the providers). Type checkers and IDEs read the imports
# under TYPE_CHECKING; tests/test_public_api.py checks that the two lists agree.
import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from trellis.cluster import RayExecutor
    from trellis.config import Config, ModelBinding, RoleBinding
    from trellis.engine.engine import Engine
    from trellis.engine.results import (
        CallRecord,
        Decision,
        ErrorInfo,
        RunResult,
        Stats,
        StepRecord,
    )
    from trellis.engine.summary import BatchSummary, SummaryBuilder, summarize
    from trellis.errors import (
        AgentTurnLimitError,
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        ConfigurationError,
        ConnectionFailedError,
        ContextOverflowError,
        FailureMode,
        FlowDefinitionError,
        InputError,
        LeaseLostError,
        ModelError,
        ModelTimeoutError,
        NestedRunError,
        OutputTypeError,
        OutputValidationError,
        OverloadedError,
        QuotaExceededError,
        RateLimitError,
        RefusalError,
        ReplyAttempt,
        RunLockedError,
        SerializationError,
        StepChangedError,
        StepError,
        StoreError,
        SubflowError,
        TrellisError,
        TruncatedError,
        WorkerLostError,
    )
    from trellis.flow.flow import Flow
    from trellis.flow.inject import LLM, Approval, ElementFailure, Human, Round, RunContext
    from trellis.flow.params import Param
    from trellis.flow.policy import Budget, Cache, RetryPolicy
    from trellis.flow.step import Condition, branch
    from trellis.flow.tools import Tool, ToolArgumentsError, tool
    from trellis.models.base import Model, ModelRequest, ModelResponse
    from trellis.models.function import FunctionModel, TestModel
    from trellis.models.pricing import Price, PriceTable
    from trellis.models.sim import SimModel, SimOptions
    from trellis.store import MemoryStore, SQLiteStore, Store, open_store
    from trellis.types import Message, ToolCall, ToolSpec, Usage

#: Each public name and the module that defines it.
_WHERE: dict[str, str] = {
    "RayExecutor": "trellis.cluster",
    "Config": "trellis.config",
    "ModelBinding": "trellis.config",
    "RoleBinding": "trellis.config",
    "Engine": "trellis.engine.engine",
    "CallRecord": "trellis.engine.results",
    "Decision": "trellis.engine.results",
    "ErrorInfo": "trellis.engine.results",
    "RunResult": "trellis.engine.results",
    "Stats": "trellis.engine.results",
    "StepRecord": "trellis.engine.results",
    "BatchSummary": "trellis.engine.summary",
    "SummaryBuilder": "trellis.engine.summary",
    "summarize": "trellis.engine.summary",
    "AgentTurnLimitError": "trellis.errors",
    "AuthenticationError": "trellis.errors",
    "BadRequestError": "trellis.errors",
    "BudgetExceededError": "trellis.errors",
    "ConfigurationError": "trellis.errors",
    "ConnectionFailedError": "trellis.errors",
    "ContextOverflowError": "trellis.errors",
    "FailureMode": "trellis.errors",
    "FlowDefinitionError": "trellis.errors",
    "InputError": "trellis.errors",
    "LeaseLostError": "trellis.errors",
    "ModelError": "trellis.errors",
    "ModelTimeoutError": "trellis.errors",
    "NestedRunError": "trellis.errors",
    "OutputTypeError": "trellis.errors",
    "OutputValidationError": "trellis.errors",
    "OverloadedError": "trellis.errors",
    "QuotaExceededError": "trellis.errors",
    "RateLimitError": "trellis.errors",
    "RefusalError": "trellis.errors",
    "ReplyAttempt": "trellis.errors",
    "RunLockedError": "trellis.errors",
    "SerializationError": "trellis.errors",
    "StepChangedError": "trellis.errors",
    "StepError": "trellis.errors",
    "StoreError": "trellis.errors",
    "SubflowError": "trellis.errors",
    "TrellisError": "trellis.errors",
    "TruncatedError": "trellis.errors",
    "WorkerLostError": "trellis.errors",
    "Flow": "trellis.flow.flow",
    "LLM": "trellis.flow.inject",
    "Approval": "trellis.flow.inject",
    "ElementFailure": "trellis.flow.inject",
    "Human": "trellis.flow.inject",
    "Round": "trellis.flow.inject",
    "RunContext": "trellis.flow.inject",
    "Param": "trellis.flow.params",
    "Budget": "trellis.flow.policy",
    "Cache": "trellis.flow.policy",
    "RetryPolicy": "trellis.flow.policy",
    "Condition": "trellis.flow.step",
    "branch": "trellis.flow.step",
    "Tool": "trellis.flow.tools",
    "ToolArgumentsError": "trellis.flow.tools",
    "tool": "trellis.flow.tools",
    "Model": "trellis.models.base",
    "ModelRequest": "trellis.models.base",
    "ModelResponse": "trellis.models.base",
    "FunctionModel": "trellis.models.function",
    "TestModel": "trellis.models.function",
    "Price": "trellis.models.pricing",
    "PriceTable": "trellis.models.pricing",
    "SimModel": "trellis.models.sim",
    "SimOptions": "trellis.models.sim",
    "MemoryStore": "trellis.store",
    "SQLiteStore": "trellis.store",
    "Store": "trellis.store",
    "open_store": "trellis.store",
    "Message": "trellis.types",
    "ToolCall": "trellis.types",
    "ToolSpec": "trellis.types",
    "Usage": "trellis.types",
}

__version__ = "0.1.0"

# Grouped by theme; tests/test_public_api.py checks every name exists and none is lost.
__all__ = [  # noqa: RUF022 - grouped by theme, not sorted
    # Flows: defining steps, their policies and what they receive
    "Flow",
    "branch",
    "Condition",
    "tool",
    "Tool",
    "LLM",
    "Human",
    "Approval",
    "RunContext",
    "Round",
    "ElementFailure",
    "Budget",
    "Cache",
    "RetryPolicy",
    "Param",
    # Running: the engine, role bindings, and what a run records
    "Engine",
    "RayExecutor",
    "Config",
    "ModelBinding",
    "RoleBinding",
    "RunResult",
    "StepRecord",
    "CallRecord",
    "Decision",
    "ErrorInfo",
    "Stats",
    "BatchSummary",
    "SummaryBuilder",
    "summarize",
    # Models: the provider interface, the values it exchanges, prices
    "Model",
    "ModelRequest",
    "ModelResponse",
    "Message",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "Price",
    "PriceTable",
    # Stores: where durable runs are recorded
    "Store",
    "MemoryStore",
    "SQLiteStore",
    "open_store",
    # Errors: one tree under TrellisError; FailureMode classifies model failures
    "TrellisError",
    "FlowDefinitionError",
    "ConfigurationError",
    "InputError",
    "StepError",
    "OutputTypeError",
    "AgentTurnLimitError",
    "ToolArgumentsError",
    "BudgetExceededError",
    "StoreError",
    "SerializationError",
    "LeaseLostError",
    "WorkerLostError",
    "RunLockedError",
    "StepChangedError",
    "SubflowError",
    "NestedRunError",
    "FailureMode",
    "ModelError",
    "RateLimitError",
    "ModelTimeoutError",
    "OverloadedError",
    "ConnectionFailedError",
    "RefusalError",
    "TruncatedError",
    "ContextOverflowError",
    "AuthenticationError",
    "BadRequestError",
    "QuotaExceededError",
    "OutputValidationError",
    "ReplyAttempt",
    # Testing: offline models (the network guard is in trellis.testing)
    "SimModel",
    "SimOptions",
    "FunctionModel",
    "TestModel",
    # The package
    "__version__",
]


def __getattr__(name: str) -> _typing.Any:
    """Import a public name on first use, then keep it in the module's namespace."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'trellis' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
