"""A run's span ends whatever reading its result raises: a response, tool output, document list
or chain output that blows up when read costs its attributes, never the span (before, the span
stayed open until eviction, and its children's tree with it)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from otel_callbacks import attributes as attr
from tests.conftest import Tracing


class Exploding:
    """Every attribute read raises: a result object of a shape nobody expected."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"cannot read {name}")


class ExplodingDocuments(Sequence[Any]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError("cannot read a document")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("cannot iterate the documents")


def _start(handler: Any, kind: str, run_id: uuid.UUID) -> None:
    if kind == "llm":
        handler.on_chat_model_start({"name": "Model"}, [[]], run_id=run_id)
    elif kind == "tool":
        handler.on_tool_start({"name": "lookup"}, "q", run_id=run_id)
    elif kind == "retriever":
        handler.on_retriever_start({"name": "Docs"}, "q", run_id=run_id)
    else:
        handler.on_chain_start({"name": "Chain"}, {}, run_id=run_id)


def _end(handler: Any, kind: str, run_id: uuid.UUID) -> None:
    if kind == "llm":
        handler.on_llm_end(Exploding(), run_id=run_id)
    elif kind == "tool":
        handler.on_tool_end(Exploding(), run_id=run_id)
    elif kind == "retriever":
        handler.on_retriever_end(ExplodingDocuments(), run_id=run_id)
    else:
        handler.on_chain_end(Exploding(), run_id=run_id)


@pytest.mark.parametrize("kind", ["llm", "tool", "retriever", "chain"])
@pytest.mark.parametrize("capture", [False, True])
def test_span_ends_when_reading_the_result_raises(tracing: Tracing, kind: str, capture: bool,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    handler = tracing.handler(capture_content=capture)
    run_id = uuid.uuid4()
    _start(handler, kind, run_id)
    with caplog.at_level(logging.DEBUG, logger="otel_callbacks"):
        _end(handler, kind, run_id)  # must not raise into the caller
    spans = tracing.spans()
    assert len(spans) == 1, "the span must be ended (exported) even though its result exploded"
    assert spans[0].attributes[attr.RUN_ID] == str(run_id)
    assert len(handler._registry) == 0  # nothing left open


def test_raise_error_still_ends_the_span_then_raises(tracing: Tracing) -> None:
    handler = tracing.handler()
    handler.raise_error = True
    run_id = uuid.uuid4()
    _start(handler, "tool", run_id)
    with pytest.raises(RuntimeError, match="cannot read"):
        _end(handler, "tool", run_id)
    assert [s.name for s in tracing.spans()] == ["execute_tool lookup"]


def test_an_ended_run_tree_is_freed_by_reference_counting(tracing: Tracing) -> None:
    """No reference cycle survives a run: a root that kept referring to itself left every
    root's state, context and span to the cycle collector (4-5 objects per request)."""
    import gc

    from langchain_core.runnables import RunnableLambda

    from otel_callbacks.registry import RunState

    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2)
    config: Any = {"callbacks": [tracing.handler()]}
    chain.invoke(1, config)  # warm: caches and lazy imports
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            chain.invoke(1, config)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, RunState)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert len(tracing.spans()) == 3 * 21
    assert cyclic == [], f"{len(cyclic)} run states were left to the cycle collector"


def test_a_child_starts_under_a_parent_whose_root_was_evicted(
        tracing: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Eviction ends the oldest run, here a root, and leaves its open child: a run started
    under that child still starts fully, nested under it. (Found by hypothesis: the start
    failed half-way, after its span, so the run's metrics and scope were skipped.)"""
    from uuid import uuid4

    handler = tracing.handler(max_open_runs=2)
    root, child, other, grandchild = uuid4(), uuid4(), uuid4(), uuid4()
    handler.on_chain_start({}, {}, run_id=root, name="root")
    handler.on_chain_start({}, {}, run_id=child, parent_run_id=root, name="child")
    handler.on_chain_start({}, {}, run_id=other, name="other")  # evicts the root
    handler.on_chain_start({}, {}, run_id=grandchild, parent_run_id=child, name="grandchild")
    for run_id in (grandchild, child, other):
        handler.on_chain_end({}, run_id=run_id)
    assert not [r for r in caplog.records if "failed and was skipped" in r.getMessage()]
    spans = {s.name: s for s in tracing.spans()}
    assert set(spans) == {"root", "child", "other", "grandchild"}
    assert spans["grandchild"].parent.span_id == spans["child"].context.span_id
    assert spans["child"].parent.span_id == spans["root"].context.span_id
