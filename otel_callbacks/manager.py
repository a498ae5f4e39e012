"""Our callback manager: LangChain's API and semantics for code without LangChain.

Names and signatures mirror ``langchain_core.callbacks.manager``. One event table drives both
the sync and the async classes: each event method is written once and calls ``self._emit``,
which is a plain dispatch for sync managers and a coroutine for async ones.

Inheritance: handlers added with ``inherit=True`` (request-time callbacks) reach every
descendant through ``get_child()``; local handlers (constructor callbacks) see only the run
they were configured for.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from contextvars import copy_context
from typing import Any, TypeVar
from uuid import UUID, uuid4

from .handlers import IGNORE_FLAGS

logger = logging.getLogger("otel_callbacks")
Handler = Any  # any object with LangChain's handler methods and flags
T = TypeVar("T")
_M = TypeVar("_M", bound="BaseCallbackManager")


# --- dispatch: the only place where sync and async differ --------------------------------------
def _report(handler: Handler, event: str, exc: Exception) -> None:
    logger.warning("Error in %s.%s callback: %r", type(handler).__name__, event, exc)
    if getattr(handler, "raise_error", False):
        raise exc


def _chat_fallback_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """on_chat_model_start -> on_llm_start arguments: message lists become prompt strings."""
    serialized, messages = args[0], args[1]
    prompts = ["\n".join(f"{getattr(m, 'type', 'user')}: {getattr(m, 'content', m)}" for m in batch)
               for batch in messages]
    return (serialized, prompts, *args[2:])


def _skip(handler: Handler, event: str) -> bool:
    flag = IGNORE_FLAGS.get(event)
    return bool(flag and getattr(handler, flag, False))


def _run_coroutine(coro: Any) -> None:
    """A sync manager calling an async handler: run it to completion off the caller's loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    thread = threading.Thread(target=asyncio.run, args=(coro,), daemon=True)
    thread.start()
    thread.join()


def _dispatch(handlers: Sequence[Handler], event: str, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
    for handler in handlers:
        try:
            if _skip(handler, event):
                continue
            method = getattr(handler, event)
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                _run_coroutine(result)
        except NotImplementedError as exc:
            if event == "on_chat_model_start":
                _dispatch([handler], "on_llm_start", _chat_fallback_args(args), kwargs)
            else:
                _report(handler, event, exc)
        except Exception as exc:
            _report(handler, event, exc)


async def _adispatch_one(handler: Handler, event: str, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> None:
    try:
        if _skip(handler, event):
            return
        method = getattr(handler, event)
        if inspect.iscoroutinefunction(method):
            await method(*args, **kwargs)
        elif getattr(handler, "run_inline", False):
            method(*args, **kwargs)
        else:  # as LangChain does: sync handlers off the loop, on a copy of the context
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(copy_context().run, method, *args, **kwargs))
    except NotImplementedError as exc:
        if event == "on_chat_model_start":
            await _adispatch_one(handler, "on_llm_start", _chat_fallback_args(args), kwargs)
        else:
            _report(handler, event, exc)
    except Exception as exc:
        _report(handler, event, exc)


async def _adispatch(handlers: Sequence[Handler], event: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> None:
    # Inline handlers run in order in the caller's task; the rest concurrently.
    for handler in handlers:
        if getattr(handler, "run_inline", False):
            await _adispatch_one(handler, event, args, kwargs)
    others = [h for h in handlers if not getattr(h, "run_inline", False)]
    if others:
        await asyncio.gather(*(_adispatch_one(h, event, args, kwargs) for h in others))


async def _await_then(pending: list[Any], result: T) -> T:
    for awaitable in pending:
        await awaitable
    return result


# --- shared state and helpers -------------------------------------------------------------------
class BaseCallbackManager:
    """Handlers, tags and metadata, split into what this run sees and what children inherit."""

    is_async = False

    def __init__(self, handlers: list[Handler], inheritable_handlers: list[Handler] | None = None,
                 parent_run_id: UUID | None = None, *, tags: list[str] | None = None,
                 inheritable_tags: list[str] | None = None,
                 metadata: dict[str, Any] | None = None,
                 inheritable_metadata: dict[str, Any] | None = None) -> None:
        self.handlers: list[Handler] = list(handlers)
        self.inheritable_handlers: list[Handler] = list(inheritable_handlers or [])
        self.parent_run_id = parent_run_id
        self.tags: list[str] = list(tags or [])
        self.inheritable_tags: list[str] = list(inheritable_tags or [])
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.inheritable_metadata: dict[str, Any] = dict(inheritable_metadata or {})

    def _emit(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _dispatch(self.handlers, event, args, kwargs)

    def _started(self, pending: list[Any], result: T) -> T:
        return result

    def add_handler(self, handler: Handler, inherit: bool = True) -> None:
        if handler not in self.handlers:
            self.handlers.append(handler)
        if inherit and handler not in self.inheritable_handlers:
            self.inheritable_handlers.append(handler)

    def remove_handler(self, handler: Handler) -> None:
        if handler in self.handlers:
            self.handlers.remove(handler)
        if handler in self.inheritable_handlers:
            self.inheritable_handlers.remove(handler)

    def set_handlers(self, handlers: list[Handler], inherit: bool = True) -> None:
        self.handlers, self.inheritable_handlers = [], []
        for handler in handlers:
            self.add_handler(handler, inherit=inherit)

    def set_handler(self, handler: Handler, inherit: bool = True) -> None:
        self.set_handlers([handler], inherit=inherit)

    def add_tags(self, tags: list[str], inherit: bool = True) -> None:
        for tag in tags:
            if tag in self.tags:
                self.remove_tags([tag])
        self.tags.extend(tags)
        if inherit:
            self.inheritable_tags.extend(tags)

    def remove_tags(self, tags: list[str]) -> None:
        for tag in tags:
            if tag in self.tags:
                self.tags.remove(tag)
            if tag in self.inheritable_tags:
                self.inheritable_tags.remove(tag)

    def add_metadata(self, metadata: dict[str, Any], inherit: bool = True) -> None:
        self.metadata.update(metadata)
        if inherit:
            self.inheritable_metadata.update(metadata)

    def remove_metadata(self, keys: list[str]) -> None:
        for key in keys:
            self.metadata.pop(key, None)
            self.inheritable_metadata.pop(key, None)

    def copy(self: _M) -> _M:
        return self._copy_as(self.__class__)

    def _copy_as(self, cls: type[_M]) -> _M:
        """A ``cls`` manager with this one's handlers, parent, tags and metadata (copied)."""
        return cls(handlers=list(self.handlers), inheritable_handlers=list(self.inheritable_handlers),
                   parent_run_id=self.parent_run_id, tags=list(self.tags),
                   inheritable_tags=list(self.inheritable_tags), metadata=dict(self.metadata),
                   inheritable_metadata=dict(self.inheritable_metadata))

    def _run_kwargs(self, run_id: UUID, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": run_id, "parent_run_id": self.parent_run_id, "tags": self.tags,
                "metadata": self.metadata, **kwargs}

    def _run_manager(self, cls: type[T], run_id: UUID) -> T:
        return cls(run_id=run_id, handlers=self.handlers,  # type: ignore[call-arg]
                   inheritable_handlers=self.inheritable_handlers, parent_run_id=self.parent_run_id,
                   tags=self.tags, inheritable_tags=self.inheritable_tags, metadata=self.metadata,
                   inheritable_metadata=self.inheritable_metadata)


class _Starts(BaseCallbackManager):
    """The on_*_start methods, written once for CallbackManager and AsyncCallbackManager."""

    _chain_run: type
    _llm_run: type
    _tool_run: type
    _retriever_run: type

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any,
                       run_id: UUID | None = None, **kwargs: Any) -> Any:
        """Start a chain run; returns its run manager (awaitable on async managers)."""
        run_id = run_id or uuid4()
        pending = self._emit("on_chain_start", (serialized, inputs), self._run_kwargs(run_id, kwargs))
        return self._started([pending], self._run_manager(self._chain_run, run_id))

    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str,
                      run_id: UUID | None = None, parent_run_id: UUID | None = None,
                      inputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        run_id = run_id or uuid4()
        pending = self._emit("on_tool_start", (serialized, input_str),
                             self._run_kwargs(run_id, {"inputs": inputs, **kwargs}))
        return self._started([pending], self._run_manager(self._tool_run, run_id))

    def on_retriever_start(self, serialized: dict[str, Any] | None, query: str,
                           run_id: UUID | None = None, parent_run_id: UUID | None = None,
                           **kwargs: Any) -> Any:
        run_id = run_id or uuid4()
        pending = self._emit("on_retriever_start", (serialized, query), self._run_kwargs(run_id, kwargs))
        return self._started([pending], self._run_manager(self._retriever_run, run_id))

    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str],
                     run_id: UUID | None = None, **kwargs: Any) -> Any:
        """One run (and run manager) per prompt, as LangChain does."""
        return self._model_start("on_llm_start", serialized, [[p] for p in prompts], run_id, kwargs)

    def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: list[list[Any]],
                            run_id: UUID | None = None, **kwargs: Any) -> Any:
        return self._model_start("on_chat_model_start", serialized, [[m] for m in messages],
                                 run_id, kwargs)

    def _model_start(self, event: str, serialized: Any, batches: list[list[Any]],
                     run_id: UUID | None, kwargs: dict[str, Any]) -> Any:
        pending: list[Any] = []
        managers: list[Any] = []
        for batch in batches:
            run_id_, run_id = run_id or uuid4(), None
            pending.append(self._emit(event, (serialized, batch), self._run_kwargs(run_id_, kwargs)))
            managers.append(self._run_manager(self._llm_run, run_id_))
        return self._started(pending, managers)

    def on_custom_event(self, name: str, data: Any, run_id: UUID | None = None, **kwargs: Any) -> Any:
        return self._emit("on_custom_event", (name, data),
                          {"run_id": run_id or self.parent_run_id, "tags": self.tags,
                           "metadata": self.metadata, **kwargs})

    @classmethod
    def configure(cls: Any, inheritable_callbacks: Any = None, local_callbacks: Any = None,
                  verbose: bool = False, inheritable_tags: list[str] | None = None,
                  local_tags: list[str] | None = None,
                  inheritable_metadata: dict[str, Any] | None = None,
                  local_metadata: dict[str, Any] | None = None) -> Any:
        """Build the manager for one run from request-time and constructor callbacks."""
        if isinstance(inheritable_callbacks, BaseCallbackManager):
            manager = inheritable_callbacks._copy_as(cls)
        else:
            handlers = list(inheritable_callbacks or [])
            manager = cls(handlers=handlers, inheritable_handlers=list(handlers))
        local = local_callbacks.handlers if isinstance(local_callbacks, BaseCallbackManager) \
            else (local_callbacks or [])
        for handler in local:
            manager.add_handler(handler, inherit=False)
        if inheritable_tags:
            manager.add_tags(inheritable_tags, inherit=True)
        if local_tags:
            manager.add_tags(local_tags, inherit=False)
        if inheritable_metadata:
            manager.add_metadata(inheritable_metadata, inherit=True)
        if local_metadata:
            manager.add_metadata(local_metadata, inherit=False)
        return manager


# --- run managers -------------------------------------------------------------------------------
def _event(name: str) -> Callable[..., Any]:
    def method(self: BaseRunManager, *args: Any, **kwargs: Any) -> Any:
        if not self.handlers:
            return self._started([], None)
        return self._emit(name, args, {"run_id": self.run_id, "parent_run_id": self.parent_run_id,
                                       "tags": self.tags, **kwargs})
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Send ``{name}`` for this run to its handlers."
    return method


def _with_events(*names: str) -> Callable[[type[T]], type[T]]:
    def decorate(cls: type[T]) -> type[T]:
        for name in names:
            setattr(cls, name, _event(name))
        return cls
    return decorate


@_with_events("on_text", "on_retry")
class BaseRunManager(BaseCallbackManager):
    """A manager bound to one run: events carry its run id; ``get_child`` passes on inheritables."""

    _child_manager: type

    def __init__(self, *, run_id: UUID, handlers: list[Handler], inheritable_handlers: list[Handler],
                 parent_run_id: UUID | None = None, tags: list[str] | None = None,
                 inheritable_tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                 inheritable_metadata: dict[str, Any] | None = None) -> None:
        super().__init__(handlers, inheritable_handlers, parent_run_id, tags=tags,
                         inheritable_tags=inheritable_tags, metadata=metadata,
                         inheritable_metadata=inheritable_metadata)
        self.run_id = run_id

    @classmethod
    def get_noop_manager(cls: type[T]) -> T:
        return cls(run_id=uuid4(), handlers=[], inheritable_handlers=[])  # type: ignore[call-arg]

    def get_child(self, tag: str | None = None) -> Any:
        """The manager for a child run: inheritable handlers, tags and metadata only."""
        manager = self._child_manager(handlers=[], parent_run_id=self.run_id)
        manager.set_handlers(self.inheritable_handlers)
        manager.add_tags(self.inheritable_tags)
        manager.add_metadata(self.inheritable_metadata)
        if tag is not None:
            manager.add_tags([tag], inherit=False)
        return manager


_CHAIN_EVENTS = ("on_chain_end", "on_chain_error", "on_agent_action", "on_agent_finish")
_LLM_EVENTS = ("on_llm_new_token", "on_llm_end", "on_llm_error")
_TOOL_EVENTS = ("on_tool_end", "on_tool_error")
_RETRIEVER_EVENTS = ("on_retriever_end", "on_retriever_error")


class _Async:
    """Async flavour: ``_emit`` returns a coroutine; starts return an awaitable."""

    is_async = True

    def _emit(self, event: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _adispatch(self.handlers, event, args, kwargs)  # type: ignore[attr-defined]

    def _started(self, pending: list[Any], result: T) -> Any:
        return _await_then(pending, result)


class RunManager(BaseRunManager):
    """Sync run manager."""


class AsyncRunManager(_Async, BaseRunManager):
    """Async run manager: every event method returns an awaitable."""


@_with_events(*_CHAIN_EVENTS)
class CallbackManagerForChainRun(RunManager):
    pass


@_with_events(*_LLM_EVENTS)
class CallbackManagerForLLMRun(RunManager):
    pass


@_with_events(*_TOOL_EVENTS)
class CallbackManagerForToolRun(RunManager):
    pass


@_with_events(*_RETRIEVER_EVENTS)
class CallbackManagerForRetrieverRun(RunManager):
    pass


@_with_events(*_CHAIN_EVENTS)
class AsyncCallbackManagerForChainRun(AsyncRunManager):
    pass


@_with_events(*_LLM_EVENTS)
class AsyncCallbackManagerForLLMRun(AsyncRunManager):
    pass


@_with_events(*_TOOL_EVENTS)
class AsyncCallbackManagerForToolRun(AsyncRunManager):
    pass


@_with_events(*_RETRIEVER_EVENTS)
class AsyncCallbackManagerForRetrieverRun(AsyncRunManager):
    pass


class CallbackManager(_Starts):
    """Sync callback manager: ``on_*_start`` return run managers."""

    _chain_run = CallbackManagerForChainRun
    _llm_run = CallbackManagerForLLMRun
    _tool_run = CallbackManagerForToolRun
    _retriever_run = CallbackManagerForRetrieverRun


class AsyncCallbackManager(_Starts, _Async, BaseCallbackManager):
    """Async callback manager: ``await manager.on_chain_start(...)`` returns a run manager."""

    _chain_run = AsyncCallbackManagerForChainRun
    _llm_run = AsyncCallbackManagerForLLMRun
    _tool_run = AsyncCallbackManagerForToolRun
    _retriever_run = AsyncCallbackManagerForRetrieverRun


RunManager._child_manager = CallbackManager
AsyncRunManager._child_manager = AsyncCallbackManager
