"""OTelHandler: every start/end/error pair of a run becomes one OpenTelemetry span.

Each callback is a few lines over the run registry (``registry.py``), the pure mappings
(``mapping.py``) and the content policy (``content.py``). Every public callback is guarded:
tracing never raises into the traced app unless the user set ``raise_error``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from . import attributes as attr
from . import context_bridge, mapping
from .content import DEFAULT_MAX_LENGTH, ContentPolicy, scrub_secrets
from .context_bridge import claim_pending_scope
from .handlers import BaseCallbackHandler
from .messages import split_system, to_genai_message
from .metrics import GenAIMetrics
from .registry import FORGOTTEN, RunRegistry, RunState, active_context
from .version import __version__

logger = logging.getLogger("otel_callbacks")

F = TypeVar("F", bound=Callable[..., Any])
_logged: set[tuple[str, str]] = set()  # (event, what went wrong) already logged
_live_handlers: weakref.WeakSet[OTelHandler] = weakref.WeakSet()
_INTERNAL = SpanKind.INTERNAL
_NOT_STREAMING = RunState(FORGOTTEN, trace.INVALID_SPAN, Context(), None, "", 0)


def _guarded(method: F) -> F:
    """Never let a tracing bug reach the app: log once per (event, error type) instead.

    The callbacks every run goes through (start/end, tokens) inline the same ``try`` and call
    ``_skipped`` instead: a wrapper frame costs as much as a third of our own work per span.
    """
    event = method.__name__

    @functools.wraps(method)
    def wrapper(self: OTelHandler, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            _skipped(self, event, exc)
            return None

    return wrapper  # type: ignore[return-value]


def _skipped(handler: OTelHandler, event: str, exc: Exception) -> None:
    """A callback failed: re-raise if the user asked for it, else log once and carry on."""
    if handler.raise_error:
        raise exc
    _log_once(event, type(exc).__qualname__, logging.WARNING,
              "%s failed and was skipped: %r", event, exc, exc_info=exc)


def _log_once(event: str, kind: str, level: int, message: str, *args: Any,
              exc_info: bool | BaseException = False) -> None:
    """Log the first occurrence of each (event, kind): a broken app must not flood its logs."""
    key = (event, kind)
    if key not in _logged:
        _logged.add(key)
        logger.log(level, "otel-callbacks: " + message, *args, exc_info=exc_info)


class OTelHandler(BaseCallbackHandler):
    """A LangChain callback handler that records every run as an OpenTelemetry span.

    Args:
        tracer_provider: where spans go; the global provider when omitted.
        meter_provider: enables GenAI metrics; the global one is used only if configured.
        capture_content: record prompts, outputs, tool arguments and documents. Defaults to
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Secrets are never recorded.
        redact: called with every content value before export; return the text to keep or None.
        max_content_length: cap on each recorded content value (a marker says what was cut).
        max_open_runs: runs kept open at most; beyond it the oldest are ended as evicted.
        max_token_events: streamed tokens recorded as span events per run (the count is exact).
    """

    run_inline = True  # cheap and non-blocking; keeps async starts in the run's own task
    raise_error = False

    def __init__(self, tracer_provider: TracerProvider | None = None, *,
                 meter_provider: MeterProvider | None = None,
                 capture_content: bool | None = None,
                 redact: Callable[[str], str | None] | None = None,
                 max_content_length: int = DEFAULT_MAX_LENGTH,
                 max_open_runs: int = 10_000,
                 max_token_events: int = 8) -> None:
        super().__init__()
        self._tracer = trace.get_tracer("otel_callbacks", __version__, tracer_provider=tracer_provider)
        self._registry = RunRegistry(max_open_runs)
        self._open_run = self._registry.get  # bound once: looked up per streamed token
        self._content = ContentPolicy(capture_content, max_content_length, redact)
        self._metrics = GenAIMetrics.create(meter_provider)
        self._token_events_limit = max(1, max_token_events)  # the first token is always kept
        # The run that streamed the last token: the next token is almost always its own. Once
        # the registry drops that run its id no longer matches, so no reset is needed here.
        self._streaming: RunState = _NOT_STREAMING
        self._provider = tracer_provider
        _register_for_exit(self)
        # A handler dropped while runs are still open ends their spans as it goes.
        weakref.finalize(self, _end_open_runs, self._registry).atexit = False
        context_bridge.install()

    # --- lifecycle core ------------------------------------------------------------------
    def _start(self, run_id: Any, parent_run_id: Any, run_type: str, name: str,
               attributes: dict[str, Any], kind: SpanKind = _INTERNAL) -> RunState | None:
        registry = self._registry
        if registry.get(run_id) is not None:
            _log_once("start", "duplicate", logging.DEBUG,
                      "run %s started twice; the second start is ignored", run_id)
            return None
        parent = registry.get(parent_run_id) if parent_run_id is not None else None
        parent_context: Context | None
        if parent is not None:
            parent_context = parent.context
        elif parent_run_id is not None:
            # Parent traced by another handler (or not at all): its span, else the current one.
            parent_context = active_context(parent_run_id)
        else:
            parent_context = None
        span = self._tracer.start_span(name, context=parent_context, kind=kind, attributes=attributes)
        # The run's context extends its parent's (or the caller's), so baggage flows through.
        state = RunState(run_id, span, trace.set_span_in_context(span, parent_context),
                         parent.root if parent is not None else None, run_type, time.time_ns())
        for evicted in registry.add(state):
            evicted.span.set_attribute(attr.RUN_EVICTED, True)
            evicted.span.end()
        return state

    def _end(self, run_id: Any, attributes: dict[str, Any] | None = None,
             error: BaseException | None = None) -> RunState | None:
        state = self._registry.pop(run_id)
        if state is None:
            _log_once("end", "unknown run", logging.DEBUG, "end/error for unknown run %s ignored", run_id)
            return None
        span = state.span
        if state.token_count:
            span.set_attribute(attr.LLM_TOKEN_COUNT, state.token_count)
            span.set_attribute(attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                               (state.first_token_ns - state.start_ns) / 1e9)
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            _record_error(span, error)
        if state.metric_attributes is not None and self._metrics is not None:
            self._metrics.record(state, attributes, error)
        if state.root is state and state.descendants:
            for orphan in self._registry.pop_descendants(state):
                orphan.span.set_attribute(attr.RUN_ORPHANED, True)
                orphan.span.add_event(attr.EVENT_ORPHANED, {"reason": "root run ended first"})
                orphan.span.end()
        span.end()
        return state

    def _event(self, run_id: Any, name: str, attributes: dict[str, Any]) -> RunState | None:
        state = self._registry.get(run_id)
        if state is None:
            _log_once(name, "unknown run", logging.DEBUG, "%s for unknown run %s ignored", name, run_id)
            return None
        state.span.add_event(name, attributes)
        return state

    def _content_attr(self, attributes: dict[str, Any], key: str, value: Any) -> None:
        if self._content.enabled:
            text = self._content.render(value)
            if text is not None:
                attributes[key] = text

    def close(self) -> None:
        """End every span still open (marked evicted) and flush them, e.g. at interpreter exit."""
        if _end_open_runs(self._registry):
            provider = self._provider or trace.get_tracer_provider()
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(2_000)

    # --- chains ----------------------------------------------------------------------------
    # The hot callbacks name every keyword LangChain passes them (``name``, ``run_type``,
    # ``parent_run_id``, ``tags``), so calling them builds no ``**kwargs`` dict.
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, name: str | None = None,
                       run_type: str | None = None, **kwargs: Any) -> None:
        try:
            name = mapping.run_name(serialized, name, "chain")
            attributes = mapping.common_attributes(run_id, attr.CHAIN, tags, metadata)
            span_name, extra = mapping.chain_span(name, tags, metadata)
            if extra:
                attributes.update(extra)
                attributes[attr.RUN_NAME] = name
            if self._content.enabled:
                self._content_attr(attributes, attr.RUN_INPUTS, inputs)
            state = self._start(run_id, parent_run_id, attr.CHAIN, span_name, attributes)
            if state is not None:  # LangGraph's async nodes on Python 3.10 wait for this
                claim_pending_scope(state.context, attr.CHAIN, parent_run_id)
        except Exception as exc:
            _skipped(self, "on_chain_start", exc)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     tags: list[str] | None = None, **kwargs: Any) -> None:
        try:
            if self._content.enabled:
                attributes: dict[str, Any] = {}
                self._content_attr(attributes, attr.RUN_OUTPUTS, outputs)
                self._end(run_id, attributes)
            else:
                self._end(run_id)
        except Exception as exc:
            _skipped(self, "on_chain_end", exc)

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, error)

    # --- models ----------------------------------------------------------------------------
    def _model_start(self, run_type: str, serialized: Any, run_id: Any, parent_run_id: Any,
                     tags: Any, metadata: Any, kwargs: dict[str, Any],
                     input_attrs: Callable[[dict[str, Any]], None]) -> None:
        span_name, kind, model_attrs = mapping.model_span(run_type, serialized, metadata, kwargs)
        attributes = mapping.common_attributes(run_id, run_type, tags, metadata)
        attributes[attr.RUN_NAME] = mapping.run_name(serialized, kwargs.get("name"), run_type)
        attributes.update(model_attrs)
        if self._content.enabled:
            input_attrs(attributes)
        state = self._start(run_id, parent_run_id, run_type, span_name, attributes, kind)
        if state is not None:
            if self._metrics is not None:
                state.metric_attributes = GenAIMetrics.base_attributes(model_attrs)
            claim_pending_scope(state.context, run_type)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                            **kwargs: Any) -> None:
        try:
            def inputs(attributes: dict[str, Any]) -> None:
                system, rest = split_system(messages[0] if messages else [])
                if system:
                    self._content_attr(attributes, attr.GEN_AI_SYSTEM_INSTRUCTIONS, system)
                self._content_attr(attributes, attr.GEN_AI_INPUT_MESSAGES, rest)

            self._model_start(attr.CHAT_MODEL, serialized, run_id, parent_run_id, tags, metadata,
                              kwargs, inputs)
        except Exception as exc:
            _skipped(self, "on_chat_model_start", exc)

    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            def inputs(attributes: dict[str, Any]) -> None:
                self._content_attr(attributes, attr.GEN_AI_INPUT_MESSAGES,
                                   [to_genai_message(p) for p in prompts or ()])

            self._model_start(attr.LLM, serialized, run_id, parent_run_id, tags, metadata, kwargs, inputs)
        except Exception as exc:
            _skipped(self, "on_llm_start", exc)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID,
                         parent_run_id: UUID | None = None, tags: list[str] | None = None,
                         **kwargs: Any) -> None:
        # Hot path (once per streamed token): a counter bump, plus a bounded number of events.
        # ``tags`` is named because LangChain passes it: else a kwargs dict is built per token.
        try:
            state = self._streaming
            if state.run_id is not run_id:  # LangChain passes the same UUID object per token
                found = self._open_run(run_id)
                if found is None:
                    return
                state = self._streaming = found
            if not token and mapping.is_stream_terminator(token, chunk):
                return
            count = state.token_count = state.token_count + 1
            if count <= self._token_events_limit:
                self._token_event(state, token, count)
        except Exception as exc:
            _skipped(self, "on_llm_new_token", exc)

    def _token_event(self, state: RunState, token: Any, count: int) -> None:
        attributes: dict[str, Any] = {"index": count}
        self._content_attr(attributes, "content", token)
        if count == 1:
            state.first_token_ns = time.time_ns()
            state.span.add_event(attr.EVENT_FIRST_TOKEN, attributes, state.first_token_ns)
        else:
            state.span.add_event(attr.EVENT_TOKEN, attributes)

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                   tags: list[str] | None = None, **kwargs: Any) -> None:
        try:
            attributes = mapping.response_attributes(response)
            if self._content.enabled:
                outputs = []
                for generation in mapping.generations(response):
                    message = getattr(generation, "message", None)
                    reason = mapping.generation_finish_reason(generation)
                    if message is not None:
                        outputs.append(to_genai_message(message, reason))
                    else:
                        out = to_genai_message(getattr(generation, "text", generation), reason)
                        out["role"] = "assistant"
                        outputs.append(out)
                self._content_attr(attributes, attr.GEN_AI_OUTPUT_MESSAGES, outputs)
            self._end(run_id, attributes)
        except Exception as exc:
            _skipped(self, "on_llm_end", exc)

    @_guarded
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, error)

    # --- tools and retrievers --------------------------------------------------------------
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        try:
            name = mapping.run_name(serialized, kwargs.get("name"), "tool")
            attributes = mapping.common_attributes(run_id, attr.TOOL, tags, metadata)
            attributes[attr.RUN_NAME] = name
            span_name, tool_attrs = mapping.tool_span(name, serialized, kwargs.get("tool_call_id"),
                                                      inputs)
            attributes.update(tool_attrs)
            self._content_attr(attributes, attr.GEN_AI_TOOL_CALL_ARGUMENTS,
                               inputs if inputs is not None else input_str)
            self._start(run_id, parent_run_id, attr.TOOL, span_name, attributes)
        except Exception as exc:
            _skipped(self, "on_tool_start", exc)

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                    tags: list[str] | None = None, **kwargs: Any) -> None:
        try:
            attributes: dict[str, Any] = {}
            call_id = mapping.tool_call_id(output)
            if call_id is not None:
                attributes[attr.GEN_AI_TOOL_CALL_ID] = call_id
            self._content_attr(attributes, attr.GEN_AI_TOOL_CALL_RESULT, getattr(output, "content", output))
            self._end(run_id, attributes)
        except Exception as exc:
            _skipped(self, "on_tool_end", exc)

    @_guarded
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, error)

    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            name = mapping.run_name(serialized, kwargs.get("name"), "retriever")
            attributes = mapping.common_attributes(run_id, attr.RETRIEVER, tags, metadata)
            attributes[attr.RUN_NAME] = name
            attributes[attr.GEN_AI_OPERATION_NAME] = attr.OP_RETRIEVAL
            self._content_attr(attributes, attr.GEN_AI_RETRIEVAL_QUERY_TEXT, query)
            state = self._start(run_id, parent_run_id, attr.RETRIEVER, f"{attr.OP_RETRIEVAL} {name}",
                                attributes)
            if state is not None:
                claim_pending_scope(state.context, attr.RETRIEVER)
        except Exception as exc:
            _skipped(self, "on_retriever_start", exc)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID,
                         parent_run_id: UUID | None = None, tags: list[str] | None = None,
                         **kwargs: Any) -> None:
        try:
            attributes: dict[str, Any] = {}
            if isinstance(documents, Sequence):
                attributes[attr.RETRIEVAL_DOCUMENT_COUNT] = len(documents)
                if self._content.enabled:
                    self._content_attr(attributes, attr.GEN_AI_RETRIEVAL_DOCUMENTS, [
                        {"id": getattr(d, "id", None), "content": getattr(d, "page_content", d),
                         "metadata": getattr(d, "metadata", None)} for d in documents])
            self._end(run_id, attributes)
        except Exception as exc:
            _skipped(self, "on_retriever_end", exc)

    @_guarded
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, None, error)

    # --- events on the run's span ----------------------------------------------------------
    @_guarded
    def on_text(self, text: str, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {"length": len(text) if isinstance(text, str) else 0}
        self._content_attr(attributes, "text", text)
        self._event(run_id, attr.EVENT_TEXT, attributes)

    @_guarded
    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        attempt = getattr(retry_state, "attempt_number", None)
        if isinstance(attempt, int):
            attributes["attempt"] = attempt
        outcome = getattr(retry_state, "outcome", None)
        if outcome is not None and getattr(outcome, "failed", False):
            exc = outcome.exception()
            attributes[attr.ERROR_TYPE] = mapping.qualified_name(exc)
            attributes["exception.message"] = scrub_secrets(str(exc))[:1024]
        sleep = getattr(getattr(retry_state, "next_action", None), "sleep", None)
        if isinstance(sleep, (int, float)):
            attributes["sleep_seconds"] = float(sleep)
        state = self._event(run_id, attr.EVENT_RETRY, attributes)
        if state is not None:
            state.retries += 1
            state.span.set_attribute(attr.LLM_RETRY_COUNT, state.retries)

    @_guarded
    def on_agent_action(self, action: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        tool = getattr(action, "tool", None)
        if isinstance(tool, str):
            attributes[attr.GEN_AI_TOOL_NAME] = tool
        self._content_attr(attributes, "tool_input", getattr(action, "tool_input", None))
        self._content_attr(attributes, "log", getattr(action, "log", None))
        self._event(run_id, attr.EVENT_AGENT_ACTION, attributes)

    @_guarded
    def on_agent_finish(self, finish: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        self._content_attr(attributes, "return_values", getattr(finish, "return_values", None))
        self._content_attr(attributes, "log", getattr(finish, "log", None))
        self._event(run_id, attr.EVENT_AGENT_FINISH, attributes)

    @_guarded
    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {"name": str(name)[:256]}
        self._content_attr(attributes, "data", data)
        self._event(run_id, attr.EVENT_CUSTOM, attributes)


def _record_error(span: Any, error: BaseException) -> None:
    name = type(error).__name__
    if not mapping.is_failure(error):
        if isinstance(error, GeneratorExit):  # the consumer stopped iterating
            span.set_attribute(attr.RUN_ABANDONED, True)
        else:
            span.add_event("langgraph.control_flow", {"type": name})
        return
    span.set_attribute(attr.ERROR_TYPE, mapping.qualified_name(error))
    try:
        message = scrub_secrets(str(error))
        stacktrace = scrub_secrets("".join(traceback.format_exception(error)))
        span.record_exception(error, attributes={"exception.message": message,
                                                 "exception.stacktrace": stacktrace})
    except Exception:
        message = "<unprintable error>"
    span.set_status(Status(StatusCode.ERROR, f"{name}: {message}"[:1024]))


def _end_open_runs(registry: RunRegistry) -> int:
    states = registry.pop_all()
    for state in states:
        state.span.set_attribute(attr.RUN_EVICTED, True)
        state.span.end()
    return len(states)


def _register_for_exit(handler: OTelHandler) -> None:
    # Registered with the first handler, i.e. usually after the TracerProvider, so (atexit
    # being last-in first-out) open spans are ended before the provider flushes and shuts down.
    if not _live_handlers:
        atexit.register(_close_live_handlers)
    _live_handlers.add(handler)


def _close_live_handlers() -> None:
    for handler in list(_live_handlers):
        try:
            handler.close()
        except Exception:  # never raise at interpreter exit
            pass
