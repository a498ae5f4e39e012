"""The response id of a streamed provider call, read from the provider SDK's first event.

LangChain's OpenAI (Chat Completions) and Anthropic integrations drop the response id from
streamed chunks, though the first event on the wire carries it (``chatcmpl-...``, Anthropic's
``message_start``). The openai and anthropic SDKs share one stream class shape; the context
bridge wraps its ``__stream__`` (the generator behind both ``__iter__`` and ``__next__``) with
these wrappers. They look at the first event only (later events pass straight through) and only
inside one of our model runs whose span has no response id yet: other streams are left alone.
The model run is found through the bridge, not the current span, which a provider
instrumentation may have replaced with its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from . import attributes as attr
from .content import utf8_safe

SpanFinder = Callable[[], Any]


def _span_without_id(find_span: SpanFinder) -> Any:
    span = find_span()
    if span is None or not span.is_recording():
        return None
    attributes = getattr(span, "attributes", None)
    if isinstance(attributes, Mapping) and attr.GEN_AI_RESPONSE_ID in attributes:
        return None
    return span


def _record_id(span: Any, event: Any) -> None:
    """``event.id`` (an OpenAI chunk), else the id of the message or response it opens."""
    try:
        response_id = getattr(event, "id", None)
        if not isinstance(response_id, str):
            opened = getattr(event, "message", None) or getattr(event, "response", None)
            response_id = getattr(opened, "id", None)
        if isinstance(response_id, str) and response_id:
            span.set_attribute(attr.GEN_AI_RESPONSE_ID, utf8_safe(response_id))
    except Exception:  # an event of another shape: no id, nothing else changes
        pass


def _first_then_rest(iterator: Iterator[Any], span: Any) -> Iterator[Any]:
    try:
        for event in iterator:
            _record_id(span, event)
            yield event
            break
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def _afirst_then_rest(iterator: AsyncIterator[Any], span: Any) -> AsyncIterator[Any]:
    first = True
    try:
        async for event in iterator:
            if first:
                first = False
                _record_id(span, event)
            yield event
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _wrapper(find_span: SpanFinder, relay: Callable[[Any, Any], Any]) -> Any:
    """A wrapt wrapper for an SDK's ``__stream__``: ``relay`` records the first event's id."""
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        iterator = wrapped(*args, **kwargs)
        span = _span_without_id(find_span)
        return iterator if span is None else relay(iterator, span)
    return wrapper


def stream_wrapper(find_span: SpanFinder) -> Any:
    """For the SDKs' ``Stream.__stream__``."""
    return _wrapper(find_span, _first_then_rest)


def astream_wrapper(find_span: SpanFinder) -> Any:
    """For the SDKs' ``AsyncStream.__stream__``."""
    return _wrapper(find_span, _afirst_then_rest)
