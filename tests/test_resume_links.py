"""Issue 13: a LangGraph run resumed after interrupt() links its root span to the root span of
the interrupted trace; interrupts are never errors; memory stays bounded."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any, TypedDict

import pytest
from conftest import RunRecorder, Tracing, assert_span_tree_matches
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from test_instrumentation import instrumented  # noqa: F401 - the fixture

from otel_callbacks import OTelHandler, resume
from otel_callbacks import attributes as attr

try:  # LangGraph's lifecycle events (on_interrupt / on_resume) came with langgraph 1.x
    import langgraph.callbacks  # noqa: F401
    HAS_EVENTS = True
except ImportError:
    HAS_EVENTS = False
needs_events = pytest.mark.skipif(
    not HAS_EVENTS, reason="this LangGraph reports no lifecycle events (no langgraph.callbacks)")
# With the events a resume is matched exactly by checkpoint id; without them, by thread id.
MATCHED_BY = "checkpoint_id" if HAS_EVENTS else "thread_id"


class State(TypedDict):
    n: int
    log: list[str]


def approval_graph(checkpointer: Any, rounds: int = 1) -> Any:
    """ask (interrupts ``rounds`` times, once per invocation) -> act."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    def ask(state: State) -> dict:
        answers = [interrupt(f"approve step {i}?") for i in range(rounds)]
        return {"n": state["n"] + sum(int(a) for a in answers), "log": state["log"] + ["asked"]}

    def act(state: State) -> dict:
        return {"log": state["log"] + ["acted"]}

    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_node("act", act)
    g.add_edge(START, "ask")
    g.add_edge("ask", "act")
    g.add_edge("act", END)
    return g.compile(checkpointer=checkpointer)


def roots(tracing: Tracing) -> list[ReadableSpan]:
    found = sorted((s for s in tracing.spans() if s.parent is None), key=lambda s: s.start_time or 0)
    assert len({s.context.trace_id for s in found}) == len(found)
    return found


def assert_links_to(resumed: ReadableSpan, interrupted: ReadableSpan, matched_by: str) -> None:
    assert len(resumed.links) == 1, resumed.links
    link = resumed.links[0]
    assert link.context.trace_id == interrupted.context.trace_id
    assert link.context.span_id == interrupted.context.span_id
    assert link.attributes[attr.LINK_REASON] == "resume"
    assert link.attributes[attr.LINK_MATCHED_BY] == matched_by
    assert resumed.attributes[attr.GRAPH_RESUMED] is True
    assert resumed.context.trace_id != interrupted.context.trace_id


def assert_no_errors(tracing: Tracing) -> None:
    for span in tracing.spans():
        assert span.status.status_code is not StatusCode.ERROR, span.name
        assert attr.ERROR_TYPE not in span.attributes, span.name


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_resume_links_to_the_interrupted_trace_by_checkpoint(tracing: Tracing, recorder: RunRecorder,
                                                              mode: str) -> None:
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.types import Command

    if mode == "async" and sys.version_info < (3, 11):  # LangGraph 0.4 and 1.2 alike
        pytest.skip("LangGraph's interrupt() cannot find its config in an async graph's node on "
                    "Python 3.10 (no runnable context there)")
    app = approval_graph(MemorySaver())
    thread = f"t-{uuid.uuid4()}"
    config = {"callbacks": [tracing.handler(), recorder], "configurable": {"thread_id": thread}}
    run = app.invoke if mode == "sync" else (lambda i, c: asyncio.run(app.ainvoke(i, c)))
    first = run({"n": 1, "log": []}, config)
    assert "__interrupt__" in first
    assert run(Command(resume="41"), config) == {"n": 42, "log": ["asked", "acted"]}

    assert_span_tree_matches(tracing, recorder)
    assert_no_errors(tracing)
    interrupted, resumed = roots(tracing)
    assert_links_to(resumed, interrupted, MATCHED_BY)
    assert resumed.links[0].attributes[attr.THREAD_ID] == thread
    assert not interrupted.links
    # Both turns belong to one conversation.
    assert {s.attributes[attr.GEN_AI_CONVERSATION_ID] for s in tracing.spans()} == {thread}
    if not HAS_EVENTS:
        return
    # LangGraph's lifecycle events: the interrupt on the interrupted graph span, the resume on
    # the resumed one, both naming the same checkpoint, which the link names too.
    (interrupt_event,) = [e for e in interrupted.events if e.name == attr.EVENT_INTERRUPT]
    assert interrupt_event.attributes[attr.INTERRUPT_COUNT] == 1
    assert interrupt_event.attributes[attr.INTERRUPT_STATUS] == "pending"
    (resume_event,) = [e for e in resumed.events if e.name == attr.EVENT_RESUME]
    checkpoint = interrupt_event.attributes[attr.CHECKPOINT_ID]
    assert resume_event.attributes[attr.CHECKPOINT_ID] == checkpoint
    assert resumed.links[0].attributes[attr.CHECKPOINT_ID] == checkpoint


def test_each_resume_links_to_the_turn_it_continues(tracing: Tracing) -> None:
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.types import Command

    app = approval_graph(MemorySaver(), rounds=2)
    thread = f"t-{uuid.uuid4()}"
    config = {"callbacks": [tracing.handler()], "configurable": {"thread_id": thread}}
    app.invoke({"n": 0, "log": []}, config)
    app.invoke(Command(resume="1"), config)  # answers the first question, stops at the second
    assert app.invoke(Command(resume="2"), config)["n"] == 3
    first, second, third = roots(tracing)
    assert_links_to(second, first, MATCHED_BY)
    assert_links_to(third, second, MATCHED_BY)
    assert_no_errors(tracing)


@needs_events
def test_resume_after_a_breakpoint_links_too(tracing: Tracing) -> None:
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(State)
    g.add_node("draft", lambda s: {"log": s["log"] + ["draft"]})
    g.add_node("send", lambda s: {"log": s["log"] + ["send"]})
    g.add_edge(START, "draft")
    g.add_edge("draft", "send")
    g.add_edge("send", END)
    app = g.compile(checkpointer=MemorySaver(), interrupt_before=["send"])
    config = {"callbacks": [tracing.handler()], "configurable": {"thread_id": f"t-{uuid.uuid4()}"}}
    assert app.invoke({"n": 0, "log": []}, config)["log"] == ["draft"]
    assert app.invoke(None, config)["log"] == ["draft", "send"]  # continue past the breakpoint
    interrupted, resumed = roots(tracing)
    assert_links_to(resumed, interrupted, MATCHED_BY)
    (event,) = [e for e in interrupted.events if e.name == attr.EVENT_INTERRUPT]
    assert event.attributes[attr.INTERRUPT_STATUS] == "interrupt_before"
    assert_no_errors(tracing)


def test_a_new_turn_is_not_a_resume(tracing: Tracing) -> None:
    from langgraph.checkpoint.memory import MemorySaver

    app = approval_graph(MemorySaver())
    config = {"callbacks": [tracing.handler()], "configurable": {"thread_id": f"t-{uuid.uuid4()}"}}
    app.invoke({"n": 0, "log": []}, config)
    app.invoke({"n": 5, "log": []}, config)  # fresh input on the interrupted thread
    first, second = roots(tracing)
    assert not second.links and attr.GRAPH_RESUMED not in second.attributes


def test_without_lifecycle_events_resume_links_by_thread(tracing: Tracing, instrumented: Any) -> None:
    """The instrumentor's handler is not in config["callbacks"], so LangGraph sends it no
    on_interrupt/on_resume (as releases without them): the thread id still links the runs."""
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.types import Command

    app = approval_graph(MemorySaver())
    thread = f"t-{uuid.uuid4()}"
    config = {"configurable": {"thread_id": thread}}
    app.invoke({"n": 1, "log": []}, config)
    assert app.invoke(Command(resume="1"), config)["n"] == 2
    interrupted, resumed = roots(tracing)
    assert not any(e.name in (attr.EVENT_INTERRUPT, attr.EVENT_RESUME)
                   for s in tracing.spans() for e in s.events)  # no lifecycle events came
    assert_links_to(resumed, interrupted, "thread_id")
    assert resumed.links[0].attributes[attr.THREAD_ID] == thread
    assert_no_errors(tracing)


def test_resume_of_a_thread_interrupted_elsewhere_has_no_link(tracing: Tracing,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replica interrupted the thread: nothing in memory, the conversation id ties them."""
    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.types import Command

    app = approval_graph(MemorySaver())
    thread = f"t-{uuid.uuid4()}"
    config = {"callbacks": [tracing.handler()], "configurable": {"thread_id": thread}}
    app.invoke({"n": 1, "log": []}, config)
    monkeypatch.setattr(resume, "MEMORY", resume.InterruptMemory())  # a fresh process's memory
    app.invoke(Command(resume="1"), config)
    interrupted, resumed = roots(tracing)
    assert not resumed.links
    assert resumed.attributes[attr.GRAPH_RESUMED] is True
    assert resumed.attributes[attr.GEN_AI_CONVERSATION_ID] == thread
    assert interrupted.attributes[attr.GEN_AI_CONVERSATION_ID] == thread


@needs_events
def test_handler_receives_langgraphs_lifecycle_events(tracing: Tracing) -> None:
    from langgraph.callbacks import GraphCallbackHandler

    assert isinstance(tracing.handler(), GraphCallbackHandler)
    assert issubclass(OTelHandler, GraphCallbackHandler)


@needs_events
def test_memory_is_bounded_under_100k_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """100k interrupted threads, as LangGraph's on_interrupt reports them: the most recent
    10,000 threads (and checkpoints) are remembered, and the memory stops growing."""
    from langgraph.callbacks import GraphInterruptEvent
    from langgraph.types import Command
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    from otel_callbacks.conversation import for_root
    from otel_callbacks.registry import RunState

    memory = resume.InterruptMemory()
    monkeypatch.setattr(resume, "MEMORY", memory)
    empty = Context()

    def interrupt(i: int) -> None:
        span = NonRecordingSpan(SpanContext(i + 1, i + 1, False))
        state = RunState(uuid.UUID(int=i + 1), span, empty, None, "chain", 0,
                         for_root({"thread_id": f"thread-{i}"}, None))
        resume.on_interrupt(state, GraphInterruptEvent(
            run_id=state.run_id, status="pending", checkpoint_id=f"cp-{i}", checkpoint_ns=(),
            interrupts=()))

    def held_bytes() -> int:  # the tables, their keys and the span contexts they hold
        tables = (memory._threads, memory._checkpoints)
        return sum(sys.getsizeof(t) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in t.items())
                   for t in tables)

    for i in range(50_000):
        interrupt(i)
    half = held_bytes()
    for i in range(50_000, 100_000):
        interrupt(i)
    assert len(memory) == resume.MAX_REMEMBERED_THREADS == 10_000
    assert len(memory._checkpoints) == 10_000
    assert held_bytes() <= half * 1.01 and half < 8_000_000, (half, held_bytes())

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = OTelHandler(tracer_provider=provider)
    for thread in ("thread-99999", "thread-0"):  # the most recent one, the oldest one
        run_id = uuid.uuid4()
        handler.on_chain_start(None, Command(resume="1"), run_id=run_id,
                               metadata={"thread_id": thread}, name="LangGraph")
        handler.on_chain_end({"n": 2}, run_id=run_id)
    recent, oldest = exporter.get_finished_spans()
    assert [(l.context.span_id, l.attributes[attr.THREAD_ID]) for l in recent.links] == [
        (100_000, "thread-99999")]
    assert not oldest.links and oldest.attributes[attr.GRAPH_RESUMED] is True
    assert not resume.expected


def _interrupted_turn(handler: OTelHandler, thread: str, interrupt: BaseException) -> None:
    """What LangGraph reports for an interrupted invocation, without its lifecycle events."""
    root, node = uuid.uuid4(), uuid.uuid4()
    metadata = {"thread_id": thread}
    handler.on_chain_start(None, {"n": 1}, run_id=root, metadata=metadata, name="LangGraph")
    handler.on_chain_start(None, {"n": 1}, run_id=node, parent_run_id=root,
                           metadata={**metadata, "langgraph_node": "ask"}, name="ask")
    handler.on_chain_error(interrupt, run_id=node, parent_run_id=root)
    handler.on_chain_end({"n": 1}, run_id=root)


def test_handler_remembers_only_the_most_recent_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph.errors import GraphInterrupt
    from opentelemetry.sdk.trace import TracerProvider

    memory = resume.InterruptMemory(max_threads=100)
    monkeypatch.setattr(resume, "MEMORY", memory)
    handler = OTelHandler(tracer_provider=TracerProvider())
    for i in range(1_000):
        _interrupted_turn(handler, f"thread-{i}", GraphInterrupt())
    assert len(memory) == 100 and len(handler._registry) == 0
    assert memory.find(None, "thread-899") is None
    assert memory.find(None, "thread-999") is not None


def test_interrupt_memory_prefers_the_checkpoint_and_evicts_the_oldest() -> None:
    from opentelemetry.trace import SpanContext, TraceFlags

    def ctx(n: int) -> SpanContext:
        return SpanContext(n, n, False, TraceFlags(1))

    memory = resume.InterruptMemory(max_threads=3)
    memory.remember("a", ctx(1), "cp-1")
    memory.remember("a", ctx(2), "cp-2")  # a second interrupt on thread a
    assert memory.find("cp-1", "a") == (ctx(1), "checkpoint_id")
    assert memory.find("cp-unknown", "a") == (ctx(2), "thread_id")
    for n, thread in enumerate("bcd", start=3):
        memory.remember(thread, ctx(n))
    assert len(memory) == 3
    assert memory.find(None, "a") is None  # evicted: the oldest thread
    assert memory.find("cp-2", "x") == (ctx(2), "checkpoint_id")  # checkpoints have their own cap
    for n in range(3):
        memory.remember(None, ctx(10 + n), f"cp-new-{n}")
    assert memory.find("cp-1", None) is None and memory.find("cp-2", None) is None
    assert memory.find("cp-new-0", None) == (ctx(10), "checkpoint_id")


@needs_events
def test_odd_lifecycle_events_are_ignored(tracing: Tracing) -> None:
    """Unknown runs, missing fields, wrong types: no exception, no span changed."""
    from langgraph.callbacks import GraphInterruptEvent, GraphResumeEvent

    handler = tracing.handler()
    handler.raise_error = True  # a tracing bug would surface here instead of being logged
    run_id = uuid.uuid4()
    handler.on_chain_start(None, {"n": 1}, run_id=run_id, metadata={"thread_id": 7}, name="g")
    for event in (None, object(), GraphResumeEvent(uuid.uuid4(), "pending", "cp", ()),
                  GraphInterruptEvent(run_id, "pending", None, None, None),  # type: ignore[arg-type]
                  GraphResumeEvent(run_id, "pending", 12, ("sub",))):  # type: ignore[arg-type]
        handler.on_interrupt(event)
        handler.on_resume(event)
    handler.on_chain_end({}, run_id=run_id)
    (span,) = tracing.spans()
    assert [e.name for e in span.events] == [attr.EVENT_INTERRUPT, attr.EVENT_RESUME,
                                             attr.EVENT_INTERRUPT, attr.EVENT_RESUME]
    assert span.attributes[attr.GEN_AI_CONVERSATION_ID] == "7"
