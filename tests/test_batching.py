"""Batch settings for LLM bursts (argument > OTEL_BSP_* > default) and visible span drops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_callbacks import batching
from otel_callbacks.batching import BatchSettings, DropReportingBatchSpanProcessor
from otel_callbacks.config import configure_tracing

_BSP_VARS = (batching.QUEUE_ENV, batching.BATCH_ENV, batching.DELAY_ENV, batching.TIMEOUT_ENV)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _BSP_VARS:
        monkeypatch.delenv(name, raising=False)


class GatedExporter(SpanExporter):
    """Holds every export until the gate opens: the queue fills as under a slow collector."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.gate.wait(10)
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


def test_defaults_fit_bursts_beyond_the_sdk_defaults() -> None:
    settings = BatchSettings.resolve()
    assert settings.max_queue_size >= 8 * 2048
    assert settings.max_export_batch_size > 512
    assert settings.schedule_delay_millis < 5000


def test_env_overrides_defaults_and_arguments_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(batching.QUEUE_ENV, "4096")
    monkeypatch.setenv(batching.BATCH_ENV, "256")
    monkeypatch.setenv(batching.DELAY_ENV, "250")
    env = BatchSettings.resolve()
    assert (env.max_queue_size, env.max_export_batch_size, env.schedule_delay_millis) == (4096, 256, 250)
    explicit = BatchSettings.resolve(max_queue_size=100, max_export_batch_size=50,
                                     schedule_delay_millis=10)
    assert (explicit.max_queue_size, explicit.max_export_batch_size,
            explicit.schedule_delay_millis) == (100, 50, 10)


def test_bad_env_value_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(batching.QUEUE_ENV, "lots")
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        assert BatchSettings.resolve().max_queue_size == batching.DEFAULT_MAX_QUEUE_SIZE
    assert batching.QUEUE_ENV in caplog.text


def test_a_small_env_queue_caps_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(batching.QUEUE_ENV, "64")
    settings = BatchSettings.resolve()
    assert settings.max_export_batch_size == 64


def test_configure_tracing_uses_the_resolved_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(batching.QUEUE_ENV, "3000")
    provider = configure_tracing(file=tmp_path / "t.jsonl", set_global=False,
                                 max_export_batch_size=300)
    try:
        processors = provider._active_span_processor._span_processors
        assert len(processors) == 1
        processor = processors[0]
        assert isinstance(processor, DropReportingBatchSpanProcessor)
        assert processor.settings.max_queue_size == 3000  # from the environment
        assert processor.settings.max_export_batch_size == 300  # the argument
        assert processor.settings.schedule_delay_millis == batching.DEFAULT_SCHEDULE_DELAY_MILLIS
    finally:
        provider.shutdown()


def _burst(report_interval: float, spans: int = 200) -> tuple[DropReportingBatchSpanProcessor,
                                                                GatedExporter, TracerProvider]:
    exporter = GatedExporter()
    processor = DropReportingBatchSpanProcessor(
        exporter, BatchSettings.resolve(max_queue_size=20, max_export_batch_size=10,
                                        schedule_delay_millis=60_000),
        report_interval=report_interval)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("burst")
    for i in range(spans):
        tracer.start_span(f"s{i}").end()
        if i == 9:  # one full batch: the worker takes it and blocks in export, as on a slow link
            assert exporter.entered.wait(5)
    return processor, exporter, provider


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "otel_callbacks" and "spans dropped" in r.getMessage()]


def test_a_burst_past_a_small_queue_is_counted_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        processor, exporter, provider = _burst(report_interval=0.2)
        deadline = time.monotonic() + 5
        while not _warnings(caplog) and time.monotonic() < deadline:
            time.sleep(0.02)
        exporter.gate.set()
        provider.force_flush()
        provider.shutdown()
    exported = len(exporter.spans)
    dropped = 200 - exported
    assert dropped == 200 - 10 - 20  # one batch in flight and a full queue got through
    assert processor.dropped_spans == dropped
    warnings = _warnings(caplog)
    assert len(warnings) == 1  # one per interval, not one per span
    message = warnings[0].getMessage()
    assert f"{dropped} spans dropped" in message
    assert batching.QUEUE_ENV in message and "(now 20)" in message


def test_drops_not_yet_reported_are_reported_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        processor, exporter, provider = _burst(report_interval=3600)
        assert not _warnings(caplog)  # the interval has not passed
        exporter.gate.set()
        provider.force_flush()
        provider.shutdown()
    dropped = 200 - len(exporter.spans)
    assert dropped > 0 and processor.dropped_spans == dropped
    assert [f"{dropped} spans dropped" in r.getMessage() for r in _warnings(caplog)] == [True]


def test_no_drop_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    exporter = GatedExporter()
    exporter.gate.set()
    processor = DropReportingBatchSpanProcessor(exporter, BatchSettings.resolve(),
                                                report_interval=0.01)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        for i in range(500):
            provider.get_tracer("t").start_span(f"s{i}").end()
        provider.force_flush()
        provider.shutdown()
    assert len(exporter.spans) == 500
    assert processor.dropped_spans == 0
    assert not _warnings(caplog)
    assert processor.span_exporter is exporter


_FALLBACKS = {
    "queue length": lambda self: self._batch_processor._queue.__len__,
    "ended minus exported": lambda self: (lambda: self._ended - self._counting.handed),
}


@pytest.mark.parametrize("fallback", list(_FALLBACKS))
def test_fallbacks_count_without_the_sdk_drop_signal(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture,
                                                      fallback: str) -> None:
    """An SDK without the metrics hook: check the queue (or what it must hold) per span."""
    monkeypatch.setattr(DropReportingBatchSpanProcessor, "_watch_drops", _FALLBACKS[fallback])
    with caplog.at_level(logging.WARNING, logger="otel_callbacks"):
        processor, exporter, provider = _burst(report_interval=3600)
        exporter.gate.set()
        provider.force_flush()
        provider.shutdown()
    dropped = 200 - len(exporter.spans)
    assert dropped >= 150
    # A batch the worker takes between our check and the SDK's may be miscounted by its size.
    assert dropped - 10 <= processor.dropped_spans <= dropped + 10
    assert _warnings(caplog)
