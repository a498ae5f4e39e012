"""Issue 13: every span of a run tree carries its conversation and user (gen_ai.conversation.id,
session.id, user.id), from the helper, the caller's baggage or the run's metadata."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypedDict

import pytest
from conftest import RunRecorder, Tracing, assert_span_tree_matches
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from test_genai_conventions import FakeChat

from otel_callbacks import attributes as attr
from otel_callbacks import use_conversation
from otel_callbacks.conversation import MAX_ID_LENGTH

CONV, SESSION, USER = attr.GEN_AI_CONVERSATION_ID, attr.SESSION_ID, attr.USER_ID
ID_KEYS = (CONV, SESSION, USER)


def chain() -> Any:
    return (ChatPromptTemplate.from_messages([("human", "{q}")])
            | FakeListChatModel(responses=["sunny"]) | StrOutputParser())


def ids_of_every_span(tracing: Tracing) -> set[tuple[Any, Any, Any]]:
    """The (conversation, session, user) triples found on the spans: one means all agree."""
    spans = tracing.spans()
    assert spans
    return {tuple(s.attributes.get(k) for k in ID_KEYS) for s in spans}


class State(TypedDict):
    q: str
    answer: str


def graph(checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    @tool
    def lookup(city: str) -> str:
        """Weather for a city."""
        return f"{city}: sunny"

    model = FakeListChatModel(responses=["it is sunny"])

    # Nodes pass their config on: on Python 3.10, LangChain cannot hand it to runs started
    # inside an async graph's nodes by itself, so they would not be child runs at all.
    def research(state: State, config: RunnableConfig) -> dict:
        return {"answer": lookup.invoke({"city": state["q"]}, config)}

    def reply(state: State, config: RunnableConfig) -> dict:
        return {"answer": (model | StrOutputParser()).invoke(state["answer"], config)}

    g = StateGraph(State)
    g.add_node("research", research)
    g.add_node("reply", reply)
    g.add_edge(START, "research")
    g.add_edge("research", "reply")
    g.add_edge("reply", END)
    return g.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_langgraph_thread_id_on_every_span(tracing: Tracing, recorder: RunRecorder, mode: str) -> None:
    from langgraph.checkpoint.memory import MemorySaver

    app = graph(MemorySaver())
    thread = f"t-{uuid.uuid4()}"
    config = {"callbacks": [tracing.handler(), recorder], "configurable": {"thread_id": thread}}
    if mode == "sync":
        out = app.invoke({"q": "Oslo", "answer": ""}, config)
    else:
        out = asyncio.run(app.ainvoke({"q": "Oslo", "answer": ""}, config))
    assert out["answer"] == "it is sunny"
    assert_span_tree_matches(tracing, recorder)
    # graph, 2 nodes, tool, model + parser sequence, chat model, parser: all of them.
    assert len(tracing.spans()) == len(recorder.parents) >= 7
    assert ids_of_every_span(tracing) == {(thread, thread, None)}


@pytest.mark.parametrize("key", ["thread_id", "session_id", "conversation_id"])
def test_each_metadata_key_names_the_conversation(tracing: Tracing, key: str) -> None:
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()], "metadata": {key: "c-42"}})
    assert len(tracing.spans()) == 4
    assert ids_of_every_span(tracing) == {("c-42", "c-42", None)}


def test_metadata_keys_first_match_wins(tracing: Tracing) -> None:
    metadata = {"conversation_id": "c-3", "session_id": "s-2", "thread_id": "t-1"}
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()], "metadata": metadata})
    assert ids_of_every_span(tracing) == {("t-1", "t-1", None)}


def test_user_id_metadata(tracing: Tracing) -> None:
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                 "metadata": {"user_id": "u-7", "session_id": "s-1"}})
    assert ids_of_every_span(tracing) == {("s-1", "s-1", "u-7")}


def test_no_ids_no_attributes(tracing: Tracing) -> None:
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()], "metadata": {"tenant": "x"}})
    assert ids_of_every_span(tracing) == {(None, None, None)}


def test_odd_id_values(tracing: Tracing) -> None:
    """Ints and UUIDs become text; long ids are capped; other types are not ids."""
    thread = uuid.uuid4()
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                 "metadata": {"thread_id": thread, "user_id": 12345}})
    assert ids_of_every_span(tracing) == {(str(thread), str(thread), "12345")}
    tracing.exporter.clear()
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                 "metadata": {"thread_id": {"not": "an id"}, "session_id": "x" * 5000,
                                              "user_id": True}})
    assert ids_of_every_span(tracing) == {("x" * MAX_ID_LENGTH, "x" * MAX_ID_LENGTH, None)}


def test_baggage_set_by_the_caller_wins_over_metadata(tracing: Tracing) -> None:
    ctx = baggage.set_baggage("gen_ai.conversation.id", "from-web-tier")
    ctx = baggage.set_baggage("user.id", "u-web", ctx)
    token = otel_context.attach(ctx)
    try:
        chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                     "metadata": {"thread_id": "t-meta", "user_id": "u-meta"}})
    finally:
        otel_context.detach(token)
    assert ids_of_every_span(tracing) == {("from-web-tier", "from-web-tier", "u-web")}


def test_session_id_baggage_is_accepted(tracing: Tracing) -> None:
    token = otel_context.attach(baggage.set_baggage("session.id", "s-from-baggage"))
    try:
        chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()]})
    finally:
        otel_context.detach(token)
    assert ids_of_every_span(tracing) == {("s-from-baggage", "s-from-baggage", None)}


def test_baggage_is_read_at_the_roots_start_only(tracing: Tracing) -> None:
    """A child started under other baggage (set inside the run) still carries its tree's ids."""
    def step(x: str) -> str:
        token = otel_context.attach(baggage.set_baggage("gen_ai.conversation.id", "inner-baggage"))
        try:
            return (FakeListChatModel(responses=["ok"]) | StrOutputParser()).invoke(x)
        finally:
            otel_context.detach(token)

    with use_conversation("c-root"):
        RunnableLambda(step).invoke("hi", {"callbacks": [tracing.handler()]})
    assert ids_of_every_span(tracing) == {("c-root", "c-root", None)}


def test_helper_sync(tracing: Tracing) -> None:
    with use_conversation("c-1", user_id="u-1") as scope:
        assert baggage.get_baggage("gen_ai.conversation.id") == "c-1"
        assert baggage.get_baggage("user.id") == "u-1"
        chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                     "metadata": {"thread_id": "t-ignored"}})
    assert scope is not None
    assert baggage.get_baggage("gen_ai.conversation.id") is None  # nothing leaks out of the block
    assert ids_of_every_span(tracing) == {("c-1", "c-1", "u-1")}


def test_helper_async(tracing: Tracing) -> None:
    async def main() -> None:
        async with use_conversation("c-async", user_id="u-async"):
            await chain().ainvoke({"q": "hi"}, {"callbacks": [tracing.handler()]})
            # Two concurrent tasks, each in its own conversation.
            async def turn(conversation: str) -> None:
                async with use_conversation(conversation):
                    await asyncio.sleep(0)
                    await chain().ainvoke({"q": conversation}, {"callbacks": [tracing.handler()],
                                                                "run_name": conversation})
            await asyncio.gather(turn("c-a"), turn("c-b"))
        assert baggage.get_baggage("gen_ai.conversation.id") is None

    asyncio.run(main())
    spans = tracing.spans()
    by_trace: dict[int, set[Any]] = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, set()).add(tuple(s.attributes.get(k) for k in ID_KEYS))
    assert sorted(map(tuple, by_trace.values())) == sorted([
        (("c-async", "c-async", "u-async"),), (("c-a", "c-a", "u-async"),), (("c-b", "c-b", "u-async"),)])


def test_helper_nested_inner_wins(tracing: Tracing) -> None:
    handler = tracing.handler()
    with use_conversation("outer", user_id="u-outer"):
        with use_conversation("inner"):
            chain().invoke({"q": "1"}, {"callbacks": [handler], "run_name": "in_inner"})
            with use_conversation(user_id="u-innermost"):
                chain().invoke({"q": "2"}, {"callbacks": [handler], "run_name": "in_innermost"})
        chain().invoke({"q": "3"}, {"callbacks": [handler], "run_name": "in_outer"})
    roots = {s.name: s for s in tracing.spans() if s.parent is None}
    assert {k: tuple(roots[k].attributes.get(i) for i in ID_KEYS) for k in roots} == {
        "in_inner": ("inner", "inner", "u-outer"),
        "in_innermost": ("inner", "inner", "u-innermost"),
        "in_outer": ("outer", "outer", "u-outer"),
    }


def test_helper_ignores_unusable_values(tracing: Tracing) -> None:
    with use_conversation("c-ok"):
        with use_conversation("", user_id=None):
            chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()]})
    assert ids_of_every_span(tracing) == {("c-ok", "c-ok", None)}


def test_a_child_with_its_own_thread_keeps_it(tracing: Tracing, recorder: RunRecorder) -> None:
    inner = (RunnableLambda(lambda x: x, name="inner_first")
             | (FakeListChatModel(responses=["ok"]) | StrOutputParser())).with_config(
                 run_name="inner_graph")

    def call_inner(x: str) -> str:  # invoked with its own thread: LangChain merges the metadata
        return inner.invoke(x, {"metadata": {"thread_id": "t-inner"}})

    app = RunnableLambda(lambda x: {"q": x}, name="outer_first") | chain() | RunnableLambda(call_inner)
    app.invoke("hi", {"callbacks": [tracing.handler(), recorder],
                      "metadata": {"thread_id": "t-outer", "user_id": "u-1"},
                      "run_name": "outer_app"})
    assert_span_tree_matches(tracing, recorder)
    spans = tracing.by_run_id()
    inner_root = next(r for r, n in recorder.names.items() if n == "inner_graph")

    def under_inner(run_id: str | None) -> bool:
        while run_id is not None:
            if run_id == inner_root:
                return True
            run_id = recorder.parents[run_id]
        return False

    inside = {r for r in spans if under_inner(r)}
    assert len(inside) == 4  # inner_graph, inner_first, chat model, parser
    for run_id, span in spans.items():
        expected = ("t-inner", "t-inner", "u-1") if run_id in inside else ("t-outer", "t-outer", "u-1")
        assert tuple(span.attributes.get(k) for k in ID_KEYS) == expected, span.name


def test_a_child_naming_only_a_user_keeps_the_trees_conversation(tracing: Tracing) -> None:
    inner = chain().with_config(metadata={"user_id": "u-child"})
    (RunnableLambda(lambda x: {"q": x}) | inner).invoke(
        "hi", {"callbacks": [tracing.handler()], "metadata": {"thread_id": "t-1"}})
    assert ids_of_every_span(tracing) == {("t-1", "t-1", None), ("t-1", "t-1", "u-child")}


def test_metrics_never_carry_conversation_or_user(tracing: Tracing) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    handler = tracing.handler(meter_provider=meter_provider)
    with use_conversation("c-metrics", user_id="u-metrics"):
        FakeChat().invoke("hi", {"callbacks": [handler], "metadata": {"thread_id": "t-metrics",
                                                                      "user_id": "u-meta"}})
    FakeChat().invoke("hi", {"callbacks": [handler], "metadata": {"session_id": "s-metrics"}})

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    add.invoke({"a": 1, "b": 2}, {"callbacks": [handler], "metadata": {"thread_id": "t-metrics"}})
    spans = tracing.spans()
    assert {s.attributes.get(CONV) for s in spans} == {"c-metrics", "s-metrics", "t-metrics"}
    data = reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]
    def counts(name: str) -> int:
        return sum(p.count for rm in data.resource_metrics for sm in rm.scope_metrics
                   for m in sm.metrics if m.name == name for p in m.data.data_points)

    assert counts("gen_ai.client.operation.duration") == 2  # the two model calls
    assert counts("langchain.tool.duration") == 1  # the tool call
    assert len(points) >= 4  # and their token usage
    ids = {"c-metrics", "u-metrics", "t-metrics", "u-meta", "s-metrics"}
    for point in points:
        assert not set(point.attributes) & {CONV, SESSION, USER}, dict(point.attributes)
        assert not ids & {str(v) for v in point.attributes.values()}, dict(point.attributes)
    meter_provider.shutdown()


def test_session_id_exported_while_a_secret_in_the_same_metadata_is_masked(tracing: Tracing) -> None:
    secret = "sk-" + "a1B2c3D4e5F6g7H8i9J0" * 2
    metadata = {"session_id": "sess-123", "thread_id": "thread-9", "conversation_id": "conv-1",
                "user_id": "user-5", "api_key": secret, "note": f"key is {secret}"}
    chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler(capture_content=True)],
                                 "metadata": metadata})
    assert ids_of_every_span(tracing) == {("thread-9", "thread-9", "user-5")}
    for span in tracing.spans():
        attrs = span.attributes
        assert attrs["langchain.metadata.api_key"] == "[REDACTED]"
        assert attrs["langchain.metadata.note"] == "[REDACTED]"
        assert not any(secret in str(v) for v in attrs.values()), span.name
        for key in ("session_id", "thread_id", "conversation_id", "user_id"):
            assert attrs["langchain.metadata." + key] == metadata[key]  # identifiers, not masked


def test_a_credential_shaped_id_is_never_exported(tracing: Tracing) -> None:
    secret = "sk-" + "Z9y8X7w6V5u4T3s2R1q0" * 2
    with use_conversation(secret, user_id="u-1"):
        chain().invoke({"q": "hi"}, {"callbacks": [tracing.handler()],
                                     "metadata": {"session_id": secret, "thread_id": "t-ok"}})
    assert ids_of_every_span(tracing) == {("t-ok", "t-ok", "u-1")}
    assert not any(secret in str(v) for s in tracing.spans() for v in s.attributes.values())
