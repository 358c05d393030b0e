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
    TrellisError,
    TruncatedError,
)
from trellis.flow.flow import Flow
from trellis.flow.inject import LLM, Approval, ElementFailure, Human, Round, RunContext
from trellis.flow.params import Param
from trellis.flow.policy import Budget, Cache, RetryPolicy
from trellis.flow.step import Condition, branch
from trellis.flow.tools import Tool, ToolArgumentsError, tool
from trellis.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from trellis.models.function import FunctionModel, TestModel
from trellis.models.pricing import Price, PriceTable
from trellis.models.sim import SimModel, SimOptions
from trellis.store import MemoryStore, SQLiteStore, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "LLM",
    "AgentTurnLimitError",
    "Approval",
    "AuthenticationError",
    "BadRequestError",
    "Budget",
    "BudgetExceededError",
    "Cache",
    "CallRecord",
    "Condition",
    "Config",
    "ConfigurationError",
    "ConnectionFailedError",
    "ContextOverflowError",
    "Decision",
    "ElementFailure",
    "Engine",
    "ErrorInfo",
    "FailureMode",
    "Flow",
    "FlowDefinitionError",
    "FunctionModel",
    "Human",
    "InputError",
    "LeaseLostError",
    "MemoryStore",
    "Message",
    "Model",
    "ModelBinding",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "ModelTimeoutError",
    "OutputTypeError",
    "OutputValidationError",
    "OverloadedError",
    "Param",
    "Price",
    "PriceTable",
    "QuotaExceededError",
    "RateLimitError",
    "RefusalError",
    "ReplyAttempt",
    "RetryPolicy",
    "RoleBinding",
    "Round",
    "RunContext",
    "RunLockedError",
    "RunResult",
    "SQLiteStore",
    "SerializationError",
    "SimModel",
    "SimOptions",
    "Stats",
    "StepChangedError",
    "StepError",
    "StepRecord",
    "Store",
    "StoreError",
    "TestModel",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolSpec",
    "TrellisError",
    "TruncatedError",
    "Usage",
    "__version__",
    "branch",
    "open_store",
    "tool",
]
