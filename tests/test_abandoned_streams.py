"""Issue 12, item 3: every way a consumer abandons a stream keeps the model span's data.

A model run inside a chain or graph is often ended as an orphan (its root ends first, the
model's own ``GeneratorExit`` or cancellation comes later or never). Whichever path ends it,
the span keeps its token count, time to first chunk and the usage seen so far, is marked
abandoned (not an error), its duration metric is recorded, and the span tree equals the run
tree LangChain reports.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunRecorder, Tracing, assert_span_tree_matches
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import END, START, MessagesState, StateGraph
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import StatusCode
from test_genai_conventions import FakeChat

from otel_callbacks import attributes as attr

CHUNKS = [f"c{i}" for i in range(10)]
DURATION = "gen_ai.client.operation.duration"
TTFC = "gen_ai.client.operation.time_to_first_chunk"


class UsageFirstChat(FakeChat):
    """Streams like Anthropic: an empty first chunk carrying the input tokens, then text.
    The empty chunk starts the time to first chunk but is not a token (it has no content)."""

    delay: float = 0.0

    def _stream_chunks(self) -> list[ChatGenerationChunk]:
        start = ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata={"input_tokens": 21, "output_tokens": 0, "total_tokens": 21}))
        return [start, *super()._stream_chunks()]

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Any:
        for chunk in self._stream_chunks():
            time.sleep(self.delay)
            yield chunk

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> Any:
        for chunk in self._stream_chunks():
            await asyncio.sleep(self.delay)
            yield chunk


class Setup:
    def __init__(self, tracing: Tracing, recorder: RunRecorder) -> None:
        self.tracing = tracing
        self.recorder = recorder
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.handler = tracing.handler(meter_provider=self.meters)
        self.config: dict[str, Any] = {"callbacks": [self.handler, recorder]}

    def metric_counts(self) -> dict[str, int]:
        data = self.reader.get_metrics_data()
        counts: dict[str, int] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    counts[metric.name] = sum(p.count for p in metric.data.data_points)
        return counts

    def model_span(self) -> Any:
        return self.tracing.one("chat fake-model-1")

    def check(self, *, at_least_tokens: int) -> Any:
        """Everything ended, the tree is LangChain's, no error, the model span abandoned."""
        gc.collect()
        assert len(self.handler._registry) == 0, "runs left open"
        assert_span_tree_matches(self.tracing, self.recorder)
        for span in self.tracing.spans():
            assert span.status.status_code is not StatusCode.ERROR, (span.name, span.status)
            assert attr.ERROR_TYPE not in span.attributes, span.name
        span = self.model_span()
        assert span.attributes[attr.RUN_ABANDONED] is True
        count = span.attributes[attr.LLM_TOKEN_COUNT]
        assert at_least_tokens <= count < len(CHUNKS) + 1, count
        assert span.attributes[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
        assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 21  # seen before the break
        metrics = self.metric_counts()
        assert metrics.get(DURATION) == 1 and metrics.get(TTFC) == 1, metrics
        self.meters.shutdown()
        return span


@pytest.fixture
def setup(tracing: Tracing, recorder: RunRecorder) -> Setup:
    return Setup(tracing, recorder)


def chain(delay: float = 0.0) -> Any:
    return ChatPromptTemplate.from_messages([("human", "{q}")]) | UsageFirstChat(chunks=CHUNKS,
                                                                              delay=delay)


# --- sync ----------------------------------------------------------------------------------
def test_break_out_of_a_chain_stream(setup: Setup) -> None:
    for index, _ in enumerate(chain().stream({"q": "x"}, config=setup.config)):
        if index == 2:
            break
    span = setup.check(at_least_tokens=2)
    # The consumer saw three chunks: the empty usage chunk, then two with content.
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 2


def test_exception_in_the_consumer_loop(setup: Setup) -> None:
    with pytest.raises(KeyError):
        for index, _ in enumerate(chain().stream({"q": "x"}, config=setup.config)):
            if index == 2:
                raise KeyError("consumer")
    setup.check(at_least_tokens=2)


def test_explicit_close_of_a_chain_stream(setup: Setup) -> None:
    stream = chain().stream({"q": "x"}, config=setup.config)
    next(stream), next(stream)
    stream.close()
    setup.check(at_least_tokens=1)


def test_generator_garbage_collected_without_close(setup: Setup) -> None:
    stream = chain().stream({"q": "x"}, config=setup.config)
    next(stream), next(stream)
    del stream
    setup.check(at_least_tokens=1)


def test_nested_chain_with_a_parser(setup: Setup) -> None:
    from langchain_core.output_parsers import StrOutputParser

    for index, _ in enumerate((chain() | StrOutputParser()).stream({"q": "x"}, config=setup.config)):
        if index == 2:
            break
    setup.check(at_least_tokens=2)


# --- async ---------------------------------------------------------------------------------
def _run(make: Callable[[], Any]) -> None:
    asyncio.run(make())


def test_async_break_without_aclose(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    async def consume() -> None:
        index = 0
        async for _ in chain().astream({"q": "x"}, config=setup.config):
            index += 1
            if index == 3:
                break

    _run(consume)
    setup.check(at_least_tokens=2)
    assert "already running" not in caplog.text  # the loop closes the streams it tracks


def test_async_break_then_aclose(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    async def consume() -> None:
        stream = chain().astream({"q": "x"}, config=setup.config)
        index = 0
        async for _ in stream:
            index += 1
            if index == 3:
                break
        await stream.aclose()

    _run(consume)
    setup.check(at_least_tokens=2)
    assert "already running" not in caplog.text


def test_astream_events_break(setup: Setup) -> None:
    async def consume() -> None:
        seen = 0
        async for event in chain().astream_events({"q": "x"}, config=setup.config, version="v2"):
            if event["event"] == "on_chat_model_stream":
                seen += 1
                if seen == 3:
                    break

    _run(consume)
    setup.check(at_least_tokens=2)


# --- LangGraph -----------------------------------------------------------------------------
def _graph(model: UsageFirstChat, asynchronous: bool) -> Any:
    async def anode(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", anode if asynchronous else node)
    graph.add_edge(START, "agent")
    graph.add_edge("agent", END)
    return graph.compile()


def test_langgraph_astream_messages_break(setup: Setup) -> None:
    graph = _graph(UsageFirstChat(chunks=CHUNKS, delay=0.005), asynchronous=True)

    async def consume() -> None:
        seen = 0
        async for _ in graph.astream({"messages": [("human", "hi")]}, config=setup.config,
                                     stream_mode="messages"):
            seen += 1
            if seen == 3:
                break
        await asyncio.sleep(0.05)

    _run(consume)
    setup.check(at_least_tokens=2)


def test_langgraph_stream_messages_break(setup: Setup) -> None:
    """Sync LangGraph finishes the running node after the consumer leaves: the model run is
    complete, so its span is not marked abandoned; everything still ends, without error."""
    graph = _graph(UsageFirstChat(chunks=CHUNKS, delay=0.002), asynchronous=False)
    for index, _ in enumerate(graph.stream({"messages": [("human", "hi")]}, config=setup.config,
                                           stream_mode="messages")):
        if index == 2:
            break
    gc.collect()
    assert len(setup.handler._registry) == 0
    assert_span_tree_matches(setup.tracing, setup.recorder)
    assert not [s for s in setup.tracing.spans() if s.status.status_code is StatusCode.ERROR]
    span = setup.model_span()
    complete = span.attributes[attr.LLM_TOKEN_COUNT] == len(CHUNKS)  # the usage chunk is no token
    assert span.attributes.get(attr.RUN_ABANDONED, False) is not complete


# --- the other ways a run can end without its own end event --------------------------------
def test_evicted_streaming_run_keeps_its_data(tracing: Tracing) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    handler = tracing.handler(meter_provider=meters, max_open_runs=1)
    stream = UsageFirstChat(chunks=CHUNKS).stream("hi", config={"callbacks": [handler]})
    next(stream), next(stream)
    # Another root run pushes the streaming one out of the registry.
    ChatPromptTemplate.from_messages([("human", "x")]).invoke({}, config={"callbacks": [handler]})
    span = tracing.one("chat fake-model-1")
    assert span.attributes[attr.RUN_EVICTED] is True
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 1  # the empty usage chunk, then one token
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 21
    assert attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in span.attributes
    names = {m.name for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert {DURATION, TTFC} <= names
    stream.close()


def test_run_closed_at_exit_keeps_its_data(tracing: Tracing) -> None:
    handler = tracing.handler()
    stream = UsageFirstChat(chunks=CHUNKS).stream("hi", config={"callbacks": [handler]})
    next(stream), next(stream), next(stream)
    handler.close()
    span = tracing.one("chat fake-model-1")
    assert span.attributes[attr.RUN_EVICTED] is True
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 2  # the empty usage chunk, then two tokens
    assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 21
    stream.close()
