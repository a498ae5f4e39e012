"""Parent-based sampling: sampled traces complete, unsampled run trees cost no span work,
leave nothing behind, and take the code they run (user spans) out of the trace too."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler,
                                              TraceIdRatioBased)

from otel_callbacks import OTelHandler
from otel_callbacks.registry import _ACTIVE_CONTEXTS
from otel_callbacks.sampling import children_follow_unsampled_parent

from conftest import RunRecorder, Tracing, assert_span_tree_matches

KEEP, DROP = 1, (1 << 64) - 1  # trace ids a 50% ratio sampler keeps / drops


class ChosenTraceIds(RandomIdGenerator):
    """Trace ids from a plan (True: sampled at 50%), then alternating."""

    def __init__(self, plan: list[bool] | None = None) -> None:
        self.plan = list(plan or [])
        self.next_sampled = True

    def generate_trace_id(self) -> int:
        sampled = self.plan.pop(0) if self.plan else self.next_sampled
        self.next_sampled = not sampled
        return KEEP if sampled else DROP


class Sampled(Tracing):
    """The conftest fixture's provider with 50% parent-based sampling over chosen trace ids."""

    def __init__(self, sampler: Sampler | None = None, plan: list[bool] | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.ids = ChosenTraceIds(plan)
        self.provider = TracerProvider(sampler=sampler or ParentBased(TraceIdRatioBased(0.5)),
                                       id_generator=self.ids)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")


class State(TypedDict):
    question: str
    answer: str
    seen: list[str]


class Notes(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return [Document(page_content=f"note about {query}", id="n1")]


@tool
def lookup(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


def build_app(tracer: trace.Tracer, seen: list[trace.SpanContext]) -> Any:
    """retrieve -> think (chat model, a user span inside) -> act (tool): every run type."""
    model = FakeListChatModel(responses=["Paris"] * 1000)
    retriever = Notes()

    def retrieve(state: State, config: RunnableConfig) -> dict[str, Any]:
        docs = retriever.invoke(state["question"], config)
        return {"seen": [d.page_content for d in docs]}

    def think(state: State, config: RunnableConfig) -> dict[str, Any]:
        with tracer.start_as_current_span("user.work") as span:  # the app's own span
            seen.append(span.get_span_context())
        return {"answer": model.invoke(state["question"], config).content}

    def act(state: State, config: RunnableConfig) -> dict[str, Any]:
        return {"answer": lookup.invoke({"city": state["answer"]}, config)}

    graph = StateGraph(State)
    graph.add_node("retrieve", retrieve)
    graph.add_node("think", think)
    graph.add_node("act", RunnableLambda(act))
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "think")
    graph.add_edge("think", "act")
    graph.add_edge("act", END)
    return graph.compile()


def _shape(spans: list[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Everything a span records except ids and times: name, kind, parent's name, attributes,
    events and status."""
    names = {s.context.span_id: s.name for s in spans}
    out = []
    for s in spans:
        attributes = {k: v for k, v in (s.attributes or {}).items() if k != "langchain.run.id"}
        out.append((s.name, s.kind, names.get(s.parent.span_id) if s.parent else None,
                    sorted(attributes.items(), key=lambda kv: kv[0]),
                    [(e.name, sorted((e.attributes or {}).items())) for e in s.events],
                    s.status.status_code))
    return sorted(out, key=repr)


def _run(tracing: Tracing, handler: OTelHandler, recorder: RunRecorder | None = None
         ) -> list[trace.SpanContext]:
    seen: list[trace.SpanContext] = []
    app = build_app(tracing.tracer, seen)
    callbacks: list[Any] = [handler] + ([recorder] if recorder else [])
    app.invoke({"question": "where?", "answer": "", "seen": []}, {"callbacks": callbacks})
    return seen


def test_the_probe_recognises_parent_based_samplers() -> None:
    def provider(sampler: Sampler) -> TracerProvider:
        return TracerProvider(sampler=sampler)

    assert children_follow_unsampled_parent(provider(ParentBased(TraceIdRatioBased(0.1))))
    assert children_follow_unsampled_parent(provider(ParentBased(ALWAYS_ON)))
    assert children_follow_unsampled_parent(provider(ALWAYS_OFF))
    assert not children_follow_unsampled_parent(provider(TraceIdRatioBased(0.1)))
    assert not children_follow_unsampled_parent(provider(ALWAYS_ON))
    assert not children_follow_unsampled_parent(
        provider(ParentBased(TraceIdRatioBased(0.1), local_parent_not_sampled=ALWAYS_ON)))
    assert not children_follow_unsampled_parent(trace.NoOpTracerProvider())


def test_a_sampled_trace_is_exactly_as_complete_as_without_sampling(recorder: RunRecorder) -> None:
    everything = Tracing()  # no sampling: today's trace
    _run(everything, everything.handler())
    sampled = Sampled(plan=[True])
    seen = _run(sampled, sampled.handler(), recorder)
    assert_span_tree_matches(sampled, recorder)
    assert _shape(sampled.spans()) == _shape(everything.spans())
    assert len(sampled.spans()) == len(recorder.parents) + 1  # every run, and the user's span
    assert seen[0].trace_flags.sampled


def test_an_unsampled_run_tree_makes_no_spans_and_leaves_nothing_open() -> None:
    sampled = Sampled(plan=[False])
    handler = sampled.handler()
    before = dict(_ACTIVE_CONTEXTS)
    seen = _run(sampled, handler, RunRecorder())
    assert sampled.spans() == []
    assert len(handler._registry) == 0
    assert _ACTIVE_CONTEXTS == before
    # The user's span inside the unsampled run is in the same trace and unsampled too.
    [user] = seen
    assert user.trace_id == DROP and not user.trace_flags.sampled


def test_unsampled_children_do_no_span_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the root's span is built (its attributes go to the sampler); its children only
    register: no names, attributes or SDK spans."""
    from otel_callbacks import mapping

    sampled = Sampled(plan=[False])
    handler = sampled.handler()
    built: list[str] = []
    original = mapping.common_attributes
    monkeypatch.setattr(mapping, "common_attributes",
                        lambda run_id, run_type, *a: built.append(run_type) or original(run_id, run_type, *a))
    started: list[str] = []
    original_start = handler._tracer.start_span
    monkeypatch.setattr(handler._tracer, "start_span",
                        lambda name, *a, **kw: started.append(name) or original_start(name, *a, **kw))
    recorder = RunRecorder()
    _run(sampled, handler, recorder)
    assert len(recorder.parents) > 5
    assert built == ["chain"] and started == ["LangGraph"]


def test_mixed_sampled_and_unsampled_requests_concurrently() -> None:
    sampled = Sampled()  # alternating: every other request's trace is kept
    handler = sampled.handler()
    recorders = [RunRecorder() for _ in range(24)]
    seen: list[trace.SpanContext] = []
    app = build_app(sampled.tracer, seen)

    async def main() -> None:
        await asyncio.gather(*(app.ainvoke({"question": f"q{i}", "answer": "", "seen": []},
                                           {"callbacks": [handler, recorder]})
                               for i, recorder in enumerate(recorders)))

    asyncio.run(main())
    spans = sampled.by_run_id()
    kept = [r for r in recorders if r.roots()[0] in spans]
    dropped = [r for r in recorders if r.roots()[0] not in spans]
    assert len(kept) == len(dropped) == 12
    for recorder in kept:  # every run of a kept trace has its span, nested as the runs were
        assert set(recorder.parents) <= set(spans)
        for run_id, parent_id in recorder.parents.items():
            if parent_id is not None:
                assert spans[run_id].parent.span_id == spans[parent_id].context.span_id
    for recorder in dropped:  # no run of a dropped trace has one
        assert not set(recorder.parents) & set(spans)
    users = [s for s in sampled.spans() if s.name == "user.work"]
    assert len(users) == 12 and all(s.context.trace_id == KEEP for s in users)
    assert sum(1 for c in seen if not c.trace_flags.sampled) == 12
    assert len(handler._registry) == 0


def test_a_sampler_that_keeps_children_of_unsampled_parents_gets_every_child() -> None:
    sampler = ParentBased(ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON)
    sampled = Sampled(sampler=sampler)
    recorder = RunRecorder()
    _run(sampled, sampled.handler(), recorder)
    spans = sampled.by_run_id()
    assert set(spans) == set(recorder.parents) - set(recorder.roots())  # all but the root


def test_unsampled_model_and_tool_calls_still_count_in_metrics() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    sampled = Sampled(plan=[False, True])
    handler = sampled.handler(meter_provider=meters)
    _run(sampled, handler)
    _run(sampled, handler)
    data = reader.get_metrics_data()
    counts = {m.name: sum(p.count for p in m.data.data_points)
              for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert counts["gen_ai.client.operation.duration"] == 2  # both requests, one traced
    assert counts["langchain.tool.duration"] == 2  # the tool call of each
    assert {s.context.trace_id for s in sampled.spans()} == {KEEP}
    meters.shutdown()


def test_an_unsampled_root_still_hands_its_attributes_to_the_sampler() -> None:
    class Recording(Sampler):
        def __init__(self) -> None:
            self.roots: list[dict[str, Any]] = []

        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Any = None, trace_state: Any = None) -> Any:
            self.roots.append(dict(attributes or {}))
            return ALWAYS_OFF.should_sample(parent_context, trace_id, name, kind, attributes)

        def get_description(self) -> str:
            return "recording"

    root_sampler = Recording()
    sampled = Sampled(sampler=ParentBased(root_sampler))
    _run(sampled, sampled.handler())
    [root] = root_sampler.roots
    assert root["langchain.run.type"] == "chain" and "langchain.run.id" in root
    assert sampled.spans() == []
