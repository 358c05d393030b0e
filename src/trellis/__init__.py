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
from trellis.engine.summary import BatchSummary, summarize
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
