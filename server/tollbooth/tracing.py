"""OpenTelemetry tracing of gRPC calls, on only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

`setup` installs a tracer provider exporting over OTLP/gRPC and instruments grpcio: every
server (incoming calls) and client channel (the sidecar's calls to the server) made afterwards
carries spans, joined across processes by the `traceparent` metadata. Call it before the
server or channels are built.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tollbooth.tracing")


def setup(endpoint: str, service: str, *, exporter: Any = None) -> bool:
    """Trace gRPC calls of this process to `endpoint` (nothing when empty). `exporter`
    replaces the OTLP exporter (tests). Returns whether tracing is on."""
    if not endpoint and exporter is None:
        return False
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcInstrumentorClient,
        GrpcInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorServer().instrument()
    GrpcInstrumentorClient().instrument()
    GrpcAioInstrumentorClient().instrument()
    log.info(
        f"tracing gRPC calls to {endpoint or 'a test exporter'}",
        extra={"event": "tracing", "endpoint": endpoint},
    )
    return True
