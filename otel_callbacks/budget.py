"""Attribute budget: user metadata and tags never evict the span's own attributes.

The SDK keeps at most ``max_span_attributes`` per span (128 unless the provider's
``SpanLimits`` or ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` say otherwise) and, once full, evicts the
*oldest* attribute for each new one, logging a warning every time. A run with a few hundred
metadata keys would so lose its run id, and usage set at the end would push out more. Here the
span's own attributes come first, room is kept for what the end of the run adds, user metadata
and tags get what is left, and the keys beyond it are counted in one attribute.

The limit is read once per handler. A span whose start attributes fit in its room (nearly
all) costs one length check; only a span that starts near the limit takes the slow paths.
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanLimits

from . import attributes as attr

# The most attributes our end of a run can add, per run type: for model runs token count, time
# to first chunk, five usage counts, response model, id and finish reasons, output messages,
# error type, retry count and two of abandoned / orphaned / evicted; for the others the output,
# error type, retry count, two flags (and the retriever's document count), plus one spare.
_END_RESERVE = {attr.CHAT_MODEL: 16, attr.LLM: 16, attr.CHAIN: 6, attr.TOOL: 6, attr.RETRIEVER: 7}
# Slots a started span always keeps free whatever its limit: token count, time to first chunk,
# error type (or abandoned), one flag (orphaned / evicted).
_ALWAYS_FREE = 4
_UNLIMITED = sys.maxsize


def _span_limits(provider: Any) -> SpanLimits:
    """The SDK provider's own ``SpanLimits`` when it has them; otherwise (no provider passed,
    the global one not set up yet, or not the SDK's) what the SDK would use by default: the
    environment variables, else its defaults."""
    if provider is None:
        provider = trace.get_tracer_provider()
    limits = getattr(provider, "_span_limits", None)
    return limits if isinstance(limits, SpanLimits) else SpanLimits()


def _limit_or_none(limit: Any) -> int | None:
    return limit if isinstance(limit, int) and limit >= 0 else None


def span_attribute_limit(provider: Any) -> int | None:
    """The span attribute limit spans of ``provider`` get (default 128); None means unlimited."""
    return _limit_or_none(_span_limits(provider).max_span_attributes)


def span_event_limit(provider: Any) -> int | None:
    """The span event limit spans of ``provider`` get (default 128); None means unlimited.
    The SDK evicts a span's oldest events beyond it."""
    return _limit_or_none(_span_limits(provider).max_events)


def _is_user_key(key: str) -> bool:
    return key == attr.RUN_TAGS or key.startswith(attr.RUN_METADATA_PREFIX)


class _LateRooms(dict[str, int]):
    """Start rooms of a budget made before the global TracerProvider was set. Its spans are
    non-recording until then (nothing to budget); the first span after that reads the real
    provider's limit once and fills this dict, so later lookups are plain dict hits."""

    def __init__(self, budget: AttributeBudget) -> None:
        super().__init__()
        self._budget = budget

    def __missing__(self, run_type: str) -> int:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return _UNLIMITED
        self._budget.set_limit(span_attribute_limit(provider))
        return self.get(run_type, _UNLIMITED)


class AttributeBudget:
    """One handler's share-out of its spans' attribute limit."""

    __slots__ = ("limit", "start_rooms")

    def __init__(self, limit: int | None) -> None:
        # Start attributes up to start_rooms[run type] leave room for the end: no budgeting.
        self.start_rooms: dict[str, int] = {}
        self.set_limit(limit)

    @classmethod
    def for_provider(cls, provider: Any) -> AttributeBudget:
        """The budget for spans of ``provider`` (None: the global one, read when it is set)."""
        if provider is None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            budget = cls(None)
            budget.start_rooms = _LateRooms(budget)
            return budget
        return cls(span_attribute_limit(provider))

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit
        self.start_rooms.update({
            run_type: _UNLIMITED if limit is None else limit - reserve - 1
            for run_type, reserve in _END_RESERVE.items()})

    def fit_start(self, attributes: dict[str, Any], run_type: str) -> dict[str, Any]:
        """Own attributes first (at most all but ``_ALWAYS_FREE`` slots, in order, so run id
        and type are never cut), then tags and metadata up to what the end's reserve leaves,
        then ``langchain.metadata.dropped_count`` for the user attributes left out."""
        limit = self.limit
        if limit is None:
            return attributes
        own: dict[str, Any] = {}
        user: list[tuple[str, Any]] = []
        for key, value in attributes.items():
            if _is_user_key(key):
                user.append((key, value))
            else:
                own[key] = value
        if len(own) > limit - _ALWAYS_FREE - 1:
            own = dict(list(own.items())[:max(2, limit - _ALWAYS_FREE - 1)])
        user.sort(key=lambda item: item[0] != attr.RUN_TAGS)  # one attribute for all tags
        share = max(0, limit - len(own) - _END_RESERVE.get(run_type, 16) - 1)
        own.update(user[:share])
        if len(user) > share:
            own[attr.METADATA_DROPPED_COUNT] = len(user) - share
        return own

    def fit_end(self, span: Any, attributes: dict[str, Any] | None,
                separate: int) -> dict[str, Any] | None:
        """For a span that started near its limit: the end ``attributes`` that fit in the room
        the span has left, after ``separate`` attributes the end sets one by one (token count,
        error type...). Keys the span already has cost nothing; new ones are kept in order."""
        current = getattr(span, "attributes", None)
        if not attributes or self.limit is None or current is None:
            return attributes
        room = self.limit - len(current) - separate
        new = [key for key in attributes if key not in current]
        if len(new) <= room:
            return attributes
        cut = set(new[max(0, room):])
        return {key: value for key, value in attributes.items() if key not in cut}
