"""Issue 3: GenAI client metrics (token usage, operation duration, time to first chunk)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from test_genai_conventions import AppError, FakeChat, FakeLLM, add, cfg, tool_call

from otel_callbacks import attributes as attr

TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
TTFC = "gen_ai.client.operation.time_to_first_chunk"
CACHE = "langchain.llm.cache.token.usage"
TOOL = "langchain.tool.duration"

CHAT_ATTRS = {attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
              attr.GEN_AI_REQUEST_MODEL: "fake-model-1",
              attr.GEN_AI_RESPONSE_MODEL: "fake-model-1-2025"}


class Metrics:
    def __init__(self, **provider_options: Any) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], **provider_options)

    def points(self) -> dict[str, list[HistogramDataPoint]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[HistogramDataPoint]] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out

    def units(self) -> dict[str, str]:
        data = self.reader.get_metrics_data()
        return {m.name: m.unit for rm in data.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics}


@pytest.fixture
def meter() -> Metrics:
    m = Metrics()
    yield m
    m.provider.shutdown()


def by_token_type(points: list[HistogramDataPoint]) -> dict[str, HistogramDataPoint]:
    out = {}
    for point in points:
        token_type = point.attributes[attr.GEN_AI_TOKEN_TYPE]
        assert token_type not in out
        out[token_type] = point
    return out


def test_chat_records_token_usage_and_duration(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    FakeChat().invoke("hi", config=cfg(handler))

    points = meter.points()
    assert set(points) == {TOKEN_USAGE, DURATION, CACHE}  # not a stream: no time to first chunk
    usage = by_token_type(points[TOKEN_USAGE])
    assert set(usage) == {"input", "output"}
    assert (usage["input"].count, usage["input"].sum) == (1, 11)
    assert (usage["output"].count, usage["output"].sum) == (1, 5)
    for token_type, point in usage.items():
        assert dict(point.attributes) == {**CHAT_ATTRS, attr.GEN_AI_TOKEN_TYPE: token_type}

    [duration] = points[DURATION]
    assert dict(duration.attributes) == CHAT_ATTRS
    assert duration.count == 1
    span = tracing.one("chat fake-model-1")
    span_seconds = (span.end_time - span.start_time) / 1e9
    assert 0 < duration.sum <= span_seconds + 0.01
    assert meter.units() == {TOKEN_USAGE: "{token}", DURATION: "s", CACHE: "{token}"}
    # Cache reads are a part of the input, in their own instrument: no sum counts them twice.
    [cache] = points[CACHE]
    assert (cache.count, cache.sum) == (1, 3)
    assert dict(cache.attributes) == {**CHAT_ATTRS, attr.GEN_AI_TOKEN_TYPE: "cache_read"}


def test_stream_records_time_to_first_chunk(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    for _ in FakeChat().stream("hi", config=cfg(handler)):
        pass

    points = meter.points()
    [ttfc] = points[TTFC]
    [duration] = points[DURATION]
    assert dict(ttfc.attributes) == CHAT_ATTRS
    assert ttfc.count == 1
    span_ttfc = tracing.one("chat fake-model-1").attributes[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert ttfc.sum == pytest.approx(span_ttfc)
    assert 0 < ttfc.sum <= duration.sum
    usage = by_token_type(points[TOKEN_USAGE])
    assert (usage["input"].sum, usage["output"].sum) == (4, 5)
    assert meter.units()[TTFC] == "s"


def test_async_stream_records_time_to_first_chunk(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)

    async def consume() -> None:
        async for _ in FakeChat().astream("hi", config=cfg(handler)):
            pass

    asyncio.run(consume())
    points = meter.points()
    assert [p.count for p in points[TTFC]] == [1]
    assert [p.count for p in points[DURATION]] == [1]


def test_text_completion_metrics(tracing: Any, meter: Metrics) -> None:
    FakeLLM().invoke("hi", config=cfg(tracing.handler(meter_provider=meter.provider)))
    usage = by_token_type(meter.points()[TOKEN_USAGE])
    expected = {attr.GEN_AI_OPERATION_NAME: "text_completion", attr.GEN_AI_PROVIDER_NAME: "openai",
                attr.GEN_AI_REQUEST_MODEL: "fake-completion-1",
                attr.GEN_AI_RESPONSE_MODEL: "fake-completion-1-001"}
    assert dict(usage["input"].attributes) == {**expected, attr.GEN_AI_TOKEN_TYPE: "input"}
    assert (usage["input"].sum, usage["output"].sum) == (9, 3)


def test_models_of_different_requests_are_separate_series(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    FakeChat().invoke("a", config=cfg(handler))
    FakeChat().invoke("b", config=cfg(handler))
    FakeChat(model="other").invoke("c", config=cfg(handler))

    durations = {p.attributes[attr.GEN_AI_REQUEST_MODEL]: p.count for p in meter.points()[DURATION]}
    assert durations == {"fake-model-1": 2, "other": 1}


def test_failed_call_records_duration_with_error_type_and_no_tokens(tracing: Any,
                                                                    meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    with pytest.raises(AppError):
        FakeChat(error=AppError("boom")).invoke("hi", config=cfg(handler))

    points = meter.points()
    assert TOKEN_USAGE not in points
    [duration] = points[DURATION]
    assert dict(duration.attributes) == {
        attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
        attr.GEN_AI_REQUEST_MODEL: "fake-model-1",
        attr.ERROR_TYPE: f"{AppError.__module__}.AppError"}
    # Same error.type on the span and the metric.
    assert tracing.one("chat fake-model-1").attributes[attr.ERROR_TYPE] == \
        duration.attributes[attr.ERROR_TYPE]


def test_abandoned_stream_is_not_an_error_in_metrics(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    stream = FakeChat(chunks=[f"c{i}" for i in range(10)]).stream("hi", config=cfg(handler))
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()

    points = meter.points()
    [duration] = points[DURATION]
    assert attr.ERROR_TYPE not in duration.attributes
    assert [p.count for p in points[TTFC]] == [1]
    assert TOKEN_USAGE not in points  # no usage was reported before the consumer left


def test_langgraph_control_flow_is_not_an_error_in_metrics(tracing: Any, meter: Metrics) -> None:
    from langgraph.errors import GraphInterrupt

    handler = tracing.handler(meter_provider=meter.provider)
    with pytest.raises(GraphInterrupt):
        FakeChat(error=GraphInterrupt()).invoke("hi", config=cfg(handler))

    [duration] = meter.points()[DURATION]
    assert attr.ERROR_TYPE not in duration.attributes
    # The span follows the same rule: no error.type, no ERROR status.
    span = tracing.one("chat fake-model-1")
    assert attr.ERROR_TYPE not in span.attributes
    assert [e.name for e in span.events] == ["langgraph.control_flow"]


def test_tool_runs_are_measured_by_their_own_instrument(tracing: Any, meter: Metrics) -> None:
    from langchain_core.tools import tool

    @tool
    def broken(a: int) -> int:
        """Always fails."""
        raise AppError("tool down")

    handler = tracing.handler(meter_provider=meter.provider)
    add.invoke(tool_call("add", {"a": 1, "b": 2}, "call_1"), config=cfg(handler))
    add.invoke(tool_call("add", {"a": 3, "b": 4}, "call_2"), config=cfg(handler))
    with pytest.raises(AppError):
        broken.invoke({"a": 1}, config=cfg(handler))

    points = meter.points()
    assert set(points) == {TOOL}  # no model ran: no GenAI client metrics
    by_labels = {tuple(sorted(p.attributes.items())): p for p in points[TOOL]}
    ok = by_labels[((attr.GEN_AI_TOOL_NAME, "add"),)]
    failed = by_labels[((attr.ERROR_TYPE, f"{AppError.__module__}.AppError"),
                        (attr.GEN_AI_TOOL_NAME, "broken"))]
    assert (ok.count, failed.count, len(by_labels)) == (2, 1, 2)
    spans = {s.name: s for s in tracing.spans()}
    assert failed.attributes[attr.ERROR_TYPE] == spans["execute_tool broken"].attributes[attr.ERROR_TYPE]
    assert meter.units() == {TOOL: "s"}


def test_exemplars_point_at_the_runs_own_span(tracing: Any) -> None:
    # The run's span is passed as the measurement's context, whatever is current when it ends.
    from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter

    m = Metrics(exemplar_filter=AlwaysOnExemplarFilter())
    handler = tracing.handler(meter_provider=m.provider)
    FakeChat().invoke("hi", config=cfg(handler))
    add.invoke(tool_call("add", {"a": 1, "b": 2}, "call_1"), config=cfg(handler))
    spans = {s.name: s.context for s in tracing.spans()}
    points = m.points()  # once: a collection hands over the exemplars sampled since the last
    for name, span_name in ((DURATION, "chat fake-model-1"), (TOKEN_USAGE, "chat fake-model-1"),
                            (TOOL, "execute_tool add")):
        for point in points[name]:
            assert point.exemplars, name
            for exemplar in point.exemplars:
                assert (exemplar.trace_id, exemplar.span_id) == \
                    (spans[span_name].trace_id, spans[span_name].span_id), name
    m.provider.shutdown()


def test_global_meter_provider_set_after_the_handler_is_used(tmp_path: Any) -> None:
    # A handler made at import time (before the app configures metrics) starts measuring as
    # soon as a global MeterProvider is set; runs before that are not measured.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from otel_callbacks import OTelHandler
        from test_genai_conventions import FakeChat

        handler = OTelHandler()
        FakeChat().invoke("before", config={"callbacks": [handler]})
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        FakeChat().invoke("after", config={"callbacks": [handler]})
        data = reader.get_metrics_data()
        counts = {m.name: sum(p.count for p in m.data.data_points)
                  for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        print(counts["gen_ai.client.operation.duration"])
    """) % str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_metric_attributes_carry_no_content(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider, capture_content=True)
    FakeChat().invoke("a private prompt", config=cfg(handler))
    for points in meter.points().values():
        for point in points:
            assert set(point.attributes) <= {*CHAT_ATTRS, attr.GEN_AI_TOKEN_TYPE}
            assert point.attributes.get(attr.GEN_AI_TOKEN_TYPE) in (None, "input", "output",
                                                                    "cache_read")


def test_no_meter_provider_means_no_instruments(tracing: Any) -> None:
    # Nothing passed and no global MeterProvider configured (the API's proxy is not one).
    assert type(metrics.get_meter_provider()).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider")
    handler = tracing.handler()
    assert handler._metrics is None
    FakeChat().invoke("hi", config=cfg(handler))
    for _ in FakeChat().stream("hi", config=cfg(handler)):
        pass
    assert len(tracing.spans()) == 2


def test_explicit_noop_meter_provider_means_instruments_on_it(tracing: Any) -> None:
    # An explicitly passed provider is used as given (the user asked for it).
    handler = tracing.handler(meter_provider=metrics.NoOpMeterProvider())
    assert handler._metrics is not None
    FakeChat().invoke("hi", config=cfg(handler))
    assert tracing.one("chat fake-model-1").attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 11


def test_the_cheap_global_provider_check_reads_the_api() -> None:
    # Handlers poll for a global MeterProvider on every model and tool run until one is set;
    # they read the API's global instead of calling get_meter_provider() (~2 us, os.environ).
    from otel_callbacks import metrics as handler_metrics

    assert handler_metrics._CAN_PEEK, "the API moved its global: polling falls back to the slow path"
    assert not handler_metrics.global_provider_set()  # this process never sets one
