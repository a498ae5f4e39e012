"""A real LangChain app, traced by OTelHandler, exported over OTLP (gRPC and HTTP) to Phoenix
and read back: the span tree Phoenix stores is the run tree LangChain reported."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from .apps import EXPLOSION, RunRecorder, build_failing_pipeline, build_weather_app, make_provider
from .checks import OP_NAME, assert_error_span, assert_matches_run_tree

pytestmark = pytest.mark.e2e


def otlp_exporter(protocol: str, phoenix, timeout: float = 10):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=phoenix.otlp_grpc_endpoint, insecure=True, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=phoenix.otlp_http_endpoint, timeout=timeout)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_run_tree_round_trips_through_otlp(protocol, running_phoenix, otel_handler_cls):
    phoenix = running_phoenix
    provider, sent_copy = make_provider(otlp_exporter(protocol, phoenix), f"otel-callbacks-e2e-{protocol}")
    recorder = RunRecorder()
    config = {"callbacks": [recorder, otel_handler_cls(tracer_provider=provider)]}

    answer = build_weather_app().invoke({"question": "Do I need an umbrella in rain?", "city": "Oslo"},
                                        config=config)
    assert answer == "Take an umbrella."
    with pytest.raises(ValueError, match=EXPLOSION):
        build_failing_pipeline().invoke("anything", config=config)

    assert provider.force_flush(30_000)
    sent = sent_copy.get_finished_spans()
    provider.shutdown()
    trace_ids = {format_trace_id(s.context.trace_id) for s in sent}
    assert len(trace_ids) == 2, "one trace per top-level invoke"
    received = phoenix.wait_for_spans(trace_ids, len(sent))

    # Exactly what the SDK exported arrived: no span lost, none duplicated.
    assert sorted(s["context"]["span_id"] for s in received) == sorted(
        format_span_id(s.context.span_id) for s in sent
    )
    assert len(recorder.runs) == len(sent)

    roots = {r.name: r for r in recorder.roots()}
    assert set(roots) == {"weather_app", "failing_pipeline"}
    trees = {}
    for name, root in roots.items():
        runs = recorder.tree_of(root.run_id)
        root_span = next(s for s in received if s["attributes"].get("langchain.run.id") == root.run_id)
        spans = [s for s in received if s["context"]["trace_id"] == root_span["context"]["trace_id"]]
        trees[name] = assert_matches_run_tree(spans, runs)

    # The app: every kind of run is there, with its GenAI operation.
    app_runs = recorder.tree_of(roots["weather_app"].run_id)
    app_spans = trees["weather_app"]
    kinds = {r.run_type for r in app_runs.values()}
    assert kinds == {"chain", "retriever", "tool", "chat_model"}
    (chat_run,) = [r for r in app_runs.values() if r.run_type == "chat_model"]
    assert app_spans[chat_run.run_id]["attributes"][OP_NAME] == "chat"
    (tool_run,) = [r for r in app_runs.values() if r.run_type == "tool"]
    assert app_spans[tool_run.run_id]["name"] == "execute_tool get_weather"
    assert app_spans[tool_run.run_id]["attributes"][OP_NAME] == "execute_tool"

    # The failing step is ERROR with its exception; the app that caught it is not.
    (step_run,) = [r for r in app_runs.values() if r.name == "exploding_step"]
    step_span = app_spans[step_run.run_id]
    assert_error_span(step_span, "ValueError")
    (exc_event,) = [e for e in step_span["events"] if e["name"] == "exception"]
    assert exc_event["attributes"]["exception.message"] == EXPLOSION
    assert app_spans[roots["weather_app"].run_id]["status_code"] != "ERROR"

    # An error that escapes marks every run on its way up, the root included.
    failing = trees["failing_pipeline"]
    assert_error_span(failing[roots["failing_pipeline"].run_id], "ValueError")

    # The OTel span kind (Phoenix does not store it; read it from what was exported):
    # model calls are CLIENT, everything else INTERNAL.
    sent_by_run = {s.attributes["langchain.run.id"]: s for s in sent}
    for run_id, run in recorder.runs.items():
        expected = SpanKind.CLIENT if run.run_type in ("chat_model", "llm") else SpanKind.INTERNAL
        assert sent_by_run[run_id].kind == expected, (run.name, sent_by_run[run_id].kind)
