"""The hot paths tuned for speed keep their behaviour: what they record is pinned here.

1. Per-token counting: past its token events a streaming run's tokens each take a tick from
   the run's ``ticks`` (folded into the count every 255 tokens); the exported
   ``langchain.llm.token_count`` stays
   exact across every fold boundary, for interleaved streams, content-less chunks and content
   blocks, and for streams abandoned while the hot path counts.
2. The per-child-run bridge points are plain functions (not wrapt wrappers): they look like the
   originals, uninstall restores the originals by identity, and user spans still nest.
3. The mapping's dict fast paths: any Mapping gives the same attributes as a dict, odd types none.

Streams run through real langchain-core models (``stream``, ``astream``, ``invoke`` streaming).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib
import inspect
import types
import uuid
import weakref
from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

import pytest
import wrapt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import (ChatGeneration, ChatGenerationChunk, ChatResult,
                                    Generation, GenerationChunk, LLMResult)
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanKind, StatusCode

from otel_callbacks import attributes as attr
from otel_callbacks import OTelHandler, context_bridge, mapping, registry
from otel_callbacks import handler as handler_module
from otel_callbacks.registry import TICKS, RunState
from tests.conftest import RunRecorder, Tracing, assert_span_tree_matches

TOKEN_EVENTS = (attr.EVENT_FIRST_TOKEN, attr.EVENT_TOKEN)


@pytest.fixture
def roomy() -> Tracing:
    """Like ``tracing``, with room for 4096 events a span: the SDK's default keeps the newest
    128 only, which would hide how many token events the handler records."""
    tracing = Tracing()
    tracing.provider = TracerProvider(span_limits=SpanLimits(max_events=4096))
    tracing.provider.add_span_processor(SimpleSpanProcessor(tracing.exporter))
    tracing.tracer = tracing.provider.get_tracer("tests")
    return tracing


# --- 1. per-token counting -----------------------------------------------------------------
class Usage:
    """A content-less chunk that reports usage (OpenAI's last chunk, Anthropic's first)."""


class Finish:
    """A content-less chunk that carries the finish reason."""


class ToolArgs:
    """A tool-call chunk: no text, its argument piece counts as a token."""

    def __init__(self, args: str) -> None:
        self.args = args


def _chunk(spec: Any) -> ChatGenerationChunk:
    """A fresh chunk per call (LangChain mutates the chunks it is given)."""
    if isinstance(spec, Usage):
        message = AIMessageChunk(content="", usage_metadata={
            "input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
    elif isinstance(spec, Finish):
        message = AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
    elif isinstance(spec, ToolArgs):
        message = AIMessageChunk(content="", tool_call_chunks=[
            {"name": None, "args": spec.args, "id": None, "index": 0}])
    else:  # str or a list of content blocks
        message = AIMessageChunk(content=spec)
    return ChatGenerationChunk(message=message)


class ChunkChat(BaseChatModel):
    """Streams exactly one chunk per entry of ``chunks``, in order, sync or async."""

    chunks: list[Any] = []
    streaming: bool = False

    @property
    def _llm_type(self) -> str:
        return "chunk-chat"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        text = "".join(c for c in self.chunks if isinstance(c, str))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for spec in self.chunks:
            yield _chunk(spec)

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> Any:
        for spec in self.chunks:
            yield _chunk(spec)


class ChunkLLM(BaseLLM):
    """A completion model streaming one text chunk per entry of ``chunks``; like real
    completion integrations it reports each chunk itself (``BaseLLM.stream`` does not)."""

    chunks: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "chunk-llm"

    def _generate(self, prompts: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> LLMResult:
        return LLMResult(generations=[[Generation(text="".join(self.chunks))] for _ in prompts])

    def _stream(self, prompt: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        for text in self.chunks:
            chunk = GenerationChunk(text=text)
            if run_manager is not None:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


def words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def model_span(tracing: Tracing) -> ReadableSpan:
    found = [s for s in tracing.spans()
             if (s.attributes or {}).get(attr.RUN_TYPE) in (attr.CHAT_MODEL, attr.LLM)]
    assert len(found) == 1, [s.name for s in tracing.spans()]
    return found[0]


def token_events(span: ReadableSpan) -> list[Any]:
    return [e for e in span.events if e.name in TOKEN_EVENTS]


def check_stream(span: ReadableSpan, tokens: int, events: int = 8) -> None:
    """The exact count, the streaming marks and ``min(tokens, events)`` token events, the first
    one the first-token event, indexed 1, 2, ..."""
    assert span.attributes[attr.LLM_TOKEN_COUNT] == tokens
    assert span.attributes[attr.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    found = token_events(span)
    assert len(found) == min(tokens, events)
    assert [e.name for e in found] == ([attr.EVENT_FIRST_TOKEN]
                                       + [attr.EVENT_TOKEN] * (len(found) - 1))
    assert [e.attributes["index"] for e in found] == list(range(1, len(found) + 1))
    assert span.status.status_code is not StatusCode.ERROR


# Around every place the hot path hands over to the slow path with the default 8 events:
# the events (8, 9), the ticks' end (8 + TICKS = 263, 264, 265) and the next fold (519-521).
LENGTHS = [1, 7, 8, 9, 255, 256, 257, 8 + TICKS, 9 + TICKS, 10 + TICKS,
           9 + 2 * TICKS, 10 + 2 * TICKS, 11 + 2 * TICKS, 1000]


@pytest.mark.parametrize("n", LENGTHS)
def test_sync_stream_counts_every_token(tracing: Tracing, n: int) -> None:
    handler = tracing.handler()
    out = list(ChunkChat(chunks=words(n)).stream("hi", {"callbacks": [handler]}))
    assert "".join(str(c.content) for c in out) == "".join(words(n))
    check_stream(model_span(tracing), n)
    assert len(handler._registry) == 0


@pytest.mark.parametrize("n", LENGTHS)
def test_async_stream_counts_every_token(tracing: Tracing, n: int) -> None:
    handler = tracing.handler()

    async def consume() -> int:
        return len([c async for c in ChunkChat(chunks=words(n)).astream(
            "hi", {"callbacks": [handler]})])

    assert asyncio.run(consume()) >= n
    check_stream(model_span(tracing), n)


# Newer langchain-core reads a model's ``streaming`` field in ``_should_stream``; 0.3.52 (our
# lower bound) streams an invoke only for a ``stream`` kwarg or a streaming callback handler.
_CORE_READS_STREAMING_FIELD = 'getattr(self, "streaming"' in inspect.getsource(
    BaseChatModel._should_stream)


@pytest.mark.parametrize("n", [1, 9, 256, 264, 1000])
@pytest.mark.parametrize("how", ["stream kwarg", "streaming field", "ainvoke stream kwarg"])
def test_invoke_streaming_through_callbacks_counts_every_token(tracing: Tracing, n: int,
                                                               how: str) -> None:
    if how == "streaming field" and not _CORE_READS_STREAMING_FIELD:
        pytest.skip("this langchain-core does not stream an invoke for the streaming field")
    handler = tracing.handler()
    config: Any = {"callbacks": [handler]}
    if how == "stream kwarg":
        message = ChunkChat(chunks=words(n)).invoke("hi", config, stream=True)
    elif how == "streaming field":
        message = ChunkChat(chunks=words(n), streaming=True).invoke("hi", config)
    else:
        message = asyncio.run(ChunkChat(chunks=words(n)).ainvoke("hi", config, stream=True))
    assert message.content == "".join(words(n))
    check_stream(model_span(tracing), n)


@pytest.mark.parametrize("n", [9, 264, 1000])
def test_invoke_inside_astream_events_streams_through_the_callbacks(tracing: Tracing,
                                                                     recorder: RunRecorder,
                                                                     n: int) -> None:
    """astream_events adds LangChain's streaming callback handler: a model's ainvoke inside a
    step then streams, and every token reaches our handler too."""
    model = ChunkChat(chunks=words(n))

    async def step(query: str, config: RunnableConfig) -> str:
        return str((await model.ainvoke(query, config)).content)

    async def consume() -> int:
        events = RunnableLambda(step).astream_events(
            "hi", {"callbacks": [tracing.handler(), recorder]}, version="v2")
        return len([e async for e in events if e["event"] == "on_chat_model_stream"])

    assert asyncio.run(consume()) >= n
    assert_span_tree_matches(tracing, recorder)
    check_stream(model_span(tracing), n)


@pytest.mark.parametrize("n", [9, 264, 1000])
def test_invoke_inside_a_langgraph_node_streams_in_messages_mode(tracing: Tracing,
                                                                 recorder: RunRecorder,
                                                                 n: int) -> None:
    """LangGraph's "messages" stream mode streams a node's model.invoke through callbacks."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = ChunkChat(chunks=words(n))

    def node(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], config)]}

    graph = StateGraph(MessagesState)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    graph.add_edge("node", END)
    streamed = list(graph.compile().stream({"messages": [("human", "hi")]},
                                           {"callbacks": [tracing.handler(), recorder]},
                                           stream_mode="messages"))
    assert len(streamed) >= n
    assert_span_tree_matches(tracing, recorder)
    check_stream(model_span(tracing), n)


def test_invoke_without_streaming_records_no_tokens(tracing: Tracing) -> None:
    """The counter belongs to streams: a plain invoke has neither count nor token events."""
    ChunkChat(chunks=words(300)).invoke("hi", {"callbacks": [tracing.handler()]})
    span = model_span(tracing)
    assert attr.LLM_TOKEN_COUNT not in span.attributes
    assert not token_events(span)


@pytest.mark.parametrize("n", [1, 8, 9, 257, 264, 1000])
def test_completion_model_stream_counts_every_token(tracing: Tracing, n: int) -> None:
    handler = tracing.handler()
    streamed = ChunkLLM(chunks=words(n)).stream("hi", {"callbacks": [handler]})
    assert "".join(streamed) == "".join(words(n))
    check_stream(model_span(tracing), n)


def test_generic_fake_chat_model_count_equals_the_tokens_langchain_streamed(
        tracing: Tracing) -> None:
    """Against LangChain's own fake model: the count equals the non-empty text tokens a plain
    LangChain handler saw, across two folds."""
    from langchain_core.callbacks import BaseCallbackHandler as LCHandler

    class Seen(LCHandler):
        def __init__(self) -> None:
            self.tokens: list[Any] = []

        def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
            self.tokens.append(token)

    seen = Seen()
    text = " ".join(f"t{i}" for i in range(300))  # words and spaces stream as separate chunks
    model = GenericFakeChatModel(messages=iter([text]))
    assert "".join(str(c.content) for c in model.stream(
        "hi", {"callbacks": [tracing.handler(), seen]})) == text
    expected = len([t for t in seen.tokens if isinstance(t, str) and t])
    assert expected == 599
    check_stream(model_span(tracing), expected)


def test_token_path_leaves_the_handler_free_of_cycles(tracing: Tracing) -> None:
    """The per-token path is stored on the handler instance; it refers back only weakly, so a
    handler the app drops is freed at once (its open runs ended), not by the cycle collector."""
    handler = tracing.handler()
    # LangChain finds it without a new bound method, and calls it without binding one.
    assert isinstance(vars(handler)["on_llm_new_token"], types.FunctionType)
    assert sum(1 for _ in ChunkChat(chunks=words(300)).stream("hi", {"callbacks": [handler]})) > 0
    check_stream(model_span(tracing), 300)
    run = CallbackManager([handler]).on_chat_model_start({}, [[]])[0]
    run.on_llm_new_token("left open")
    gc.collect()
    gc.disable()
    try:
        dropped = weakref.ref(handler)
        del handler, run
        assert dropped() is None
    finally:
        gc.enable()
    assert len(tracing.spans()) == 2  # the open run was ended as its handler was freed


def test_an_overridden_token_callback_is_the_one_called(tracing: Tracing) -> None:
    seen: list[Any] = []

    class Counting(OTelHandler):
        def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
            seen.append(token)
            super().on_llm_new_token(token, **kwargs)

    handler = Counting(tracer_provider=tracing.provider)
    assert "on_llm_new_token" not in vars(handler)
    for _ in ChunkChat(chunks=words(300)).stream("hi", {"callbacks": [handler]}):
        pass
    assert len(seen) >= 300
    check_stream(model_span(tracing), 300)


@pytest.mark.parametrize(("a", "b"), [(1000, 300), (257, 264), (9, 1000), (600, 600)])
def test_two_streams_interleaved_on_one_handler_each_get_their_own_count(
        tracing: Tracing, recorder: RunRecorder, a: int, b: int) -> None:
    handler = tracing.handler()
    config: Any = {"callbacks": [handler, recorder]}
    first = ChunkChat(chunks=words(a)).stream("a", config)
    second = ChunkChat(chunks=words(b)).stream("b", config)
    streams = [first, second]
    received = [0, 0]
    while streams:
        for stream in list(streams):  # advance them alternately, one chunk each
            try:
                next(stream)
                received[0 if stream is first else 1] += 1
            except StopIteration:
                streams.remove(stream)
    assert received[0] >= a and received[1] >= b
    assert_span_tree_matches(tracing, recorder)
    assert len(recorder.roots()) == 2
    spans = sorted(tracing.spans(), key=lambda s: s.start_time or 0)
    assert len(spans) == 2
    for span, n in zip(spans, (a, b)):
        check_stream(span, n)
        first_token = [e for e in span.events if e.name == attr.EVENT_FIRST_TOKEN]
        assert len(first_token) == 1
    assert len(handler._registry) == 0


def test_two_async_streams_interleaved_by_the_event_loop(tracing: Tracing,
                                                         recorder: RunRecorder) -> None:
    handler = tracing.handler()
    config: Any = {"callbacks": [handler, recorder]}

    async def consume(n: int) -> None:
        async for _ in ChunkChat(chunks=words(n)).astream("x", config):
            await asyncio.sleep(0)  # hand over to the other stream between chunks

    async def both() -> None:
        await asyncio.gather(consume(700), consume(290))

    asyncio.run(both())
    assert_span_tree_matches(tracing, recorder)
    counts = sorted(s.attributes[attr.LLM_TOKEN_COUNT] for s in tracing.spans())
    assert counts == [290, 700]
    for span in tracing.spans():
        check_stream(span, span.attributes[attr.LLM_TOKEN_COUNT])


def _mixed_stream(text_tokens: int) -> tuple[list[Any], int]:
    """``text_tokens`` plain text chunks with content-less chunks and content blocks spread
    around every fold boundary; returns the chunks and how many of them carry content."""
    content_less: list[Any] = ["", Usage(), Finish(), [], [{"type": "text", "text": ""}],
                               [{"type": "image_url", "image_url": {"url": "x"}}]]
    with_content: list[Any] = [[{"type": "text", "text": "x"}], ["plain block"],
                               [{"type": "thinking", "thinking": "hm"}], ToolArgs('{"a": 1}')]
    chunks: list[Any] = [""]  # the role-only opening chunk
    counted = 0
    for i, token in enumerate(words(text_tokens)):
        chunks.append(token)
        counted += 1
        if i % 37 == 0 or i in (6, 7, 8, 254, 255, 256, 262, 263, 264, 518, 519):
            chunks.extend(content_less)
            chunks.append(with_content[i % len(with_content)])
            counted += 1
    return chunks, counted


@pytest.mark.parametrize("n", [8, 300, 600])
@pytest.mark.parametrize("events", [1, 8, 300])
def test_only_content_counts_whatever_the_chunks_around_the_folds(roomy: Tracing, n: int,
                                                                  events: int) -> None:
    chunks, counted = _mixed_stream(n)
    for run in ("sync", "async"):
        roomy.exporter.clear()
        handler = roomy.handler(max_token_events=events)
        model = ChunkChat(chunks=chunks)
        if run == "sync":
            list(model.stream("hi", {"callbacks": [handler]}))
        else:
            async def consume() -> None:
                async for _ in model.astream("hi", {"callbacks": [handler]}):
                    pass
            asyncio.run(consume())
        span = model_span(roomy)
        check_stream(span, counted, events)
        # the usage chunks still reach the span (LangChain sums them into the merged message)
        assert span.attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 3 * sum(
            isinstance(c, Usage) for c in chunks)


def test_content_less_chunks_alone_are_no_tokens(tracing: Tracing) -> None:
    """Only content counts: a stream of content-less chunks has a time to first chunk and a
    count of zero tokens, and no token event."""
    ChunkChat(chunks=["", Usage(), [], Finish()]).invoke(
        "hi", {"callbacks": [tracing.handler()]}, stream=True)
    span = model_span(tracing)
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 0
    assert span.attributes[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert not token_events(span)


@pytest.mark.parametrize("events", [1, 2, 8, 255, 256, 300, 2000])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 300, 1000])
def test_exactly_max_token_events_events_whatever_the_length(roomy: Tracing, events: int,
                                                              n: int) -> None:
    list(ChunkChat(chunks=words(n)).stream(
        "hi", {"callbacks": [roomy.handler(max_token_events=events)]}))
    check_stream(model_span(roomy), n, events)


@pytest.mark.parametrize("events", [0, -5])
def test_no_token_events_asked_still_keeps_the_first_token_event(tracing: Tracing,
                                                                  events: int) -> None:
    list(ChunkChat(chunks=words(600)).stream(
        "hi", {"callbacks": [tracing.handler(max_token_events=events)]}))
    check_stream(model_span(tracing), 600, 1)


def test_token_events_carry_the_first_tokens_when_content_is_captured(roomy: Tracing) -> None:
    list(ChunkChat(chunks=words(400)).stream(
        "hi", {"callbacks": [roomy.handler(max_token_events=300, capture_content=True)]}))
    span = model_span(roomy)
    check_stream(span, 400, 300)
    assert [e.attributes["content"] for e in token_events(span)] == words(300)


def test_first_token_event_survives_the_sdks_default_event_limit(tracing: Tracing) -> None:
    """The SDK keeps the newest 128 events of a span (default limits): token events are capped
    below that, so the first-token event is never the one evicted."""
    list(ChunkChat(chunks=words(400)).stream(
        "hi", {"callbacks": [tracing.handler(max_token_events=300)]}))
    span = model_span(tracing)
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 400
    events = token_events(span)
    assert events[0].name == attr.EVENT_FIRST_TOKEN
    assert len(events) == 128 - 8 and span.dropped_events == 0


def _abandon_after(handler: Any, n: int, chunks: list[Any]) -> None:
    stream = ChunkChat(chunks=chunks).stream("hi", {"callbacks": [handler]})
    for index, _ in enumerate(stream, 1):
        if index == n:
            break
    del stream
    gc.collect()


@pytest.mark.parametrize("events", [1, 8, 300])
def test_stream_abandoned_mid_ticks_keeps_its_exact_count(roomy: Tracing, events: int) -> None:
    """300 tokens of a 1000-token stream, then the consumer breaks: with 8 events the last fold
    was at 264, so 36 tokens were counted as ticks taken; they reach the span."""
    handler = roomy.handler(max_token_events=events)
    _abandon_after(handler, 300, words(1000))
    assert len(handler._registry) == 0, "the abandoned run was not ended"
    span = model_span(roomy)
    assert span.attributes[attr.RUN_ABANDONED] is True
    check_stream(span, 300, events)


def test_stream_abandoned_by_an_error_keeps_its_exact_count(tracing: Tracing) -> None:
    class Boom(ChunkChat):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            yield from super()._stream(*args, **kwargs)
            raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        list(Boom(chunks=words(300)).stream("hi", {"callbacks": [tracing.handler()]}))
    span = model_span(tracing)
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 300
    assert span.status.status_code is StatusCode.ERROR


def test_orphaned_stream_mid_ticks_keeps_its_count(tracing: Tracing,
                                                   recorder: RunRecorder) -> None:
    """A model stream inside a chain whose root ends first (the consumer broke out): the model
    run is ended as an orphan with the ticks its hot path took."""
    from langchain_core.prompts import ChatPromptTemplate

    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | ChunkChat(chunks=words(1000))
    handler = tracing.handler()
    for index, _ in enumerate(chain.stream({"q": "x"}, {"callbacks": [handler, recorder]}), 1):
        if index == 300:
            break
    gc.collect()
    assert len(handler._registry) == 0
    assert_span_tree_matches(tracing, recorder)
    span = model_span(tracing)
    assert span.attributes[attr.RUN_ABANDONED] is True
    assert span.attributes[attr.LLM_TOKEN_COUNT] == 300


def test_evicted_and_closed_streams_keep_the_ticks(tracing: Tracing) -> None:
    """Eviction and close end a run from outside its own callbacks: the ticks taken still count."""
    handler = tracing.handler(max_open_runs=1)
    stream = ChunkChat(chunks=words(1000)).stream("hi", {"callbacks": [handler]})
    for _ in range(300):
        next(stream)
    ChunkChat(chunks=["x"]).invoke("other", {"callbacks": [handler]})  # evicts the stream's run
    evicted = [s for s in tracing.spans() if s.attributes.get(attr.RUN_EVICTED)]
    assert len(evicted) == 1
    assert evicted[0].attributes[attr.LLM_TOKEN_COUNT] == 300
    stream.close()

    tracing.exporter.clear()
    handler = tracing.handler()
    stream = ChunkChat(chunks=words(1000)).stream("hi", {"callbacks": [handler]})
    for _ in range(600):
        next(stream)
    handler.close()
    closed = model_span(tracing)
    assert closed.attributes[attr.RUN_EVICTED] is True
    assert closed.attributes[attr.LLM_TOKEN_COUNT] == 600
    stream.close()


@pytest.mark.parametrize("sampler", ["root dropped", "all dropped"])
def test_unsampled_streams_take_the_hot_path_without_error(
        sampler: str, caplog: pytest.LogCaptureFixture) -> None:
    """Unsampled runs' states count tokens too (the SDK records nothing): no error, every run
    ended, the stream's metrics still recorded once."""
    from langchain_core.prompts import ChatPromptTemplate
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    tracing = Tracing()
    tracing.provider = TracerProvider(sampler=ALWAYS_OFF if sampler == "all dropped" else
                                      ParentBased(ALWAYS_OFF, remote_parent_sampled=ALWAYS_ON))
    tracing.provider.add_span_processor(SimpleSpanProcessor(tracing.exporter))
    reader = InMemoryMetricReader()
    handler = tracing.handler(meter_provider=MeterProvider(metric_readers=[reader]))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | ChunkChat(chunks=words(1000))
    for _ in range(2):
        assert len(list(chain.stream({"q": "x"}, {"callbacks": [handler]}))) >= 1000
    assert tracing.spans() == []
    assert len(handler._registry) == 0
    assert "failed" not in caplog.text
    counts = {m.name: sum(p.count for p in m.data.data_points)
              for rm in reader.get_metrics_data().resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics}
    assert counts.get("gen_ai.client.operation.time_to_first_chunk") == 2, counts
    assert counts.get("gen_ai.client.operation.duration") == 2, counts


def test_run_state_folds_its_ticks_into_the_count() -> None:
    state = RunState(uuid.uuid4(), NonRecordingSpan(INVALID_SPAN_CONTEXT), Context(), None,
                     attr.CHAT_MODEL, 0)
    assert (state.token_count, state.tokens) == (0, 0)
    assert next(state.ticks, None) is None  # not on the hot path: nothing to take
    assert state.count_token() == 1
    state.count_on_hot_path()
    assert state.tokens == 1
    for taken in range(1, TICKS + 1):  # what the handler's hot path does per token
        assert next(state.ticks, None) is not None
        assert state.tokens == 1 + taken
    assert next(state.ticks, None) is None  # used up: the token goes to the handler
    assert state.count_token() == TICKS + 2
    assert (state.token_count, state.tokens) == (TICKS + 2, TICKS + 2)
    assert next(state.ticks, None) is None  # folded: the handler hands out new ticks


def test_sequential_streams_on_one_handler_each_count_exactly(tracing: Tracing) -> None:
    """The handler keeps the last streaming run for its hot path: the next run's tokens must
    not land on it, whether it ended past a fold or not."""
    handler = tracing.handler()
    lengths = [300, 1, 264, 8, 1000, 9]
    for n in lengths:
        list(ChunkChat(chunks=words(n)).stream("hi", {"callbacks": [handler]}))
    spans = sorted(tracing.spans(), key=lambda s: s.start_time or 0)
    assert [s.attributes[attr.LLM_TOKEN_COUNT] for s in spans] == lengths
    for span, n in zip(spans, lengths):
        check_stream(span, n)


def test_streams_on_threads_sharing_one_handler_count_exactly(tracing: Tracing) -> None:
    """Each thread streams its own run through one handler (its hot-path cache is shared),
    with the interpreter switching threads as often as it can."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    handler = tracing.handler()
    lengths = [1000, 700, 513, 264]

    def stream(n: int) -> None:
        for _ in ChunkChat(chunks=words(n)).stream("hi", {"callbacks": [handler]}):
            pass

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(len(lengths)) as pool:
            list(pool.map(stream, lengths))
    finally:
        sys.setswitchinterval(interval)
    assert sorted(s.attributes[attr.LLM_TOKEN_COUNT] for s in tracing.spans()) == sorted(lengths)
    for span in tracing.spans():
        check_stream(span, span.attributes[attr.LLM_TOKEN_COUNT])


def test_tokens_through_the_callback_api_with_run_id_copies(tracing: Tracing) -> None:
    """The hot path matches run ids by identity (LangChain passes one UUID object per run);
    a caller passing an equal copy per token, or tokens for unknown or ended runs, still
    gets exact counts and no error."""
    handler = tracing.handler(max_token_events=3)
    run_id = uuid.uuid4()
    handler.on_chat_model_start(SERIALIZED, [[]], run_id=run_id, invocation_params=PARAMS)
    for i in range(600):
        same = run_id if i % 3 else uuid.UUID(str(run_id))  # a copy every third token
        handler.on_llm_new_token("t", run_id=same)
        handler.on_llm_new_token("t", run_id=uuid.uuid4())  # a run nobody started
    handler.on_llm_end(LLMResult(generations=[]), run_id=uuid.UUID(str(run_id)))
    for _ in range(300):  # late tokens of the ended run
        handler.on_llm_new_token("late", run_id=run_id)
    assert len(handler._registry) == 0
    check_stream(tracing.one("chat gpt-4o"), 600, 3)


# --- 2. the bridge's plain-function patches ---------------------------------------------------
def _owner(module_name: str, path: str) -> tuple[Any, str] | None:
    """(object holding the point, attribute name), or None where this release lacks it."""
    try:
        owner: Any = importlib.import_module(module_name)  # fires the bridge's import hook
    except ImportError:
        return None
    *parents, attribute = path.split(".")
    for name in parents:
        owner = getattr(owner, name, None)
    if owner is None or attribute not in vars(owner):
        return None
    return owner, attribute


def _point(module_name: str, path: str) -> Any:
    found = _owner(module_name, path)
    assert found is not None, f"{module_name}.{path} not found"
    owner, attribute = found
    return vars(owner)[attribute]


# Every point the bridge knows that exists in the installed releases.
ALL_POINTS = [(m, p) for m, p, _ in context_bridge._PATCHES if _owner(m, p) is not None]
LANGGRAPH_TWIN = next(point for point in context_bridge.LANGGRAPH_EXECUTION_POINTS
                      if _owner(*point) is not None)
# The sync points every child run or model call passes through: plain functions, no wrapt.
DIRECT_POINTS = [
    ("langchain_core.runnables.config", "_set_config_context"),
    LANGGRAPH_TWIN,
    ("langchain_core.language_models.chat_models", "BaseChatModel._generate_with_cache"),
    ("langchain_core.language_models.llms", "BaseLLM._generate_helper"),
    ("langchain_core.retrievers", "BaseRetriever.invoke"),
]


@pytest.fixture
def originals() -> Iterator[dict[tuple[str, str], Any]]:
    """Each point's original (read with the bridge uninstalled). Afterwards every point is
    reset to its original, whatever a test wrapped over it, and the bridge installed again,
    so later tests see the bridge as the handler installs it."""
    context_bridge.install()
    context_bridge.uninstall()
    found = {point: _point(*point) for point in ALL_POINTS}
    context_bridge.install()
    try:
        yield found
    finally:
        context_bridge.uninstall()
        for point, original in found.items():
            owner, attribute = _owner(*point)  # type: ignore[misc]
            setattr(owner, attribute, original)
        context_bridge.install()
        for point in ALL_POINTS:
            assert context_bridge.is_patched(_point(*point)), point


def _kind(function: Any) -> tuple[bool, bool, bool]:
    return (inspect.iscoroutinefunction(function), inspect.isasyncgenfunction(function),
            inspect.isgeneratorfunction(function))


def test_the_bridge_knows_points_in_every_installed_package() -> None:
    modules = {m.split(".")[0] for m, _ in ALL_POINTS}
    assert {"langchain_core", "langgraph"} <= modules, ALL_POINTS
    assert set(DIRECT_POINTS) <= set(ALL_POINTS)


@pytest.mark.parametrize("point", DIRECT_POINTS, ids=[f"{m}.{p}" for m, p in DIRECT_POINTS])
def test_per_child_run_points_are_plain_functions_over_the_original(
        originals: dict[tuple[str, str], Any], point: tuple[str, str]) -> None:
    tracing_handler = Tracing().handler()  # installs the bridge, as users do
    patched, original = _point(*point), originals[point]
    assert type(patched) is types.FunctionType, type(patched)
    assert not isinstance(patched, wrapt.ObjectProxy)
    assert patched is not original
    assert patched.__wrapped__ is original
    assert context_bridge.is_patched(patched)
    assert not context_bridge.is_patched(original)
    assert inspect.signature(patched) == inspect.signature(original)
    for name in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(patched, name) == getattr(original, name), name
    assert _kind(patched) == _kind(original) == (False, False, False)
    tracing_handler.close()


def test_the_config_context_bridge_takes_every_way_of_calling(tracing: Tracing) -> None:
    """The known signatures get a replacement with the same parameters; any other forwards
    what it is given. Either way the original sees exactly its arguments and the parent run's
    span is current in the copied context afterwards."""
    from opentelemetry import trace

    run = CallbackManager([tracing.handler()]).on_chain_start({}, {}, name="parent")
    config = {"callbacks": run.get_child()}
    seen: list[Any] = []

    def known(config: Any, run: Any = None) -> Any:
        seen.append((config, run))
        return "token"

    def other(config: Any, extra: Any, *, flag: bool = False) -> Any:
        seen.append((config, extra, flag))
        return "token"

    calls = [(known, (config,), {}, (config, None)), (known, (config, "r"), {}, (config, "r")),
             (known, (), {"config": config, "run": "r"}, (config, "r")),
             (other, (config, 1), {"flag": True}, (config, 1, True)),
             (other, (), {"config": config, "extra": 2}, (config, 2, False))]
    for original, args, kwargs, expected in calls:
        bridged = context_bridge._bridge_config_context(original)
        assert inspect.signature(bridged) == inspect.signature(original)
        copied = contextvars.copy_context()
        assert copied.run(bridged, *args, **kwargs) == "token"
        assert seen.pop() == expected
        current = copied.run(trace.get_current_span)
        assert current.get_span_context().span_id == _span_id_of(tracing, run.run_id)
    run.on_chain_end({})


def _span_id_of(tracing: Tracing, run_id: Any) -> int:
    context = context_bridge.active_context(run_id)
    assert context is not None
    from opentelemetry import trace
    return trace.get_current_span(context).get_span_context().span_id


def test_the_other_points_keep_wrapt_wrappers_that_look_like_the_original(
        originals: dict[tuple[str, str], Any]) -> None:
    wrapped = [p for p in ALL_POINTS if p not in DIRECT_POINTS]
    assert len(wrapped) >= 6, wrapped  # the async and streaming twins at least
    for point in wrapped:
        patched, original = _point(*point), originals[point]
        assert isinstance(patched, wrapt.FunctionWrapper), point
        assert patched.__wrapped__ is original, point
        assert context_bridge.is_patched(patched), point
    for point in ALL_POINTS:  # a coroutine stays a coroutine function, a generator one too
        patched, original = _point(*point), originals[point]
        assert _kind(patched) == _kind(original), point
        assert inspect.signature(patched) == inspect.signature(original), point


def test_methods_bound_through_a_direct_patch_keep_their_signature(
        originals: dict[tuple[str, str], Any]) -> None:
    from langchain_core.retrievers import BaseRetriever as Retriever

    model = ChunkChat(chunks=["x"])
    original = originals[("langchain_core.language_models.chat_models",
                          "BaseChatModel._generate_with_cache")]
    assert inspect.signature(model._generate_with_cache) == inspect.signature(
        original.__get__(model, type(model)))
    retriever = SpanRetriever()
    assert inspect.signature(retriever.invoke) == inspect.signature(
        originals[("langchain_core.retrievers", "BaseRetriever.invoke")].__get__(retriever))
    assert Retriever.invoke.__wrapped__ is originals[("langchain_core.retrievers",
                                                       "BaseRetriever.invoke")]


def test_uninstall_restores_every_original_and_install_patches_again(
        originals: dict[tuple[str, str], Any]) -> None:
    context_bridge.uninstall()
    for point, original in originals.items():
        assert _point(*point) is original, point
        assert not context_bridge.is_patched(original)
    context_bridge.uninstall()  # twice: nothing left to undo
    assert all(_point(*point) is original for point, original in originals.items())

    context_bridge.install()
    context_bridge.install()  # idempotent: patched once, not twice
    for point, original in originals.items():
        patched = _point(*point)
        assert patched is not original and context_bridge.is_patched(patched), point
        assert patched.__wrapped__ is original, point
    for point in DIRECT_POINTS:
        assert type(_point(*point)) is types.FunctionType, point


THIRD_PARTY_POINTS = [
    ("langchain_core.retrievers", "BaseRetriever.invoke"),  # a direct method patch
    ("langchain_core.runnables.config", "_set_config_context"),  # a direct function patch
    ("langchain_core.language_models.chat_models", "BaseChatModel.stream"),  # a wrapt one
]


def test_uninstall_leaves_a_later_third_party_patch_in_place(
        originals: dict[tuple[str, str], Any], tracing: Tracing, recorder: RunRecorder) -> None:
    calls: list[str] = []

    def third_party(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append(wrapped.__name__)
        return wrapped(*args, **kwargs)

    ours = {point: _point(*point) for point in THIRD_PARTY_POINTS}
    for module_name, path in THIRD_PARTY_POINTS:
        wrapt.wrap_function_wrapper(module_name, path, third_party)
    theirs = {point: _point(*point) for point in THIRD_PARTY_POINTS}
    context_bridge.uninstall()
    for point in ALL_POINTS:
        if point in THIRD_PARTY_POINTS:
            assert _point(*point) is theirs[point], point  # left in place...
            assert theirs[point].__wrapped__ is ours[point]  # ...over what it wrapped
        else:
            assert _point(*point) is originals[point], point
    assert SpanRetriever().invoke("q")[0].page_content == "doc about q"
    assert "invoke" in calls

    context_bridge.install()  # patches over the third party's wrapper: traced and nested again
    for point in THIRD_PARTY_POINTS:
        assert context_bridge.is_patched(_point(*point)), point
        assert _point(*point).__wrapped__ is theirs[point], point
    run_nested_workload(tracing, recorder)
    check_user_spans_nest(tracing, recorder)


# A workload with a user span inside a chain step, a chat model's _generate, a completion
# model's _generate and a retriever's _get_relevant_documents; each must nest under its run.
USER_SPAN_RUNS = {"in step": "step", "in chat generate": "chat_model", "in llm generate": "llm",
                  "in retriever": "SpanRetriever"}
TRACER: list[Any] = []  # the tracer of the test running (set by run_nested_workload)


def _user_span(name: str) -> None:
    with TRACER[-1].start_as_current_span(name):
        pass


class SpanRetriever(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        if TRACER:
            _user_span("in retriever")
        return [Document(page_content=f"doc about {query}")]


class SpanChat(ChunkChat):
    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        _user_span("in chat generate")
        return super()._generate(messages, stop, run_manager, **kwargs)


class SpanLLM(ChunkLLM):
    def _generate(self, prompts: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> LLMResult:
        _user_span("in llm generate")
        return super()._generate(prompts, stop, run_manager, **kwargs)


def run_nested_workload(tracing: Tracing, recorder: RunRecorder) -> None:
    TRACER[:] = [tracing.tracer]

    def step(query: str, config: RunnableConfig) -> str:
        _user_span("in step")
        docs = SpanRetriever().invoke(query, config)
        SpanChat(chunks=["a", "b"]).invoke(query, config)
        SpanLLM(chunks=["c"]).invoke(query, config)
        return docs[0].page_content

    chain = RunnableLambda(lambda q: q, name="prepare") | RunnableLambda(step, name="step")
    try:
        assert chain.invoke("q", {"callbacks": [tracing.handler(), recorder]}) == "doc about q"
    finally:
        TRACER.clear()


def _run_span(tracing: Tracing, recorder: RunRecorder, run_name: str) -> ReadableSpan:
    run_ids = [r for r, name in recorder.names.items() if name == run_name]
    assert len(run_ids) == 1, (run_name, recorder.names)
    return tracing.by_run_id()[run_ids[0]]


def check_user_spans_nest(tracing: Tracing, recorder: RunRecorder) -> None:
    assert_span_tree_matches(tracing, recorder)
    for user_span, run_name in USER_SPAN_RUNS.items():
        span, run = tracing.one(user_span), _run_span(tracing, recorder, run_name)
        assert span.parent is not None, f"{user_span} is a root span"
        assert span.parent.span_id == run.context.span_id, (
            f"{user_span} should be a child of {run.name}")
        assert span.context.trace_id == run.context.trace_id


def test_user_spans_nest_under_their_runs(tracing: Tracing, recorder: RunRecorder) -> None:
    run_nested_workload(tracing, recorder)
    check_user_spans_nest(tracing, recorder)


def test_user_spans_nest_after_an_uninstall_install_cycle(
        originals: dict[tuple[str, str], Any], tracing: Tracing) -> None:
    handler = tracing.handler()
    context_bridge.uninstall()
    # Without the bridge the runs are still traced (parents come from the run tree), but the
    # user spans inside them no longer nest: the bridge is what nests them.
    recorder = RunRecorder()
    TRACER[:] = [tracing.tracer]
    try:
        RunnableLambda(lambda q: SpanRetriever().invoke(q, {"callbacks": [handler, recorder]})
                       ).invoke("q")
    finally:
        TRACER.clear()
    assert_span_tree_matches(tracing, recorder)
    assert tracing.one("in retriever").parent is None

    for _ in range(2):
        context_bridge.install()
        tracing.exporter.clear()
        recorder = RunRecorder()
        run_nested_workload(tracing, recorder)
        check_user_spans_nest(tracing, recorder)
        context_bridge.uninstall()
    context_bridge.install()


def test_user_span_in_a_langgraph_node_nests_under_the_node_run(
        originals: dict[tuple[str, str], Any], tracing: Tracing) -> None:
    """LangGraph's twin of _set_config_context, before and after an uninstall/install cycle."""
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        count: int

    def node(state: State) -> State:
        with tracing.tracer.start_as_current_span("in node"):
            return {"count": state["count"] + 1}

    graph = StateGraph(State)
    graph.add_node("node", node)
    graph.add_edge(START, "node")
    graph.add_edge("node", END)
    app = graph.compile()
    for cycle in range(2):
        tracing.exporter.clear()
        recorder = RunRecorder()
        config: Any = {"callbacks": [tracing.handler(), recorder]}
        assert app.invoke({"count": 0}, config) == {"count": 1}
        assert_span_tree_matches(tracing, recorder)
        node_run, span = _run_span(tracing, recorder, "node"), tracing.one("in node")
        assert span.parent is not None and span.parent.span_id == node_run.context.span_id, cycle
        context_bridge.uninstall()
        context_bridge.install()


# --- 3. the mapping's dict fast paths -------------------------------------------------------
class FrozenMapping(Mapping):  # type: ignore[type-arg]
    """A read-only Mapping that is no dict (like a config or metadata object of a framework)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def deep(value: Any, kind: Any) -> Any:
    """``value`` with every dict in it (at any depth) turned into ``kind``."""
    if isinstance(value, dict):
        return kind({k: deep(v, kind) for k, v in value.items()})
    if isinstance(value, list):
        return [deep(v, kind) for v in value]
    return value


MAPPING_KINDS = [pytest.param(dict, id="dict"),
                 pytest.param(types.MappingProxyType, id="MappingProxyType"),
                 pytest.param(FrozenMapping, id="custom Mapping")]

USAGE = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10,
         "input_token_details": {"cache_read": 2, "cache_creation": 1},
         "output_token_details": {"reasoning": 1}}
USAGE_ATTRIBUTES = {attr.GEN_AI_USAGE_INPUT_TOKENS: 7, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 3,
                    attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 2,
                    attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 1,
                    attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 1}


def chat_result(response_metadata: dict[str, Any], *, message_id: str = "lc_run-123",
                generation_info: dict[str, Any] | None = None,
                tool_calls: list[Any] | None = None, usage: dict[str, Any] | None = None,
                llm_output: dict[str, Any] | None = None) -> dict[str, Any]:
    """An LLMResult of one chat generation, as plain data (a "dict of one")."""
    message: dict[str, Any] = {"content": "hi", "response_metadata": response_metadata,
                               "id": message_id, "tool_calls": tool_calls or []}
    if usage is not None:
        message["usage_metadata"] = usage
    generation: dict[str, Any] = {"message": message}
    if generation_info is not None:
        generation["generation_info"] = generation_info
    return {"generations": [[generation]], "llm_output": llm_output}


TOOL_CALL = {"name": "lookup", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
# (case, LLMResult as plain data, the attributes response_attributes must give)
RESPONSES = [
    ("openai chat completions", chat_result(
        {"model_name": "gpt-4o-2024", "id": "chatcmpl-1", "finish_reason": "length"},
        usage=USAGE, generation_info={"finish_reason": "stop"}),
     {**USAGE_ATTRIBUTES, attr.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024",
      attr.GEN_AI_RESPONSE_ID: "chatcmpl-1",
      attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",)}),  # generation_info first
    ("anthropic", chat_result({"model": "claude-x", "id": "msg_1", "stop_reason": "end_turn"},
                              usage={"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}),
     {attr.GEN_AI_USAGE_INPUT_TOKENS: 12, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 5,
      attr.GEN_AI_RESPONSE_MODEL: "claude-x", attr.GEN_AI_RESPONSE_ID: "msg_1",
      attr.GEN_AI_RESPONSE_FINISH_REASONS: ("end_turn",)}),
    ("ollama", chat_result({"model": "llama3.2", "done_reason": "stop"}, message_id="ollama-7"),
     {attr.GEN_AI_RESPONSE_MODEL: "llama3.2", attr.GEN_AI_RESPONSE_ID: "ollama-7",
      attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",)}),
    ("responses api incomplete", chat_result(
        {"object": "response", "status": "incomplete", "model_name": "gpt-4.1", "id": "resp_1",
         "incomplete_details": {"reason": "max_output_tokens"}}),
     {attr.GEN_AI_RESPONSE_MODEL: "gpt-4.1", attr.GEN_AI_RESPONSE_ID: "resp_1",
      attr.GEN_AI_RESPONSE_FINISH_REASONS: ("length",)}),
    ("responses api completed with tool calls", chat_result(
        {"object": "response", "status": "completed", "id": "resp_2"}, tool_calls=[TOOL_CALL]),
     {attr.GEN_AI_RESPONSE_ID: "resp_2", attr.GEN_AI_RESPONSE_FINISH_REASONS: ("tool_calls",)}),
    ("responses api completed", chat_result({"object": "response", "status": "completed"}),
     {attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",)}),
    ("responses api in progress", chat_result({"object": "response", "status": "in_progress"}),
     {attr.GEN_AI_RESPONSE_FINISH_REASONS: ("in_progress",)}),
    ("llm_output token usage", chat_result(
        {}, llm_output={"token_usage": {"prompt_tokens": 5, "completion_tokens": 6},
                        "model_name": "gpt-3.5", "id": "cmpl-9"}),
     {attr.GEN_AI_USAGE_INPUT_TOKENS: 5, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 6,
      attr.GEN_AI_RESPONSE_MODEL: "gpt-3.5", attr.GEN_AI_RESPONSE_ID: "cmpl-9"}),
    ("completion model", {
        "generations": [[{"text": "x", "generation_info": {"finish_reason": "stop"}}],
                        [{"text": "y", "generation_info": {"done_reason": "length"}}]],
        "llm_output": {"usage": {"input_tokens": 4, "output_tokens": 2}, "model": "davinci"}},
     {attr.GEN_AI_USAGE_INPUT_TOKENS: 4, attr.GEN_AI_USAGE_OUTPUT_TOKENS: 2,
      attr.GEN_AI_RESPONSE_MODEL: "davinci",
      attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop", "length")}),
]

RESPONSE_IDS = [case for case, _, _ in RESPONSES]


@pytest.mark.parametrize("kind", MAPPING_KINDS)
@pytest.mark.parametrize(("case", "response", "expected"), RESPONSES, ids=RESPONSE_IDS)
def test_response_attributes_are_the_same_for_any_mapping(case: str, response: dict[str, Any],
                                                          expected: dict[str, Any],
                                                          kind: Any) -> None:
    assert mapping.response_attributes(deep(response, kind)) == expected
    reasons = expected.get(attr.GEN_AI_RESPONSE_FINISH_REASONS, ())
    found = [mapping.generation_finish_reason(g) for g in mapping.generations(deep(response, kind))]
    assert tuple(r for r in found if r is not None) == reasons


def _langchain_result(response: dict[str, Any], wrap: Any = None) -> LLMResult:
    """The same LLMResult as real LangChain objects. With ``wrap``, their mapping fields hold
    ``wrap``-made Mappings (``model_construct`` keeps them as given)."""
    def m(value: Any) -> Any:
        return deep(value, wrap) if wrap is not None and value is not None else value

    def generation(data: dict[str, Any]) -> Any:
        if "message" not in data:
            return Generation.model_construct(text=data["text"],
                                              generation_info=m(data.get("generation_info")))
        fields = dict(data["message"])
        fields["response_metadata"] = m(fields["response_metadata"])
        if "usage_metadata" in fields:
            fields["usage_metadata"] = m(fields["usage_metadata"])
        message = (AIMessage(**fields) if wrap is None else
                   AIMessage.model_construct(type="ai", **fields))
        return ChatGeneration.model_construct(message=message, text="hi",
                                              generation_info=m(data.get("generation_info")))

    return LLMResult.model_construct(
        generations=[[generation(g) for g in batch] for batch in response["generations"]],
        llm_output=m(response["llm_output"]))


@pytest.mark.parametrize("wrap", [None, types.MappingProxyType, FrozenMapping],
                         ids=["langchain objects", "MappingProxyType fields",
                              "custom Mapping fields"])
@pytest.mark.parametrize(("case", "response", "expected"), RESPONSES, ids=RESPONSE_IDS)
def test_langchain_results_give_the_same_attributes(case: str, response: dict[str, Any],
                                                   expected: dict[str, Any], wrap: Any) -> None:
    """Real LLMResult / ChatGeneration / AIMessage objects (read by attribute), with dicts or
    with other Mappings in their fields, give what the plain data gives."""
    assert mapping.response_attributes(_langchain_result(response, wrap)) == expected


ODD_RESPONSES = [None, 0, 42, 1.5, True, "text", b"bytes", [], (), [[]], [[None]], {},
                 types.MappingProxyType({}), FrozenMapping({}), object(),
                 {"generations": None}, {"generations": "abc"}, {"generations": [[42]]},
                 {"generations": [None, [None]]}, {"generations": 5, "llm_output": "x"},
                 {"generations": [[{"message": 42, "generation_info": "stop"}]], "llm_output": 5},
                 {"generations": [[{"message": {"usage_metadata": 5, "response_metadata": [1]},
                                    "generation_info": ["finish_reason"]}]],
                  "llm_output": {"token_usage": "many", "usage": 3}},
                 chat_result({"model_name": 5, "id": 7, "finish_reason": 3, "stop_reason": "",
                              "object": "response", "status": None,
                              "incomplete_details": "max_output_tokens"},
                             message_id="run-abc",  # LangChain's made-up id: no response id
                             usage={"input_tokens": "7", "output_tokens": True,
                                    "input_token_details": [2],
                                    "output_token_details": {"reasoning": None}})]


@pytest.mark.parametrize("kind", MAPPING_KINDS)
@pytest.mark.parametrize("response", ODD_RESPONSES, ids=lambda r: type(r).__name__)
def test_odd_responses_give_no_attribute_and_no_exception(response: Any, kind: Any) -> None:
    response = deep(response, kind)
    assert mapping.response_attributes(response) == {}
    assert mapping.generation_finish_reason(response) is None
    for generation in mapping.generations(response):
        assert mapping.generation_finish_reason(generation) is None


# (invocation params and ls_* metadata -> the request attributes)
PARAMS = {"model": "gpt-4o", "temperature": 0.7, "max_tokens": None,
          "max_completion_tokens": 100, "top_p": 0.9, "top_k": 5, "seed": 42,
          "frequency_penalty": 0.5, "presence_penalty": 0, "stop": ["\n"], "stream": True,
          "api_key": "sk-not-recorded"}
REQUEST_ATTRIBUTES = {attr.GEN_AI_REQUEST_MODEL: "gpt-4o", attr.GEN_AI_REQUEST_TEMPERATURE: 0.7,
                      attr.GEN_AI_REQUEST_MAX_TOKENS: 100, attr.GEN_AI_REQUEST_TOP_P: 0.9,
                      attr.GEN_AI_REQUEST_TOP_K: 5.0, attr.GEN_AI_REQUEST_SEED: 42,
                      attr.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.5,
                      attr.GEN_AI_REQUEST_PRESENCE_PENALTY: 0.0,
                      attr.GEN_AI_REQUEST_STOP_SEQUENCES: ("\n",),
                      attr.GEN_AI_REQUEST_STREAM: True}
SERIALIZED = {"id": ["langchain", "chat_models", "openai", "ChatOpenAI"], "name": "ChatOpenAI"}


@pytest.mark.parametrize("kind", MAPPING_KINDS)
def test_model_span_is_the_same_for_any_mapping(kind: Any) -> None:
    name, span_kind, attrs = mapping.model_span(
        attr.CHAT_MODEL, deep(SERIALIZED, kind), deep({"ls_provider": "openai"}, kind),
        deep({"invocation_params": PARAMS}, kind))
    assert name == "chat gpt-4o"
    assert span_kind is SpanKind.CLIENT
    assert attrs == {attr.GEN_AI_OPERATION_NAME: attr.OP_CHAT,
                     attr.GEN_AI_PROVIDER_NAME: "openai", **REQUEST_ATTRIBUTES}
    assert all(type(v) is type(REQUEST_ATTRIBUTES[k]) for k, v in attrs.items()
               if k in REQUEST_ATTRIBUTES), attrs  # ints stay ints, floats floats


@pytest.mark.parametrize("kind", MAPPING_KINDS)
def test_ls_metadata_wins_over_invocation_params_for_any_mapping(kind: Any) -> None:
    meta = {"ls_provider": "anthropic", "ls_model_name": "claude-x", "ls_temperature": 0,
            "ls_max_tokens": 64, "ls_stop": "END"}
    _, _, attrs = mapping.model_span(attr.LLM, None, deep(meta, kind),
                                     deep({"invocation_params": PARAMS}, kind))
    assert attrs[attr.GEN_AI_OPERATION_NAME] == attr.OP_TEXT_COMPLETION
    assert attrs[attr.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[attr.GEN_AI_REQUEST_MODEL] == "claude-x"
    assert attrs[attr.GEN_AI_REQUEST_TEMPERATURE] == 0.0
    assert attrs[attr.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[attr.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",)
    assert attrs[attr.GEN_AI_REQUEST_TOP_P] == 0.9  # still from the params


@pytest.mark.parametrize("kind", MAPPING_KINDS)
@pytest.mark.parametrize(("params", "expected"), [
    ({"max_tokens": 50, "max_completion_tokens": 100}, 50),  # the first name found wins
    ({"max_completion_tokens": 100}, 100),
    ({"max_output_tokens": 30}, 30),  # Gemini-style
    ({"num_predict": 20}, 20),  # Ollama
    ({"max_tokens": "50", "num_predict": 20}, 20),  # not a number: the next name
    ({"max_tokens": True}, None),  # a bool is no count
    ({"max_tokens": 1.5}, None),  # nor a float
    ({}, None),
])
def test_max_tokens_from_any_of_its_names(kind: Any, params: dict[str, Any],
                                          expected: int | None) -> None:
    attrs = mapping.request_parameters({}, deep(params, kind))
    assert attrs.get(attr.GEN_AI_REQUEST_MAX_TOKENS) == expected
    assert set(attrs) <= {attr.GEN_AI_REQUEST_MAX_TOKENS}


@pytest.mark.parametrize("kind", MAPPING_KINDS)
def test_request_parameters_keep_what_attrs_already_have(kind: Any) -> None:
    attrs = {attr.GEN_AI_REQUEST_TEMPERATURE: 0.1}
    mapping.request_parameters(attrs, deep({"temperature": 0.9, "seed": 3}, kind))
    assert attrs == {attr.GEN_AI_REQUEST_TEMPERATURE: 0.1, attr.GEN_AI_REQUEST_SEED: 3}


ODD_PARAMS = [None, 0, 7, "temperature", b"x", ["temperature", 0.5], [("temperature", 0.5)],
              ("seed",), {"temperature"}, object(), FrozenMapping({}), types.MappingProxyType({}),
              {"temperature": True, "seed": 1.5, "max_tokens": "100", "top_p": None,
               "top_k": [5], "frequency_penalty": "0.1", "presence_penalty": {}}]


@pytest.mark.parametrize("params", ODD_PARAMS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("meta", [None, 5, "ls_provider", [], {"ls_temperature": "hot"},
                                  types.MappingProxyType({"ls_max_tokens": False})],
                         ids=lambda m: type(m).__name__)
def test_odd_invocation_params_and_metadata_give_no_request_attribute(params: Any,
                                                                      meta: Any) -> None:
    request_keys = {k for k in REQUEST_ATTRIBUTES if k != attr.GEN_AI_REQUEST_MODEL}
    for run_type in (attr.CHAT_MODEL, attr.LLM):
        for serialized in (None, 5, "x", [], types.MappingProxyType({}), FrozenMapping({"id": 5})):
            name, _, attrs = mapping.model_span(run_type, serialized, meta,
                                                {"invocation_params": params})
            assert not request_keys & set(attrs), attrs
            assert attr.GEN_AI_REQUEST_MODEL not in attrs
            assert name in ("chat chat_model", "text_completion llm")


def _model_run(handler: Any, kind: Any, response: dict[str, Any]) -> None:
    run_id = uuid.uuid4()
    handler.on_chat_model_start(
        deep(SERIALIZED, kind), [[]], run_id=run_id,
        metadata=deep({"ls_provider": "openai", "thread_id": "t-1", "team": "search"}, kind),
        invocation_params=deep(PARAMS, kind), name="ChatOpenAI")
    handler.on_llm_end(deep(response, kind), run_id=run_id)


def test_a_handler_fed_mappings_exports_what_it_exports_for_dicts(tracing: Tracing) -> None:
    """Through the public callbacks: a model run whose serialized form, metadata, invocation
    params and response are other Mappings exports the span a dict-fed run exports."""
    handler = tracing.handler()
    response = RESPONSES[0][1]
    exported = []
    for kind in (dict, types.MappingProxyType, FrozenMapping):
        tracing.exporter.clear()
        _model_run(handler, kind, response)
        span = tracing.one("chat gpt-4o")
        attributes = dict(span.attributes)
        attributes.pop(attr.RUN_ID)
        exported.append((span.name, span.kind, attributes))
    assert exported[0] == exported[1] == exported[2]
    attributes = exported[0][2]
    for key, value in {**REQUEST_ATTRIBUTES, **RESPONSES[0][2]}.items():
        assert attributes[key] == value, key
    assert attributes[attr.GEN_AI_PROVIDER_NAME] == "openai"
    assert "sk-not-recorded" not in str(attributes)
    assert any(v == "search" for v in attributes.values())  # user metadata kept
    assert any(v == "t-1" for v in attributes.values())  # the conversation id


@pytest.mark.parametrize("response", ODD_RESPONSES, ids=lambda r: type(r).__name__)
def test_a_malformed_response_still_ends_the_model_run(tracing: Tracing, response: Any) -> None:
    """Reading the response must not stop ``on_llm_end`` from ending the run (with content
    capture on, which reads every generation too)."""
    handler = tracing.handler(capture_content=True)
    run_id = uuid.uuid4()
    handler.on_chat_model_start(SERIALIZED, [[]], run_id=run_id, invocation_params=PARAMS)
    handler.on_llm_end(response, run_id=run_id)
    assert len(handler._registry) == 0, "the run was left open"
    span = tracing.one("chat gpt-4o")
    assert span.status.status_code is not StatusCode.ERROR
    assert attr.GEN_AI_RESPONSE_FINISH_REASONS not in span.attributes


_KEYS = ["generations", "message", "generation_info", "llm_output", "usage_metadata",
         "response_metadata", "token_usage", "usage", "input_tokens", "output_tokens",
         "prompt_tokens", "completion_tokens", "input_token_details", "output_token_details",
         "cache_read", "reasoning", "model", "model_name", "id", "finish_reason", "stop_reason",
         "done_reason", "object", "status", "incomplete_details", "reason", "tool_calls",
         "invocation_params", "temperature", "max_tokens", "seed", "stop", "tools", "text",
         "ls_provider", "ls_model_name", "ls_temperature", "name"]
_LEAVES = (st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True)
           | st.sampled_from(["", "response", "completed", "stop", "lc_run-1", "x"]))


def _shapes(kind: Any) -> Any:
    return st.recursive(_LEAVES, lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5).map(kind)), max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([dict, types.MappingProxyType, FrozenMapping]).flatmap(
    lambda kind: st.tuples(_shapes(kind), _shapes(kind), _shapes(kind))))
def test_any_shape_of_mappings_and_odd_values_never_raises(shapes: tuple[Any, Any, Any]) -> None:
    response, metadata, params = shapes
    assert isinstance(mapping.response_attributes(response), dict)
    for generation in mapping.generations(response):
        reason = mapping.generation_finish_reason(generation)
        assert reason is None or (isinstance(reason, str) and reason)
    name, _, attrs = mapping.model_span(attr.CHAT_MODEL, metadata, metadata,
                                        {"invocation_params": params})
    assert isinstance(name, str) and attrs[attr.GEN_AI_OPERATION_NAME] == attr.OP_CHAT


# --- 4. run keys: a UUID run id is keyed by its int ---------------------------------------------
class _UUIDSubclass(uuid.UUID):
    """A run id of a UUID subclass (an app's own id type): keyed like the UUID it equals."""


def test_run_key_is_the_uuid_int_and_idempotent() -> None:
    run_id = uuid.uuid4()
    assert registry.run_key(run_id) == run_id.int
    assert registry.run_key(_UUIDSubclass(int=run_id.int)) == run_id.int
    assert registry.run_key(registry.run_key(run_id)) == run_id.int  # a key keys itself
    assert registry.run_key("run-7") == "run-7"
    assert registry.run_key(None) is None


def test_equal_run_ids_of_any_uuid_class_find_the_same_run(tracing: Tracing) -> None:
    """The parent lookup, the end and the context bridge find a run whatever equal UUID
    object (a copy, a subclass) names it; an odd (string) run id still works as itself."""
    handler = tracing.handler()
    root = _UUIDSubclass(int=uuid.uuid4().int)
    child, grandchild = uuid.uuid4(), "odd-run-id"
    handler.on_chain_start({}, {}, run_id=root, name="root")
    handler.on_chain_start({}, {}, run_id=child, parent_run_id=uuid.UUID(str(root)),
                           name="child")
    assert context_bridge.active_context(uuid.UUID(str(child))) is not None
    assert context_bridge.active_context(root) is not None
    handler.on_chain_start({}, {}, run_id=grandchild, parent_run_id=uuid.UUID(str(child)),
                           name="grandchild")
    handler.on_chain_end({}, run_id="odd-run-id")
    handler.on_chain_end({}, run_id=uuid.UUID(str(child)))
    handler.on_chain_end({}, run_id=uuid.UUID(str(root)))
    assert len(handler._registry) == 0
    assert context_bridge.active_context(root) is None
    spans = {span.name: span for span in tracing.spans()}
    assert set(spans) == {"root", "child", "grandchild"}
    assert spans["child"].parent.span_id == spans["root"].context.span_id
    assert spans["grandchild"].parent.span_id == spans["child"].context.span_id
    assert spans["root"].attributes[attr.RUN_ID] == str(root)
    assert spans["grandchild"].attributes[attr.RUN_ID] == "odd-run-id"


def test_a_run_without_a_run_id_is_not_traced_and_parents_no_root(
        tracing: Tracing, caplog: pytest.LogCaptureFixture) -> None:
    """``None`` is what a root's parent id is: a run started under that id would become every
    root's parent (and be made current by the bridge for every untraced config)."""
    handler = tracing.handler()
    handler_module._logged.discard(("start", "no run id"))
    with caplog.at_level("WARNING", logger="otel_callbacks"):
        handler.on_chain_start({}, {}, run_id=None, name="no id")
        handler.on_chat_model_start(SERIALIZED, [[]], run_id=None, invocation_params=PARAMS)
    assert "started without a run id" in caplog.text
    assert context_bridge.active_context(None) is None
    assert len(handler._registry) == 0
    root = uuid.uuid4()
    handler.on_chain_start({}, {}, run_id=root, parent_run_id=None, name="root")
    handler.on_chain_end({}, run_id=None)  # an unknown run: ignored
    handler.on_chain_end({}, run_id=root)
    [span] = tracing.spans()
    assert span.name == "root" and span.parent is None


@given(st.one_of(st.uuids(), st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),
                                               uuid.UUID(int=1)])))
def test_the_run_id_attribute_is_the_uuids_own_text(run_id: uuid.UUID) -> None:
    """The run id's text is formatted inline (no ``UUID.__str__`` call): the same text, leading
    zeros included."""
    attrs = mapping.common_attributes(run_id, attr.CHAIN, None, None)
    assert attrs[attr.RUN_ID] == str(run_id)


def test_only_models_with_an_endpoint_or_parameter_field_are_read_per_call() -> None:
    """A model class with none of the fields ``model_instance_attributes`` reads gives nothing
    (its fields are looked up once per class); a real integration's class gives its server."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    fake = FakeListChatModel(responses=["x"])
    assert mapping.model_instance_attributes(fake) == {}
    assert mapping._class_fields[FakeListChatModel] == ((), (), ())  # cached per class
    assert mapping.model_instance_attributes(fake) == {}
    langchain_openai = pytest.importorskip("langchain_openai")
    real = langchain_openai.ChatOpenAI(model="gpt-4o", api_key="sk-test",
                                       base_url="http://127.0.0.1:9/v1", temperature=0.5)
    assert mapping.model_instance_attributes(real)[attr.SERVER_ADDRESS] == "127.0.0.1"
    assert mapping._class_fields[type(real)] != ((), (), ())
