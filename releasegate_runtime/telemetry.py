"""OpenTelemetry: one trace per release, its context carried in Kafka headers (W3C traceparent)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure(service: str, otlp_endpoint: str | None) -> trace.Tracer:
    provider = TracerProvider(resource=Resource.create({"service.name": f"releasegate-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return trace.get_tracer(f"releasegate.{service}")


def extract(carrier: Mapping[str, str]) -> context.Context:
    return propagate.extract(dict(carrier))


def inject(ctx: context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier
