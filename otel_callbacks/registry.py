"""Run registry: run id -> open run state, bounded, thread-safe.

It answers two questions on the hot path: "which span is the parent of this run?" and
"which span belongs to the run executing here?" (the latter process-wide, for the context
bridge, via ``active_context``). It also owns the lifecycle rules: open descendants are ended
when their root ends, and the oldest runs are evicted (and their spans ended) once more than
``max_open_runs`` are open, so runs that never end cannot grow memory without bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span

# Process-wide run id -> Context holding that run's span, shared by every OTelHandler so the
# context bridge finds a run's span even when the handler was a constructor (local) callback.
_ACTIVE_CONTEXTS: dict[Any, Context] = {}


def active_context(run_id: Any) -> Context | None:
    """The OTel context that makes ``run_id``'s span current, if a handler traces that run."""
    return _ACTIVE_CONTEXTS.get(run_id)


class RunState:
    """What one open run needs until it ends. Small: it lives as long as the run."""

    __slots__ = ("run_id", "span", "context", "root", "run_type", "descendants",
                 "token_count", "first_token_ns", "start_ns", "metric_attributes", "retries")

    def __init__(self, run_id: Any, span: Span, context: Context, root: RunState | None,
                 run_type: str, start_ns: int) -> None:
        self.run_id = run_id
        self.span = span
        self.context = context
        self.root = root if root is not None else self
        self.run_type = run_type
        self.descendants: set[Any] | None = None if root is not None else set()
        self.token_count = 0
        self.first_token_ns = 0
        self.start_ns = start_ns
        self.metric_attributes: dict[str, Any] | None = None
        self.retries = 0


class RunRegistry:
    """Open runs of one handler, insertion-ordered so the oldest is evicted first."""

    __slots__ = ("_runs", "_lock", "max_open_runs")

    def __init__(self, max_open_runs: int = 10_000) -> None:
        # OrderedDict: evicting the oldest stays O(1) even after many deletions at the front.
        self._runs: OrderedDict[Any, RunState] = OrderedDict()
        self._lock = threading.Lock()
        self.max_open_runs = max(1, max_open_runs)

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: Any) -> RunState | None:
        return self._runs.get(run_id)

    def add(self, state: RunState) -> list[RunState]:
        """Register ``state``; returns the runs evicted to stay within bounds (caller ends them)."""
        evicted: list[RunState] = []
        with self._lock:
            self._runs[state.run_id] = state
            _ACTIVE_CONTEXTS.setdefault(state.run_id, state.context)
            root = state.root
            if root is not state and root.descendants is not None:
                root.descendants.add(state.run_id)
            while len(self._runs) > self.max_open_runs:
                _, oldest = self._runs.popitem(last=False)
                self._remove(oldest)
                evicted.append(oldest)
        return evicted

    def pop(self, run_id: Any) -> RunState | None:
        """Remove and return the run; None if unknown (already ended, evicted, never started)."""
        with self._lock:
            state = self._runs.get(run_id)
            if state is not None:
                self._remove(state)
            return state

    def pop_descendants(self, root: RunState) -> list[RunState]:
        """Remove the still-open runs under ``root`` (they are ended as orphans by the caller)."""
        if not root.descendants:
            return []
        with self._lock:
            states = [s for s in (self._runs.get(i) for i in root.descendants) if s is not None]
            for state in states:
                self._remove(state)
            root.descendants.clear()
        return states

    def pop_all(self) -> list[RunState]:
        with self._lock:
            states = list(self._runs.values())
            for state in states:
                self._remove(state)
        return states

    def _remove(self, state: RunState) -> None:
        # Caller holds the lock.
        self._runs.pop(state.run_id, None)
        if _ACTIVE_CONTEXTS.get(state.run_id) is state.context:
            del _ACTIVE_CONTEXTS[state.run_id]
        root = state.root
        if root is not state and root.descendants is not None:
            root.descendants.discard(state.run_id)
