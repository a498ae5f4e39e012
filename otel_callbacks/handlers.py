"""Callback handler base classes with LangChain's method names, flags and signatures.

When langchain-core is installed these classes *are* langchain-core handlers (subclasses), so a
handler written against them works with LangChain's managers and with ours alike. Without
langchain-core they stand alone and our ``CallbackManager`` drives them.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

try:  # optional extra
    from langchain_core.callbacks import AsyncCallbackHandler as _LCAsyncHandler
    from langchain_core.callbacks import BaseCallbackHandler as _LCHandler
except ImportError:  # pragma: no cover - exercised by the no-langchain subprocess test
    _LCHandler = object  # type: ignore[assignment,misc]
    _LCAsyncHandler = object  # type: ignore[assignment,misc]

HAS_LANGCHAIN = _LCHandler is not object

# event -> the handler property that, when True, makes a manager skip that event.
IGNORE_FLAGS: dict[str, str | None] = {
    "on_llm_start": "ignore_llm", "on_chat_model_start": "ignore_chat_model",
    "on_llm_new_token": "ignore_llm", "on_llm_end": "ignore_llm", "on_llm_error": "ignore_llm",
    "on_chain_start": "ignore_chain", "on_chain_end": "ignore_chain",
    "on_chain_error": "ignore_chain", "on_tool_start": "ignore_agent",
    "on_tool_end": "ignore_agent", "on_tool_error": "ignore_agent",
    "on_retriever_start": "ignore_retriever", "on_retriever_end": "ignore_retriever",
    "on_retriever_error": "ignore_retriever", "on_agent_action": "ignore_agent",
    "on_agent_finish": "ignore_agent", "on_retry": "ignore_retry", "on_text": None,
    "on_custom_event": "ignore_custom_event",
}


class _Flags:
    """LangChain's handler switches: what to skip, whether to raise, whether to run inline.

    Plain class attributes rather than LangChain's properties: managers read one per handler
    per event (per streamed token, too), and a subclass may still override them either way.
    """

    raise_error: bool = False
    run_inline: bool = False
    ignore_llm: bool = False
    ignore_retry: bool = False
    ignore_chain: bool = False
    ignore_agent: bool = False
    ignore_retriever: bool = False
    ignore_chat_model: bool = False
    ignore_custom_event: bool = False


def _noop(self: Any, *args: Any, **kwargs: Any) -> Any:
    return None


async def _anoop(self: Any, *args: Any, **kwargs: Any) -> Any:
    return None


class BaseCallbackHandler(_Flags, _LCHandler):  # type: ignore[misc,valid-type]
    """Base for sync handlers: override the ``on_*`` events you care about."""

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *,
                            run_id: UUID, parent_run_id: UUID | None = None,
                            tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        # LangChain's contract: a handler without chat support falls back to on_llm_start.
        raise NotImplementedError(f"{type(self).__name__} does not implement on_chat_model_start")


class AsyncCallbackHandler(_Flags, _LCAsyncHandler):  # type: ignore[misc,valid-type]
    """Base for async handlers: ``on_*`` events are coroutines awaited by async managers."""

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *,
                                  run_id: UUID, parent_run_id: UUID | None = None,
                                  tags: list[str] | None = None,
                                  metadata: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement on_chat_model_start")


# Without langchain-core, give both bases every event as a no-op (LangChain's mixins do this).
for _event in IGNORE_FLAGS:
    if _event == "on_chat_model_start":
        continue
    if not hasattr(BaseCallbackHandler, _event):
        setattr(BaseCallbackHandler, _event, _noop)
    if not hasattr(AsyncCallbackHandler, _event):
        setattr(AsyncCallbackHandler, _event, _anoop)
