"""Every PromQL query of the "LLM app" dashboard runs against a real Prometheus (issue 14).

Real LangChain runs (a chat, a stream, a failed model call, a tool call and a failing tool)
are traced by ``OTelHandler`` with a real MeterProvider whose metrics are served by the
standard ``opentelemetry-exporter-prometheus`` reader and scraped by Debian's Prometheus
(started here, stopped by pid). Then each expression in the dashboard JSON, with its
variables substituted, goes through Prometheus's HTTP API and must return series carrying
the labels its panel groups by and shows. A panel whose query returns nothing fails.

The reader is given ``service.name`` as a label, as the stack's collector does with
``resource_to_telemetry_conversion``; both translate names by the same OTLP-to-Prometheus rules.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .prometheus import PrometheusError, PrometheusServer, prometheus_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llm-app.json"
SERVICE = "llm-dashboard-e2e"
MODEL = "fake-model-1"
OTHER_MODEL = "fake-model-2"
# Grafana's built-in variables, as Grafana would expand them for a one-hour dashboard.
BUILTINS = {"$__rate_interval": "1m", "$__range": "10m", "$__interval": "15s"}
ROUNDS = 2  # runs before and after a scrape, so rates see an increase


def _labels_used(expr: str, legend: str) -> set[str]:
    """The labels a panel shows: its ``sum by (...)`` labels and its legend's ``{{label}}``."""
    grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr)
               for label in group.split(",")} - {"le"}
    return grouped | set(re.findall(r"\{\{(\w+)\}\}", legend))


def _substitute(text: str, variables: dict[str, str]) -> str:
    for name, value in {**BUILTINS, **variables}.items():
        text = text.replace(name, value)
    assert "$" not in text, f"unsubstituted variable in {text}"
    return text


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def fed_prometheus(tmp_path_factory: pytest.TempPathFactory):
    """Prometheus scraping an app whose traced LangChain runs recorded the handler's metrics."""
    from opentelemetry import metrics as metrics_api
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import REGISTRY, start_http_server

    from .phoenix import free_port

    binary = prometheus_binary()
    if binary is None:
        pytest.fail("OTEL_CALLBACKS_E2E=1 but no prometheus binary: apt-get install prometheus "
                    "(scripts/ci-e2e.sh does) or set PROMETHEUS_BIN", pytrace=False)

    resource = Resource.create({"service.name": SERVICE})
    reader = PrometheusMetricReader(resource_attribute_filter=lambda key: key == "service.name")
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    exporter_port = free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=REGISTRY)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))

    prom = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"),
                            targets=[f"127.0.0.1:{exporter_port}"])
    try:
        prom.start()
    except PrometheusError as exc:
        server.shutdown()
        pytest.fail(f"OTEL_CALLBACKS_E2E=1 but Prometheus did not start: {exc}", pytrace=False)
    try:
        # A provider instrumentation recording the same GenAI metric for the same calls (as
        # the official OpenAI instrumentation would): the dashboard must not count it.
        provider_meter = metrics_api.get_meter("opentelemetry.instrumentation.openai_v2",
                                               meter_provider=meter_provider)
        duplicate = provider_meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
        for round_number in range(1, ROUNDS + 1):
            _traced_runs(tracer_provider, meter_provider, duplicate)
            _wait_for(prom, round_number)
        yield prom, spans.get_finished_spans()
    finally:
        prom.stop()
        server.shutdown()
        meter_provider.shutdown()  # unregisters the reader from the global registry
        tracer_provider.shutdown()


def _traced_runs(tracer_provider: Any, meter_provider: Any, duplicate: Any) -> None:
    """A chat, a stream, a failed model call, two more models, a tool call and a failing tool."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from test_genai_conventions import USAGE, AppError, FakeChat, add, tool_call

    from otel_callbacks import OTelHandler

    @tool
    def flaky_lookup(order_id: str) -> str:
        """Look an order up (the backend is down)."""
        raise AppError("order service unavailable")

    handler = OTelHandler(tracer_provider, meter_provider=meter_provider)
    config = {"callbacks": [handler]}
    FakeChat().invoke("hello", config=config)
    for _ in FakeChat(chunks=["str", "eam", "ed"]).stream("stream please", config=config):
        pass
    with pytest.raises(AppError):
        FakeChat(error=AppError("model overloaded")).invoke("fail", config=config)
    FakeChat(model=OTHER_MODEL).invoke("another model", config=config)
    # A model that reports no name: no gen_ai.request.model on its series.
    GenericFakeChatModel(messages=iter([AIMessage("plain")])).invoke("hi", config=config)
    add.invoke(tool_call("add", {"a": 1, "b": 2}, "call-1"), config=config)
    with pytest.raises(AppError):
        flaky_lookup.invoke({"order_id": "A1"}, config=config)
    duplicate.record(USAGE["input_tokens"], {"gen_ai.operation.name": "chat",
                                             "gen_ai.request.model": MODEL,
                                             "gen_ai.token.type": "input"})


def _wait_for(prom: PrometheusServer, round_number: int, timeout: float = 30.0) -> None:
    """Until Prometheus has scraped this round's tool calls (the last runs of a round)."""
    expr = f'sum(langchain_tool_duration_seconds_count{{service_name="{SERVICE}"}})'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prom.query(expr)
        if result and float(result[0]["value"][1]) >= 2 * round_number:
            time.sleep(1.5)  # and one more scrape, so every series has this round's sample
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never scraped round {round_number}:\n{prom.log_tail()}")


def _prometheus_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])
            if target["datasource"]["type"] == "prometheus"]


@pytest.mark.parametrize("variables", [
    pytest.param({"$service": ".*", "$model": ".*"}, id="all"),
    pytest.param({"$service": SERVICE, "$model": MODEL}, id="one-service-one-model"),
])
def test_every_dashboard_query_returns_series(fed_prometheus, dashboard, variables,
                                              record_property) -> None:
    prom, _ = fed_prometheus
    targets = _prometheus_targets(dashboard)
    assert targets, "no PromQL in the dashboard"
    counts: dict[str, int] = {}
    for panel, target in targets:
        expr = _substitute(target["expr"], variables)
        result = prom.query(expr)
        where = f"panel {panel['id']} {panel['title']!r} query {target['refId']}: {expr}"
        assert result, f"no series for {where}"
        for series in result:
            missing = _labels_used(target["expr"], target.get("legendFormat", "")) - set(series["metric"])
            assert not missing, f"{where}: series {series['metric']} lacks {missing}"
            value = float(series["value"][1])
            assert math.isfinite(value) and value >= 0, f"{where}: value {value}"
        assert any(float(s["value"][1]) > 0 for s in result), f"{where}: every value is 0"
        counts[f"{panel['id']}{target['refId']} {panel['title']}"] = len(result)
    record_property("series_per_query", counts)
    print(f"\nseries per query ({variables}):")
    for name, count in counts.items():
        print(f"  {count:3d}  {name}")


def test_variables_list_the_service_and_models(fed_prometheus, dashboard) -> None:
    prom, _ = fed_prometheus
    values: dict[str, list[str]] = {}
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector = _substitute(match[1], {"$service": ".*", "$model": ".*"})
        values[variable["name"]] = prom.label_values(match[2], selector)
    assert values["service"] == [SERVICE]
    assert set(values["model"]) == {MODEL, OTHER_MODEL}, values


def test_models_without_a_name_show_as_unknown(fed_prometheus, dashboard) -> None:
    prom, _ = fed_prometheus
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Requests per operation and model"]
    result = prom.query(_substitute(panel["targets"][0]["expr"], {"$service": ".*", "$model": ".*"}))
    models = {s["metric"]["gen_ai_request_model"] for s in result}
    assert models == {MODEL, OTHER_MODEL, "unknown"}


def test_tokens_are_counted_once_despite_a_provider_instrumentation(fed_prometheus, dashboard) -> None:
    prom, _ = fed_prometheus
    token_queries = [t["expr"] for _, t in _prometheus_targets(dashboard)
                     if "token_usage" in t["expr"]]
    assert token_queries and all('otel_scope_name="otel_callbacks"' in q for q in token_queries)
    base = f'gen_ai_client_token_usage_sum{{service_name="{SERVICE}", gen_ai_request_model="{MODEL}", gen_ai_token_type="input"}}'
    everything = float(prom.query(f"sum({base})")[0]["value"][1])
    ours = float(prom.query(f'sum({base[:-1]}, otel_scope_name="otel_callbacks"}})')[0]["value"][1])
    # Per round: 11 (chat) + 4 (stream) input tokens from the handler, 11 from the duplicate.
    assert ours == ROUNDS * (11 + 4)
    assert everything == ours + ROUNDS * 11


def test_traceql_table_uses_attributes_the_chat_spans_carry(fed_prometheus, dashboard) -> None:
    _, spans = fed_prometheus
    [panel] = [p for p in dashboard["panels"] if p["datasource"]["type"] == "tempo"]
    [target] = panel["targets"]
    assert target["queryType"] == "traceql"
    conditions = re.findall(r"(span|resource)\.([\w.]+) (=~|=) \"([^\"]*)\"", target["query"])
    assert conditions, target["query"]
    variables = {"$service": SERVICE, "$model": MODEL}
    matching = []
    for span in spans:
        ok = True
        for scope, key, op, value in conditions:
            attributes = span.resource.attributes if scope == "resource" else span.attributes
            actual = attributes.get(key)
            wanted = _substitute(value, variables)
            ok = ok and actual is not None and (
                re.fullmatch(wanted, str(actual)) if op == "=~" else str(actual) == wanted)
        if ok:
            matching.append(span)
    # chat + stream (and the failed call) of fake-model-1, per round
    assert {s.name for s in matching} == {f"chat {MODEL}"}
    assert len(matching) == 3 * ROUNDS
