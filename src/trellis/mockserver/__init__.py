"""A local OpenAI- and Anthropic-compatible server backed by the offline simulator.

``trellis mock-server --port 8000`` (or :class:`MockServer` / :class:`MockServerThread` in
tests and benchmarks) serves ``POST /v1/chat/completions``, ``POST /v1/messages`` and
``GET /v1/models`` with simulated replies (prose, schema-valid structured output, tool
calls, streaming with usage), configurable latency, rate limits with the providers' real
headers, and faults at per-mode rates or as a scripted sequence. It is as strict as the
real APIs: requests they reject (unknown fields, unpaired tool calls and results, strict
schemas that are not closed, invalid names, empty text blocks, a missing
``anthropic-version``...) get their 400 and error body. Point a client at it with
``OPENAI_BASE_URL=http://127.0.0.1:8000/v1`` or ``ANTHROPIC_BASE_URL=http://127.0.0.1:8000``.

Needs aiohttp: ``pip install 'trellis-flows[mock]'``.
"""

from trellis.mockserver.app import MockStats, create_app
from trellis.mockserver.faults import FAULT_MODES, FaultPlan, FaultStep, Outage, flaky_rates
from trellis.mockserver.limits import AdmissionLimiter
from trellis.mockserver.server import MockServer, MockServerThread

__all__ = [
    "FAULT_MODES",
    "AdmissionLimiter",
    "FaultPlan",
    "FaultStep",
    "MockServer",
    "MockServerThread",
    "MockStats",
    "Outage",
    "create_app",
    "flaky_rates",
]
