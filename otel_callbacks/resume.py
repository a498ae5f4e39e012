"""Resumed LangGraph runs link to the run they continue.

A graph interrupted on a thread (``interrupt()``, ``interrupt_before``) is resumed later by a
new invocation on the same thread (``Command(resume=...)``): a new trace. Its root span gets a
span link to the root span of the interrupted trace, with ``langgraph.link.reason = "resume"``.

Where LangGraph reports graph lifecycle events (``langgraph.callbacks.GraphCallbackHandler``'s
``on_interrupt`` / ``on_resume``, with checkpoint ids), the interrupted span gets a
``langgraph.interrupt`` event and the link is exact: the checkpoint the run resumed from is the
one it was interrupted at. Without them, an interrupt is seen as LangGraph's ``GraphInterrupt``
passing through a run, and a run started with ``Command(resume=...)`` links to the thread's
latest interrupt when it ends.

Memory is bounded and process-wide (any handler instance may trace the resumed run): the most
recent ``MAX_REMEMBERED_THREADS`` interrupted threads and as many interrupt checkpoints. A run
resumed in another process (another replica) cannot be linked from memory; its spans still
carry the same ``gen_ai.conversation.id``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import wrapt
from opentelemetry.trace import SpanContext

from . import attributes as attr
from .content import utf8_safe, utf8_safe_attributes

logger = logging.getLogger("otel_callbacks")

MAX_REMEMBERED_THREADS = 10_000
_INTERRUPTS = frozenset({"GraphInterrupt", "NodeInterrupt"})


class InterruptMemory:
    """Recently interrupted threads and checkpoints -> the interrupted trace's root span."""

    def __init__(self, max_threads: int = MAX_REMEMBERED_THREADS) -> None:
        self.max_threads = max(1, max_threads)
        self._threads: OrderedDict[str, SpanContext] = OrderedDict()
        self._checkpoints: OrderedDict[str, SpanContext] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._threads)

    def remember(self, thread_id: str | None, root: SpanContext,
                 checkpoint_id: str | None = None) -> None:
        with self._lock:
            for table, key in ((self._threads, thread_id), (self._checkpoints, checkpoint_id)):
                if key is None:
                    continue
                table[key] = root
                table.move_to_end(key)
                while len(table) > self.max_threads:
                    table.popitem(last=False)

    def find(self, checkpoint_id: str | None, thread_id: str | None
             ) -> tuple[SpanContext, str] | None:
        """(root span of the interrupted trace, what matched), the exact checkpoint first."""
        with self._lock:
            if checkpoint_id is not None and checkpoint_id in self._checkpoints:
                return self._checkpoints[checkpoint_id], "checkpoint_id"
            if thread_id is not None and thread_id in self._threads:
                return self._threads[thread_id], "thread_id"
        return None


MEMORY = InterruptMemory()
# Runs started to resume a thread, waiting for LangGraph's resume event (exact link) or, if
# none comes, for their end (link by thread). Each keeps the thread's last interrupt as it was
# at the run's start: by its end the run may have been interrupted again itself. Bounded: runs
# that never end fall out.
expected: OrderedDict[Any, tuple[str, tuple[SpanContext, str] | None]] = OrderedDict()
_MAX_EXPECTED = 1_000


def _thread(state: Any) -> str | None:
    ids = state.ids
    return ids.thread_id if ids is not None else None


def on_chain_start(state: Any, inputs: Any) -> None:
    """A run whose input resumes its thread (``Command(resume=...)``, or ``None`` after a
    breakpoint) expects a link."""
    thread = _thread(state)
    if thread is None:
        return
    if (inputs is None and state.root is state) or (
            type(inputs).__name__ == "Command" and getattr(inputs, "resume", None) is not None):
        expected[state.run_id] = (thread, MEMORY.find(None, thread))
        while len(expected) > _MAX_EXPECTED:
            expected.popitem(last=False)


def on_error(state: Any, error: BaseException) -> None:
    """LangGraph's interrupt passing through a run: remember where its thread stopped."""
    if type(error).__name__ in _INTERRUPTS:
        thread = _thread(state)
        if thread is not None:
            MEMORY.remember(thread, state.root.span.get_span_context())


def settle(run_id: Any, state: Any) -> None:
    """At the end of a run that expected a resume event and got none: link by thread."""
    waiting = expected.pop(run_id, None)
    if waiting is not None:
        thread, found = waiting
        _link(state, None, thread, found)


def on_interrupt(state: Any, event: Any) -> None:
    """LangGraph's ``on_interrupt``: an event on the interrupted run's span; remember it."""
    if state is None:
        return
    interrupts = getattr(event, "interrupts", None)
    if not isinstance(interrupts, (tuple, list)):
        interrupts = ()
    ids = [i for i in (getattr(it, "id", None) for it in interrupts) if isinstance(i, str)]
    checkpoint_id = getattr(event, "checkpoint_id", None)
    attributes: dict[str, Any] = {attr.INTERRUPT_COUNT: len(interrupts)}
    if isinstance(checkpoint_id, str):
        attributes[attr.CHECKPOINT_ID] = checkpoint_id
    status = getattr(event, "status", None)
    if isinstance(status, str):
        attributes[attr.INTERRUPT_STATUS] = status
    if ids:
        attributes[attr.INTERRUPT_IDS] = ids[:32]
    state.span.add_event(attr.EVENT_INTERRUPT, utf8_safe_attributes(attributes))
    if not getattr(event, "checkpoint_ns", ()):  # the top-level graph, not a subgraph
        MEMORY.remember(_thread(state), state.root.span.get_span_context(),
                        checkpoint_id if isinstance(checkpoint_id, str) else None)


def on_resume(state: Any, event: Any) -> None:
    """LangGraph's ``on_resume``: link exactly, by the checkpoint the run resumed from."""
    if state is None:
        return
    checkpoint_id = getattr(event, "checkpoint_id", None)
    checkpoint_id = checkpoint_id if isinstance(checkpoint_id, str) else None
    state.span.add_event(attr.EVENT_RESUME,
                         {attr.CHECKPOINT_ID: utf8_safe(checkpoint_id)} if checkpoint_id else {})
    if getattr(event, "checkpoint_ns", ()):  # a subgraph: the top-level graph links
        return
    expected.pop(state.run_id, None)
    _link(state, checkpoint_id, _thread(state))


def _link(state: Any, checkpoint_id: str | None, thread: str | None,
          found: tuple[SpanContext, str] | None = None) -> None:
    """Link the resumed trace's root span to the interrupted trace's root span (``found``
    when already looked up, else looked up now)."""
    span = state.root.span
    span.set_attribute(attr.GRAPH_RESUMED, True)
    if found is None:
        found = MEMORY.find(checkpoint_id, thread)
    if found is None:
        logger.debug("otel-callbacks: resumed run on thread %s: interrupted run not in memory", thread)
        return
    target, matched_by = found
    attributes: dict[str, Any] = {attr.LINK_REASON: attr.LINK_REASON_RESUME,
                                  attr.LINK_MATCHED_BY: matched_by}
    if checkpoint_id is not None and matched_by == "checkpoint_id":
        attributes[attr.CHECKPOINT_ID] = checkpoint_id
    if thread is not None:
        attributes[attr.THREAD_ID] = thread
    span.add_link(target, attributes)


def adopt_graph_lifecycle(handler_cls: type) -> None:
    """Make ``handler_cls`` a ``GraphCallbackHandler`` once LangGraph defines that class.

    LangGraph sends ``on_interrupt`` / ``on_resume`` only to instances of its class, which lives
    in ``langgraph.callbacks`` (importing it costs about half a second, so it is never imported
    for an app that does not use LangGraph). When that module is imported, the class is added
    as a base of ``handler_cls``: live handlers start receiving the events at once. Releases
    without the module keep the fallback (the interrupt exception, the resume command).
    """
    def adopt(module: Any) -> None:
        base = getattr(module, "GraphCallbackHandler", None)
        try:
            if isinstance(base, type) and not issubclass(handler_cls, base):
                handler_cls.__bases__ = (*handler_cls.__bases__, base)
        except TypeError as exc:  # an incompatible layout: keep the fallback
            logger.debug("otel-callbacks: LangGraph lifecycle events unavailable: %r", exc)

    wrapt.register_post_import_hook(adopt, "langgraph.callbacks")
