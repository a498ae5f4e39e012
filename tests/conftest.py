"""Shared fixtures: a private TracerProvider with an in-memory exporter (never the global one),
and a recording LangChain handler that reports the run tree LangChain itself sees."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_callbacks import BaseCallbackHandler, OTelHandler


class Tracing:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def handler(self, **kwargs: Any) -> OTelHandler:
        return OTelHandler(tracer_provider=self.provider, **kwargs)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_run_id(self) -> dict[str, ReadableSpan]:
        out: dict[str, ReadableSpan] = {}
        for span in self.spans():
            run_id = (span.attributes or {}).get("langchain.run.id")
            if run_id is not None:
                assert run_id not in out, f"two spans for run {run_id}"
                out[run_id] = span
        return out

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]


class RunRecorder(BaseCallbackHandler):
    """Records run_id -> parent_run_id for every start LangChain reports."""

    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.parents: dict[str, str | None] = {}
        self.names: dict[str, str] = {}
        self.metadata: dict[str, dict[str, Any]] = {}  # chain/chat runs' metadata, as LangChain passed it
        self._lock = threading.Lock()

    def _record(self, run_id: Any, parent_run_id: Any, name: Any = None) -> None:
        with self._lock:
            self.parents[str(run_id)] = str(parent_run_id) if parent_run_id else None
            self.names[str(run_id)] = str(name)

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any) -> None:
        self._record(run_id, parent_run_id, kw.get("name"))
        self.metadata[str(run_id)] = dict(kw.get("metadata") or {})

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any) -> None:
        self._record(run_id, parent_run_id, "chat_model")
        self.metadata[str(run_id)] = dict(kw.get("metadata") or {})

    def on_llm_start(self, serialized: Any, prompts: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any) -> None:
        self._record(run_id, parent_run_id, "llm")

    def on_tool_start(self, serialized: Any, input_str: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any) -> None:
        self._record(run_id, parent_run_id, kw.get("name"))

    def on_retriever_start(self, serialized: Any, query: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any) -> None:
        self._record(run_id, parent_run_id, kw.get("name"))

    def roots(self) -> list[str]:
        return [r for r, p in self.parents.items() if p is None]


def assert_span_tree_matches(tracing: Tracing, recorder: RunRecorder,
                             root_parent_span_id: int | None = None) -> None:
    """One span per run; each span's parent is its parent run's span; one trace per root."""
    spans = tracing.by_run_id()
    assert set(spans) == set(recorder.parents), (
        f"runs without spans: {set(recorder.parents) - set(spans)}; "
        f"spans without runs: {set(spans) - set(recorder.parents)}")
    for run_id, parent_id in recorder.parents.items():
        span = spans[run_id]
        if parent_id is None:
            if root_parent_span_id is None:
                assert span.parent is None, f"root run {recorder.names[run_id]} has a parent"
            else:
                assert span.parent is not None and span.parent.span_id == root_parent_span_id
            continue
        parent_span = spans[parent_id]
        assert span.parent is not None and span.parent.span_id == parent_span.context.span_id, (
            f"{span.name} should be a child of {parent_span.name}")
        assert span.context.trace_id == parent_span.context.trace_id


def descendants_trace_ids(tracing: Tracing, recorder: RunRecorder) -> dict[str, int]:
    spans = tracing.by_run_id()
    return {root: spans[root].context.trace_id for root in recorder.roots()}


@pytest.fixture
def tracing() -> Tracing:
    return Tracing()


@pytest.fixture
def recorder() -> RunRecorder:
    return RunRecorder()
