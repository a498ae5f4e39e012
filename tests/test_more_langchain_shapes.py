"""More real shapes: parallel maps, event streams, LangGraph message streaming, model batches."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import ToolException, tool
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


class Msgs(TypedDict):
    question: str
    answer: str


@pytest.fixture(autouse=True)
def no_detach_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    yield
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]


def test_runnable_parallel_sync_and_async(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = RunnableParallel(a=RunnableLambda(lambda x: x + 1), b=RunnableLambda(lambda x: x * 2)) \
        | RunnableLambda(lambda d: d["a"] + d["b"])
    config = {"callbacks": [tracing.handler(), recorder]}
    assert chain.invoke(3, config) == 10
    assert asyncio.run(chain.ainvoke(3, config)) == 10
    assert_span_tree_matches(tracing, recorder)


def test_astream_events_and_astream_of_a_chain(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = (ChatPromptTemplate.from_template("{q}")
             | GenericFakeChatModel(messages=iter(["a b c", "d e f"])) | StrOutputParser())
    config = {"callbacks": [tracing.handler(), recorder]}

    async def main() -> tuple[list[str], int]:
        with tracing.tracer.start_as_current_span("request") as request:
            chunks = [c async for c in chain.astream({"q": "x"}, config)]
            events = [e async for e in chain.astream_events({"q": "y"}, config, version="v2")]
            assert trace.get_current_span() is request
        return chunks, len(events)

    chunks, n_events = asyncio.run(main())
    assert "".join(chunks) == "a b c" and n_events > 3
    request = tracing.one("request")
    assert_span_tree_matches(tracing, recorder, root_parent_span_id=request.context.span_id)


def test_chat_model_batch_one_span_per_prompt(tracing: Tracing, recorder: RunRecorder) -> None:
    model = FakeListChatModel(responses=["x", "y", "z"])
    outputs = model.batch(["1", "2", "3"], {"callbacks": [tracing.handler(), recorder]})
    assert len(outputs) == 3
    assert_span_tree_matches(tracing, recorder)
    assert len([s for s in tracing.spans() if s.name.startswith("chat ")]) == 3


def test_handled_tool_error_and_raised_tool_error(tracing: Tracing, recorder: RunRecorder) -> None:
    @tool
    def soft(x: str) -> str:
        """Fails softly."""
        raise ToolException("soft failure")

    soft.handle_tool_error = True

    @tool
    def hard(x: str) -> str:
        """Fails hard."""
        raise ValueError("hard failure")

    config = {"callbacks": [tracing.handler(), recorder]}
    assert soft.invoke({"x": "1"}, config) == "soft failure"
    with pytest.raises(ValueError, match="hard failure"):
        hard.invoke({"x": "1"}, config)
    assert_span_tree_matches(tracing, recorder)
    assert tracing.one("execute_tool hard").status.status_code is StatusCode.ERROR
    assert tracing.one("execute_tool hard").attributes["error.type"] == "ValueError"


def test_langgraph_stream_messages_mode(tracing: Tracing, recorder: RunRecorder) -> None:
    from langgraph.graph import END, START, StateGraph

    model = GenericFakeChatModel(messages=iter(["streamed answer here"]))

    def answer(state: Msgs) -> dict[str, str]:
        return {"answer": model.invoke(state["question"]).content}

    graph = StateGraph(Msgs)
    # LangGraph before 1.0 rejects a node named like a state key.
    graph.add_node("respond", answer)
    graph.add_edge(START, "respond")
    graph.add_edge("respond", END)
    app = graph.compile()
    chunks = list(app.stream({"question": "q", "answer": ""},
                             {"callbacks": [tracing.handler(), recorder]}, stream_mode="messages"))
    assert chunks
    assert_span_tree_matches(tracing, recorder)
    model_span = next(s for s in tracing.spans() if s.name.startswith("chat "))
    assert model_span.attributes["langchain.llm.token_count"] >= 3
