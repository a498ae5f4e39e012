"""Make a run's span the current OTel span *inside the run's own execution*.

LangChain creates no OTel context of its own, and attaching in a start callback then detaching
in the end callback fails in async code (end callbacks run in a shielded task on a copied
context). So we hook the places where the run's code actually executes:

* ``set_config_context`` (langchain_core.runnables.config and LangGraph's twin): LangChain
  copies the context for a child run there; we make the run's span current in that *copy*,
  which is thrown away afterwards, so nothing leaks and nothing needs detaching.
* a model's provider call (``_generate_with_cache`` / ``_generate_helper``) and its streaming
  and a retriever's ``invoke``: attach/detach within one frame, or per step of a stream.
* Python 3.10 only (``asyncio.create_task`` takes no ``context=`` there): langchain-core 0.3's
  ``coro_with_context`` awaits the coroutine outside the copy prepared for it, so we carry the
  copy's span into the coroutine; LangGraph awaits a node's code without any copy, so its
  ``RunnableSeq`` / ``RunnableCallable`` async entry points make the run that starts inside them
  current for their frame (claimed by the run's start, like a stream's).

LangGraph's execution point moved between releases; ``LANGGRAPH_EXECUTION_POINTS`` lists each
release's, and a test fails if none exists in the installed LangGraph.

Patches are installed once (wrapt's post-import hooks; wrapt's wrappers except on the two
per-child-run points, see ``_Direct``), are reversible (``uninstall``) and do nothing for runs
no OTelHandler traces (the registry has no context for them).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token, copy_context
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from . import attributes as attr
from . import mapping, provider_streams
from .content import utf8_safe_attributes
from .registry import active_context

logger = logging.getLogger("otel_callbacks")

# OTel's runtime context is a ContextVar; setting it directly is the same operation as
# ``context.attach`` without the indirection, which matters once per streamed token.
_RUNTIME_VAR = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
if isinstance(_RUNTIME_VAR, ContextVar):
    _attach = _RUNTIME_VAR.set
    _reset = _RUNTIME_VAR.reset

    def _detach(token: Any) -> None:
        try:
            _RUNTIME_VAR.reset(token)  # type: ignore[union-attr]
        except (ValueError, RuntimeError):  # token from another context: leave it be
            pass
else:  # pragma: no cover - a custom runtime context
    _attach = otel_context.attach
    _detach = _reset = otel_context.detach

_MODEL_RUNS = frozenset({attr.CHAT_MODEL, attr.LLM})
_RETRIEVER_RUNS = frozenset({attr.RETRIEVER})
_CHAIN_RUNS = frozenset({attr.CHAIN})
_ANY_PARENT = object()
# Python 3.11 added ``asyncio.create_task(..., context=)``; before it LangChain and LangGraph
# take other paths to run async code, which need their own bridge points.
_ASYNCIO_TAKES_CONTEXT = sys.version_info >= (3, 11)


class _Scope:
    """A call (or stream) whose run starts *inside* it: the start callback claims it.

    ``parent`` (when set) is the parent run id the claiming run must have, so a run nested
    deeper (e.g. traced by a handler the outer run does not have) never claims the scope.
    """

    __slots__ = ("run_types", "context", "token", "parent", "model")

    def __init__(self, run_types: frozenset[str], context: Context | None = None,
                 parent: Any = _ANY_PARENT, model: Any = None) -> None:
        self.run_types = run_types
        self.context = context  # known up front (provider call) or claimed by the start callback
        self.token: Token[Any] | None = None
        self.parent = parent
        self.model = model  # the model object whose run this is, if a model call


def _annotate_model_span(context: Context, model: Any) -> None:
    """Add what only the model object knows (its server, some request parameters) to the
    run's span, keeping what the callbacks already set."""
    try:
        extra = mapping.model_instance_attributes(model)
        if extra:
            span = trace.get_current_span(context)
            present = getattr(span, "attributes", None) or {}
            span.set_attributes(utf8_safe_attributes(
                {k: v for k, v in extra.items() if k not in present}))
    except Exception:  # a model object of an odd shape: the span just lacks these
        logger.debug("otel-callbacks: could not read the model's server", exc_info=True)


_PENDING: ContextVar[_Scope | None] = ContextVar("otel_callbacks_pending_scope", default=None)
# The scope waiting here, if any: a C-level read, so a run's start checks it before calling
# ``claim_pending_scope`` (nearly always nothing waits).
scope_waiting = _PENDING.get


def claim_pending_scope(context: Context, run_type: str, parent_run_id: Any = None) -> None:
    """Called by the handler when a run starts: if a scope waits for this kind of run, make
    the run's span current until the scope's frame (or stream step) exits."""
    scope = _PENDING.get()
    if scope is None or scope.context is not None or run_type not in scope.run_types:
        return
    if scope.parent is not _ANY_PARENT and scope.parent != parent_run_id:
        return
    scope.context = context
    scope.token = _attach(context)
    if scope.model is not None:
        _annotate_model_span(context, scope.model)


def _enter(scope: _Scope) -> Token[Any] | None:
    # The scope stays visible while its run executes, so code deeper down (a provider SDK's
    # stream) finds the model run even under a span another instrumentation made current.
    if scope.context is not None:
        scope.token = _attach(scope.context)
    return _PENDING.set(scope)


def current_model_span() -> Any:
    """The span of the model run executing here (its provider call or stream), else None."""
    scope = _PENDING.get()
    if scope is None or scope.context is None or scope.run_types is not _MODEL_RUNS:
        return None
    return trace.get_current_span(scope.context)


def _exit(scope: _Scope, pending: Token[Any] | None) -> None:
    token = scope.token
    if token is not None:
        scope.token = None
        try:
            _reset(token)  # ``_detach`` inline: once per model call and per async stream step
        except (ValueError, RuntimeError):  # token from another context: leave it be
            pass
    if pending is not None:
        _PENDING.reset(pending)


# --- the per-step loops ---------------------------------------------------------------------
# Sync streams run every step in one private copy of the context: the start callback attaches
# the run's span there for good, the consumer never sees it, and a step costs one ``ctx.run``
# (cheaper than a set/reset pair, which matters once per streamed token). Async generators
# cannot be driven inside another context without a task per step, so they attach and detach
# around each step in the caller's task instead.
def _scoped_iter(iterator: Any, scope: _Scope) -> Any:
    run = copy_context().run
    run(_PENDING.set, scope)
    try:
        while True:
            try:
                item = run(next, iterator)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            run(close)


class _ScopedAsyncIterator:
    """The async twin of ``_scoped_iter``: each step runs with the run's span current.

    A plain class, not an async generator, so the event loop does not track it: when a
    consumer abandons a stream, the loop finalizes the model's own generator exactly as it
    would without us, instead of racing our wrapper to close it ("aclose(): asynchronous
    generator is already running").
    """

    __slots__ = ("_iterator", "_scope")

    def __init__(self, iterator: Any, scope: _Scope) -> None:
        self._iterator = iterator
        self._scope = scope

    def __aiter__(self) -> _ScopedAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        pending = _enter(self._scope)
        try:
            return await self._iterator.__anext__()
        finally:
            _exit(self._scope, pending)

    async def aclose(self) -> None:
        iterator = self._iterator
        aclose = getattr(iterator, "aclose", None)
        # Already closing in another task (the loop finalizing it): nothing left to do.
        if aclose is None or getattr(iterator, "ag_running", False):
            return
        pending = _enter(self._scope)
        try:
            await aclose()
        finally:
            _exit(self._scope, pending)


def _call_in_scope(wrapped: Any, args: Any, kwargs: Any, scope: _Scope) -> Any:
    pending = _enter(scope)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _exit(scope, pending)


async def _acall_in_scope(wrapped: Any, args: Any, kwargs: Any, scope: _Scope) -> Any:
    pending = _enter(scope)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _exit(scope, pending)


# --- wrappers ---------------------------------------------------------------------------------
class _Direct:
    """A patch applied as a plain function instead of a ``wrapt.FunctionWrapper``.

    For the sync points every child run or model call passes through (``_set_config_context``,
    a model's generate call, a retriever's invoke): calling through a FunctionWrapper costs
    about 5,500 CPU instructions (measured with wrapt 2.5, C extension), a plain function about
    350; on the config-context points it was a quarter of our whole per-span cost. Generator
    and async points keep wrapt's wrappers, which also keep ``inspect``'s view of them (a plain
    function would stop being a coroutine or generator function); their own cost dwarfs it.
    ``uninstall`` restores the original the same way for both kinds.
    """

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make  # original function -> the replacement


def _direct_method(wrapper: Any) -> _Direct:
    """A wrapt-style ``wrapper(wrapped, instance, args, kwargs)`` applied as a plain method."""
    def make(original: Any) -> Any:
        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            return wrapper(original.__get__(self, type(self)), self, args, kwargs)
        return functools.update_wrapper(patched, original)
    return _Direct(make)


def _bridge_config_context(original: Any) -> Any:
    """``_set_config_context`` runs inside LangChain's (or LangGraph's) copied child context:
    make the parent run's span current there. The copy is discarded by its caller afterwards,
    so nothing needs detaching.

    Once per child run, so the replacement takes the original's own parameters when they are
    the known ``(config)`` or ``(config, run=None)``: forwarding ``*args, **kwargs`` costs
    more than the bridging. Any other signature is forwarded as it is.
    """
    if _parameter_names(original) in (("config",), ("config", "run")):
        def _set_config_context(config: Any, run: Any = _NO_ARGUMENT) -> Any:
            result = original(config) if run is _NO_ARGUMENT else original(config, run)
            _make_parent_run_current(config)
            return result
    else:
        def _set_config_context(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            result = original(*args, **kwargs)
            _make_parent_run_current(args[0] if args else kwargs.get("config"))
            return result

    return functools.update_wrapper(_set_config_context, original)


_NO_ARGUMENT = object()


def _parameter_names(function: Any) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # no signature to read: forward every argument
        return None


def _make_parent_run_current(config: Any) -> None:
    try:
        context = active_context(getattr(config.get("callbacks"), "parent_run_id", None))
        if context is not None:
            _attach(context)
    except Exception:  # never break LangChain's own plumbing
        logger.debug("otel-callbacks: could not bridge run context", exc_info=True)


def _iter_in_scope(wrapped: Any, args: Any, kwargs: Any, scope: _Scope) -> Any:
    return _scoped_iter(wrapped(*args, **kwargs), scope)


def _aiter_in_scope(wrapped: Any, args: Any, kwargs: Any, scope: _Scope) -> Any:
    return _ScopedAsyncIterator(wrapped(*args, **kwargs), scope)


def _provider_scope(model: Any, args: Any, kwargs: Any, position: int, key: str) -> _Scope | None:
    """The scope of a model's own generate call: its run manager names the run whose span to
    make current (None: no traced run)."""
    manager = kwargs.get(key) if key in kwargs else (args[position] if len(args) > position else None)
    if isinstance(manager, list):  # BaseLLM passes one run manager per prompt
        manager = manager[0] if manager else None
    context = active_context(getattr(manager, "run_id", None))
    if context is None:
        return None
    _annotate_model_span(context, model)
    return _Scope(_MODEL_RUNS, context)


def _provider_call(position: int, key: str, drive: Any) -> Any:
    """The model's own generate path (async: a wrapt wrapper, so it stays a coroutine function)."""
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        scope = _provider_scope(instance, args, kwargs, position, key)
        if scope is None:
            return wrapped(*args, **kwargs)
        return drive(wrapped, args, kwargs, scope)
    return wrapper


def _direct_provider_call(position: int, key: str) -> _Direct:
    """The sync twin of ``_provider_call`` as one plain method: once per model call, where a
    bound method and two more frames cost about as much as the bridging itself."""
    def make(original: Any) -> Any:
        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            scope = _provider_scope(self, args, kwargs, position, key)
            if scope is None:
                return original(self, *args, **kwargs)
            pending = _enter(scope)
            try:
                return original(self, *args, **kwargs)
            finally:
                _exit(scope, pending)
        return functools.update_wrapper(patched, original)
    return _Direct(make)


def _starts_inside(run_types: frozenset[str], drive: Any) -> Any:
    """For calls whose run starts inside them (stream, retriever invoke): claim on start."""
    model = run_types is _MODEL_RUNS

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return drive(wrapped, args, kwargs, _Scope(run_types, model=instance if model else None))
    return wrapper


def _chain_starts_inside(drive: Any) -> Any:
    """LangGraph's async ``(input, config)`` entry points on Python 3.10: the chain run they start
    (a child of the config's parent run) is current for the rest of their frame. An untraced
    ``RunnableCallable`` starts none, so a child run of the node code must not claim it."""
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not getattr(instance, "trace", True):
            return wrapped(*args, **kwargs)
        config = args[1] if len(args) > 1 else kwargs.get("config")
        callbacks = config.get("callbacks") if isinstance(config, Mapping) else None
        parent = getattr(callbacks, "parent_run_id", None)
        return drive(wrapped, args, kwargs, _Scope(_CHAIN_RUNS, parent=parent))
    return wrapper


async def _await_in(awaitable: Any, context: Context) -> Any:
    token = _attach(context)
    try:
        return await awaitable
    finally:
        _detach(token)


def _coro_with_context_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``coro_with_context(coro, context)`` on Python 3.10: langchain-core 0.3 awaits ``coro``
    outside ``context``, the copy in which the run's span was made current; carry the span in."""
    if len(args) > 1 and isinstance(_RUNTIME_VAR, ContextVar):
        try:
            span_context = args[1].get(_RUNTIME_VAR)
            if span_context is not None and span_context is not _RUNTIME_VAR.get():
                args = (_await_in(args[0], span_context), *args[1:])
        except Exception:  # never break LangChain's own plumbing
            logger.debug("otel-callbacks: could not bridge run context", exc_info=True)
    return wrapped(*args, **kwargs)


# Where LangGraph runs a child run's code in a copied context (its twin of langchain-core's
# ``_set_config_context``), newest release first. A release that moves it again must be added
# here: tests/test_bridge_points.py fails while none of them exists in the installed LangGraph.
LANGGRAPH_EXECUTION_POINTS: tuple[tuple[str, str], ...] = (
    ("langgraph._internal._runnable", "_set_config_context"),  # 0.6 and later
    ("langgraph.utils.runnable", "_set_config_context"),  # 0.3 to 0.5
)
LANGCHAIN_EXECUTION_POINTS: tuple[tuple[str, str], ...] = (
    ("langchain_core.runnables.config", "_set_config_context"),  # 0.3.46 and later
)
# Python 3.10: LangGraph's modules (per release, as above) whose async node entry points await
# the node's code with no copied context, and langchain-core's modules that bound
# ``coro_with_context`` by name.
_LANGGRAPH_RUNNABLE_MODULES = tuple(module for module, _ in LANGGRAPH_EXECUTION_POINTS)
_CORO_WITH_CONTEXT_MODULES = ("langchain_core.runnables.utils", "langchain_core.runnables.base",
                              "langchain_core.runnables.fallbacks", "langchain_core.tools.base")
_PY310_PATCHES: tuple[tuple[str, str, Any], ...] = tuple(
    (module, path, wrapper) for module in _LANGGRAPH_RUNNABLE_MODULES for path, wrapper in (
        ("RunnableSeq.ainvoke", _chain_starts_inside(_acall_in_scope)),
        ("RunnableSeq.astream", _chain_starts_inside(_aiter_in_scope)),
        ("RunnableCallable.ainvoke", _chain_starts_inside(_acall_in_scope)),
    )
) + tuple((module, "coro_with_context", _coro_with_context_wrapper)
          for module in _CORO_WITH_CONTEXT_MODULES)

# (module, attribute path, wrapper factory) for every patch point.
_PATCHES: tuple[tuple[str, str, Any], ...] = tuple(
    (module, path, _Direct(_bridge_config_context))
    for module, path in LANGCHAIN_EXECUTION_POINTS + LANGGRAPH_EXECUTION_POINTS
) + (() if _ASYNCIO_TAKES_CONTEXT else _PY310_PATCHES) + (
    ("langchain_core.language_models.chat_models", "BaseChatModel._generate_with_cache",
     _direct_provider_call(2, "run_manager")),
    ("langchain_core.language_models.chat_models", "BaseChatModel._agenerate_with_cache",
     _provider_call(2, "run_manager", _acall_in_scope)),
    ("langchain_core.language_models.llms", "BaseLLM._generate_helper",
     _direct_provider_call(2, "run_managers")),
    ("langchain_core.language_models.llms", "BaseLLM._agenerate_helper",
     _provider_call(2, "run_managers", _acall_in_scope)),
    ("langchain_core.language_models.chat_models", "BaseChatModel.stream",
     _starts_inside(_MODEL_RUNS, _iter_in_scope)),
    ("langchain_core.language_models.chat_models", "BaseChatModel.astream",
     _starts_inside(_MODEL_RUNS, _aiter_in_scope)),
    ("langchain_core.language_models.llms", "BaseLLM.stream", _starts_inside(_MODEL_RUNS, _iter_in_scope)),
    ("langchain_core.language_models.llms", "BaseLLM.astream", _starts_inside(_MODEL_RUNS, _aiter_in_scope)),
    ("langchain_core.retrievers", "BaseRetriever.invoke",
     _direct_method(_starts_inside(_RETRIEVER_RUNS, _call_in_scope))),
    ("langchain_core.retrievers", "BaseRetriever.ainvoke", _starts_inside(_RETRIEVER_RUNS, _acall_in_scope)),
    # Provider SDK streams: the response id LangChain drops from streamed chunks.
    ("openai._streaming", "Stream.__stream__", provider_streams.stream_wrapper(current_model_span)),
    ("openai._streaming", "AsyncStream.__stream__",
     provider_streams.astream_wrapper(current_model_span)),
    ("anthropic._streaming", "Stream.__stream__", provider_streams.stream_wrapper(current_model_span)),
    ("anthropic._streaming", "AsyncStream.__stream__",
     provider_streams.astream_wrapper(current_model_span)),
)

_lock = threading.RLock()  # re-entrant: post-import hooks may fire inside install()
_installed = False
_hooks_registered = False
_applied: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original, wrapper)


def _apply(module: Any, path: str, wrapper: Any) -> None:
    owner_name, _, attribute = path.rpartition(".")
    owner = getattr(module, owner_name) if owner_name else module
    original = vars(owner).get(attribute)
    if original is None or is_patched(original):
        return  # absent in this version, or already wrapped by us
    if isinstance(wrapper, _Direct):
        setattr(owner, attribute, wrapper.make(original))
    else:
        wrapt.wrap_function_wrapper(module, path, wrapper)
    _applied.append((owner, attribute, original, vars(owner)[attribute]))


def is_patched(point: Any) -> bool:
    """Whether ``point`` (a function or method as found on its owner) is one of our patches."""
    return any(wrapper is point for _, _, _, wrapper in _applied)


def _hook(path: str, wrapper: Any) -> Any:
    def patch(module: Any) -> None:
        with _lock:
            if not _installed:
                return
            try:
                _apply(module, path, wrapper)
            except Exception:
                logger.debug("otel-callbacks: could not patch %s", path, exc_info=True)
    return patch


def install() -> None:
    """Install the patches (idempotent). Modules imported later are patched on import."""
    global _installed, _hooks_registered
    with _lock:
        if _installed:
            return
        _installed = True
        for module_name, path, wrapper in _PATCHES:
            if _hooks_registered:
                module = sys.modules.get(module_name)
                if module is not None:
                    _hook(path, wrapper)(module)
            else:  # fires now if the module is already imported, else on its import
                wrapt.register_post_import_hook(_hook(path, wrapper), module_name)
        _hooks_registered = True


def uninstall() -> None:
    """Remove every patch this module applied; later imports are left untouched."""
    global _installed
    with _lock:
        _installed = False
        while _applied:
            owner, attribute, original, wrapper = _applied.pop()
            if vars(owner).get(attribute) is wrapper:  # leave later patches by others alone
                setattr(owner, attribute, original)


@contextlib.contextmanager
def run_context(run: Any) -> Iterator[None]:
    """Make a run's span current for the block: for code driven by our own CallbackManager.

    ``run`` is a run manager or a run id. Works in sync and async code (attach and detach
    happen in the same frame). Does nothing for runs no OTelHandler traces.
    """
    context = active_context(getattr(run, "run_id", run))
    token = _attach(context) if context is not None else None
    try:
        yield
    finally:
        if token is not None:
            _detach(token)
