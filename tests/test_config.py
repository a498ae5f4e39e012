"""configure_tracing / resolve_destinations: the standard OTel environment picks exporters,
protocol, endpoint, resource and sampler; with nothing set spans land in a local file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel_callbacks import OTelHandler
from otel_callbacks.exporters.file_exporter import OTLPJsonFileSpanExporter
from otel_callbacks.exporters.otlp_json import parse_lines
from otel_callbacks.config import build_resource, configure_tracing, resolve_destinations


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _only(**kwargs: object):
    destinations = resolve_destinations(**kwargs)  # type: ignore[arg-type]
    assert len(destinations) == 1, destinations
    return destinations[0]


def test_no_configuration_means_the_local_file(tmp_path: Path) -> None:
    destination = _only()
    assert isinstance(destination.exporter, OTLPJsonFileSpanExporter)
    assert destination.kind == "file" and destination.target == "otel-traces.jsonl"


def test_file_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_CALLBACKS_FILE", str(tmp_path / "traces" / "a.jsonl"))
    assert _only().target == str(tmp_path / "traces" / "a.jsonl")


def test_endpoint_defaults_to_http_protobuf_with_traces_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    destination = _only()
    assert isinstance(destination.exporter, HttpExporter)
    assert destination.exporter._endpoint == destination.target == "http://collector:4318/v1/traces"
    assert destination.kind == "otlp http/protobuf"


def test_grpc_protocol_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:9999")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    destination = _only()
    assert isinstance(destination.exporter, GrpcExporter)
    assert destination.target == "http://collector:9999"
    assert destination.exporter._endpoint == "collector:9999"


def test_traces_specific_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/custom/path")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    destination = _only()
    assert isinstance(destination.exporter, HttpExporter)
    assert destination.exporter._endpoint == "https://traces.example/custom/path"  # used as is


def test_port_4317_means_grpc_when_no_protocol_is_named() -> None:
    destination = _only(endpoint="localhost:4317")
    assert isinstance(destination.exporter, GrpcExporter)
    assert destination.target == "http://localhost:4317"


def test_explicit_arguments_replace_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    destinations = resolve_destinations(endpoint="http://other:4318/", protocol="http",
                                        file=tmp_path / "x.jsonl", console=True)
    assert [type(d.exporter) for d in destinations] == [HttpExporter, OTLPJsonFileSpanExporter,
                                                        ConsoleSpanExporter]
    assert destinations[0].target == "http://other:4318/v1/traces"


@pytest.mark.parametrize(("value", "expected"), [
    ("none", []),
    ("console", [ConsoleSpanExporter]),
    ("otlp_json_file,console", [OTLPJsonFileSpanExporter, ConsoleSpanExporter]),
    ("otlp_proto_grpc", [GrpcExporter]),
    ("otlp", [HttpExporter]),
])
def test_otel_traces_exporter(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[type]) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    assert [type(d.exporter) for d in resolve_destinations()] == expected


def test_otlp_exporter_without_endpoint_uses_the_protocol_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert _only().target == "http://localhost:4317"


@pytest.mark.parametrize(("name", "value"), [("OTEL_TRACES_EXPORTER", "zipkin_json"),
                                             ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
def test_unsupported_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=value):
        resolve_destinations()


def test_resource_and_sampler_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=ai")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = configure_tracing(file=tmp_path / "t.jsonl", set_global=False,
                                 default_service_name="ignored")
    try:
        attributes = provider.resource.attributes
        assert attributes["service.name"] == "checkout"
        assert attributes["deployment.environment"] == "staging" and attributes["team"] == "ai"
        assert provider.sampler is ALWAYS_OFF
    finally:
        provider.shutdown()


def test_default_service_name_only_when_env_names_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_resource("my-app").attributes["service.name"] == "my-app"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-env")
    assert build_resource("my-app").attributes["service.name"] == "from-env"


def test_set_global_false_leaves_the_global_provider(tmp_path: Path) -> None:
    before = trace.get_tracer_provider()
    provider = configure_tracing(file=tmp_path / "t.jsonl", set_global=False)
    provider.shutdown()
    assert trace.get_tracer_provider() is before


def test_spans_in_the_file_are_otlp_json_with_hex_ids(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    provider = configure_tracing(file=out, set_global=False)
    inner = RunnableLambda(lambda x: x + 1, name="inner")
    RunnableLambda(lambda x: inner.invoke(x), name="outer").invoke(
        1, config={"callbacks": [OTelHandler(provider)]})
    provider.force_flush()
    provider.shutdown()
    lines = out.read_text().splitlines()
    span = json.loads(lines[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
    assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
    assert span["kind"] == 1 and isinstance(span["startTimeUnixNano"], str)
    assert {"key": "langchain.run.type", "value": {"stringValue": "chain"}} in span["attributes"]
    records = {r.name: r for r in parse_lines(lines)}
    assert records["inner"].parent_id == records["outer"].span_id
    assert records["outer"].parent_id is None


def test_global_provider_from_env_flushes_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "exit.jsonl"
    script = textwrap.dedent("""
        from langchain_core.runnables import RunnableLambda
        from opentelemetry import trace
        from otel_callbacks import OTelHandler
        from otel_callbacks.config import configure_tracing

        provider = configure_tracing(default_service_name="exit-test")
        assert trace.get_tracer_provider() is provider
        RunnableLambda(lambda x: x, name="step").invoke(1, config={"callbacks": [OTelHandler()]})
        # no flush, no shutdown: the provider does it at interpreter exit
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_CALLBACKS_FILE=str(out), OTEL_BSP_SCHEDULE_DELAY="60000")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (record,) = parse_lines(out.read_text().splitlines())
    assert record.name == "step" and record.service == "exit-test"


def test_the_library_never_imports_the_cli() -> None:
    # Dependencies point down: config (and the exporters it uses) load without cli/.
    code = ("import sys, otel_callbacks, otel_callbacks.config, otel_callbacks.exporters; "
            "print(sorted(m for m in sys.modules if m.startswith('otel_callbacks.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_old_import_paths_still_work() -> None:
    from otel_callbacks.cli.file_exporter import OTLPJsonFileSpanExporter as Old
    from otel_callbacks.cli.otlp_json import parse_lines as old_parse_lines

    assert Old is OTLPJsonFileSpanExporter
    assert old_parse_lines is parse_lines
