"""A span exporter that appends OTLP/JSON lines to a local file: tracing with no services.

The format is the OpenTelemetry Collector file exporter's, so the file can be replayed into a
Collector (``otlpjsonfile`` receiver), read by ``otel-callbacks view`` or by ``jq``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .otlp_json import encode_line

logger = logging.getLogger("otel_callbacks")

FILE_ENV = "OTEL_CALLBACKS_FILE"
DEFAULT_FILE = "otel-traces.jsonl"


def default_path() -> Path:
    """``$OTEL_CALLBACKS_FILE``, else ``./otel-traces.jsonl``."""
    return Path(os.environ.get(FILE_ENV) or DEFAULT_FILE)


class OTLPJsonFileSpanExporter(SpanExporter):
    """Appends one ``ExportTraceServiceRequest`` JSON line per export batch to ``path``.

    The file is opened per batch (appending), so several processes may share it, it can be
    rotated at any time, and nothing is left open at exit. Without ``path`` it uses
    ``$OTEL_CALLBACKS_FILE`` or ``./otel-traces.jsonl`` (which lets the SDK build it from
    ``OTEL_TRACES_EXPORTER`` with no arguments).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        self._shutdown = False
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        line = encode_line(spans) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as file:
                    file.write(line)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("otel-callbacks: cannot write spans to %s: %s", self.path, exc)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export is written before it returns
