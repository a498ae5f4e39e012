"""Real langchain-core runs: the span tree must equal the run tree LangChain reports."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches


def callbacks(tracing: Tracing, recorder: RunRecorder, **kwargs: Any) -> RunnableConfig:
    return {"callbacks": [tracing.handler(**kwargs), recorder]}


class TinyRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        return [Document(page_content=f"doc about {query}"), Document(page_content="another")]


def test_runnable_sequence(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 2) | RunnableLambda(str)
    assert chain.invoke(1, callbacks(tracing, recorder)) == "4"
    assert len(recorder.parents) == 4
    assert_span_tree_matches(tracing, recorder)
    root = tracing.one("RunnableSequence")
    assert root.attributes["langchain.run.type"] == "chain"
    assert root.attributes["langchain.run.id"] == recorder.roots()[0]


def test_prompt_model_parser(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = (ChatPromptTemplate.from_template("Tell me about {topic}")
             | FakeListChatModel(responses=["otel is nice"]) | StrOutputParser())
    assert chain.invoke({"topic": "otel"}, callbacks(tracing, recorder)) == "otel is nice"
    assert_span_tree_matches(tracing, recorder)
    model = [s for s in tracing.spans() if s.attributes["langchain.run.type"] == "chat_model"]
    assert len(model) == 1
    assert model[0].kind is SpanKind.CLIENT
    assert model[0].attributes["gen_ai.operation.name"] == "chat"
    # content is off by default: no prompt text anywhere
    for span in tracing.spans():
        assert not any("otel is nice" in str(v) or "Tell me about" in str(v)
                       for v in span.attributes.values())


def test_usage_tokens_from_usage_metadata(tracing: Tracing, recorder: RunRecorder) -> None:
    message = AIMessage(content="hi", usage_metadata={"input_tokens": 7, "output_tokens": 3,
                                                      "total_tokens": 10})
    model = GenericFakeChatModel(messages=iter([message]))
    model.invoke("hello", callbacks(tracing, recorder))
    span = tracing.spans()[0]
    assert span.attributes["gen_ai.usage.input_tokens"] == 7
    assert span.attributes["gen_ai.usage.output_tokens"] == 3


def test_stream_of_fake_chat_model(tracing: Tracing, recorder: RunRecorder) -> None:
    model = GenericFakeChatModel(messages=iter(["one two three four five six seven eight nine ten"]))
    chain = model | StrOutputParser()
    from langchain_core.callbacks import BaseCallbackHandler as LCHandler

    class TokenCounter(LCHandler):
        tokens = 0

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            TokenCounter.tokens += 1

    config = callbacks(tracing, recorder, max_token_events=3)
    config["callbacks"].append(TokenCounter())
    chunks = list(chain.stream("go", config))
    assert "".join(chunks) == "one two three four five six seven eight nine ten"
    assert_span_tree_matches(tracing, recorder)
    span = [s for s in tracing.spans() if s.attributes["langchain.run.type"] == "chat_model"][0]
    token_events = [e for e in span.events if e.name in ("gen_ai.first_token", "gen_ai.token")]
    assert TokenCounter.tokens > 10
    assert span.attributes["langchain.llm.token_count"] == TokenCounter.tokens  # exact count
    assert len(token_events) == 3
    assert token_events[0].name == "gen_ai.first_token"
    assert span.attributes["gen_ai.response.time_to_first_chunk"] >= 0


def test_tool_and_retriever(tracing: Tracing, recorder: RunRecorder) -> None:
    @tool
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return f"sunny in {city}"

    retriever = TinyRetriever()
    chain = RunnableLambda(lambda q: {"docs": retriever.invoke(q), "weather": lookup.invoke(q)})
    out = chain.invoke("Paris", callbacks(tracing, recorder))
    assert out["weather"] == "sunny in Paris"
    assert_span_tree_matches(tracing, recorder)
    tool_span = tracing.one("execute_tool lookup")
    assert tool_span.attributes["gen_ai.tool.name"] == "lookup"
    assert tool_span.attributes["langchain.run.type"] == "tool"
    retriever_span = [s for s in tracing.spans() if s.attributes["langchain.run.type"] == "retriever"][0]
    assert retriever_span.attributes["langchain.retriever.document_count"] == 2


def test_nested_depth_20(tracing: Tracing, recorder: RunRecorder) -> None:
    def make(level: int) -> RunnableLambda:
        def step(x: int, config: RunnableConfig) -> int:
            return x if level == 0 else make(level - 1).invoke(x + 1, config)
        step.__name__ = f"level_{level}"
        return RunnableLambda(step)

    assert make(19).invoke(0, callbacks(tracing, recorder)) == 19
    assert len(recorder.parents) == 20
    assert_span_tree_matches(tracing, recorder)
    depth, span = 0, tracing.one("level_0")
    by_id = {s.context.span_id: s for s in tracing.spans()}
    while span.parent is not None:
        span, depth = by_id[span.parent.span_id], depth + 1
    assert depth == 19 and span.name == "level_19"


def test_batch_on_threads(tracing: Tracing, recorder: RunRecorder) -> None:
    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 10)
    outputs = chain.batch(list(range(16)), {**callbacks(tracing, recorder), "max_concurrency": 4})
    assert outputs == [(i + 1) * 10 for i in range(16)]
    assert_span_tree_matches(tracing, recorder)
    roots = recorder.roots()
    assert len(roots) == 16
    spans = tracing.by_run_id()
    assert len({spans[r].context.trace_id for r in roots}) == 16  # one trace per root


def test_abatch_of_50(tracing: Tracing, recorder: RunRecorder) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.001 * (x % 5))
        return x

    chain = RunnableLambda(lambda x: x) | RunnableLambda(slow) | RunnableLambda(lambda x: -x)
    outputs = asyncio.run(chain.abatch(list(range(50)), callbacks(tracing, recorder)))
    assert outputs == [-i for i in range(50)]
    assert len(recorder.parents) == 200
    assert_span_tree_matches(tracing, recorder)
    spans = tracing.by_run_id()
    assert len({spans[r].context.trace_id for r in recorder.roots()}) == 50


def test_gather_interleaved_ainvokes(tracing: Tracing, recorder: RunRecorder) -> None:
    async def hop(x: int) -> int:
        await asyncio.sleep(0)
        return x

    chain = RunnableLambda(hop) | RunnableLambda(hop) | RunnableLambda(hop)
    config = callbacks(tracing, recorder)

    async def main() -> list[int]:
        return await asyncio.gather(*(chain.ainvoke(i, config) for i in range(20)))

    assert asyncio.run(main()) == list(range(20))
    assert_span_tree_matches(tracing, recorder)


class State(TypedDict):
    count: int


class Boom(RuntimeError):
    pass


def test_error_in_the_middle(tracing: Tracing, recorder: RunRecorder) -> None:
    error = Boom("step two failed")

    def fail(x: int) -> int:
        raise error

    chain = RunnableLambda(lambda x: x) | RunnableLambda(fail) | RunnableLambda(lambda x: x)
    with pytest.raises(Boom) as raised:
        chain.invoke(1, callbacks(tracing, recorder))
    assert raised.value is error  # the user's exception, unchanged
    assert_span_tree_matches(tracing, recorder)
    failed = tracing.one("fail")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == f"{__name__}.Boom"
    assert any(e.name == "exception" for e in failed.events)
    assert tracing.one("RunnableSequence").status.status_code is StatusCode.ERROR
    assert len(recorder.parents) == 3  # the third step never ran


def test_with_retry(tracing: Tracing, recorder: RunRecorder) -> None:
    attempts = {"n": 0}

    def flaky(x: int) -> int:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise Boom("not yet")
        return x

    chain = RunnableLambda(flaky).with_retry(stop_after_attempt=3, wait_exponential_jitter=False,
                                             retry_if_exception_type=(Boom,))
    assert chain.invoke(5, callbacks(tracing, recorder)) == 5
    assert_span_tree_matches(tracing, recorder)
    root = tracing.by_run_id()[recorder.roots()[0]]
    attempts_spans = [s for s in tracing.spans() if s.parent and s.parent.span_id == root.context.span_id]
    assert len(attempts_spans) == 3 and all(s.name == "flaky" for s in attempts_spans)
    assert [s.status.status_code for s in attempts_spans].count(StatusCode.ERROR) == 2


def test_on_retry_from_llm_retry_decorator(tracing: Tracing) -> None:
    from langchain_core.callbacks import CallbackManager
    from langchain_core.language_models.llms import create_base_retry_decorator

    handler = tracing.handler()
    manager = CallbackManager.configure([handler])
    (run_manager,) = manager.on_llm_start({"name": "FakeLLM"}, ["prompt"])
    calls = {"n": 0}

    @create_base_retry_decorator(error_types=[Boom], max_retries=3, run_manager=run_manager)
    def call_provider() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise Boom("rate limited")
        return "ok"

    call_provider.retry.sleep = lambda seconds: None  # keep the backoff, skip the waiting
    assert call_provider() == "ok"
    run_manager.on_llm_end(__import__("langchain_core.outputs", fromlist=["LLMResult"]).LLMResult(generations=[[]]))
    span = tracing.spans()[0]
    retries = [e for e in span.events if e.name == "langchain.retry"]
    assert [e.attributes["attempt"] for e in retries] == [1, 2]
    assert retries[0].attributes["error.type"] == f"{__name__}.Boom"
    assert span.attributes["langchain.run.retry_count"] == 2


def test_langgraph_state_graph_with_loop(tracing: Tracing, recorder: RunRecorder) -> None:
    from langgraph.graph import END, START, StateGraph

    def increment(state: State) -> State:
        return {"count": state["count"] + 1}

    def route(state: State) -> str:
        return "increment" if state["count"] < 4 else END

    graph = StateGraph(State)
    graph.add_node("increment", increment)
    graph.add_edge(START, "increment")
    graph.add_conditional_edges("increment", route)
    app = graph.compile()
    assert app.invoke({"count": 0}, callbacks(tracing, recorder)) == {"count": 4}
    assert_span_tree_matches(tracing, recorder)
    assert len(tracing.named("increment")) == 4
    root = tracing.by_run_id()[recorder.roots()[0]]
    assert all(s.context.trace_id == root.context.trace_id for s in tracing.spans())


def test_langgraph_async_loop(tracing: Tracing, recorder: RunRecorder) -> None:
    from langgraph.graph import END, START, StateGraph

    async def increment(state: State) -> State:
        await asyncio.sleep(0)
        return {"count": state["count"] + 1}

    graph = StateGraph(State)
    graph.add_node("increment", increment)
    graph.add_edge(START, "increment")
    graph.add_conditional_edges("increment", lambda s: "increment" if s["count"] < 3 else END)
    app = graph.compile()
    assert asyncio.run(app.ainvoke({"count": 0}, callbacks(tracing, recorder))) == {"count": 3}
    assert_span_tree_matches(tracing, recorder)


def test_constructor_callbacks_are_span_local(tracing: Tracing, recorder: RunRecorder) -> None:
    inner = RunnableLambda(lambda x: x.upper())
    inner = inner.with_config(run_name="inner_step")

    @tool
    def shout(text: str, config: RunnableConfig) -> str:
        """Shout the text."""
        return inner.invoke(text, config)

    traced_tool = shout.model_copy(update={"callbacks": [tracing.handler()]})
    # the recorder is a request-time callback: it sees the child run too
    assert traced_tool.invoke({"text": "hi"}, {"callbacks": [recorder]}) == "HI"
    assert len(recorder.parents) == 2
    names = [s.name for s in tracing.spans()]
    assert names == ["execute_tool shout"]  # the child run is not traced
