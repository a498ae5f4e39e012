"""Issue 14: metrics set up from the environment, like traces (``configure_metrics``/``configure``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

from otel_callbacks.config import configure_metrics, resolve_metrics_destinations

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_no_endpoint_means_no_metric_exporter() -> None:
    # The local file holds spans only; metrics need somewhere to go.
    assert resolve_metrics_destinations() == []
    provider = configure_metrics(set_global=False)
    assert isinstance(provider, MeterProvider)
    provider.shutdown()


def test_endpoint_means_otlp_http_with_metrics_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    [destination] = resolve_metrics_destinations()
    assert isinstance(destination.exporter, HttpMetrics)
    assert destination.exporter._endpoint == destination.target == "http://collector:4318/v1/metrics"
    assert destination.kind == "otlp http/protobuf"


def test_metrics_specific_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:9999/custom")
    [destination] = resolve_metrics_destinations()
    assert destination.target == "http://metrics:9999/custom"  # used as is
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    [destination] = resolve_metrics_destinations()
    assert isinstance(destination.exporter, GrpcMetrics) and destination.kind == "otlp grpc"


def test_port_4317_means_grpc() -> None:
    [destination] = resolve_metrics_destinations(endpoint="localhost:4317")
    assert isinstance(destination.exporter, GrpcMetrics)
    assert destination.target == "http://localhost:4317"


@pytest.mark.parametrize(("value", "expected"), [
    ("console", [ConsoleMetricExporter]),
    ("otlp_proto_grpc,console", [GrpcMetrics, ConsoleMetricExporter]),
    ("otlp_proto_http", [HttpMetrics]),
    ("none", []),
])
def test_otel_metrics_exporter(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[type]) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", value)
    assert [type(d.exporter) for d in resolve_metrics_destinations()] == expected


def test_unknown_metrics_exporter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "carrier_pigeon")
    with pytest.raises(ValueError, match="OTEL_METRICS_EXPORTER: unknown exporter 'carrier_pigeon'"):
        resolve_metrics_destinations()


def test_explicit_arguments_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")
    [destination] = resolve_metrics_destinations(endpoint="http://c:4318", protocol="http")
    assert isinstance(destination.exporter, HttpMetrics) and destination.target == "http://c:4318/v1/metrics"


def test_configure_installs_both_providers_and_metrics_flush_at_exit() -> None:
    # One call; a handler made *before* it (as at import time) measures once it is done.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from opentelemetry import metrics, trace
        from otel_callbacks import OTelHandler
        from otel_callbacks.config import configure
        from test_genai_conventions import FakeChat

        handler = OTelHandler()
        providers = configure(default_service_name="metrics-exit-test")
        assert trace.get_tracer_provider() is providers.tracer_provider
        assert metrics.get_meter_provider() is providers.meter_provider
        FakeChat().invoke("hi", config={{"callbacks": [handler]}})
        # no flush, no shutdown: the providers do it at interpreter exit
    """)
    env = _env()
    env.update(OTEL_METRICS_EXPORTER="console", OTEL_TRACES_EXPORTER="none",
               OTEL_METRIC_EXPORT_INTERVAL="600000")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    [resource_metrics] = exported["resource_metrics"]
    assert resource_metrics["resource"]["attributes"]["service.name"] == "metrics-exit-test"
    [scope] = resource_metrics["scope_metrics"]
    assert scope["scope"]["name"] == "otel_callbacks"
    names = {m["name"] for m in scope["metrics"]}
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= names


def test_prometheus_entry_point_serves_the_handlers_metrics() -> None:
    # OTEL_METRICS_EXPORTER=prometheus: the exporter package's entry point, a pull endpoint.
    pytest.importorskip("opentelemetry.exporter.prometheus")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = textwrap.dedent(f"""
        import sys, urllib.request
        sys.path.insert(0, {str(TESTS)!r})
        from otel_callbacks import OTelHandler
        from otel_callbacks.config import configure_metrics
        from test_genai_conventions import FakeChat

        configure_metrics()
        FakeChat().invoke("hi", config={{"callbacks": [OTelHandler()]}})
        print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
    """)
    env = _env()
    env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
               OTEL_EXPORTER_PROMETHEUS_PORT=str(port))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    count = [line for line in result.stdout.splitlines()
             if line.startswith("gen_ai_client_operation_duration_seconds_count{")]
    assert len(count) == 1 and 'otel_scope_name="otel_callbacks"' in count[0]
    assert count[0].endswith(" 1.0")


def test_opentelemetry_instrument_gets_metrics_through_the_sdk_configurator(tmp_path: Path) -> None:
    # Zero code: the SDK configurator (what opentelemetry-distro runs) sets up the global
    # MeterProvider from OTEL_METRICS_EXPORTER, and the instrumentor's handler records on it.
    from test_instrumentation import _install_app_with_entry_points

    script = Path(sys.executable).with_name("opentelemetry-instrument")
    if not script.exists():
        pytest.skip("opentelemetry-instrument is not installed")
    _install_app_with_entry_points(tmp_path)
    env = _env()
    env.update(PYTHONPATH=str(tmp_path / "site"), OTEL_TRACES_EXPORTER="none",
               OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="600000",
               OTEL_LOGS_EXPORTER="none", OTEL_SERVICE_NAME="zero-code-app")
    result = subprocess.run([str(script), sys.executable, "app.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == "HELLO"
    exported = json.loads(rest)  # the console exporter's flush at exit
    points = {m["name"]: m["data"]["data_points"]
              for rm in exported["resource_metrics"] for sm in rm["scope_metrics"]
              if sm["scope"]["name"] == "otel_callbacks" for m in sm["metrics"]}
    assert [p["count"] for p in points["gen_ai.client.operation.duration"]] == [1]
    assert [p["attributes"]["gen_ai.tool.name"] for p in points["langchain.tool.duration"]] == ["shout"]
