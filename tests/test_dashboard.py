"""The provisioned "LLM app" dashboard (issue 14): valid for Grafana's provisioning, wired to the
provisioned data sources, and built only from metric and label names the handler records.

Whether each query returns data is checked against a real Prometheus in
tests/e2e/test_dashboard_prometheus.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_callbacks import attributes as attr
from otel_callbacks import metrics as handler_metrics

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llm-app.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval", "__value"}

# Instrument name -> unit, as the handler creates them (see otel_callbacks/metrics.py).
INSTRUMENTS = {
    handler_metrics.TOKEN_USAGE: "{token}",
    handler_metrics.OPERATION_DURATION: "s",
    handler_metrics.TIME_TO_FIRST_CHUNK: "s",
    handler_metrics.CACHE_TOKEN_USAGE: "{token}",
    handler_metrics.TOOL_DURATION: "s",
}
# Attributes the handler puts on its measurements, and what the pipeline adds.
ATTRIBUTES = {attr.GEN_AI_OPERATION_NAME, attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_REQUEST_MODEL,
              attr.GEN_AI_RESPONSE_MODEL, attr.GEN_AI_TOKEN_TYPE, attr.ERROR_TYPE, attr.GEN_AI_TOOL_NAME}
PIPELINE_LABELS = {"otel_scope_name", "service_name", "le"}


def prometheus_name(name: str, unit: str) -> str:
    """OTLP-to-Prometheus: non-alphanumerics to "_", the unit as a suffix ({...} units dropped)."""
    suffix = {"s": "seconds", "{token}": ""}[unit]
    base = re.sub(r"[^a-zA-Z0-9:]+", "_", name)
    return f"{base}_{suffix}" if suffix else base


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def datasources() -> dict[str, str]:
    with DATASOURCES.open(encoding="utf-8") as fh:
        return {ds["uid"]: ds["type"] for ds in yaml.safe_load(fh)["datasources"]}


def promql(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])
            if t["datasource"]["type"] == "prometheus"]


def test_provisioning_essentials(board: dict[str, Any]) -> None:
    assert board["title"] == "LLM app"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])  # Grafana's uid limit
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None  # provisioning assigns the database id
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_panels_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_every_datasource_is_provisioned(board: dict[str, Any], datasources: dict[str, str]) -> None:
    refs = [p["datasource"] for p in board["panels"]]
    refs += [t["datasource"] for p in board["panels"] for t in p.get("targets", [])]
    refs += [v["datasource"] for v in board["templating"]["list"]]
    for ref in refs:
        assert datasources.get(ref["uid"]) == ref["type"], ref
    for panel in board["panels"]:  # a panel's queries use the panel's data source
        for target in panel.get("targets", []):
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_variables_for_service_and_model(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"service", "model"}
    for variable in variables.values():
        assert variable["type"] == "query" and variable["includeAll"] and variable["multi"]
        assert variable["allValue"] == ".*"  # "All" also keeps series without the label
    assert variables["service"]["query"].endswith(", service_name)")
    assert variables["model"]["query"].endswith(", gen_ai_request_model)")
    used = set()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\$\{?(\w+)", target.get("expr") or target.get("query", "")))
    for variable in variables.values():
        used |= set(re.findall(r"\$\{?(\w+)", variable["query"]))
    assert used - GRAFANA_BUILTINS <= set(variables), used
    assert {"service", "model"} <= used


def test_queries_use_only_names_the_handler_records(board: dict[str, Any]) -> None:
    known_metrics = {prometheus_name(n, u) + suffix for n, u in INSTRUMENTS.items()
                     for suffix in ("_bucket", "_sum", "_count")}
    known_labels = {re.sub(r"[^a-zA-Z0-9]", "_", a) for a in ATTRIBUTES} | PIPELINE_LABELS
    queries = promql(board) + [v["query"] for v in board["templating"]["list"]]
    assert queries
    for query in queries:
        metrics = set(re.findall(r"\b([a-z_:][a-z0-9_:]*)\{", query))
        assert metrics and metrics <= known_metrics, (query, metrics - known_metrics)
        labels = set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", query))
        for group in re.findall(r"\bby \(([^)]*)\)", query):
            labels |= {label.strip() for label in group.split(",")}
        labels |= set(re.findall(r"label_values\(.*, (\w+)\)", query))
        for target_label, source_label in re.findall(r'"(\w+)", "[^"]*", "(\w+)", ""\)$', query):
            labels |= {target_label, source_label}  # label_replace(..., dst, repl, src, regex)
        assert labels <= known_labels, (query, labels - known_labels)


def test_every_query_counts_only_the_handlers_own_series(board: dict[str, Any]) -> None:
    # A provider instrumentation recording the same GenAI metric has another scope.
    for query in promql(board) + [v["query"] for v in board["templating"]["list"]]:
        selectors = re.findall(r"\b[a-z_]+\{([^}]*)\}", query)
        assert selectors and all('otel_scope_name="otel_callbacks"' in s for s in selectors), query


def test_slowest_chat_traces_table_opens_the_trace(board: dict[str, Any]) -> None:
    [table] = [p for p in board["panels"] if p["type"] == "table"]
    [target] = table["targets"]
    assert target["queryType"] == "traceql" and table["datasource"]["type"] == "tempo"
    assert 'span.gen_ai.operation.name = "chat"' in target["query"]
    assert table["options"]["sortBy"] == [{"desc": True, "displayName": "Duration"}]
    [override] = table["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byName", "options": "Trace ID"}
    [link] = override["properties"][0]["value"]
    assert link["url"].startswith("/explore?") and "${__value.raw}" in link["url"]
    assert '"uid":"tempo"' in link["url"]


def test_the_committed_json_is_what_the_script_writes() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_dashboard.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, "run scripts/build_dashboard.py and commit the JSON"


def test_readme_shows_the_queries_the_dashboard_runs(board: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### See your metrics"):]
    section = section[:section.index("\n## ")]
    shown = [line.strip() for line in section.splitlines()
             if line.strip().startswith(("sum by", "histogram_quantile", "{ span"))]
    wrapper = re.compile(r'label_replace\((.*), "gen_ai_request_model", "unknown", '
                         r'"gen_ai_request_model", ""\)')
    runs = set()
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target.get("expr") or target["query"]
            match = wrapper.fullmatch(expr)
            runs.add(match[1] if match else expr)
    assert len(shown) >= len(board["panels"]) - 1
    assert [q for q in shown if q not in runs] == []
