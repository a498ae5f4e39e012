"""The context bridge finds its execution points in the installed LangChain and LangGraph, on
every supported Python: where a release moved them, where Python 3.10 takes another path."""

from __future__ import annotations

import asyncio
import importlib
import sys
from importlib.metadata import version
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig, RunnableLambda
from opentelemetry import trace

from otel_callbacks import context_bridge
from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


class State(TypedDict):
    count: int


def _resolve(module_name: str, path: str) -> Any:
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in path.split("."):
        owner = vars(owner).get(part) if isinstance(owner, type) else getattr(owner, part, None)
        if owner is None:
            return None
    return owner


def _points_found(points: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {f"{m}.{p}": found for m, p in points if (found := _resolve(m, p)) is not None}


@pytest.mark.parametrize(("package", "points"), [
    ("langgraph", context_bridge.LANGGRAPH_EXECUTION_POINTS),
    ("langchain-core", context_bridge.LANGCHAIN_EXECUTION_POINTS),
])
def test_a_known_execution_point_exists_in_the_installed_release_and_is_patched(
        tracing: Tracing, package: str, points: tuple[tuple[str, str], ...]) -> None:
    tracing.handler()  # installs the bridge
    found = _points_found(points)
    assert found, (
        f"{package} {version(package)} has none of the execution points the context bridge "
        f"knows ({', '.join(f'{m}.{p}' for m, p in points)}): it moved them again, so user and "
        "HTTP spans inside its runs no longer nest. Find the new point in its source and add it.")
    unpatched = [name for name, point in found.items() if not context_bridge.is_patched(point)]
    assert not unpatched, f"found but not patched: {unpatched}"


@pytest.mark.skipif(sys.version_info >= (3, 11),
                    reason="Python 3.11+ runs async nodes in a copied context (create_task(context=))")
def test_python310_async_entry_points_exist_and_are_patched(tracing: Tracing) -> None:
    tracing.handler()
    modules = [m for m, _ in context_bridge.LANGGRAPH_EXECUTION_POINTS]
    for path in ("RunnableSeq.ainvoke", "RunnableSeq.astream", "RunnableCallable.ainvoke"):
        found = _points_found(tuple((m, path) for m in modules))
        assert found, f"langgraph {version('langgraph')} has no {path} in {modules}"
        assert all(context_bridge.is_patched(p) for p in found.values()), found
    coro = _resolve("langchain_core.runnables.utils", "coro_with_context")
    assert coro is not None, f"langchain-core {version('langchain-core')} has no coro_with_context"
    assert context_bridge.is_patched(coro)


def _parent_name(tracing: Tracing, name: str) -> str | None:
    span = tracing.one(name)
    if span.parent is None:
        return None
    by_id = {s.context.span_id: s for s in tracing.spans()}
    parent = by_id.get(span.parent.span_id)
    return parent.name if parent is not None else "<not exported>"


def _one_node_graph(node: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(State)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    graph.add_edge("node", END)
    return graph.compile()


def test_user_span_in_async_router_nests_under_the_router_run(tracing: Tracing,
                                                              recorder: RunRecorder) -> None:
    from langgraph.graph import END, START, StateGraph

    async def step(state: State) -> State:
        return {"count": state["count"] + 1}

    async def route(state: State) -> str:
        await asyncio.sleep(0)
        with tracing.tracer.start_as_current_span("in router"):
            return END

    graph = StateGraph(State)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", route)
    asyncio.run(graph.compile().ainvoke({"count": 0}, {"callbacks": [tracing.handler(), recorder]}))
    assert_span_tree_matches(tracing, recorder)
    assert _parent_name(tracing, "in router") == "route"


def test_user_span_in_async_node_under_astream_events(tracing: Tracing) -> None:
    """A streaming handler makes LangGraph run each node through its async stream path."""

    async def node(state: State) -> State:
        await asyncio.sleep(0)
        with tracing.tracer.start_as_current_span("in streamed node"):
            return {"count": state["count"] + 1}

    app = _one_node_graph(node)

    async def consume() -> int:
        return len([e async for e in app.astream_events({"count": 0}, {"callbacks": [tracing.handler()]},
                                                        version="v2")])

    assert asyncio.run(consume()) > 0
    assert _parent_name(tracing, "in streamed node") == "node"


def test_run_traced_inside_an_untraced_node_does_not_stay_current(tracing: Tracing) -> None:
    """Only the node's own run may become current in its frame: a run traced deeper (here a
    chain with its own handler inside a graph run without one) ends, and is current no more."""
    handler = tracing.handler()
    inner = RunnableLambda(lambda x: x, name="inner")

    async def node(state: State) -> State:
        await inner.ainvoke(1, {"callbacks": [handler]})
        with tracing.tracer.start_as_current_span("after inner"):
            pass
        return {"count": state["count"] + 1}

    asyncio.run(_one_node_graph(node).ainvoke({"count": 0}))
    assert _parent_name(tracing, "after inner") is None
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_child_run_of_an_async_node_given_its_config_does_not_stay_current(
        tracing: Tracing, recorder: RunRecorder) -> None:
    """A node passing its config to a chain: the chain's span is current inside the chain only."""

    def work(x: int) -> int:
        with tracing.tracer.start_as_current_span("in inner"):
            return x

    inner = RunnableLambda(work, name="inner")

    async def node(state: State, config: RunnableConfig) -> State:
        await inner.ainvoke(1, config)
        with tracing.tracer.start_as_current_span("after inner"):
            return {"count": state["count"] + 1}

    asyncio.run(_one_node_graph(node).ainvoke({"count": 0}, {"callbacks": [tracing.handler(), recorder]}))
    assert_span_tree_matches(tracing, recorder)
    assert _parent_name(tracing, "in inner") == "inner"
    assert _parent_name(tracing, "after inner") == "node"
