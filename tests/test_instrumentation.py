"""OTelCallbacksInstrumentor on real langchain-core: traces every run, one span per run even
next to hand-made handlers, leaves nothing patched, and works under opentelemetry-instrument."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.callbacks import manager as lc_manager
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from otel_callbacks import OTelHandler
from otel_callbacks.exporters.otlp_json import parse_lines
from otel_callbacks.instrumentation import OTelCallbacksInstrumentor

from conftest import RunRecorder, Tracing, assert_span_tree_matches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instrumented(tracing: Tracing) -> Any:
    instrumentor = OTelCallbacksInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.provider)
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def _app() -> Any:
    inner = RunnableLambda(lambda x: x + 1, name="add_one")
    return RunnableLambda(lambda x: inner.invoke(x) * 2, name="double_it")


def _names_and_parents(tracing: Tracing) -> dict[str, str | None]:
    spans = tracing.spans()
    by_id = {s.context.span_id: s.name for s in spans}
    return {s.name: by_id.get(s.parent.span_id) if s.parent else None for s in spans}


def test_dependencies_and_entry_point() -> None:
    assert OTelCallbacksInstrumentor().instrumentation_dependencies() == ("langchain-core >= 0.3.52",)
    found = [ep for ep in entry_points(group="opentelemetry_instrumentor")
             if ep.name == "langchain_callbacks"]
    assert found and found[0].load() is OTelCallbacksInstrumentor


def test_round_trip_traces_then_stops_and_restores(tracing: Tracing) -> None:
    original = lc_manager._configure
    configure_methods = (lc_manager.CallbackManager.configure, lc_manager.AsyncCallbackManager.configure)
    instrumentor = OTelCallbacksInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.provider)
    try:
        assert lc_manager._configure is not original
        assert lc_manager._configure.__wrapped__ is original
        assert _app().invoke(1) == 4
        assert _names_and_parents(tracing) == {"double_it": None, "add_one": "double_it"}
        assert isinstance(instrumentor.handler, OTelHandler)
    finally:
        instrumentor.uninstrument()
    assert lc_manager._configure is original
    assert (lc_manager.CallbackManager.configure, lc_manager.AsyncCallbackManager.configure) == configure_methods
    assert instrumentor.handler is None
    tracing.exporter.clear()
    assert _app().invoke(1) == 4
    assert tracing.spans() == []


def test_instrument_twice_adds_one_handler(tracing: Tracing, instrumented: Any) -> None:
    OTelCallbacksInstrumentor().instrument(tracer_provider=tracing.provider)  # singleton: no-op
    manager = lc_manager.CallbackManager.configure()
    assert [h for h in manager.handlers if isinstance(h, OTelHandler)] == [instrumented.handler]
    assert instrumented.handler in manager.inheritable_handlers
    _app().invoke(1)
    assert len(tracing.spans()) == 2


def test_request_time_handler_is_not_doubled(tracing: Tracing, recorder: RunRecorder,
                                              instrumented: Any) -> None:
    _app().invoke(1, config={"callbacks": [tracing.handler(), recorder]})
    assert len(tracing.spans()) == 2
    assert_span_tree_matches(tracing, recorder)  # also asserts one span per run id


def test_constructor_handler_on_a_nested_model_is_not_doubled(tracing: Tracing, recorder: RunRecorder,
                                                               instrumented: Any) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hi there")]),
                                 callbacks=[tracing.handler()])
    chain = RunnableLambda(lambda q: model.invoke(q).content, name="ask")
    assert chain.invoke("hello", config={"callbacks": [recorder]}) == "hi there"
    assert [s.name for s in tracing.spans()].count("ask") == 1
    assert len(tracing.spans()) == 2
    assert_span_tree_matches(tracing, recorder)


def test_async_runs_are_traced(tracing: Tracing, instrumented: Any) -> None:
    assert asyncio.run(_app().ainvoke(1)) == 4
    assert _names_and_parents(tracing) == {"double_it": None, "add_one": "double_it"}


def test_threads_started_before_instrumenting_are_traced(tracing: Tracing) -> None:
    # Worker threads start with an empty context: a ContextVar set later would not reach them.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pool.submit(threading.get_ident).result()
        instrumentor = OTelCallbacksInstrumentor()
        instrumentor.instrument(tracer_provider=tracing.provider)
        try:
            assert pool.submit(_app().invoke, 1).result() == 4
        finally:
            instrumentor.uninstrument()
    assert _names_and_parents(tracing) == {"double_it": None, "add_one": "double_it"}


def test_langgraph_runs_are_traced(tracing: Tracing, instrumented: Any) -> None:
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        x: int

    graph = StateGraph(State)
    graph.add_node("increment", lambda s: {"x": s["x"] + 1})
    graph.add_edge(START, "increment")
    graph.add_edge("increment", END)
    assert graph.compile().invoke({"x": 1}) == {"x": 2}
    parents = _names_and_parents(tracing)
    assert parents["increment"] is not None and parents[parents["increment"]] is None


# --- zero-code: opentelemetry-instrument ----------------------------------------------------
_APP = """
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

@tool
def shout(text: str) -> str:
    '''Upper-case the text.'''
    return text.upper()

model = GenericFakeChatModel(messages=iter([AIMessage(content="hello")]))

def pipeline(question):
    answer = model.invoke(question).content
    return shout.invoke({"text": answer})

print(RunnableLambda(pipeline, name="pipeline").invoke("hi"))
"""

# What opentelemetry-distro provides (the SDK configurator), plus our file exporter under the
# name OTEL_TRACES_EXPORTER uses; registered through a dist-info on PYTHONPATH.
_ENTRY_POINTS = """
[opentelemetry_configurator]
test_sdk = opentelemetry.sdk._configuration:_OTelSDKConfigurator

[opentelemetry_traces_exporter]
otlp_json_file = otel_callbacks.exporters.file_exporter:OTLPJsonFileSpanExporter
"""


def _install_app_with_entry_points(tmp_path: Path) -> None:
    """A distribution (on ``tmp_path/site``) declaring our entry points, and the user's app."""
    dist = tmp_path / "site" / "otel_test_distro-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: otel-test-distro\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(_ENTRY_POINTS)
    (tmp_path / "app.py").write_text(textwrap.dedent(_APP))


def test_opentelemetry_instrument_traces_an_unmodified_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("opentelemetry-instrument")
    if not script.exists():
        pytest.skip("opentelemetry-instrument is not installed")
    _install_app_with_entry_points(tmp_path)
    out = tmp_path / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(tmp_path / "site"), OTEL_TRACES_EXPORTER="otlp_json_file",
               OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
               OTEL_CALLBACKS_FILE=str(out), OTEL_SERVICE_NAME="zero-code-app")
    result = subprocess.run([str(script), sys.executable, "app.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "HELLO"

    records = list(parse_lines(out.read_text().splitlines(), str(out)))
    names = {r.span_id: r.name for r in records}
    parents = {r.name: names.get(r.parent_id) if r.parent_id else None for r in records}
    assert parents == {"pipeline": None, "chat GenericFakeChatModel": "pipeline",
                       "execute_tool shout": "pipeline"}
    assert {r.trace_id for r in records} == {records[0].trace_id}
    assert {r.service for r in records} == {"zero-code-app"}


@pytest.mark.parametrize("model_metrics", [True, False])
def test_instrument_model_metrics_option(tracing: Tracing, model_metrics: bool) -> None:
    """``instrument(model_metrics=False)`` leaves the GenAI metrics to a provider
    instrumentation: spans as before, no measurements of ours."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    instrumentor = OTelCallbacksInstrumentor()
    instrumentor.instrument(tracer_provider=tracing.provider, model_metrics=model_metrics,
                            meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        GenericFakeChatModel(messages=iter([AIMessage("hi")])).invoke("hello")
    finally:
        instrumentor.uninstrument()
    assert [s.attributes["gen_ai.operation.name"] for s in tracing.spans()] == ["chat"]
    data = reader.get_metrics_data()
    names = {m.name for r in (data.resource_metrics if data else ()) for s in r.scope_metrics
             for m in s.metrics}
    assert ("gen_ai.client.operation.duration" in names) is model_metrics
