"""Issue 12 item 1: every string handed to the SDK is encodable as UTF-8.

A lone surrogate (``os.fsdecode`` of a non-UTF-8 file name) anywhere in a run used to reach a
span name, attribute, event or status; the OTLP encoder then failed on the whole batch, so
every span in it was lost. These tests push undecodable input through every place a run's
data can reach the SDK and export the result with the real OTLP encoders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import CallbackManager
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import BaseModel
from test_genai_conventions import DocsRetriever, FakeChat, FakeLLM, cfg, tool_call

from otel_callbacks import attributes as attr
from otel_callbacks.exporters.file_exporter import OTLPJsonFileSpanExporter
from otel_callbacks.content import utf8_safe

BAD = os.fsdecode(b"caf\xe9-\xff.txt")  # what a latin-1 file name looks like after fsdecode
assert "\udce9" in BAD


def bad(label: str) -> str:
    return f"{label}-{BAD}"


class SurrogateError(Exception):
    pass


class SearchArgs(BaseModel):
    query: str


def run_hostile_workload(handler: Any) -> None:
    """Runs of every kind with undecodable text in every user-controlled place."""
    metadata = {bad("key"): bad("value"), "file": b"\xff\xfe raw", "paths": [bad("p1"), bad("p2")],
                "nested": {bad("inner"): [b"\x80", bad("x")]}, "plain": "ok"}
    tags = [bad("tag"), "fine"]
    plain = cfg(handler, tags=tags, metadata=metadata)
    config = {**plain, "run_name": bad("chain")}

    def step(x: str) -> str:
        dispatch_custom_event(bad("event"), {bad("k"): bad("v"), "raw": b"\xff"})
        return x + BAD

    RunnableLambda(step).invoke(bad("input"), config=config)

    def fail(x: str) -> str:
        raise FileNotFoundError(f"cannot open {bad('/tmp/missing')}")

    with pytest.raises(FileNotFoundError):
        RunnableLambda(fail).invoke("x", config=config)
    with pytest.raises(SurrogateError):
        RunnableLambda(lambda x: (_ for _ in ()).throw(SurrogateError(bad("boom"), b"\xff"))).invoke(
            "x", config=cfg(handler, run_name=bad("thrower")))

    reply = AIMessage(content=bad("answer"), id=bad("resp"),
                      response_metadata={"model_name": bad("resp-model"), "finish_reason": bad("stop")})
    model = FakeChat(model=bad("model"), provider=bad("provider"), responses=[reply],
                     chunks=[bad("tok1"), "ok", bad("tok3")])
    model.invoke([HumanMessage(bad("prompt"))], stop=[bad("STOP")], config=plain)
    for _ in model.stream(bad("prompt"), config=plain):
        pass
    FakeLLM(model_name=bad("llm")).invoke(bad("prompt"), config=plain)

    def search(query: str) -> str:
        return bad("result")

    tool = StructuredTool.from_function(search, name=bad("tool"), description=bad("Searches."),
                                        args_schema=SearchArgs)
    tool.invoke(tool_call(bad("tool"), {"query": bad("q")}, bad("call")), config=plain)
    DocsRetriever(docs=[Document(bad("doc"), id=bad("d1"), metadata={bad("src"): BAD})]).invoke(
        bad("query"), config=plain)

    run = CallbackManager([handler]).on_chain_start({"name": bad("AgentExecutor")}, {"input": BAD},
                                                    name=bad("AgentExecutor"))
    run.on_agent_action(AgentAction(tool=bad("tool"), tool_input={bad("a"): BAD}, log=bad("log")))
    run.on_text(bad("observation"))
    run.on_agent_finish(AgentFinish(return_values={"output": BAD}, log=bad("final")))
    run.on_chain_end({"output": BAD})


def all_strings(span: Any) -> list[str]:
    """Every string of an exported span: name, attribute keys and values, events, status."""
    out = [span.name, span.status.description or ""]

    def add(attributes: Any) -> None:
        for key, value in (attributes or {}).items():
            out.append(key)
            out.extend(value if isinstance(value, tuple) else [value])

    add(span.attributes)
    for event in span.events:
        out.append(event.name)
        add(event.attributes)
    return [s for s in out if isinstance(s, str)]


def assert_encodable(spans: Any) -> None:
    for span in spans:
        for text in all_strings(span):
            text.encode("utf-8")  # raises on a lone surrogate


@pytest.mark.parametrize("capture", [False, True])
def test_undecodable_text_never_reaches_the_sdk(tracing: Any, capture: bool) -> None:
    run_hostile_workload(tracing.handler(capture_content=capture))
    spans = tracing.spans()
    assert len(spans) == 9
    assert_encodable(spans)
    # The text is kept, with U+FFFD where the undecodable bytes were.
    safe = utf8_safe(BAD)
    assert safe == "caf\ufffd-\ufffd.txt"
    names = [s.name for s in spans]
    assert f"chain-{safe}" in names and f"execute_tool tool-{safe}" in names
    assert names.count(f"chat model-{safe}") == 2
    assert f"text_completion llm-{safe}" in names and f"invoke_agent AgentExecutor-{safe}" in names
    error_span = next(s for s in spans if s.status.description
                      and "FileNotFoundError" in s.status.description)
    assert safe in error_span.status.description
    exception = next(e for e in error_span.events if e.name == "exception")
    assert safe in exception.attributes["exception.message"]
    assert safe in exception.attributes["exception.stacktrace"]
    chain = next(s for s in spans if s.name == f"chain-{safe}")
    assert chain.attributes[attr.RUN_METADATA_PREFIX + f"key-{safe}"] == f"value-{safe}"
    assert chain.attributes[attr.RUN_TAGS] == (f"tag-{safe}", "fine")


@pytest.mark.parametrize("capture", [False, True])
def test_a_batch_with_undecodable_runs_encodes_fully(tracing: Any, tmp_path: Path,
                                                     capture: bool) -> None:
    """The real OTLP protobuf encoder and the OTLP/JSON file exporter take the whole batch."""
    run_hostile_workload(tracing.handler(capture_content=capture))
    spans = tracing.spans()
    request = encode_spans(spans)  # raised UnicodeEncodeError before
    encoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(encoded) == len(spans)
    assert request.SerializeToString()

    path = tmp_path / "traces.jsonl"
    exporter = OTLPJsonFileSpanExporter(path)
    exporter.export(spans)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    written = [s for rs in json.loads(lines[0])["resourceSpans"] for ss in rs["scopeSpans"]
               for s in ss["spans"]]
    assert len(written) == len(spans)


def test_metric_attributes_are_utf8(tracing: Any) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        handler = tracing.handler(meter_provider=meter_provider)
        reply = AIMessage(content="hi", response_metadata={"model_name": bad("resp-model")})
        FakeChat(model=bad("model"), provider=bad("provider"), responses=[reply]).invoke(
            "hi", config=cfg(handler))
        with pytest.raises(SurrogateError):
            FakeChat(model=bad("model"), error=SurrogateError(BAD)).invoke("hi", config=cfg(handler))
        data = reader.get_metrics_data()
        points = [p for rm in data.resource_metrics for sm in rm.scope_metrics
                  for m in sm.metrics for p in m.data.data_points]
        assert points
        for point in points:
            for key, value in point.attributes.items():
                key.encode("utf-8")
                if isinstance(value, str):
                    value.encode("utf-8")
        assert encode_metrics(data).SerializeToString()
    finally:
        meter_provider.shutdown()


@pytest.mark.parametrize("value, expected", [
    ("plain ascii", "plain ascii"),
    ("naïve café 日本語 🙂", "naïve café 日本語 🙂"),  # valid non-ASCII text is untouched
    ("a\udcffb", "a\ufffdb"),
    ("\ud83d", "\ufffd"),  # a lone high surrogate (half an emoji)
    ("\ud83d\ude42", "\ufffd\ufffd"),  # a surrogate pair in a str is two lone surrogates
    ("", ""),
])
def test_utf8_safe(value: str, expected: str) -> None:
    assert utf8_safe(value) == expected
    utf8_safe(value).encode("utf-8")


def test_attribute_gate_repairs_keys_values_sequences_and_bytes() -> None:
    from otel_callbacks.content import utf8_safe_attributes

    clean = {"a": "x", "b": 1, "c": ("p", "q"), "d": 2.5, "e": "日本語"}
    assert utf8_safe_attributes(clean) is clean  # nothing to repair: the same dict, no copy
    repaired = utf8_safe_attributes({bad("k"): bad("v"), "seq": [bad("1"), 2], "raw": b"\xffok",
                                     "n": 3})
    safe = utf8_safe(BAD)
    assert repaired == {f"k-{safe}": f"v-{safe}", "seq": (f"1-{safe}", 2), "raw": "\ufffdok", "n": 3}
    assert list(repaired) == [f"k-{safe}", "seq", "raw", "n"]  # order kept


class ServedChat(FakeChat):
    """A chat model with an endpoint field, as integrations have (``base_url``)."""

    base_url: str = "http://localhost:1"


def test_ids_agent_names_endpoints_and_odd_run_ids_are_repaired(tracing: Any) -> None:
    """Attribute values made outside the mapping of names, tags and metadata: conversation
    and user ids, an agent's name, the model's server, a run id that is not a UUID."""
    handler = tracing.handler()
    metadata = {"thread_id": bad("thread"), "user_id": bad("user"), "lc_agent_name": bad("agent")}
    RunnableLambda(lambda x: x).invoke("x", config=cfg(handler, metadata=metadata,
                                                        run_name=bad("agent")))
    ServedChat(base_url=f"http://{bad('host')}:8080/v1").invoke("hi", config=cfg(handler))
    handler.on_chain_start({}, {}, run_id=bad("run"), name="odd")
    handler.on_chain_end({}, run_id=bad("run"))
    tools = [{"type": "function", "function": {"name": bad("fn"), "description": bad("does"),
                                               "parameters": {"type": "object"}}}]
    handler.on_chat_model_start({}, [[]], run_id="tools", invocation_params={"tools": tools})
    handler.on_llm_end(None, run_id="tools")
    spans = tracing.spans()
    assert len(spans) == 4
    assert_encodable(spans)
    offered = next(s for s in spans if attr.GEN_AI_TOOL_DEFINITIONS in s.attributes)
    assert f"fn-{utf8_safe(BAD)}" in offered.attributes[attr.GEN_AI_TOOL_DEFINITIONS]
    safe = utf8_safe(BAD)
    agent = next(s for s in spans if s.attributes.get(attr.GEN_AI_AGENT_NAME))
    assert agent.attributes[attr.GEN_AI_AGENT_NAME] == f"agent-{safe}"
    assert agent.attributes[attr.GEN_AI_CONVERSATION_ID] == f"thread-{safe}"
    assert agent.attributes[attr.USER_ID] == f"user-{safe}"
    chat = next(s for s in spans if s.attributes.get(attr.GEN_AI_OPERATION_NAME) == "chat")
    assert chat.attributes[attr.SERVER_ADDRESS].startswith("host-")
    odd = next(s for s in spans if s.name == "odd")
    assert odd.attributes[attr.RUN_ID] == f"run-{safe}"


def test_a_streamed_response_id_is_repaired(tracing: Any) -> None:
    """The id a provider SDK's stream reports (a JSON string may hold a lone surrogate)."""
    from types import SimpleNamespace

    from otel_callbacks.provider_streams import _record_id

    span = tracing.provider.get_tracer("test").start_span("chat")
    _record_id(span, SimpleNamespace(id=bad("chatcmpl")))
    span.end()
    (exported,) = tracing.spans()
    assert exported.attributes[attr.GEN_AI_RESPONSE_ID] == f"chatcmpl-{utf8_safe(BAD)}"


def test_interrupt_and_resume_events_are_repaired(tracing: Any) -> None:
    """LangGraph's lifecycle events carry its ids and status as given."""
    from types import SimpleNamespace

    from otel_callbacks import resume

    span = tracing.provider.get_tracer("test").start_span("graph")
    state = SimpleNamespace(span=span)
    event = SimpleNamespace(interrupts=[SimpleNamespace(id=bad("i"))], checkpoint_id=bad("c"),
                            status=bad("s"), checkpoint_ns="sub")  # a subgraph: events only
    resume.on_interrupt(state, event)
    resume.on_resume(state, event)
    span.end()
    (exported,) = tracing.spans()
    assert [e.name for e in exported.events] == [attr.EVENT_INTERRUPT, attr.EVENT_RESUME]
    assert_encodable([exported])
    assert exported.events[1].attributes[attr.CHECKPOINT_ID] == f"c-{utf8_safe(BAD)}"
