"""Shapes real apps use that exercise routing: LangGraph subgraphs, Send fan-out, interrupts and
resume, fallbacks, branches, assign, generator transforms, a user's root span, async event logs.

Every tree is compared with the run tree LangChain reports to a recording handler.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import (
    RunnableBranch,
    RunnableGenerator,
    RunnableLambda,
    RunnablePassthrough,
)
from opentelemetry.trace import StatusCode

from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


@pytest.fixture(autouse=True)
def no_detach_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]


class Inner(TypedDict):
    n: int


class Outer(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]


def _subgraph_app(tracing: Tracing) -> Any:
    from langgraph.graph import END, START, StateGraph

    def work(state: Inner) -> dict:
        with tracing.tracer.start_as_current_span("db.query"):
            return {"n": state["n"] * 10}

    inner = StateGraph(Inner)
    inner.add_node("work", work)
    inner.add_edge(START, "work")
    inner.add_edge("work", END)
    sub = inner.compile()

    outer = StateGraph(Outer)
    outer.add_node("prepare", lambda s: {"n": s["n"] + 1})
    outer.add_node("sub", sub)
    outer.add_edge(START, "prepare")
    outer.add_edge("prepare", "sub")
    outer.add_edge("sub", END)
    return outer.compile()


def _check_subgraph(tracing: Tracing, recorder: RunRecorder) -> None:
    assert_span_tree_matches(tracing, recorder)
    by_id = {s.context.span_id: s for s in tracing.spans()}
    query = tracing.one("db.query")
    work = by_id[query.parent.span_id]
    assert work.name == "work"  # the user's span nests in the subgraph's node
    assert len({s.context.trace_id for s in tracing.spans()}) == 1


def test_langgraph_subgraph_sync(tracing: Tracing, recorder: RunRecorder) -> None:
    app = _subgraph_app(tracing)
    assert app.invoke({"n": 1, "results": []}, {"callbacks": [tracing.handler(), recorder]})["n"] == 20
    _check_subgraph(tracing, recorder)


def test_langgraph_subgraph_async_streamed_with_subgraphs(tracing: Tracing, recorder: RunRecorder) -> None:
    app = _subgraph_app(tracing)

    async def main() -> list[Any]:
        return [c async for c in app.astream({"n": 1, "results": []},
                                             {"callbacks": [tracing.handler(), recorder]},
                                             stream_mode="updates", subgraphs=True)]

    assert asyncio.run(main())
    _check_subgraph(tracing, recorder)


def test_langgraph_send_fan_out(tracing: Tracing, recorder: RunRecorder) -> None:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    class Item(TypedDict):
        n: int

    def square(item: Item) -> dict:
        with tracing.tracer.start_as_current_span("compute"):
            return {"results": [item["n"] ** 2]}

    g = StateGraph(Outer)
    g.add_node("square", square)
    g.add_conditional_edges(START, lambda s: [Send("square", {"n": i}) for i in range(s["n"])], ["square"])
    g.add_edge("square", END)
    app = g.compile()

    for invoke in (lambda c: app.invoke({"n": 4, "results": []}, c),
                   lambda c: asyncio.run(app.ainvoke({"n": 4, "results": []}, c))):
        out = invoke({"callbacks": [tracing.handler(), recorder], "max_concurrency": 2})
        assert sorted(out["results"]) == [0, 1, 4, 9]
    assert_span_tree_matches(tracing, recorder)
    by_id = {s.context.span_id: s for s in tracing.spans()}
    computes = tracing.named("compute")
    assert len(computes) == 8
    assert all(by_id[c.parent.span_id].name == "square" for c in computes)


def test_langgraph_interrupt_and_resume(tracing: Tracing, recorder: RunRecorder) -> None:
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    def ask(state: Inner) -> dict:
        answer = interrupt("how many?")
        return {"n": state["n"] + int(answer)}

    g = StateGraph(Inner)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    app = g.compile(checkpointer=MemorySaver())
    config = {"callbacks": [tracing.handler(), recorder], "configurable": {"thread_id": "t1"}}

    first = app.invoke({"n": 1}, config)
    assert "__interrupt__" in first
    assert app.invoke(Command(resume="41"), config)["n"] == 42

    assert_span_tree_matches(tracing, recorder)
    spans = tracing.spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 2 and len({r.context.trace_id for r in roots}) == 2
    # The interrupt is control flow, not a failure.
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)
    asks = tracing.named("ask")
    assert any(e.name == "langgraph.control_flow" for s in asks for e in s.events)


def test_fallbacks_branch_assign(tracing: Tracing, recorder: RunRecorder) -> None:
    def broken(_: Any) -> str:
        raise TimeoutError("primary model timed out")

    backup = RunnableLambda(lambda x: f"answer {x}") | FakeListChatModel(responses=["backup"]) | StrOutputParser()
    answer = RunnableLambda(broken).with_fallbacks([backup])
    branch = RunnableBranch((lambda x: x["kind"] == "math", RunnableLambda(lambda x: "42")), answer)
    chain = RunnablePassthrough.assign(answer=branch)
    config = {"callbacks": [tracing.handler(), recorder]}

    assert chain.invoke({"kind": "chat"}, config)["answer"] == "backup"
    assert chain.invoke({"kind": "math"}, config)["answer"] == "42"
    assert_span_tree_matches(tracing, recorder)
    failed = tracing.one("broken")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "TimeoutError"
    # The fallback succeeded, so the run around it did not fail.
    by_id = {s.context.span_id: s for s in tracing.spans()}
    assert by_id[failed.parent.span_id].status.status_code is StatusCode.UNSET


def test_streamed_chain_with_generator_transform(tracing: Tracing, recorder: RunRecorder) -> None:
    def shout(chunks: Any) -> Any:
        for chunk in chunks:
            yield chunk.upper()

    model = GenericFakeChatModel(messages=iter([AIMessage(content="hello streaming world")]))
    chain = model | StrOutputParser() | RunnableGenerator(shout)
    text = "".join(chain.stream("hi", {"callbacks": [tracing.handler(), recorder]}))
    assert text == "HELLO STREAMING WORLD"
    assert_span_tree_matches(tracing, recorder)
    chat = [s for s in tracing.spans() if s.name.startswith("chat")]
    assert len(chat) == 1 and chat[0].attributes["langchain.llm.token_count"] >= 3


def test_chain_under_a_users_root_span(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2)
    with tracing.tracer.start_as_current_span("POST /answer") as request:
        assert chain.invoke(1, {"callbacks": [tracing.handler(), recorder]}) == 4
        assert asyncio.run(chain.ainvoke(1, {"callbacks": [tracing.handler(), recorder]})) == 4
    assert_span_tree_matches(tracing, recorder, root_parent_span_id=request.get_span_context().span_id)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_astream_log_of_a_chain(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = FakeListChatModel(responses=["a b c"]) | StrOutputParser()

    async def main() -> int:  # astream_log is deprecated, still used by apps
        config = {"callbacks": [tracing.handler(), recorder]}
        return len([p async for p in chain.astream_log("hi", config)])

    assert asyncio.run(main()) > 0
    assert_span_tree_matches(tracing, recorder)
