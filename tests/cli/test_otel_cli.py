"""``trellis run --otel``: spans reach an OTLP/HTTP receiver the test starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from .helpers import FLOWS, SIM, invoke

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs trellis-flows[otel]")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

CHAIN = f"{FLOWS / 'chain.py'}:flow"


class _Receiver(BaseHTTPRequestHandler):
    spans: ClassVar[list[tuple[str, dict[str, object]]]] = []
    services: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    self.services.append(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attrs = {
                        a.key: a.value.string_value or a.value.int_value for a in span.attributes
                    }
                    self.spans.append((span.name, attrs))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.spans, _Receiver.services = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_otel_exports_run_step_and_attempt_spans_over_otlp_http(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "trellis-test")
    result = invoke("run", CHAIN, "-i", '{"item": "x"}', *SIM, "--no-store", "--otel")
    assert result.exit_code == 0, result.stderr
    names = [name for name, _ in _Receiver.spans]
    assert "step draft" in names and "step review" in names
    assert any(n.startswith("run ") for n in names)
    attempts = [attrs for name, attrs in _Receiver.spans if name == "chat small"]
    assert len(attempts) == 2
    assert all(a["gen_ai.provider.name"] == "sim" for a in attempts)
    assert all(a["gen_ai.operation.name"] == "chat" for a in attempts)
    assert _Receiver.services and set(_Receiver.services) == {"trellis-test"}
