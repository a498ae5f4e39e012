"""The backend goes away: the traced app neither slows down materially nor fails; when the
backend is back (same address), new traces arrive."""

from __future__ import annotations

import statistics
import time

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import format_trace_id

from .apps import RecordingExporter, build_weather_app, make_provider
from .test_otlp_export import otlp_exporter

pytestmark = pytest.mark.e2e

EXPORT_TIMEOUT_S = 2  # the exporter's own deadline per export, retries included
N = 40
INPUT = {"question": "Do I need an umbrella in rain?", "city": "Bergen"}


def _timed_invokes(app, config, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        assert app.invoke(INPUT, config=config) == "Take an umbrella."
        out.append(time.perf_counter() - start)
    return out


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_backend_outage_does_not_block_the_app(protocol, running_phoenix, otel_handler_cls):
    phoenix = running_phoenix
    exporter = RecordingExporter(otlp_exporter(protocol, phoenix, timeout=EXPORT_TIMEOUT_S))
    provider, sent_copy = make_provider(exporter, f"otel-callbacks-e2e-outage-{protocol}",
                                        schedule_delay_millis=100)
    config = {"callbacks": [otel_handler_cls(tracer_provider=provider)]}
    app = build_weather_app()
    try:
        _timed_invokes(app, config, 5)  # warm-up: imports, first connection
        baseline = _timed_invokes(app, config, N)
        assert provider.force_flush(30_000)
        assert exporter.results and all(r is SpanExportResult.SUCCESS for r in exporter.results)

        phoenix.stop()
        exports_before_outage = len(exporter.results)
        outage = _timed_invokes(app, config, N)  # raises if the app fails
        # The outage is real: the exporter tried to send those spans and failed.
        _wait(lambda: SpanExportResult.FAILURE in exporter.results[exports_before_outage:],
              timeout=6 * EXPORT_TIMEOUT_S, what="a failed export while Phoenix is down")

        base_med, out_med = statistics.median(baseline), statistics.median(outage)
        print(f"\n[{protocol}] invoke median: up {base_med * 1e3:.2f} ms, down {out_med * 1e3:.2f} ms; "
              f"max down {max(outage) * 1e3:.1f} ms")
        assert out_med <= 3 * base_med + 0.020, (base_med, out_med)
        # Never waits for the exporter: even the slowest call is far below its deadline.
        assert max(outage) < EXPORT_TIMEOUT_S / 2, max(outage)

        # Back up, same ports and working dir: new traces arrive.
        phoenix.start()
        # A batch exported while the exporter is still reconnecting (gRPC channel backoff) is
        # dropped by the SDK, as in any outage; so run rounds until one export succeeds,
        # then that round's traces must all be in Phoenix.
        for round_no in range(1, 11):
            sent_copy.clear()
            exports_before = len(exporter.results)
            _timed_invokes(app, config, 3)
            provider.force_flush(30_000)
            if exporter.results[exports_before:] and all(
                r is SpanExportResult.SUCCESS for r in exporter.results[exports_before:]
            ):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"no successful export after restart: {exporter.results[-10:]}")
        print(f"[{protocol}] exports succeed again in round {round_no} after the restart")
        finished = sent_copy.get_finished_spans()
        new_traces = {format_trace_id(s.context.trace_id) for s in finished}
        assert len(new_traces) == 3
        received = phoenix.wait_for_spans(new_traces, len(finished), timeout=30)
        assert {s["context"]["trace_id"] for s in received} == new_traces
        assert len(received) == len(finished)
    finally:
        provider.shutdown()
