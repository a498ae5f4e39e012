"""Which conversation and user a run tree belongs to, and ``use_conversation`` that sets them.

Resolved once, when a root run starts (DESIGN decision 9); first match wins:

1. W3C baggage in the context where the root run starts: ``gen_ai.conversation.id`` (else
   ``session.id``) and ``user.id``. ``use_conversation`` sets exactly these, and OTel's default
   propagators carry them across HTTP hops, so a web tier can name the conversation for an
   agent service it calls.
2. The root run's metadata: ``thread_id``, ``session_id`` or ``conversation_id`` (the keys
   LangSmith groups threads by; LangGraph copies ``configurable.thread_id`` there itself), and
   ``user_id``.

Every descendant shares its parent's ``RunIds`` by reference. LangChain copies metadata into
every child run, so a child whose metadata only repeats what it inherited keeps the tree's
value; a child whose metadata names *another* id (a graph invoked with its own thread) starts
its own value for its subtree. The ids are identifiers, not secrets, but a credential-shaped
value is never used as one.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any
from uuid import UUID

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from . import attributes as attr
from .content import is_secret_value, utf8_safe

logger = logging.getLogger("otel_callbacks")

# Baggage keys read at a root run's start (and set by ``use_conversation``).
BAGGAGE_CONVERSATION_ID = attr.GEN_AI_CONVERSATION_ID
BAGGAGE_SESSION_ID = attr.SESSION_ID
BAGGAGE_USER_ID = attr.USER_ID
# Run metadata keys, in the order they are tried.
CONVERSATION_METADATA_KEYS = ("thread_id", "session_id", "conversation_id")
USER_METADATA_KEY = "user_id"
MAX_ID_LENGTH = 256

_ID_TYPES = (str, int, UUID)
_ID_KEYS = frozenset((*CONVERSATION_METADATA_KEYS, USER_METADATA_KEY))
_Raw = tuple[Any, Any, Any, Any]  # (thread_id, session_id, conversation_id, user_id) as given


def clean_id(value: Any) -> str | None:
    """An id as exported: a non-empty string (ints and UUIDs as text), capped; else None.

    A credential-shaped value (``sk-...``) is not an id: it is ignored, never exported.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, UUID)):
        text = str(value)
    else:
        return None
    if not text:
        return None
    if is_secret_value(text):
        logger.debug("otel-callbacks: a credential-shaped conversation/user id was ignored")
        return None
    return utf8_safe(text[:MAX_ID_LENGTH])


class RunIds:
    """The conversation and user of a run tree, shared by reference by the runs that inherit it.

    ``attributes`` is added to every span of those runs; ``thread_id`` is LangGraph's thread
    (resumed runs are matched by it); ``raw`` is the metadata values it came from, against
    which a child's own metadata is compared.
    """

    __slots__ = ("attributes", "thread_id", "raw")

    def __init__(self, conversation: str | None, user: str | None, thread_id: str | None,
                 raw: _Raw) -> None:
        attributes: dict[str, str] = {}
        if conversation is not None:
            attributes[attr.GEN_AI_CONVERSATION_ID] = conversation
            attributes[attr.SESSION_ID] = conversation
        if user is not None:
            attributes[attr.USER_ID] = user
        self.attributes = attributes
        self.thread_id = thread_id
        self.raw = raw


_NO_RAW: _Raw = (None, None, None, None)


def _raw(metadata: Any) -> _Raw | None:
    """The id keys of a run's metadata (values of other types dropped), or None if it has none."""
    if metadata.__class__ is dict and _ID_KEYS.isdisjoint(metadata):
        return None  # most runs (every LangGraph node run has metadata): one C-level check
    try:
        get = metadata.get
    except AttributeError:
        return None
    thread, session, conversation, user = (
        get("thread_id"), get("session_id"), get("conversation_id"), get(USER_METADATA_KEY))
    if thread is None and session is None and conversation is None and user is None:
        return None  # most runs: four lookups, nothing built
    return (thread if isinstance(thread, _ID_TYPES) else None,
            session if isinstance(session, _ID_TYPES) else None,
            conversation if isinstance(conversation, _ID_TYPES) else None,
            user if isinstance(user, _ID_TYPES) else None)


def _conversation_from(raw: _Raw) -> str | None:
    for value in raw[:3]:
        cleaned = clean_id(value)
        if cleaned is not None:
            return cleaned
    return None


def for_root(metadata: Any, context: Context | None) -> RunIds | None:
    """The ids of a run tree whose root starts in ``context`` (None: the current one)."""
    bag = baggage.get_all(context)
    conversation = user = None
    if bag:
        conversation = (clean_id(bag.get(BAGGAGE_CONVERSATION_ID))
                        or clean_id(bag.get(BAGGAGE_SESSION_ID)))
        user = clean_id(bag.get(BAGGAGE_USER_ID))
    raw = _raw(metadata) if metadata else None
    if raw is None:
        if conversation is None and user is None:
            return None
        raw = _NO_RAW
    if conversation is None:
        conversation = _conversation_from(raw)
    if user is None:
        user = clean_id(raw[3])
    return RunIds(conversation, user, clean_id(raw[0]), raw)


def for_child(inherited: RunIds | None, metadata: Any) -> RunIds | None:
    """A child run's ids: its parent's, unless its own metadata names another id."""
    raw = _raw(metadata)
    if raw is None:
        return inherited
    if inherited is None:
        conversation, user = _conversation_from(raw), clean_id(raw[3])
        if conversation is None and user is None and raw[0] is None:
            return None
        return RunIds(conversation, user, clean_id(raw[0]), raw)
    before = inherited.raw
    if raw == before:  # LangChain copied the parent's metadata: the common case
        return inherited
    # A field the child names differently from what it inherited is its own.
    new = [value is not None and value != old for value, old in zip(raw, before)]
    if not any(new):
        return inherited
    merged: _Raw = tuple(v if n else old for v, n, old in zip(raw, new, before))  # type: ignore[assignment]
    conversation = (_conversation_from(merged) if any(new[:3])
                    else inherited.attributes.get(attr.GEN_AI_CONVERSATION_ID))
    user = clean_id(merged[3]) if new[3] else inherited.attributes.get(attr.USER_ID)
    return RunIds(conversation, user, clean_id(merged[0]), merged)


class ConversationScope:
    """Context manager (``with`` and ``async with``) returned by ``use_conversation``."""

    __slots__ = ("_values", "_tokens")

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._tokens: list[Any] = []

    def context(self, parent: Context | None = None) -> Context:
        """``parent`` (default: the current context) with this scope's baggage set."""
        ctx = parent if parent is not None else otel_context.get_current()
        for key, value in self._values.items():
            ctx = baggage.set_baggage(key, value, ctx)
        return ctx

    def __enter__(self) -> ConversationScope:
        self._tokens.append(otel_context.attach(self.context()))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        otel_context.detach(self._tokens.pop())

    async def __aenter__(self) -> ConversationScope:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def use_conversation(conversation_id: str | None = None, *,
                     user_id: str | None = None) -> ConversationScope:
    """Make every run started inside the block part of ``conversation_id`` (and ``user_id``).

    A context manager for ``with`` and ``async with``. It sets W3C baggage
    (``gen_ai.conversation.id``, ``user.id``), so the ids also reach services called from the
    block when the default propagators inject into outgoing requests. A value left None keeps
    the one already set (nested blocks: the inner value wins inside). Baggage travels in request
    headers to every service the block calls, the model provider's too if its client is
    instrumented: pass opaque ids, never personal data.
    """
    values: dict[str, str] = {}
    for key, value in ((BAGGAGE_CONVERSATION_ID, conversation_id), (BAGGAGE_USER_ID, user_id)):
        cleaned = clean_id(value)
        if cleaned is not None:
            values[key] = cleaned
        elif value is not None:
            logger.warning("otel-callbacks: use_conversation ignored %s=%r (not a usable id)",
                           key, type(value).__name__)
    return ConversationScope(values)
