"""Write deploy/grafana/dashboards/llm-app.json, the "LLM app" dashboard, from typed builders.

    .venv/bin/pip install grafana-foundation-sdk   # a tool for this script, never a dependency
    .venv/bin/python scripts/build_dashboard.py      # rewrites the JSON; commit both

Every metric and label name below is one the handler records, after the OTLP-to-Prometheus
translation (dots to underscores, the unit as a suffix: ``gen_ai.client.operation.duration``
in seconds is ``gen_ai_client_operation_duration_seconds``). Each query keeps
``otel_scope_name="otel_callbacks"``: a provider instrumentation that records the same GenAI
metric for the same call has its own scope, so nothing is counted twice.
tests/e2e/test_dashboard_prometheus.py runs every PromQL expression here against a real
Prometheus fed by traced LangChain runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    table,
    tempo,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as kinds
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "llm-app.json"
UID = "otel-callbacks-llm-app"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioned uids
TEMPO = DataSourceRef(type_val="tempo", uid="tempo")

SCOPE = 'otel_scope_name="otel_callbacks"'
SERVICE = 'service_name=~"$service"'
MODEL = 'gen_ai_request_model=~"$model"'
MODELS = f"{SCOPE}, {SERVICE}, {MODEL}"  # model-run series of the chosen services and models
TOOLS = f"{SCOPE}, {SERVICE}"
WINDOW = "[$__rate_interval]"

DURATION = "gen_ai_client_operation_duration_seconds"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds"
TOKENS = "gen_ai_client_token_usage"
CACHE_TOKENS = "langchain_llm_cache_token_usage"
TOOL_DURATION = "langchain_tool_duration_seconds"


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()
            .datasource(PROMETHEUS))


def by_model(expr: str) -> str:
    """Series of models that report no name (no gen_ai.request.model) are shown as "unknown"."""
    return f'label_replace({expr}, "gen_ai_request_model", "unknown", "gen_ai_request_model", "")'


def quantiles(metric: str) -> list[prometheus.Dataquery]:
    """p50/p95/p99 by model, with exemplars (each opens its trace in Tempo)."""
    return [query(by_model(f"histogram_quantile({q}, sum by (le, gen_ai_request_model) "
                           f"(rate({metric}_bucket{{{MODELS}}}{WINDOW})))"),
                  f"p{int(q * 100)} {{{{gen_ai_request_model}}}}", ref).exemplar(True)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))]


def graph(title: str, description: str, unit: str, targets: list[prometheus.Dataquery],
          width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(PROMETHEUS).height(8).span(width).fill_opacity(10).line_width(1)
             .legend(common.VizLegendOptions().show_legend(True).display_mode(
                 kinds.LegendDisplayMode.TABLE).placement(kinds.LegendPlacement.BOTTOM)
                 .calcs(["mean", "max"]))
             .tooltip(common.VizTooltipOptions().mode(kinds.TooltipDisplayMode.MULTI)
                      .sort(kinds.SortOrder.DESCENDING)))
    return panel.targets(targets)


def panels() -> list[timeseries.Panel | bargauge.Panel | table.Panel]:
    return [
        graph("Requests per operation and model",
              "Model calls per second, by gen_ai.operation.name and gen_ai.request.model.",
              "reqps", [query(by_model(f"sum by (gen_ai_operation_name, gen_ai_request_model) "
                                       f"(rate({DURATION}_count{{{MODELS}}}{WINDOW}))"),
                              "{{gen_ai_operation_name}} {{gen_ai_request_model}}")]),
        graph("Errors per operation and model",
              "Failed model calls per second, by operation, model and error.type.",
              "reqps", [query(by_model(f"sum by (gen_ai_operation_name, gen_ai_request_model, error_type) "
                                       f"(rate({DURATION}_count{{{MODELS}, error_type!=\"\"}}{WINDOW}))"),
                              "{{gen_ai_operation_name}} {{gen_ai_request_model}}: {{error_type}}")]),
        graph("Tokens per second by model",
              "Input and output tokens (gen_ai.client.token.usage) and prompt-cache reads and "
              "writes (langchain.llm.cache.token.usage, a part of the input), per model.",
              "short", [
                  query(by_model(f"sum by (gen_ai_request_model, gen_ai_token_type) "
                                 f"(rate({TOKENS}_sum{{{MODELS}}}{WINDOW}))"),
                        "{{gen_ai_request_model}} {{gen_ai_token_type}}"),
                  query(by_model(f"sum by (gen_ai_request_model, gen_ai_token_type) "
                                 f"(rate({CACHE_TOKENS}_sum{{{MODELS}}}{WINDOW}))"),
                        "{{gen_ai_request_model}} {{gen_ai_token_type}}", "B"),
              ]),
        tokens_in_range(),
        graph("Operation duration p50 / p95 / p99 by model",
              "gen_ai.client.operation.duration quantiles per model; exemplars open the trace.",
              "s", quantiles(DURATION)),
        graph("Time to first chunk p50 / p95 / p99 by model",
              "gen_ai.client.operation.time_to_first_chunk (streamed calls) quantiles per model.",
              "s", quantiles(TTFC)),
        graph("Tool calls and failures per tool",
              "Tool runs per second (langchain.tool.duration count) and the failed ones, by "
              "gen_ai.tool.name and error.type.",
              "reqps", [
                  query(f"sum by (gen_ai_tool_name) (rate({TOOL_DURATION}_count{{{TOOLS}}}{WINDOW}))",
                        "{{gen_ai_tool_name}} calls"),
                  query(f"sum by (gen_ai_tool_name, error_type) "
                        f"(rate({TOOL_DURATION}_count{{{TOOLS}, error_type!=\"\"}}{WINDOW}))",
                        "{{gen_ai_tool_name}} failed: {{error_type}}", "B"),
              ]),
        graph("Error rate by error.type",
              "Share of model calls (and of tool calls) that failed, per error.type.",
              "percentunit", [
                  query(f"sum by (error_type) (rate({DURATION}_count{{{MODELS}, error_type!=\"\"}}{WINDOW}))"
                        f" / on() group_left() sum(rate({DURATION}_count{{{MODELS}}}{WINDOW}))",
                        "model: {{error_type}}"),
                  query(f"sum by (error_type) (rate({TOOL_DURATION}_count{{{TOOLS}, error_type!=\"\"}}{WINDOW}))"
                        f" / on() group_left() sum(rate({TOOL_DURATION}_count{{{TOOLS}}}{WINDOW}))",
                        "tool: {{error_type}}", "B"),
              ]),
        slowest_chat_traces(),
    ]


def tokens_in_range() -> bargauge.Panel:
    """One bar per model and token type: the totals a bill is made of."""
    return (bargauge.Panel().title("Tokens in the time range by model")
            .description("Total tokens per model and token type over the dashboard's time range "
                         "(input, output, and the cache reads and writes within the input).")
            .datasource(PROMETHEUS).height(8).span(12).unit("short")
            .orientation(kinds.VizOrientation.HORIZONTAL)
            .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
            .targets([
                query(by_model(f"sum by (gen_ai_request_model, gen_ai_token_type) "
                               f"(increase({TOKENS}_sum{{{MODELS}}}[$__range]))"),
                      "{{gen_ai_request_model}} {{gen_ai_token_type}}").instant(),
                query(by_model(f"sum by (gen_ai_request_model, gen_ai_token_type) "
                               f"(increase({CACHE_TOKENS}_sum{{{MODELS}}}[$__range]))"),
                      "{{gen_ai_request_model}} {{gen_ai_token_type}}", "B").instant(),
            ]))


def slowest_chat_traces() -> table.Panel:
    """Recent chat spans from Tempo, slowest first; a trace id opens the trace in Explore."""
    traceql = ('{ span.gen_ai.operation.name = "chat" && resource.service.name =~ "$service" '
               '&& span.gen_ai.request.model =~ "$model" }')
    explore = ('/explore?schemaVersion=1&panes={"trace":{"datasource":"tempo","queries":[{"refId":"A",'
               '"datasource":{"type":"tempo","uid":"tempo"},"queryType":"traceql",'
               '"query":"${__value.raw}"}],"range":{"from":"now-1h","to":"now"}}}')
    return (table.Panel().title("Slowest recent chat traces")
            .description("TraceQL on Tempo: traces with a chat span of the chosen services and "
                         "models, longest first. Click a trace id to open the trace.")
            .datasource(TEMPO).height(10).span(24)
            .targets([tempo.TempoQuery().ref_id("A").query_type("traceql").query(traceql)
                      .limit(20).datasource(TEMPO)])
            .sort_by([common.TableSortByFieldState().display_name("Duration").desc(True)])
            .override_by_name("Trace ID", [DynamicConfigValue(
                id_val="links", value=[{"title": "Open trace", "url": explore}])]))


def variable(name: str, label: str, expr: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).datasource(PROMETHEUS)
            .query(expr).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True).all_value(".*")
            .current(VariableOption(text="All", value="$__all", selected=True)))


def build() -> dict[str, object]:
    board = (dashboard.Dashboard("LLM app").uid(UID).tags(["otel-callbacks", "genai"])
             .description("LangChain apps traced by otel-callbacks: calls, errors, tokens, "
                          "latency, tools and the slowest traces.")
             .time("now-1h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
             .readonly()
             .with_variable(variable("service", "Service", f"label_values({DURATION}_count{{{SCOPE}}}, service_name)"))
             .with_variable(variable("model", "Model", f"label_values({DURATION}_count{{{SCOPE}, {SERVICE}}}, gen_ai_request_model)")))
    for index, panel in enumerate(panels(), 1):
        board.with_panel(panel.id(index))
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def main() -> int:
    text = json.dumps(build(), indent=2, sort_keys=True) + "\n"
    if "--check" in sys.argv[1:]:  # CI-style: is the committed JSON what this script writes?
        return 0 if OUTPUT.read_text(encoding="utf-8") == text else 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
