"""``otel-callbacks demo``: run the sample app traced by OTelHandler and show its trace.

The trace is always rendered locally from memory; ``--endpoint`` (or the standard
``OTEL_EXPORTER_OTLP_*`` variables) also sends it to a collector and ``--file`` appends it to
an OTLP/JSON lines file. Export failures never stop the demo: OTLP gets a short timeout and
the closing lines say where the spans went, or that they could not be delivered.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from ..config import Destination, build_resource, env_endpoint, file_destination, otlp_destination
from ..exporters.otlp_json import encode_request, parse_lines
from .tree import Glyphs, output_width, render, use_color, write

SERVICE_NAME = "otel-callbacks-demo"
_NOISY_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk.trace.export",
                  "opentelemetry.sdk._shared_internal")


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


def run_demo(options: DemoOptions, stream: IO[str] | None = None,
             errors: IO[str] | None = None) -> int:
    """Run the demo; 0 when every requested destination got the spans, else 1."""
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

    answer = demo_app.run([OTelHandler(provider, capture_content=True)])
    provider.force_flush(int((options.timeout + 1) * 1000))
    provider.shutdown()

    spans = memory.get_finished_spans()
    records = list(parse_lines([_json_line(spans)], "<demo>"))
    stream.write(f"answer: {answer}\n\n")
    write(render(records, attributes=options.attributes, width=output_width(stream),
                 glyphs=Glyphs.for_stream(stream)), stream, color=use_color(options.color, stream))
    return _summary(len(spans), outputs, stream, errors)


def _destinations(options: DemoOptions) -> list[tuple[Destination, _Counting]]:
    chosen = []
    endpoint = options.endpoint or env_endpoint()
    if endpoint or options.protocol:
        chosen.append(otlp_destination(options.endpoint, options.protocol, options.timeout))
    if options.file:
        chosen.append(file_destination(options.file))
    return [(d, _Counting(d.exporter)) for d in chosen]


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
