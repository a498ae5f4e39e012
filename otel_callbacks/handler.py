"""OTelHandler: every start/end/error pair of a run becomes one OpenTelemetry span.

Each callback is a few lines over the run registry (``registry.py``), the pure mappings
(``mapping.py``) and the content policy (``content.py``). Every public callback is guarded:
tracing never raises into the traced app unless the user set ``raise_error``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from . import attributes as attr
from . import context_bridge, mapping, resume
from .budget import AttributeBudget, span_event_limit
from .content import (
    DEFAULT_MAX_LENGTH,
    ContentPolicy,
    scrub_secrets,
    utf8_safe,
    utf8_safe_attributes,
)
from .context_bridge import claim_pending_scope, scope_waiting
from .conversation import for_child, for_root
from .evaluation import remember_root
from .handlers import BaseCallbackHandler
from .messages import split_system, to_genai_message
from .metrics import GenAIMetrics, peek_global_provider
from .registry import (
    _ACTIVE_CONTEXTS,
    NO_RUN,
    RunRegistry,
    RunState,
    UnsampledRunState,
    active_context,
    run_key,
)
from .sampling import children_follow_unsampled_parent
from .stream_usage import StreamUsage
from .tokens import TokenPath, token_callback
from .version import __version__

logger = logging.getLogger("otel_callbacks")

F = TypeVar("F", bound=Callable[..., Any])
_logged: set[tuple[str, str]] = set()  # (event, what went wrong) already logged
_live_handlers: weakref.WeakSet[OTelHandler] = weakref.WeakSet()
_INTERNAL = SpanKind.INTERNAL
try:  # the SDK's span class: one it has just started records (else it returns a non-recording
    # span), which saves asking ``is_recording()`` per run
    from opentelemetry.sdk.trace import _Span as _SDK_SPAN
except ImportError:  # pragma: no cover - another SDK: ask every span
    _SDK_SPAN = None  # type: ignore[assignment,misc]
_MODEL_RUNS = frozenset({attr.CHAT_MODEL, attr.LLM})
_MEASURED_RUNS = _MODEL_RUNS | {attr.TOOL}  # the runs metrics count
# The most that flushing spans of runs still open adds to interpreter exit (or to ``close()``),
# whatever the number of handlers: an unreachable collector must not hold the app's exit.
EXIT_FLUSH_SECONDS = 2.0


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


def _unknown_run_ended(run_id: Any) -> None:
    _log_once("end", "unknown run", logging.DEBUG, "end/error for unknown run %s ignored", run_id)


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
        meter_provider: enables GenAI metrics; when omitted, the global one once it is set.
        capture_content: record prompts, outputs, tool arguments and documents. Defaults to
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Secrets are never recorded.
        redact: called with every content value before export; return the text to keep or None.
        max_content_length: cap on each recorded content value (a marker says what was cut).
        max_open_runs: runs kept open at most; beyond it the oldest are ended as evicted.
        max_token_events: streamed tokens recorded as span events per run (the count is exact);
            kept below the provider's span event limit so the first-token event is never evicted.
        model_metrics: record the metrics of model runs (GenAI duration, token usage, time to
            first chunk, our prompt-cache tokens). Set False when a provider instrumentation
            (the official OpenAI one, say) records them for the same calls, so they are not
            counted twice; spans and tool metrics are unaffected.
    """

    run_inline = True  # cheap and non-blocking; keeps async starts in the run's own task
    raise_error = False

    def __init__(self, tracer_provider: TracerProvider | None = None, *,
                 meter_provider: MeterProvider | None = None,
                 capture_content: bool | None = None,
                 redact: Callable[[str], str | None] | None = None,
                 max_content_length: int = DEFAULT_MAX_LENGTH,
                 max_open_runs: int = 10_000,
                 max_token_events: int = 8,
                 model_metrics: bool = True) -> None:
        super().__init__()
        self._tracer = trace.get_tracer("otel_callbacks", __version__, tracer_provider=tracer_provider)
        self._registry = RunRegistry(max_open_runs)
        # The open run for a key (``registry.run_key``): a C-level lookup (``_find_run``).
        self._open_run = self._registry.find
        self._content = ContentPolicy(capture_content, max_content_length, redact)
        self._metrics = GenAIMetrics.create(meter_provider)
        self._metrics_from_global = meter_provider is None
        self._model_metrics = model_metrics
        self._token_events_limit = _token_events_within(max_token_events, tracer_provider)
        self._tokens = TokenPath(self)
        self._on_token = token_callback(self._tokens)
        if type(self).on_llm_new_token is OTelHandler.on_llm_new_token:  # not overridden
            # Found per token as it is, without a new bound method (see ``tokens.py``).
            self.on_llm_new_token = self._on_token  # type: ignore[method-assign]
        self._provider = tracer_provider
        self._budget = AttributeBudget.for_provider(tracer_provider)
        self._start_rooms = self._budget.start_rooms
        # Whether the sampler drops every child of an unsampled run (asked once, when needed).
        self._children_follow_parent: bool | None = None
        _register_for_exit(self)
        # A handler dropped while runs are still open ends their spans as it goes.
        weakref.finalize(self, _end_open_runs, self._registry, self._metrics,
                         self._budget).atexit = False
        context_bridge.install()

    def _find_run(self, run_id: Any) -> RunState | None:
        """This handler's open run for a run id (a start's parent id, a token's run id), None
        for None (a root's parent): the registry's own dict lookup, by ``run_key``."""
        if run_id is None:
            return None
        return self._open_run(run_id.int if run_id.__class__ is UUID else run_key(run_id))

    def _measuring(self) -> bool:
        """Whether runs are measured; with no provider given, from when the global one is set
        (until then, one C-level peek per model or tool run)."""
        if (self._metrics is None and self._metrics_from_global
                and peek_global_provider() is not None):
            self._metrics = GenAIMetrics.create(None)
        return self._metrics is not None

    # --- lifecycle core ------------------------------------------------------------------
    def _start(self, run_id: Any, parent_run_id: Any, parent: RunState | None, run_type: str,
               name: str, attributes: dict[str, Any], metadata: Any, kind: SpanKind = _INTERNAL
               ) -> RunState | None:
        """Start the run's span; ``parent`` is this handler's open parent run, if any."""
        if run_id.__class__ is UUID:
            key = run_id.int
        else:
            key = run_key(run_id)
            if key is None:  # what a root's missing parent id would find
                _log_once("start", "no run id", logging.WARNING, "a run started without a run id "
                          "is not traced")
                return None
        if key in _ACTIVE_CONTEXTS:  # traced already: by us (a second start) or another handler
            if self._registry.get(run_id) is not None:
                _log_once("start", "duplicate", logging.DEBUG,
                          "run %s started twice; the second start is ignored", run_id)
                return None
            if self._traced_on_same_provider(run_id):
                return None
        parent_context: Context | None
        if parent is not None:
            parent_context = parent.context
            # Conversation/user ids: the parent's, unless this run's metadata names others.
            ids = for_child(parent.ids, metadata) if metadata else parent.ids
        else:
            # Parent traced by another handler (or not at all): its span, else the current one.
            parent_context = active_context(parent_run_id) if parent_run_id is not None else None
            ids = for_root(metadata, parent_context)  # once per tree: baggage, then metadata
        if ids is not None:
            attributes.update(ids.attributes)
        near_limit = len(attributes) > self._start_rooms[run_type]
        if near_limit:
            attributes = self._budget.fit_start(attributes, run_type)
        if not name.isascii():
            name = utf8_safe(name)
        # ``attributes`` are UTF-8-safe where they were made (mapping, names, content, ids):
        # a gate here would check every run's attributes again, most of them cached.
        # Positional, in the API's order (name, context, kind, attributes): a call with keywords
        # costs more, once per run.
        span = self._tracer.start_span(name, parent_context, kind, attributes)
        # The run's context extends its parent's (or the caller's), so baggage flows through.
        state = (RunState if span.__class__ is _SDK_SPAN or span.is_recording()
                 else UnsampledRunState)(
            run_id, span, trace.set_span_in_context(span, parent_context),
            parent.root if parent is not None else None, run_type, time.time_ns(), ids)
        if near_limit:
            state.near_limit = True
        evicted = self._registry.add(state, key)  # ``_register``, inline: once per run
        if evicted:
            _finish_all(evicted, self._metrics, _evicted_marks, self._budget)
        return state

    def _register(self, state: RunState) -> None:
        evicted = self._registry.add(state)
        if evicted:
            _finish_all(evicted, self._metrics, _evicted_marks, self._budget)

    def _unsampled_child(self, run_id: Any, parent_run_id: Any, parent: RunState,
                         run_type: str) -> bool:
        """Start a run of an unsampled trace with no span work, when the sampler would drop it.

        The run is registered with its parent's (unsampled) span and context, so its children
        find their parent and take this path too, and the context bridge makes the unsampled
        context current where the run executes: user and HTTP spans inside are dropped as well.
        Called for a parent that does not record; returns False (build the span as usual)
        when the sampler might keep a child of an unsampled parent.
        """
        follows = self._children_follow_parent
        if follows is None:
            provider = self._provider or trace.get_tracer_provider()
            follows = children_follow_unsampled_parent(provider)
            if not isinstance(provider, trace.ProxyTracerProvider):
                self._children_follow_parent = follows
        if not follows or (run_type in _MEASURED_RUNS
                           and (run_type == attr.TOOL or self._model_metrics)
                           and self._measuring()):
            return False  # metrics count every model and tool call, sampled or not
        if run_id is not None and self._registry.get(run_id) is None:  # else a duplicate: ignored
            state = UnsampledRunState(run_id, parent.span, parent.context, parent.root, run_type,
                                      0, parent.ids)
            self._register(state)
            # Whatever waits for this run's start (a model's or retriever's call, LangGraph's
            # async node on Python 3.10) gets the unsampled context, as a sampled run's span.
            if scope_waiting() is not None:
                claim_pending_scope(state.context, run_type, parent_run_id)
        return True

    def _end(self, run_id: Any, attributes: dict[str, Any] | None = None,
             error: BaseException | None = None, state: RunState | None = None
             ) -> RunState | None:
        """End the run (``state``: already taken out of the registry by the caller)."""
        if state is None:
            state = self._registry.pop(run_id)
            if state is None:
                _unknown_run_ended(run_id)
                return None
        try:
            if state.ids is not None:
                if error is not None:
                    resume.on_error(state, error)  # an interrupt: remember where the thread stopped
                if resume.expected:
                    resume.settle(run_id, state)  # a resume no LangGraph event linked: by thread
            if state.root is state:
                if state.tree:  # removed from it already: what is left are its descendants
                    # Runs still open under an ending root (e.g. the model of an abandoned chain
                    # stream, whose own GeneratorExit comes later): ended now, keeping their data.
                    abandoned = isinstance(error, mapping.ABANDONMENT)
                    _finish_all(self._registry.pop_descendants(state), self._metrics,
                                _abandoned_orphan_marks if abandoned else _orphan_marks,
                                self._budget)
                remember_root(run_id, state.span.get_span_context(), state.ids, self._tracer)
        finally:
            _finish(state, self._metrics, attributes, error, self._budget)
        return state

    def _event(self, run_id: Any, name: str, attributes: dict[str, Any]) -> RunState | None:
        state = self._registry.get(run_id)
        if state is None:
            _log_once(name, "unknown run", logging.DEBUG, "%s for unknown run %s ignored", name, run_id)
            return None
        state.span.add_event(name, utf8_safe_attributes(attributes))
        return state

    def _content_attr(self, attributes: dict[str, Any], key: str, value: Any) -> None:
        if self._content.enabled:
            text = self._content.render(value)
            if text is not None:
                attributes[key] = utf8_safe(text)

    def close(self) -> None:
        """End every span still open (marked evicted) and flush them, waiting at most
        ``EXIT_FLUSH_SECONDS`` (the flush goes on in the background if the collector is slow)."""
        if _end_open_runs(self._registry, self._metrics, self._budget):
            _flush_within([self._tracer_provider()], EXIT_FLUSH_SECONDS)

    def _tracer_provider(self) -> Any:
        return self._provider if self._provider is not None else trace.get_tracer_provider()

    def _traced_on_same_provider(self, run_id: Any) -> bool:
        """Another handler already traces this run into our tracer provider (e.g. one in the
        config and one on the model): one span per run and provider, the first handler's."""
        provider = self._tracer_provider()
        for other in list(_live_handlers):
            if (other is not self and other._registry.get(run_id) is not None
                    and other._tracer_provider() is provider):
                _log_once("start", "traced twice", logging.DEBUG,
                          "run %s is traced by another handler on the same provider", run_id)
                return True
        return False

    # --- copies: a handler is a live connection to a provider, shared, never duplicated -----
    def __copy__(self) -> OTelHandler:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> OTelHandler:
        # ``model.model_copy(deep=True)`` and ``copy.deepcopy(chain)`` copy callbacks too: the
        # copy must trace into the same tracer and run registry (its runs nest with ours).
        return self

    def __reduce__(self) -> Any:
        raise TypeError("OTelHandler cannot be pickled: it holds a live tracer provider and the "
                        "runs open in this process; create one in the process that runs the chain")

    # --- chains ----------------------------------------------------------------------------
    # The hot callbacks name every keyword LangChain passes them (``name``, ``run_type``,
    # ``parent_run_id``, ``tags``), so calling them builds no ``**kwargs`` dict.
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, name: str | None = None,
                       run_type: str | None = None, **kwargs: Any) -> None:
        try:
            parent = self._find_run(parent_run_id)
            if (parent is not None and not parent.recording
                    and self._unsampled_child(run_id, parent_run_id, parent, attr.CHAIN)):
                return
            if name.__class__ is not str or not name or not name.isascii():  # else as it is
                name = mapping.run_name(serialized, name, "chain")
            attributes = mapping.common_attributes(run_id, attr.CHAIN, tags, metadata)
            span_name, extra = mapping.chain_span(name, tags, metadata)
            if extra:
                attributes.update(extra)
                attributes[attr.RUN_NAME] = name
            if self._content.enabled:
                self._content_attr(attributes, attr.RUN_INPUTS, inputs)
            state = self._start(run_id, parent_run_id, parent, attr.CHAIN, span_name, attributes,
                                metadata)
            if state is not None:
                if scope_waiting() is not None:  # LangGraph's async nodes on Python 3.10
                    claim_pending_scope(state.context, attr.CHAIN, parent_run_id)
                if state.ids is not None and inputs.__class__ is not dict:
                    resume.on_chain_start(state, inputs)  # Command(resume=...) expects a link
        except Exception as exc:
            _skipped(self, "on_chain_start", exc)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     tags: list[str] | None = None, **kwargs: Any) -> None:
        try:
            if self._content.enabled:
                attributes: dict[str, Any] = {}
                try:
                    self._content_attr(attributes, attr.RUN_OUTPUTS, outputs)
                finally:  # the span ends whatever reading the output raised
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
                     tags: Any, metadata: Any, kwargs: dict[str, Any], inputs: Any) -> None:
        parent = self._find_run(parent_run_id)
        if (parent is not None and not parent.recording
                and self._unsampled_child(run_id, parent_run_id, parent, run_type)):
            return
        class_name = mapping.serialized_name(serialized)  # read once: run name and span label
        span_name, kind, model_attrs = mapping.model_span(run_type, serialized, metadata, kwargs,
                                                          class_name)
        attributes = mapping.common_attributes(run_id, run_type, tags, metadata)
        attributes[attr.RUN_NAME] = mapping.run_name(None, kwargs.get("name"),
                                                     class_name or run_type)
        attributes.update(model_attrs)
        if self._content.enabled:
            self._input_attrs(run_type, attributes, inputs)
        state = self._start(run_id, parent_run_id, parent, run_type, span_name, attributes,
                            metadata, kind)
        if state is not None:
            if self._model_metrics and self._measuring():
                state.metric_attributes = GenAIMetrics.base_attributes(model_attrs)
            if scope_waiting() is not None:  # its stream's scope
                claim_pending_scope(state.context, run_type)

    def _input_attrs(self, run_type: str, attributes: dict[str, Any], inputs: Any) -> None:
        """The model's input as content attributes: a chat model's messages (system
        instructions apart) or a completion model's prompts."""
        if run_type == attr.CHAT_MODEL:
            system, rest = split_system(inputs[0] if inputs else [])
            if system:
                self._content_attr(attributes, attr.GEN_AI_SYSTEM_INSTRUCTIONS, system)
            self._content_attr(attributes, attr.GEN_AI_INPUT_MESSAGES, rest)
        else:
            self._content_attr(attributes, attr.GEN_AI_INPUT_MESSAGES,
                               [to_genai_message(p) for p in inputs or ()])

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                            **kwargs: Any) -> None:
        try:
            self._model_start(attr.CHAT_MODEL, serialized, run_id, parent_run_id, tags, metadata,
                              kwargs, messages)
        except Exception as exc:
            _skipped(self, "on_chat_model_start", exc)

    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            self._model_start(attr.LLM, serialized, run_id, parent_run_id, tags, metadata, kwargs,
                              prompts)
        except Exception as exc:
            _skipped(self, "on_llm_start", exc)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID,
                         parent_run_id: UUID | None = None, tags: list[str] | None = None,
                         **kwargs: Any) -> None:
        # The instance attribute of the same name (``tokens.token_callback``) is what
        # LangChain calls; this method serves explicit calls and subclasses.
        self._on_token(token, chunk=chunk, run_id=run_id)

    def _new_token(self, token: Any, chunk: Any, run_id: Any) -> None:
        """Every token the hot path does not take: another run's, the first ones (which get
        events), chunks without plain text, and one that finds its run's ticks used up."""
        try:
            state = self._tokens.streaming
            if state.run_id is not run_id:  # LangChain passes the same UUID object per token
                found = self._find_run(run_id)
                if found is None:
                    return
                # Remembered from its first token: the next ones (events, then the hot path's)
                # need no lookup. The hot path takes none of them before ``count_on_hot_path``.
                state = self._tokens.streaming = found
            if token.__class__ is not str or not token:
                # Not plain text: the role-only opening chunk, the finish or usage-only chunk
                # and LangChain's closing marker carry none; content blocks or tool-call
                # arguments do. Only content counts as a token; any provider chunk starts
                # the time to first chunk.
                _note_stream_usage(state, chunk)
                content = mapping.chunk_content(token, chunk)
                if content is None:
                    if not state.first_chunk_ns and not mapping.is_stream_terminator(token, chunk):
                        state.first_chunk_ns = time.time_ns()
                    return
                token = content
            count = state.count_token()
            limit = self._token_events_limit
            if count <= limit:
                self._token_event(state, token, count)
            if count >= limit:  # the hot path may take this run's next tokens
                state.count_on_hot_path()
        except Exception as exc:
            _skipped(self, "on_llm_new_token", exc)

    def _token_event(self, state: RunState, token: Any, count: int) -> None:
        # UTF-8-safe as made: an int, and the content ``_content_attr`` repairs itself.
        attributes: dict[str, Any] = {"index": count}
        if self._content.enabled:
            self._content_attr(attributes, "content", token)
        if count == 1:
            now = time.time_ns()
            if not state.first_chunk_ns:
                state.first_chunk_ns = now
            state.span.add_event(attr.EVENT_FIRST_TOKEN, attributes, now)
        else:
            state.span.add_event(attr.EVENT_TOKEN, attributes)

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                   tags: list[str] | None = None, **kwargs: Any) -> None:
        attributes: dict[str, Any] | None = None
        try:
            state = self._registry.pop(run_id)
            if state is None:
                _unknown_run_ended(run_id)
                return
            try:
                # An unsampled run without metrics has nothing to read from the response.
                if state.recording or state.metric_attributes is not None:
                    attributes = mapping.response_attributes(response)
                    if self._content.enabled:
                        self._content_attr(attributes, attr.GEN_AI_OUTPUT_MESSAGES,
                                           _output_messages(response))
            finally:  # the span ends whatever reading the response raised
                self._end(run_id, attributes, None, state)
        except Exception as exc:
            _skipped(self, "on_llm_end", exc)

    @_guarded
    def on_llm_error(self, error: BaseException, *, run_id: UUID, response: Any = None,
                     **kwargs: Any) -> None:
        # LangChain passes what a failed or abandoned stream produced so far (merged chunks).
        attributes = None
        try:
            if response is not None:
                attributes = mapping.response_attributes(response)
        finally:
            self._end(run_id, attributes, error)

    # --- tools and retrievers --------------------------------------------------------------
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        try:
            parent = self._find_run(parent_run_id)
            if (parent is not None and not parent.recording
                    and self._unsampled_child(run_id, parent_run_id, parent, attr.TOOL)):
                return
            name = mapping.run_name(serialized, kwargs.get("name"), "tool")
            attributes = mapping.common_attributes(run_id, attr.TOOL, tags, metadata)
            attributes[attr.RUN_NAME] = name
            span_name, tool_attrs = mapping.tool_span(name, serialized, kwargs.get("tool_call_id"),
                                                      inputs)
            attributes.update(tool_attrs)
            self._content_attr(attributes, attr.GEN_AI_TOOL_CALL_ARGUMENTS,
                               inputs if inputs is not None else input_str)
            state = self._start(run_id, parent_run_id, parent, attr.TOOL, span_name, attributes,
                                metadata)
            if state is not None and self._measuring():
                state.metric_attributes = GenAIMetrics.tool_attributes(tool_attrs)
        except Exception as exc:
            _skipped(self, "on_tool_start", exc)

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                    tags: list[str] | None = None, **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        try:
            try:
                call_id = mapping.tool_call_id(output)
                if call_id is not None:
                    attributes[attr.GEN_AI_TOOL_CALL_ID] = call_id
                self._content_attr(attributes, attr.GEN_AI_TOOL_CALL_RESULT,
                                   getattr(output, "content", output))
            finally:  # the span ends whatever reading the output raised
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
            parent = self._find_run(parent_run_id)
            if (parent is not None and not parent.recording
                    and self._unsampled_child(run_id, parent_run_id, parent, attr.RETRIEVER)):
                return
            name = mapping.run_name(serialized, kwargs.get("name"), "retriever")
            attributes = mapping.common_attributes(run_id, attr.RETRIEVER, tags, metadata)
            attributes[attr.RUN_NAME] = name
            attributes[attr.GEN_AI_OPERATION_NAME] = attr.OP_RETRIEVAL
            self._content_attr(attributes, attr.GEN_AI_RETRIEVAL_QUERY_TEXT, query)
            state = self._start(run_id, parent_run_id, parent, attr.RETRIEVER,
                                f"{attr.OP_RETRIEVAL} {name}", attributes, metadata)
            if state is not None:
                claim_pending_scope(state.context, attr.RETRIEVER)
        except Exception as exc:
            _skipped(self, "on_retriever_start", exc)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID,
                         parent_run_id: UUID | None = None, tags: list[str] | None = None,
                         **kwargs: Any) -> None:
        attributes: dict[str, Any] = {}
        try:
            try:
                if isinstance(documents, Sequence):
                    attributes[attr.RETRIEVAL_DOCUMENT_COUNT] = len(documents)
                    if self._content.enabled:
                        self._content_attr(attributes, attr.GEN_AI_RETRIEVAL_DOCUMENTS, [
                            {"id": getattr(d, "id", None), "content": getattr(d, "page_content", d),
                             "metadata": getattr(d, "metadata", None)} for d in documents])
            finally:  # the span ends whatever reading the documents raised
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
        attributes: dict[str, Any] = {"name": scrub_secrets(str(name))[:256]}  # exported always
        self._content_attr(attributes, "data", data)
        self._event(run_id, attr.EVENT_CUSTOM, attributes)

    # --- LangGraph lifecycle (GraphCallbackHandler's events, where LangGraph has them) -----
    @_guarded
    def on_interrupt(self, event: Any) -> None:
        resume.on_interrupt(self._registry.get(getattr(event, "run_id", None)), event)

    @_guarded
    def on_resume(self, event: Any) -> None:
        resume.on_resume(self._registry.get(getattr(event, "run_id", None)), event)


# LangGraph sends on_interrupt / on_resume only to instances of its GraphCallbackHandler.
resume.adopt_graph_lifecycle(OTelHandler)


def _output_messages(response: Any) -> list[dict[str, Any]]:
    """The response's generations as GenAI output messages (content capture only)."""
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
    return outputs


# Events a model span keeps room for besides its token events: retries, orphaned, the
# exception, LangGraph's control flow.
_OTHER_EVENTS = 8


def _token_events_within(requested: int, provider: Any) -> int:
    """Token events per run: at least the first token's, and below the provider's span event
    limit, whose eviction of the oldest events would otherwise drop the first-token event."""
    limit = span_event_limit(provider)
    if limit is not None:
        requested = min(requested, limit - _OTHER_EVENTS)
    return max(1, requested)


def _note_stream_usage(state: RunState, chunk: Any) -> None:
    """Tally the usage a streamed chunk reports (see ``stream_usage.py``)."""
    usage = getattr(getattr(chunk, "message", None), "usage_metadata", None)
    if not usage or not isinstance(usage, Mapping):
        return
    seen = state.stream_usage
    if seen is None:
        seen = state.stream_usage = StreamUsage()
    seen.add(usage)


def _finish(state: RunState, metrics: GenAIMetrics | None,
            attributes: dict[str, Any] | None = None, error: BaseException | None = None,
            budget: AttributeBudget | None = None) -> None:
    """End one run's span with everything its state recorded, whichever path ends it (its own
    end or error, its root's end, eviction, close). The span ends whatever else fails."""
    span = state.span
    try:
        if state.stream_usage is not None:
            attributes = state.stream_usage.settle(attributes, state)
        if state.recording:  # unsampled: the SDK keeps nothing, only the metrics count
            if state.first_chunk_ns:  # the provider streamed (whatever the invocation params say)
                span.set_attribute(attr.GEN_AI_REQUEST_STREAM, True)
                span.set_attribute(attr.LLM_TOKEN_COUNT, state.tokens)
                span.set_attribute(attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                                   (state.first_chunk_ns - state.start_ns) / 1e9)
            if state.near_limit and budget is not None:
                # token count and time to first chunk are already on the span
                attributes = budget.fit_end(span, attributes, error is not None)
            if attributes:
                attributes = utf8_safe_attributes(attributes)
                span.set_attributes(attributes)
            if error is not None:
                _record_error(span, error)
        if metrics is not None and state.metric_attributes is not None:
            try:
                metrics.record(state, attributes, error)
            except Exception as exc:  # a failing meter must not cost the span
                _log_once("metrics", type(exc).__qualname__, logging.WARNING,
                          "recording GenAI metrics failed: %r", exc, exc_info=exc)
    finally:
        span.end()
        if state.root is state:
            # A root refers to itself: left so, every root run (its state, context and span)
            # would wait for the cycle collector instead of being freed when the run ends.
            state.root = NO_RUN


def _finish_all(states: Sequence[RunState], metrics: GenAIMetrics | None,
                attributes: Callable[[RunState], dict[str, Any]],
                budget: AttributeBudget | None = None) -> None:
    """``_finish`` each state (with its marks); one failure does not leave the others open."""
    failure: Exception | None = None
    for state in states:
        try:
            _finish(state, metrics, attributes(state), None, budget)
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _evicted_marks(state: RunState) -> dict[str, Any]:
    return {attr.RUN_EVICTED: True}


def _orphan_marks(state: RunState, abandoned: bool = False) -> dict[str, Any]:
    """A run ended because its root ended first; one that was streaming was abandoned."""
    state.span.add_event(attr.EVENT_ORPHANED, {"reason": "root run ended first"})
    marks = {attr.RUN_ORPHANED: True}
    if abandoned or state.tokens:
        marks[attr.RUN_ABANDONED] = True
    return marks


def _abandoned_orphan_marks(state: RunState) -> dict[str, Any]:
    return _orphan_marks(state, abandoned=True)


def _record_error(span: Any, error: BaseException) -> None:
    name = type(error).__name__
    if not mapping.is_failure(error):
        if isinstance(error, mapping.ABANDONMENT):  # the consumer stopped iterating or cancelled
            span.set_attribute(attr.RUN_ABANDONED, True)
        else:
            span.add_event("langgraph.control_flow", {"type": name})
        return
    error_type = mapping.qualified_name(error)
    span.set_attribute(attr.ERROR_TYPE, error_type)
    try:
        message = utf8_safe(scrub_secrets(str(error)))
        stacktrace = utf8_safe(scrub_secrets("".join(traceback.format_exception(error))))
        span.record_exception(error, attributes={"exception.type": error_type,
                                                 "exception.message": message,
                                                 "exception.stacktrace": stacktrace})
    except Exception:
        message = "<unprintable error>"
    span.set_status(Status(StatusCode.ERROR, f"{name}: {message}"[:1024]))


def _end_open_runs(registry: RunRegistry, metrics: GenAIMetrics | None = None,
                   budget: AttributeBudget | None = None) -> int:
    states = registry.pop_all()
    _finish_all(states, metrics, _evicted_marks, budget)
    return len(states)


def _register_for_exit(handler: OTelHandler) -> None:
    # Registered with the first handler, i.e. usually after the TracerProvider, so (atexit
    # being last-in first-out) open spans are ended before the provider flushes and shuts down.
    if not _live_handlers:
        atexit.register(_close_live_handlers)
    _live_handlers.add(handler)


def _close_live_handlers() -> None:
    """At exit: end every handler's open runs, then flush each provider once, bounded."""
    providers: dict[int, Any] = {}
    for handler in list(_live_handlers):
        try:
            if _end_open_runs(handler._registry, handler._metrics, handler._budget):
                provider = handler._tracer_provider()
                providers[id(provider)] = provider
        except Exception:  # never raise at interpreter exit
            pass
    if providers:
        _flush_within(list(providers.values()), EXIT_FLUSH_SECONDS)


def _flush_within(providers: Sequence[Any], seconds: float) -> None:
    """Flush ``providers`` in a daemon thread and wait for it at most ``seconds``: exporters do
    not honour ``force_flush``'s timeout (a retrying OTLP export takes its own 10 s)."""
    def flush() -> None:
        for provider in providers:
            try:
                force_flush = getattr(provider, "force_flush", None)
                if force_flush is not None:
                    force_flush(int(seconds * 1000))
            except Exception:
                pass

    try:
        thread = threading.Thread(target=flush, name="otel-callbacks-flush", daemon=True)
        thread.start()
    except RuntimeError:
        # No new threads at interpreter shutdown (Python 3.12): the spans are ended, and the
        # provider's own exit hook (the SDK registers one) exports them.
        return
    thread.join(seconds)
