"""The run's span is the current OTel span inside the run's own code, and never leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry import trace

from otel_callbacks import context_bridge
from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


class State(TypedDict):
    count: int


class ProviderModel(BaseChatModel):
    """A chat model whose provider call makes a span, as an HTTP client instrumentation would."""

    tracer: Any = None

    @property
    def _llm_type(self) -> str:
        return "provider-model"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        with self.tracer.start_as_current_span("HTTP POST /chat"):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(0)
        with self.tracer.start_as_current_span("HTTP POST /chat"):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        with self.tracer.start_as_current_span("HTTP POST /chat (stream)"):
            pass
        for word in ("a", "b", "c"):
            with self.tracer.start_as_current_span(f"read {word}"):
                pass
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))

    async def _astream(self, messages: list[BaseMessage], stop: Any = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        with self.tracer.start_as_current_span("HTTP POST /chat (stream)"):
            await asyncio.sleep(0)
        for word in ("a", "b", "c"):
            await asyncio.sleep(0)
            with self.tracer.start_as_current_span(f"read {word}"):
                pass
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))


def parent_name(tracing: Tracing, span_name: str) -> str | None:
    spans = tracing.spans()
    by_id = {s.context.span_id: s for s in spans}
    span = next(s for s in spans if s.name == span_name)
    return by_id[span.parent.span_id].name if span.parent and span.parent.span_id in by_id else None


@pytest.fixture(autouse=True)
def no_detach_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]


def test_user_span_in_runnable_lambda_sync(tracing: Tracing) -> None:
    def work(x: int) -> int:
        with tracing.tracer.start_as_current_span("user work"):
            return x

    (RunnableLambda(work) | RunnableLambda(lambda x: x)).invoke(1, {"callbacks": [tracing.handler()]})
    assert parent_name(tracing, "user work") == "work"


def test_user_span_in_runnable_lambda_async(tracing: Tracing) -> None:
    async def work(x: int) -> int:
        await asyncio.sleep(0)
        with tracing.tracer.start_as_current_span("user work"):
            await asyncio.sleep(0)
            return x

    chain = RunnableLambda(work) | RunnableLambda(lambda x: x)
    asyncio.run(chain.ainvoke(1, {"callbacks": [tracing.handler()]}))
    assert parent_name(tracing, "user work") == "work"


def test_user_span_in_tool_sync_and_async(tracing: Tracing) -> None:
    @tool
    def fetch(url: str) -> str:
        """Fetch a url."""
        with tracing.tracer.start_as_current_span("HTTP GET"):
            return "page"

    @tool
    async def afetch(url: str) -> str:
        """Fetch a url, async."""
        await asyncio.sleep(0)
        with tracing.tracer.start_as_current_span("HTTP GET async"):
            return "page"

    fetch.invoke({"url": "x"}, {"callbacks": [tracing.handler()]})
    asyncio.run(afetch.ainvoke({"url": "x"}, {"callbacks": [tracing.handler()]}))
    assert parent_name(tracing, "HTTP GET") == "execute_tool fetch"
    assert parent_name(tracing, "HTTP GET async") == "execute_tool afetch"


def test_user_span_in_langgraph_node_sync_and_async(tracing: Tracing) -> None:
    from langgraph.graph import END, START, StateGraph

    def node(state: State) -> State:
        with tracing.tracer.start_as_current_span("in node"):
            return {"count": state["count"] + 1}

    async def anode(state: State) -> State:
        await asyncio.sleep(0)
        with tracing.tracer.start_as_current_span("in async node"):
            return {"count": state["count"] + 1}

    for name, fn, run in (("node", node, "sync"), ("anode", anode, "async")):
        graph = StateGraph(State)
        graph.add_node(name, fn)
        graph.add_edge(START, name)
        graph.add_edge(name, END)
        app = graph.compile()
        config = {"callbacks": [tracing.handler()]}
        if run == "sync":
            app.invoke({"count": 0}, config)
        else:
            asyncio.run(app.ainvoke({"count": 0}, config))
    assert parent_name(tracing, "in node") == "node"
    assert parent_name(tracing, "in async node") == "anode"


def test_provider_call_nests_under_model_span(tracing: Tracing) -> None:
    model = ProviderModel(tracer=tracing.tracer)
    model.invoke("hi", {"callbacks": [tracing.handler()]})
    asyncio.run(model.ainvoke("hi", {"callbacks": [tracing.handler()]}))
    http = tracing.named("HTTP POST /chat")
    models = [s for s in tracing.spans() if s.name.startswith("chat ")]
    assert len(http) == 2 and len(models) == 2
    assert {h.parent.span_id for h in http} == {m.context.span_id for m in models}


def test_stream_provider_spans_nest_and_do_not_leak(tracing: Tracing) -> None:
    model = ProviderModel(tracer=tracing.tracer)
    with tracing.tracer.start_as_current_span("request") as request:
        for _ in model.stream("hi", {"callbacks": [tracing.handler()]}):
            # the consumer's code between chunks runs in the caller's context
            assert trace.get_current_span() is request
        assert trace.get_current_span() is request
    model_span = next(s for s in tracing.spans() if s.name.startswith("chat "))
    for name in ("HTTP POST /chat (stream)", "read a", "read b", "read c"):
        assert parent_name(tracing, name) == model_span.name
    assert parent_name(tracing, model_span.name) == "request"


def test_astream_provider_spans_nest_and_do_not_leak(tracing: Tracing) -> None:
    model = ProviderModel(tracer=tracing.tracer)

    async def main() -> None:
        with tracing.tracer.start_as_current_span("request") as request:
            async for _ in model.astream("hi", {"callbacks": [tracing.handler()]}):
                assert trace.get_current_span() is request
            assert trace.get_current_span() is request

    asyncio.run(main())
    model_span = next(s for s in tracing.spans() if s.name.startswith("chat "))
    for name in ("HTTP POST /chat (stream)", "read a", "read c"):
        assert parent_name(tracing, name) == model_span.name


def test_retriever_code_nests(tracing: Tracing) -> None:
    class HttpRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
            with tracing.tracer.start_as_current_span("vector db query"):
                return [Document(page_content="d")]

    HttpRetriever().invoke("q", {"callbacks": [tracing.handler()]})
    assert parent_name(tracing, "vector db query") == "retrieval HttpRetriever"


def test_sequential_ainvokes_are_siblings_and_context_restored(tracing: Tracing,
                                                                recorder: RunRecorder) -> None:
    chain = RunnableLambda(lambda x: x) | ProviderModel(tracer=tracing.tracer)
    handler = tracing.handler()

    async def request() -> None:
        with tracing.tracer.start_as_current_span("HTTP request") as outer:
            await chain.ainvoke("a", {"callbacks": [handler, recorder]})
            assert trace.get_current_span() is outer
            await chain.ainvoke("b", {"callbacks": [handler, recorder]})
            assert trace.get_current_span() is outer
        assert trace.get_current_span() is trace.INVALID_SPAN

    asyncio.run(request())
    outer_span = tracing.one("HTTP request")
    roots = [s for s in tracing.spans() if s.name == "RunnableSequence"]
    assert len(roots) == 2
    assert all(r.parent.span_id == outer_span.context.span_id for r in roots)
    assert_span_tree_matches(tracing, recorder, root_parent_span_id=outer_span.context.span_id)


def test_sync_invoke_restores_context(tracing: Tracing) -> None:
    chain = RunnableLambda(lambda x: x) | ProviderModel(tracer=tracing.tracer)
    with tracing.tracer.start_as_current_span("outer") as outer:
        chain.invoke("a", {"callbacks": [tracing.handler()]})
        assert trace.get_current_span() is outer
        chain.invoke("b", {"callbacks": [tracing.handler()]})
    roots = [s for s in tracing.spans() if s.name == "RunnableSequence"]
    assert [r.parent.span_id for r in roots] == [outer.get_span_context().span_id] * 2


def test_bridge_is_harmless_without_handler(tracing: Tracing) -> None:
    def work(x: int) -> int:
        with tracing.tracer.start_as_current_span("user work"):
            return x

    with tracing.tracer.start_as_current_span("outer"):
        (RunnableLambda(work) | RunnableLambda(lambda x: x)).invoke(1)
    assert parent_name(tracing, "user work") == "outer"
    assert [s.name for s in tracing.spans()] == ["user work", "outer"]


def test_bridge_uninstall_restores_originals_and_reinstalls() -> None:
    from langchain_core.language_models.chat_models import BaseChatModel as Base
    from langchain_core.runnables import config as config_module

    context_bridge.install()
    assert hasattr(config_module._set_config_context, "__wrapped__")
    assert hasattr(vars(Base)["stream"], "__wrapped__")
    context_bridge.uninstall()
    assert not hasattr(config_module._set_config_context, "__wrapped__")
    assert not hasattr(vars(Base)["stream"], "__wrapped__")
    assert not hasattr(vars(Base)["_generate_with_cache"], "__wrapped__")
    context_bridge.install()
    assert hasattr(config_module._set_config_context, "__wrapped__")
    context_bridge.install()  # idempotent: never wrapped twice
    assert not hasattr(config_module._set_config_context.__wrapped__, "__wrapped__")
