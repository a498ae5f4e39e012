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
from collections.abc import Callable, Iterator
from operator import length_hint
from typing import TYPE_CHECKING, Any
from uuid import UUID

from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span

if TYPE_CHECKING:
    from .conversation import RunIds
    from .stream_usage import StreamUsage

# Process-wide run key (``run_key``) -> Context holding that run's span, shared by every
# OTelHandler so the context bridge finds a run's span even when the handler was a constructor
# (local) callback.
_ACTIVE_CONTEXTS: dict[Any, Context] = {}
_NOTHING: list[Any] = []  # shared empty result: never mutated
# A forgotten run's id: a reference to its state kept elsewhere (the handler remembers the run
# that streamed the last token) then no longer matches the id LangChain passes.
FORGOTTEN = object()
# Tokens the handler's per-token hot path counts for a run before the handler folds them in.
TICKS = 255
_NO_TICKS: Iterator[int] = iter(())  # shared, always empty: the hot path takes nothing


def run_key(run_id: Any) -> Any:
    """What the registries key a run by: a UUID's int, any other id as it is (the same for a
    key, so a key may be passed where a run id is expected).

    ``UUID.__hash__`` is a Python call, and a run id is looked up about six times per run
    (its start, its children's parent lookups, the context bridge, its end); an int hashes
    in C. The hot paths inline the exact-class case:
    ``run_id.int if run_id.__class__ is UUID else run_key(run_id)``.
    """
    return run_id.int if isinstance(run_id, UUID) else run_id


def active_context(run_id: Any) -> Context | None:
    """The OTel context that makes ``run_id``'s span current, if a handler traces that run."""
    return _ACTIVE_CONTEXTS.get(run_id.int if run_id.__class__ is UUID else run_key(run_id))


class RunState:
    """What one open run needs until it ends. Small: it lives as long as the run.

    ``run_id`` becomes ``FORGOTTEN`` once the registry drops the run (ended, evicted, orphaned).
    ``near_limit``: the span started close to its attribute limit (see ``budget.py``).
    ``ids``: the conversation/user ids of its tree (``conversation.RunIds``), shared by reference.
    """

    __slots__ = ("run_id", "span", "context", "root", "run_type", "tree",
                 "token_count", "ticks", "first_chunk_ns", "start_ns", "metric_attributes",
                 "retries",
                 "near_limit", "stream_usage", "ids")
    recording = True  # the SDK records this run's span

    def __init__(self, run_id: Any, span: Span, context: Context, root: RunState | None,
                 run_type: str, start_ns: int, ids: RunIds | None = None) -> None:
        self.run_id = run_id
        self.span = span
        self.context = context
        # The open runs of its tree: one set, shared by every run of the tree (the states
        # themselves, hashed by identity in C). A run is in it from its registration to its
        # removal, so what a root finds there as it ends are its open descendants. Shared, a
        # run never needs its root to be open: a child may start after its root was evicted.
        self.tree: set[RunState]
        if root is None:
            self.root = self
            self.tree = set()
        else:
            self.root = root
            self.tree = root.tree
        self.run_type = run_type
        # Streamed content tokens (read through ``tokens``): ``token_count`` counts the ticks
        # handed to the hot path as if taken, less what is left of ``ticks``. A range iterator:
        # a token takes one with ``next()``, C calls only, nothing stored back. An int read,
        # bumped, compared and stored back costs twice as much on Python 3.10, which does not
        # specialise bytecode (~90 ns a token against ~40).
        self.token_count = 0
        self.ticks = _NO_TICKS
        self.first_chunk_ns = 0  # the first streamed chunk, content or not (time to first chunk)
        self.start_ns = start_ns
        self.metric_attributes: dict[str, Any] | None = None
        self.retries = 0
        self.near_limit = False
        # Token usage streamed chunks reported (a stream_usage.StreamUsage): the totals of a
        # cumulative provider, and what a run that never gets its own end had seen.
        self.stream_usage: StreamUsage | None = None
        self.ids = ids

    @property
    def tokens(self) -> int:
        """Content tokens streamed so far."""
        return self.token_count - length_hint(self.ticks)

    def count_token(self) -> int:
        """Count one more content token, folding in the ticks taken; returns the total."""
        count = self.token_count = self.tokens + 1
        self.ticks = _NO_TICKS
        return count

    def count_on_hot_path(self) -> None:
        """Let the handler's hot path count this run's next ``TICKS`` tokens."""
        self.token_count = self.tokens + TICKS
        self.ticks = iter(range(TICKS))


# A state no run has: what "no run" compares against (its run id is never LangChain's).
NO_RUN = RunState(FORGOTTEN, INVALID_SPAN, Context(), None, "", 0)


class UnsampledRunState(RunState):
    """A run of an unsampled trace: its span records nothing (the SDK dropped it), so the
    handler does no span work for it. A run under an unsampled parent shares the parent's
    span and context: its children and the code it runs see the same unsampled context."""

    __slots__ = ()
    recording = False


class RunRegistry:
    """Open runs of one handler, insertion-ordered so the oldest is evicted first."""

    __slots__ = ("_runs", "_lock", "max_open_runs", "find")

    def __init__(self, max_open_runs: int = 10_000) -> None:
        # Keyed by ``run_key``. OrderedDict: evicting the oldest stays O(1) even after many
        # deletions at the front.
        self._runs: OrderedDict[Any, RunState] = OrderedDict()
        self._lock = threading.Lock()
        self.max_open_runs = max(1, max_open_runs)
        # The open run for a *key* (``run_key``), or None: the dict's own lookup, with no
        # Python frame around it.
        self.find: Callable[[Any], RunState | None] = self._runs.get

    def get(self, run_id: Any) -> RunState | None:
        """The open run for a run id, or None."""
        return self._runs.get(run_key(run_id))

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, state: RunState, key: Any = None) -> list[RunState]:
        """Register ``state`` (``key``: its ``run_key``, if the caller has it already); returns
        the runs evicted to stay within bounds (caller ends them).

        Single dict/set operations are atomic under the GIL, so the hot path takes no lock;
        eviction, which reads then removes, does.
        """
        if key is None:
            key = run_key(state.run_id)
        runs = self._runs
        runs[key] = state
        _ACTIVE_CONTEXTS.setdefault(key, state.context)
        state.tree.add(state)
        if len(runs) <= self.max_open_runs:
            return _NOTHING
        evicted: list[RunState] = []
        with self._lock:
            while len(runs) > self.max_open_runs:
                try:
                    oldest = self.pop(next(iter(runs)))
                except (StopIteration, RuntimeError):  # emptied, or changed, meanwhile
                    break
                if oldest is not None:
                    evicted.append(oldest)
        return evicted

    def pop(self, run_id: Any) -> RunState | None:
        """Remove and return the run (by its id or key); None if unknown (already ended,
        evicted, never started)."""
        key = run_id.int if run_id.__class__ is UUID else run_key(run_id)
        state = self._runs.pop(key, None)
        if state is not None:  # drop what else refers to the run
            context = _ACTIVE_CONTEXTS.pop(key, None)
            if context is not None and context is not state.context:
                _ACTIVE_CONTEXTS[key] = context  # another handler's entry for the same run
            state.tree.discard(state)
            state.run_id = FORGOTTEN
        return state

    def pop_descendants(self, root: RunState) -> list[RunState]:
        """Remove the still-open runs of ``root``'s tree, once ``root`` itself was removed
        (they are ended as orphans by the caller)."""
        tree = root.tree
        if not tree:
            return []
        with self._lock:
            runs = self._runs
            states = [state for state in list(tree)
                      if runs.get(run_key(state.run_id)) is state]
            for state in states:
                self.pop(state.run_id)
            tree.clear()
        return states

    def pop_all(self) -> list[RunState]:
        with self._lock:
            states = list(self._runs.values())
            for state in states:
                self.pop(state.run_id)
        return states
