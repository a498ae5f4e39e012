"""Issue 10 (attribute budget) and issue 12 item 5: user metadata never evicts our attributes.

The SDK keeps at most ``max_span_attributes`` per span (128 by default) and evicts the oldest,
logging "Attributes dict is full" each time. A run with hundreds of metadata keys used to lose
``langchain.run.id`` and ``langchain.run.type``. Now the span's own attributes always stay, user
metadata and tags get what is left (after room for what the end adds), the rest is counted in
``langchain.metadata.dropped_count``, and the SDK never has to evict anything of ours.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_genai_conventions import USAGE, AppError, FakeChat, add, cfg, tool_call

from otel_callbacks import OTelHandler
from otel_callbacks import attributes as attr

FULL = "Attributes dict is full"
TAGS = ["team-a", "experiment-7"]


def many_metadata(n: int) -> dict[str, Any]:
    return {f"key_{i:03d}": f"value {i}" for i in range(n)}


class Limited:
    """A provider with the given span attribute limit (None: the SDK default)."""

    def __init__(self, max_span_attributes: int | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        limits = SpanLimits(max_span_attributes=max_span_attributes)
        self.provider = TracerProvider(span_limits=limits)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.limit = limits.max_span_attributes

    def handler(self, **kwargs: Any) -> OTelHandler:
        return OTelHandler(tracer_provider=self.provider, **kwargs)

    def span(self, run_type: str) -> Any:
        found = [s for s in self.exporter.get_finished_spans()
                 if s.attributes.get(attr.RUN_TYPE) == run_type]
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]


def user_attributes(span: Any) -> int:
    """Metadata keys and the tags attribute that made it onto the span."""
    keys = [k for k in span.attributes
            if k.startswith(attr.RUN_METADATA_PREFIX) and k != attr.METADATA_DROPPED_COUNT]
    return len(keys) + (attr.RUN_TAGS in span.attributes)


def assert_budget(span: Any, limit: int, user_total: int) -> None:
    a = span.attributes
    assert len(a) <= limit
    assert span.dropped_attributes == 0  # the SDK evicted nothing
    assert isinstance(a[attr.RUN_ID], str) and a[attr.RUN_TYPE]
    kept = user_attributes(span)
    dropped = a.get(attr.METADATA_DROPPED_COUNT, 0)
    assert kept + dropped == user_total
    if kept < user_total:
        assert dropped == user_total - kept > 0


@pytest.mark.parametrize("limit", [None, 16, 40])
@pytest.mark.parametrize("capture", [False, True])
def test_chat_run_with_300_metadata_keys(limit: int | None, capture: bool,
                                         caplog: pytest.LogCaptureFixture) -> None:
    tracing = Limited(limit)
    handler = tracing.handler(capture_content=capture)
    with caplog.at_level(logging.WARNING):
        FakeChat().invoke("hi", config=cfg(handler, tags=TAGS, metadata=many_metadata(300)))
    assert not [r for r in caplog.records if FULL in r.getMessage()]
    span = tracing.span(attr.CHAT_MODEL)
    assert_budget(span, tracing.limit, 301)
    a = span.attributes
    # What the end adds is there: usage, response model, finish reasons.
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == USAGE["input_tokens"]
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == USAGE["output_tokens"]
    if tracing.limit >= 40:
        assert a[attr.GEN_AI_RESPONSE_MODEL] == "fake-model-1-2025"
        assert a[attr.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
        assert a[attr.GEN_AI_REQUEST_MODEL] == "fake-model-1"
    if tracing.limit == 128:
        assert user_attributes(span) > 80  # the default limit leaves most of it to the user
        assert a[attr.RUN_TAGS] == tuple(TAGS)  # tags are kept before metadata


@pytest.mark.parametrize("limit", [None, 16])
def test_streamed_and_failed_runs_keep_their_end_attributes(limit: int | None,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    tracing = Limited(limit)
    handler = tracing.handler(capture_content=True)
    config = cfg(handler, tags=TAGS, metadata=many_metadata(300))
    with caplog.at_level(logging.WARNING):
        for _ in FakeChat().stream("hi", config=config):
            pass
        span = tracing.span(attr.CHAT_MODEL)
        assert_budget(span, tracing.limit, 301)
        assert span.attributes[attr.LLM_TOKEN_COUNT] == 5
        tracing.exporter.clear()

        with pytest.raises(AppError):
            FakeChat(error=AppError("boom")).invoke("hi", config=config)
        span = tracing.span(attr.CHAT_MODEL)
        assert_budget(span, tracing.limit, 301)
        assert span.attributes[attr.ERROR_TYPE].endswith("AppError")
        tracing.exporter.clear()

        def fail(x: str) -> str:
            raise AppError("chain failed")

        with pytest.raises(AppError):
            RunnableLambda(fail).invoke("x", config=config)
        span = tracing.span(attr.CHAIN)
        assert_budget(span, tracing.limit, 301)
        assert span.attributes[attr.ERROR_TYPE].endswith("AppError")
        tracing.exporter.clear()

        add.invoke(tool_call("add", {"a": 1, "b": 2}, "call_9"), config=config)
        span = tracing.span(attr.TOOL)
        assert_budget(span, tracing.limit, 301)
        assert span.attributes[attr.GEN_AI_TOOL_NAME] == "add"
        if tracing.limit >= 128:
            assert span.attributes[attr.GEN_AI_TOOL_CALL_RESULT] == "3"
    assert not [r for r in caplog.records if FULL in r.getMessage()]


def test_retries_and_many_usage_details_fit_a_tight_limit(caplog: pytest.LogCaptureFixture) -> None:
    """A span started at its limit: retries, then an end with every usage detail."""
    tracing = Limited(16)
    handler = tracing.handler(capture_content=True)
    reply = AIMessage(content="ok", id="resp-1", usage_metadata={
        **USAGE, "input_token_details": {"cache_read": 3, "cache_creation": 4}},
        response_metadata={"model_name": "m-2025", "finish_reason": "stop", "id": "r-1"})
    model = FakeChat(responses=[reply], temperature=0.1)
    with caplog.at_level(logging.WARNING):
        model.invoke("hi", stop=["END"], config=cfg(handler, tags=TAGS, metadata=many_metadata(50)))
    assert not [r for r in caplog.records if FULL in r.getMessage()]
    span = tracing.span(attr.CHAT_MODEL)
    assert_budget(span, 16, 51)
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == USAGE["input_tokens"]


def test_few_metadata_keys_are_all_kept() -> None:
    tracing = Limited()
    FakeChat().invoke("hi", config=cfg(tracing.handler(), tags=TAGS, metadata=many_metadata(5)))
    span = tracing.span(attr.CHAT_MODEL)
    assert attr.METADATA_DROPPED_COUNT not in span.attributes
    assert user_attributes(span) == 6
    assert span.attributes[attr.RUN_METADATA_PREFIX + "key_004"] == "value 4"


def test_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, as the SDK reads it, for a provider built without
    limits and for a handler on the global provider."""
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "24")
    tracing = Limited()
    assert tracing.limit == 24
    with caplog.at_level(logging.WARNING):
        FakeChat().invoke("hi", config=cfg(tracing.handler(), metadata=many_metadata(100)))
    assert not [r for r in caplog.records if FULL in r.getMessage()]
    assert_budget(tracing.span(attr.CHAT_MODEL), 24, 100)
    from opentelemetry.trace import NoOpTracerProvider

    from otel_callbacks.budget import span_attribute_limit
    assert span_attribute_limit(NoOpTracerProvider()) == 24  # not the SDK's: the SDK's default


def test_unlimited_provider_keeps_everything() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=SpanLimits.UNSET))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = OTelHandler(tracer_provider=provider)
    FakeChat().invoke("hi", config=cfg(handler, metadata=many_metadata(300)))
    (span,) = exporter.get_finished_spans()
    assert attr.METADATA_DROPPED_COUNT not in span.attributes
    assert user_attributes(span) == 300


def test_handler_made_before_the_global_provider_uses_its_limit() -> None:
    """A handler made at import time, before the app sets the global TracerProvider with its
    own SpanLimits, budgets for that provider's limit (read once, at the first span after)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import logging, uuid
        from opentelemetry import trace
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from otel_callbacks import OTelHandler

        full = []
        logging.getLogger("opentelemetry.attributes").addHandler(
            type("H", (logging.Handler,), {"emit": lambda self, r: full.append(r)})())
        handler = OTelHandler()  # no provider yet: the global one is a proxy
        handler.on_chain_start({}, {}, run_id=uuid.uuid4(), metadata={"early": 1})  # non-recording
        exporter = InMemorySpanExporter()
        provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=20))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        run_id = uuid.uuid4()
        handler.on_chain_start({}, {}, run_id=run_id,
                               metadata={f"key_{i}": i for i in range(100)})
        handler.on_chain_end({}, run_id=run_id)
        (span,) = exporter.get_finished_spans()
        a = span.attributes
        assert a["langchain.run.id"] == str(run_id) and a["langchain.run.type"] == "chain", dict(a)
        assert len(a) <= 20 and span.dropped_attributes == 0, (len(a), span.dropped_attributes)
        kept = sum(k.startswith("langchain.metadata.key_") for k in a)
        assert kept + a["langchain.metadata.dropped_count"] == 100
        assert not full, full[0].getMessage()
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
