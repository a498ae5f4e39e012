"""Issue 3: GenAI client metrics (token usage, operation duration, time to first chunk)."""

from __future__ import annotations

import asyncio
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

CHAT_ATTRS = {attr.GEN_AI_OPERATION_NAME: "chat", attr.GEN_AI_PROVIDER_NAME: "openai",
              attr.GEN_AI_REQUEST_MODEL: "fake-model-1",
              attr.GEN_AI_RESPONSE_MODEL: "fake-model-1-2025"}


class Metrics:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

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
    assert set(points) == {TOKEN_USAGE, DURATION}  # not a stream: no time to first chunk
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
    assert meter.units() == {TOKEN_USAGE: "{token}", DURATION: "s"}


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


def test_only_model_runs_are_measured(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider)
    add.invoke(tool_call("add", {"a": 1, "b": 2}, "call_1"), config=cfg(handler))
    assert meter.points() == {}


def test_metric_attributes_carry_no_content(tracing: Any, meter: Metrics) -> None:
    handler = tracing.handler(meter_provider=meter.provider, capture_content=True)
    FakeChat().invoke("a private prompt", config=cfg(handler))
    for points in meter.points().values():
        for point in points:
            assert set(point.attributes) <= {*CHAT_ATTRS, attr.GEN_AI_TOKEN_TYPE}


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
