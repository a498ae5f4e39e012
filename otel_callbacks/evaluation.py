"""Feedback on a finished run (a user's thumbs-up, an LLM judge's score) as a span in its trace.

``record_evaluation`` emits one short span, ``evaluation <name>``, with the GenAI conventions'
``gen_ai.evaluation.*`` attributes. It is a child of the evaluated run's span and links to it,
so it sits in that run's trace and a backend query such as
``{ span.gen_ai.evaluation.score.value < 0.5 }`` leads to the conversation.

A run is named by its span context, or by its LangChain run id: the ids of the last
``MAX_REMEMBERED_RUNS`` root runs that ended in this process (at times a sixteenth more; the id
an app sets with ``config["run_id"]`` or reads from ``collect_runs``), and of every run still
open, are known.
"""

from __future__ import annotations

import logging
import math
from itertools import islice
from typing import Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Tracer, TracerProvider

from . import attributes as attr
from .content import scrub_secrets, truncate, utf8_safe, utf8_safe_attributes
from .registry import active_context
from .version import __version__

logger = logging.getLogger("otel_callbacks")

MAX_REMEMBERED_RUNS = 10_000
_MAX_TEXT = 4096
# Finished root runs, oldest first (a dict keeps insertion order): the run id's 128-bit int,
# hashed in C (a UUID hashes through Python) -> (span context, the run's id attributes, tracer).
_runs: dict[int, tuple[SpanContext, dict[str, str] | None, Tracer]] = {}
_warned = False


def remember_root(run_id: Any, span_context: SpanContext, ids: Any, tracer: Tracer) -> None:
    """Called as a root run ends (one dict insert): its span stays findable by run id.

    The oldest are dropped in batches of a sixteenth of the window, so the dict work per root
    stays one insert with a C-level hash (an OrderedDict keyed by UUID paid two Python-level
    hashes and a linked-list update per root: 318 ns against 191 in a tight loop).
    """
    if not isinstance(run_id, UUID):  # ``_find`` looks up UUIDs only
        return
    _runs[run_id.int] = (span_context, ids.attributes if ids is not None else None, tracer)
    if len(_runs) > MAX_REMEMBERED_RUNS + MAX_REMEMBERED_RUNS // 16:
        _forget_oldest()


def _forget_oldest() -> None:
    try:
        for key in list(islice(_runs, max(0, len(_runs) - MAX_REMEMBERED_RUNS))):
            _runs.pop(key, None)
    except RuntimeError:  # changed by another thread meanwhile: the next root trims again
        pass


def _find(run: Any) -> tuple[SpanContext, dict[str, str] | None, Tracer | None] | None:
    if isinstance(run, SpanContext):
        return run, None, None
    get_context = getattr(run, "get_span_context", None)
    if callable(get_context):  # a Span
        return get_context(), None, None
    if isinstance(run, str):
        try:
            run = UUID(run)
        except ValueError:
            return None
    if not isinstance(run, UUID):
        return None
    known = _runs.get(run.int)
    if known is not None:
        return known
    open_run = active_context(run)
    if open_run is not None:
        return trace.get_current_span(open_run).get_span_context(), None, None
    return None


def _text(value: Any) -> str | None:
    return truncate(scrub_secrets(value), _MAX_TEXT) if isinstance(value, str) and value else None


def record_evaluation(run: UUID | str | SpanContext | trace.Span, name: str, *,
                      score: float | None = None, label: str | None = None,
                      explanation: str | None = None,
                      tracer_provider: TracerProvider | None = None) -> SpanContext | None:
    """Record an evaluation of ``run`` (a run id, a span context or a span) in its trace.

    Returns the evaluation span's context, or None when nothing was recorded: an unknown run id
    (never traced here, or more than ``MAX_REMEMBERED_RUNS`` roots ago: pass its span context
    instead), an invalid span context or an empty name. Never raises.

    The span goes to ``tracer_provider``, else to the provider that traced the run (when known
    by run id), else to the global one.
    """
    global _warned
    try:
        if not isinstance(name, str) or not name:
            logger.warning("otel-callbacks: record_evaluation needs a non-empty name; nothing recorded")
            return None
        found = _find(run)
        if found is None or not found[0].is_valid:
            if not _warned:
                _warned = True
                logger.warning(
                    "otel-callbacks: record_evaluation: run %r is not known here (not traced in "
                    "this process, or ended more than %d root runs ago); nothing recorded. Pass "
                    "the run's span context instead.", run, MAX_REMEMBERED_RUNS)
            return None
        target, ids, tracer = found
        if tracer_provider is not None or tracer is None:
            tracer = trace.get_tracer("otel_callbacks", __version__, tracer_provider=tracer_provider)
        attributes: dict[str, Any] = {attr.GEN_AI_EVALUATION_NAME: utf8_safe(truncate(name, 256))}
        if isinstance(score, (int, float)) and not math.isnan(score):
            attributes[attr.GEN_AI_EVALUATION_SCORE_VALUE] = float(score)
        for key, value in ((attr.GEN_AI_EVALUATION_SCORE_LABEL, label),
                           (attr.GEN_AI_EVALUATION_EXPLANATION, explanation)):
            text = _text(value)
            if text is not None:
                attributes[key] = text
        if ids:
            attributes.update(ids)
        span = tracer.start_span(
            f"evaluation {attributes[attr.GEN_AI_EVALUATION_NAME]}",
            context=trace.set_span_in_context(NonRecordingSpan(target)),
            attributes=utf8_safe_attributes(attributes),
            links=[Link(target, {attr.LINK_REASON: attr.LINK_REASON_EVALUATION})])
        span.end()
        return span.get_span_context()
    except Exception as exc:  # feedback must never break the app
        logger.warning("otel-callbacks: record_evaluation failed: %r", exc)
        return None
