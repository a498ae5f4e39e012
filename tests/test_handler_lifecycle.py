"""Issue 12, item 7: rough edges of a handler's life in a real app.

Copies of anything holding a handler, exit with an unreachable collector, a failing meter,
and two handlers on one run.
"""

from __future__ import annotations

import copy
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from conftest import RunRecorder, Tracing, assert_span_tree_matches
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics import ExemplarFilter
from test_genai_conventions import FakeChat

from otel_callbacks import OTelHandler
from otel_callbacks import attributes as attr
from otel_callbacks.handler import EXIT_FLUSH_SECONDS


# --- (a) copies ----------------------------------------------------------------------------
def test_deepcopy_of_a_handler_is_the_same_handler(tracing: Tracing) -> None:
    handler = tracing.handler()
    assert copy.deepcopy(handler) is handler
    assert copy.copy(handler) is handler
    holder = {"callbacks": [handler], "other": [1, 2]}
    copied = copy.deepcopy(holder)
    assert copied["callbacks"][0] is handler and copied["other"] is not holder["other"]


def test_model_copy_deep_of_a_model_holding_a_handler_traces_into_the_same_tree(
        tracing: Tracing, recorder: RunRecorder) -> None:
    handler = tracing.handler()
    model = FakeChat(callbacks=[handler])
    clone = model.model_copy(deep=True)
    assert clone is not model and clone.callbacks[0] is handler

    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | clone
    chain.invoke({"q": "hi"}, config={"callbacks": [handler, recorder]})
    assert_span_tree_matches(tracing, recorder)
    assert len(tracing.named("chat fake-model-1")) == 1
    assert len(handler._registry) == 0


def test_deepcopy_of_a_chain_configured_with_a_handler(tracing: Tracing, recorder: RunRecorder) -> None:
    handler = tracing.handler()
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeChat()).with_config(
        callbacks=[handler])
    clone = copy.deepcopy(chain)
    clone.invoke({"q": "hi"}, config={"callbacks": [recorder]})
    assert_span_tree_matches(tracing, recorder)
    assert len(tracing.spans()) == 3


def test_pickling_a_handler_says_why_it_cannot(tracing: Tracing) -> None:
    with pytest.raises(TypeError, match="OTelHandler cannot be pickled"):
        pickle.dumps(tracing.handler())


# --- (b) exit time ---------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections refused


EXIT_SCRIPT = """
import sys, time, uuid
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from otel_callbacks import OTelHandler

class Count(SpanExporter):
    def export(self, spans):
        for span in spans:
            print("ended", span.name, dict(span.attributes).get("langchain.run.evicted"), flush=True)
        return SpanExportResult.SUCCESS

# Only our exit work is timed: the provider's own exit hook is off (the SDK's shutdown applies
# the exporter's timeout once, with or without us).
provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(SimpleSpanProcessor(Count()))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="http://127.0.0.1:PORT/v1/traces")))
other = TracerProvider(shutdown_on_exit=False)
other.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="http://127.0.0.1:PORT/v1/traces")))
handlers = [OTelHandler(tracer_provider=provider if i % 2 else other) for i in range(HANDLERS)]
for index, handler in enumerate(handlers):
    handler.on_chain_start({"name": f"open-{index}"}, {}, run_id=uuid.uuid4())
print("exiting", time.time(), flush=True)
"""


def test_exit_with_open_runs_and_an_unreachable_collector_is_bounded() -> None:
    script = EXIT_SCRIPT.replace("PORT", str(_closed_port())).replace("HANDLERS", "6")
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finished = time.time()
    exiting = [line for line in out.splitlines() if line.startswith("exiting")]
    assert exiting, out
    took = finished - float(exiting[0].split()[1])
    assert took < EXIT_FLUSH_SECONDS + 3, f"exit took {took:.1f} s"  # before: ~7 s per handler
    # Every handler's open run was ended at exit (seen by the provider's reachable exporter).
    ended = [line for line in out.splitlines() if line.startswith("ended")]
    assert sorted(ended) == [f"ended open-{i} True" for i in (1, 3, 5)]


def test_close_returns_within_the_bound(tracing: Tracing) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{_closed_port()}/v1/traces")))
    handler = OTelHandler(tracer_provider=provider)
    handler.on_chain_start({"name": "open"}, {}, run_id=__import__("uuid").uuid4())
    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started < EXIT_FLUSH_SECONDS + 0.5


# --- (c) a failing meter ---------------------------------------------------------------------
class RaisingFilter(ExemplarFilter):
    """A real SDK plug-in that fails: every measurement recorded on the provider raises."""

    def should_sample(self, *args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("exemplar filter broke")


def test_failing_meter_does_not_cost_the_span(tracing: Tracing, recorder: RunRecorder) -> None:
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()], exemplar_filter=RaisingFilter())
    handler = tracing.handler(meter_provider=meters)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeChat()
    chain.invoke({"q": "hi"}, config={"callbacks": [handler, recorder]})
    for chunk in FakeChat().stream("hi", config={"callbacks": [handler, recorder]}):
        pass
    assert_span_tree_matches(tracing, recorder)
    chats = tracing.named("chat fake-model-1")
    assert len(chats) == 2
    for span in chats:
        assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] in (11, 4)
        assert span.end_time is not None
    assert len(handler._registry) == 0
    meters.shutdown()


# --- (d) two handlers on one run -------------------------------------------------------------
def test_two_handlers_on_one_provider_give_one_span_per_run(tracing: Tracing,
                                                            recorder: RunRecorder) -> None:
    on_model, in_config = tracing.handler(), tracing.handler(capture_content=True)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeChat(callbacks=[on_model])
    chain.invoke({"q": "hi"}, config={"callbacks": [in_config, recorder]})
    assert_span_tree_matches(tracing, recorder)  # also asserts one span per run id
    assert len(tracing.spans()) == 3
    assert len(on_model._registry) == 0 and len(in_config._registry) == 0


def test_two_handlers_on_one_stream_count_tokens_once(tracing: Tracing, recorder: RunRecorder) -> None:
    first, second = tracing.handler(), tracing.handler()
    model = FakeChat(callbacks=[first])
    chunks = list(model.stream("hi", config={"callbacks": [second, recorder]}))
    assert_span_tree_matches(tracing, recorder)
    assert tracing.one("chat fake-model-1").attributes[attr.LLM_TOKEN_COUNT] == len(chunks)


def test_two_handlers_on_different_providers_each_get_every_run_they_see(
        recorder: RunRecorder) -> None:
    a, b = Tracing(), Tracing()
    on_model, in_config = b.handler(), a.handler()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeChat(callbacks=[on_model])
    chain.invoke({"q": "hi"}, config={"callbacks": [in_config, recorder]})
    assert_span_tree_matches(a, recorder)
    [model_span] = b.spans()  # the model handler sees only the model run
    assert model_span.name == "chat fake-model-1"
    parent = a.by_run_id()[recorder.parents[model_span.attributes[attr.RUN_ID]]]
    assert model_span.parent.span_id == parent.context.span_id
    assert model_span.context.trace_id == parent.context.trace_id


def test_the_same_handler_twice_is_one_handler(tracing: Tracing, recorder: RunRecorder) -> None:
    handler = tracing.handler()
    RunnableLambda(lambda x: x).invoke(1, config={"callbacks": [handler, handler, recorder]})
    assert_span_tree_matches(tracing, recorder)


def test_handler_on_a_chain_and_in_the_config_same_provider(tracing: Tracing,
                                                            recorder: RunRecorder) -> None:
    """The chain's own handler sees only the chain run; the config's sees everything: still
    one span per run, each under its parent run's span."""
    on_chain, in_config = tracing.handler(), tracing.handler()
    inner = (ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeChat()).with_config(
        callbacks=[on_chain])
    outer = RunnableLambda(lambda x: x) | inner
    outer.invoke({"q": "hi"}, config={"callbacks": [in_config, recorder]})
    assert_span_tree_matches(tracing, recorder)
    assert len(on_chain._registry) == 0 and len(in_config._registry) == 0
