"""Batch export sized for LLM apps, and span drops made visible.

One request to an agent makes hundreds of spans in a burst (every chain step, model call, tool
and retriever run), and many requests run at once. The SDK's defaults (a 2,048-span queue,
512-span batches, a 5 s schedule) drop spans under such bursts, and the SDK says so only in a
log line that its duplicate filter mutes after the first time. Here the settings resolve as
explicit argument > ``OTEL_BSP_*`` environment variable > our defaults, and
``DropReportingBatchSpanProcessor`` counts every span the full queue refuses and warns, at most
once per interval, with the count and the variable to raise.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

logger = logging.getLogger("otel_callbacks")

QUEUE_ENV = "OTEL_BSP_MAX_QUEUE_SIZE"
BATCH_ENV = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
DELAY_ENV = "OTEL_BSP_SCHEDULE_DELAY"
TIMEOUT_ENV = "OTEL_BSP_EXPORT_TIMEOUT"

# Our defaults (SDK's in brackets). A queue of 16,384 spans holds ~60 concurrent agent requests
# of ~250 spans while the exporter catches up (bounded: ~3-4 KB per ended span, ~60 MB at most);
# 1,024-span batches halve the per-request overhead of OTLP; a 1 s schedule keeps the queue
# short between bursts instead of letting a quiet period's spans wait 5 s.
DEFAULT_MAX_QUEUE_SIZE = 16_384  # [2,048]
DEFAULT_MAX_EXPORT_BATCH_SIZE = 1_024  # [512]
DEFAULT_SCHEDULE_DELAY_MILLIS = 1_000.0  # [5,000]
DEFAULT_EXPORT_TIMEOUT_MILLIS = 30_000.0  # [30,000]
DEFAULT_DROP_REPORT_INTERVAL = 10.0  # seconds between two drop warnings at most


@dataclass(frozen=True)
class BatchSettings:
    """The batch processor's settings, each resolved argument > environment > default."""

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE
    schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MILLIS
    export_timeout_millis: float = DEFAULT_EXPORT_TIMEOUT_MILLIS

    @classmethod
    def resolve(cls, *, max_queue_size: int | None = None, max_export_batch_size: int | None = None,
                schedule_delay_millis: float | None = None,
                export_timeout_millis: float | None = None) -> BatchSettings:
        queue = _pick(max_queue_size, QUEUE_ENV, DEFAULT_MAX_QUEUE_SIZE, int)
        batch = _pick(max_export_batch_size, BATCH_ENV, DEFAULT_MAX_EXPORT_BATCH_SIZE, int)
        if batch > queue:  # the SDK refuses this; a smaller queue from the env caps the batch
            batch = queue
        return cls(queue, batch,
                   _pick(schedule_delay_millis, DELAY_ENV, DEFAULT_SCHEDULE_DELAY_MILLIS, float),
                   _pick(export_timeout_millis, TIMEOUT_ENV, DEFAULT_EXPORT_TIMEOUT_MILLIS, float))


def _pick(explicit: Any, env: str, default: Any, kind: Callable[[str], Any]) -> Any:
    if explicit is not None:
        return kind(explicit)
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value <= 0:
        logger.warning("otel-callbacks: %s=%r is not a positive number; using %s", env, raw, default)
        return default
    return value


class _CountingExporter(SpanExporter):
    """Counts the spans handed to the real exporter: the queue length when the SDK hides it."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.handed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.handed += len(spans)
        return self.exporter.export(spans)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class _DropCountingMetrics:
    """Stands in for the SDK's processor metrics: passes everything on, counts queue drops."""

    def __init__(self, metrics: Any, on_drop: Callable[[int], None]) -> None:
        self._metrics = metrics
        self._on_drop = on_drop

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        if error_type == "queue_full":
            self._on_drop(count)
        self._metrics.drop_items(count, error_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metrics, name)


class DropReportingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans its full queue refuses and says so.

    ``dropped_spans`` is the running total. The first drop arms a timer; when it fires, one
    warning gives the spans dropped since the last warning and the variables to raise, so a
    sustained overload logs once per ``report_interval`` seconds, not once per span. Pending
    counts are also reported at ``force_flush`` and ``shutdown``.
    """

    def __init__(self, span_exporter: SpanExporter, settings: BatchSettings | None = None, *,
                 report_interval: float = DEFAULT_DROP_REPORT_INTERVAL) -> None:
        settings = settings or BatchSettings.resolve()
        self._counting = _CountingExporter(span_exporter)
        super().__init__(self._counting, max_queue_size=settings.max_queue_size,
                         schedule_delay_millis=settings.schedule_delay_millis,
                         max_export_batch_size=settings.max_export_batch_size,
                         export_timeout_millis=settings.export_timeout_millis)
        self.settings = settings
        self.report_interval = report_interval
        self.dropped_spans = 0
        self._unreported = 0
        self._ended = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._capacity = settings.max_queue_size
        self._queue_length = self._watch_drops()

    @property
    def span_exporter(self) -> SpanExporter:  # the user's exporter, not our counter
        return self._counting.exporter

    def _watch_drops(self) -> Callable[[], int] | None:
        """Hook the SDK's own drop signal when this SDK version has one we know.

        SDK >= 1.33 reports each span its full queue refuses to the processor's metrics object
        (``drop_items``, called exactly where the span is dropped): we count there, and return
        None. Otherwise we return the queue length to check before each span is queued: the
        SDK's deque if we find it, else spans ended minus spans handed to the exporter.
        """
        inner = getattr(self, "_batch_processor", None)
        metrics = getattr(inner, "_metrics", None)
        if callable(getattr(metrics, "drop_items", None)):
            inner._metrics = _DropCountingMetrics(metrics, self._count_drop)  # type: ignore[union-attr]
            return None
        for owner, name in ((inner, "_queue"), (self, "queue")):
            queue = getattr(owner, name, None)
            if queue is not None and hasattr(queue, "__len__") and hasattr(queue, "appendleft"):
                return queue.__len__  # type: ignore[no-any-return]
        return lambda: self._ended - self._counting.handed

    def on_end(self, span: ReadableSpan) -> None:
        queue_length = self._queue_length
        if queue_length is not None:
            context = span.context
            if context is not None and context.trace_flags.sampled:
                self._ended += 1
                if queue_length() >= self._capacity:  # the SDK drops one span to add this one
                    self._count_drop(1)
        super().on_end(span)

    def _count_drop(self, count: int) -> None:
        with self._lock:
            self.dropped_spans += count
            self._unreported += count
            if self._timer is None:
                self._timer = threading.Timer(self.report_interval, self.report_drops)
                self._timer.daemon = True
                self._timer.start()

    def report_drops(self) -> int:
        """Warn about the drops not reported yet; returns how many that was."""
        with self._lock:
            count, self._unreported = self._unreported, 0
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if count:
            s = self.settings
            logger.warning(
                "otel-callbacks: the span export queue was full: %d spans dropped (%d in all). "
                "Raise %s (now %d) for bursts; if it stays full, the exporter is slower than "
                "the app: raise %s (now %d) or sample.",
                count, self.dropped_spans, QUEUE_ENV, s.max_queue_size, BATCH_ENV,
                s.max_export_batch_size)
        return count

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        flushed = super().force_flush(timeout_millis)
        self.report_drops()
        return flushed

    def shutdown(self) -> None:
        super().shutdown()
        self.report_drops()
