"""``--otel``: export a command's traces over OTLP/HTTP, configured by the standard
``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME`` (default ``trellis``), ...).

The tracer provider is the command's own (the process's global one is left alone) and is
shut down, so every span is sent, when the command ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from trellis.cli.errors import CliError

__all__ = ["otlp_tracer"]


@contextlib.contextmanager
def otlp_tracer() -> Iterator[Any]:
    """A tracer exporting over OTLP/HTTP, flushed and shut down on exit."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise CliError(
            "--otel needs OpenTelemetry's SDK and OTLP exporter: pip install 'trellis-flows[otel]'"
        ) from None
    service = os.environ.get("OTEL_SERVICE_NAME") or "trellis"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    try:
        yield provider.get_tracer("trellis")
    finally:
        provider.shutdown()
