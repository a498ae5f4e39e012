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
from langchain_core.runnables import RunnableConfig
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
    # The config is passed on explicitly: before Python 3.11 async code cannot inherit it.
    async def anode(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"], config)]}

    def node(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], config)]}

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


# --- whichever path ends a run, what its state recorded reaches its span ---------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STEPS = st.lists(st.tuples(
    st.sampled_from(["chain", "chat", "token", "usage", "end", "exit", "cancel", "fail"]),
    st.integers(0, 5), st.one_of(st.none(), st.integers(0, 5))), max_size=50)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STEPS)
def test_every_end_path_keeps_token_count_ttfc_usage_and_metrics(steps: list[Any]) -> None:
    import uuid

    from langchain_core.messages import HumanMessage
    from langchain_core.outputs import LLMResult

    tracing = Tracing()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    handler = tracing.handler(meter_provider=meters, max_open_runs=3)
    ids = [uuid.UUID(int=i + 1) for i in range(6)]
    tokens: dict[int, int] = {}  # id(span) -> text tokens received while its run was open
    usage: dict[int, int] = {}  # id(span) -> input tokens reported by usage-only chunks
    spans: dict[int, Any] = {}
    errors = {"exit": GeneratorExit(), "cancel": asyncio.CancelledError(), "fail": KeyError("x")}
    for kind, run, parent in steps:
        run_id, parent_id = ids[run], ids[parent] if parent is not None else None
        if kind == "chain":
            handler.on_chain_start(None, {}, run_id=run_id, parent_run_id=parent_id, name="c")
        elif kind == "chat":
            handler.on_chat_model_start({"name": "m"}, [[HumanMessage("hi")]], run_id=run_id,
                                        parent_run_id=parent_id)
        elif kind in ("token", "usage"):
            state = handler._registry.get(run_id)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content="t" if kind == "token" else "",
                usage_metadata={"input_tokens": 2, "output_tokens": 0, "total_tokens": 2}
                if kind == "usage" else None))
            handler.on_llm_new_token(chunk.message.content, chunk=chunk, run_id=run_id)
            if state is not None and state.run_type == "chat_model":
                key = id(state.span)
                spans[key] = state.span
                tokens[key] = tokens.get(key, 0) + (kind == "token")  # usage-only: no token
                if kind == "usage":
                    usage[key] = usage.get(key, 0) + 2
        elif kind == "end":
            state = handler._registry.get(run_id)
            if state is not None and state.run_type == "chain":
                handler.on_chain_end({}, run_id=run_id)
            else:
                handler.on_llm_end(LLMResult(generations=[[]]), run_id=run_id)
        else:
            state = handler._registry.get(run_id)
            if state is not None and state.run_type == "chain":
                handler.on_chain_error(errors[kind], run_id=run_id)
            else:
                handler.on_llm_error(errors[kind], run_id=run_id)
    handler.close()

    exported = {span.context.span_id: span for span in tracing.spans()}
    for key, span in spans.items():
        done = exported[span.get_span_context().span_id]
        assert done.attributes.get(attr.LLM_TOKEN_COUNT, 0) == tokens[key]
        assert done.attributes[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0  # any chunk
        if key in usage:
            assert done.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == usage[key]
    for span in tracing.spans():
        failed = span.status.status_code is StatusCode.ERROR
        assert failed == (span.attributes.get(attr.ERROR_TYPE) == "KeyError")
    chats = [s for s in tracing.spans() if s.attributes[attr.RUN_TYPE] == "chat_model"]
    data = reader.get_metrics_data()
    recorded = sum(p.count for rm in (data.resource_metrics if data else ())
                   for sm in rm.scope_metrics for m in sm.metrics if m.name == DURATION
                   for p in m.data.data_points)
    assert recorded == len(chats)  # every model run measured once, whichever path ended it
    meters.shutdown()
