"""``otel-callbacks demo``: run the sample app traced by OTelHandler and show its trace.

The trace is always rendered locally from memory; ``--endpoint`` (or the standard
``OTEL_EXPORTER_OTLP_*`` variables) also sends it, and the run's GenAI metrics, to a collector,
and ``--file`` appends it to an OTLP/JSON lines file. Export failures never stop the demo: OTLP gets a short timeout and
the closing lines say where the spans went, or that they could not be delivered.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from ..config import (
    Destination,
    build_resource,
    env_endpoint,
    env_metrics_endpoint,
    file_destination,
    otlp_destination,
    otlp_metrics_destination,
)
from ..exporters.otlp_json import encode_request, parse_lines
from .tree import Glyphs, output_width, render, use_color, write

SERVICE_NAME = "otel-callbacks-demo"
_NOISY_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk.trace.export",
                  "opentelemetry.sdk.metrics._internal.export", "opentelemetry.sdk._shared_internal")


@dataclass
class DemoOptions:
    endpoint: str | None = None
    protocol: str | None = None
    file: str | None = None
    timeout: float = 2.0
    attributes: bool = False
    color: str = "auto"
    verbose: bool = False


class _Counting(SpanExporter):
    """Wraps an exporter to count what it delivered, so the demo can tell the user."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.delivered = 0
        self.failed = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.delivered += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingMetrics(MetricExporter):
    """Wraps a metric exporter to count the data points it delivered (or failed to)."""

    def __init__(self, inner: MetricExporter) -> None:
        # The reader asks the exporter for these, as the SDK's own reader does.
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.delivered = 0
        self.failed = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: object) -> MetricExportResult:
        points = sum(len(metric.data.data_points) for rm in metrics_data.resource_metrics
                     for sm in rm.scope_metrics for metric in sm.metrics)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.delivered += points
        else:
            self.failed += points
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


def run_demo(options: DemoOptions, stream: IO[str] | None = None,
             errors: IO[str] | None = None) -> int:
    """Run the demo; 0 when every requested destination got the spans, else 1 (metrics, sent
    along to a collector, are reported but do not decide the status)."""
    from ..handler import OTelHandler
    from . import demo_app

    stream, errors = stream or sys.stdout, errors or sys.stderr
    if not options.verbose:
        for name in _NOISY_LOGGERS:  # the summary below reports export failures in one line
            logging.getLogger(name).setLevel(logging.CRITICAL)
    provider = TracerProvider(resource=build_resource(SERVICE_NAME), sampler=ALWAYS_ON,
                              shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    outputs = _destinations(options)
    for _, counting in outputs:
        provider.add_span_processor(BatchSpanProcessor(counting))

    metric_output = _metrics_destination(options)
    meter_provider = None
    if metric_output is not None:
        # One export, at shutdown: the demo is over long before a periodic one would run.
        reader = PeriodicExportingMetricReader(metric_output[1], export_interval_millis=3_600_000)
        meter_provider = MeterProvider(metric_readers=[reader], resource=provider.resource,
                                       shutdown_on_exit=False)

    answer = demo_app.run([OTelHandler(provider, meter_provider=meter_provider,
                                       capture_content=True)])
    provider.force_flush(int((options.timeout + 1) * 1000))
    provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown(timeout_millis=(options.timeout + 1) * 1000)

    spans = memory.get_finished_spans()
    records = list(parse_lines([_json_line(spans)], "<demo>"))
    stream.write(f"answer: {answer}\n\n")
    write(render(records, attributes=options.attributes, width=output_width(stream),
                 glyphs=Glyphs.for_stream(stream)), stream, color=use_color(options.color, stream))
    status = _summary(len(spans), outputs, stream, errors)
    _metrics_summary(metric_output, stream, errors)
    return status


def _destinations(options: DemoOptions) -> list[tuple[Destination, _Counting]]:
    chosen = []
    endpoint = options.endpoint or env_endpoint()
    if endpoint or options.protocol:
        chosen.append(otlp_destination(options.endpoint, options.protocol, options.timeout))
    if options.file:
        chosen.append(file_destination(options.file))
    return [(d, _Counting(d.exporter)) for d in chosen]


def _metrics_destination(options: DemoOptions) -> tuple[Destination, _CountingMetrics] | None:
    """Metrics go where OTLP spans go: to the collector, when one is named."""
    if not (options.endpoint or env_metrics_endpoint() or options.protocol):
        return None
    destination = otlp_metrics_destination(options.endpoint, options.protocol, options.timeout)
    return destination, _CountingMetrics(destination.exporter)


def _metrics_summary(output: tuple[Destination, _CountingMetrics] | None, stream: IO[str],
                     errors: IO[str]) -> None:
    """Say where the metrics went. Not delivering them does not fail the demo: many OTLP
    backends (Jaeger, Tempo, Phoenix) take traces only."""
    if output is None:
        return
    destination, counting = output
    if counting.delivered and not counting.failed:
        stream.write(f"{counting.delivered} metric points sent to {destination}\n")
    else:
        errors.write(f"otel-callbacks: {counting.failed} metric points could not be sent to "
                     f"{destination} (a traces-only backend refuses them; a collector takes both)\n")


def _json_line(spans: Sequence[ReadableSpan]) -> str:
    import json

    return json.dumps(encode_request(spans))


def _summary(total: int, outputs: list[tuple[Destination, _Counting]], stream: IO[str],
             errors: IO[str]) -> int:
    stream.write(f"\n{total} spans shown above (kept in memory)\n")
    status = 0
    for destination, counting in outputs:
        verb = "written to" if destination.kind == "file" else "sent to"
        if counting.delivered == total and not counting.failed:
            stream.write(f"{total} spans {verb} {destination}\n")
        else:
            status = 1
            errors.write(f"otel-callbacks: {total - counting.delivered} of {total} spans could not "
                         f"be {verb} {destination}; is it reachable?\n")
    if not outputs:
        stream.write("tip: --endpoint http://localhost:4318 sends them to a collector, "
                     "--file traces.jsonl keeps them for `otel-callbacks view`\n")
    return status
