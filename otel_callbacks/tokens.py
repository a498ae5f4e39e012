"""The per-token hot path of a streamed model run, apart from the handler.

LangChain looks ``on_llm_new_token`` up on the handler once per streamed token. A method found
on the class is a new bound-method object every time; an attribute of the handler instance is
found as it is. ``OTelHandler`` stores ``token_callback``'s plain function there (a function is
called without a bound method's extra step, too). Its ``TokenPath`` holds the run that streamed
the last token and only a weak reference to the handler: a handler that referred to itself
would wait for the cycle collector instead of being freed (and its open runs ended) as soon as
the app drops it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .registry import NO_RUN, RunState

if TYPE_CHECKING:
    from .handler import OTelHandler


class TokenPath:
    """The run that streamed the last token, and a weak reference to its handler."""

    __slots__ = ("streaming", "handler")

    def __init__(self, handler: OTelHandler) -> None:
        # The run that streamed the last token: the next token is almost always its own. Once
        # the registry drops that run its id no longer matches, so no reset is needed here.
        self.streaming: RunState = NO_RUN
        self.handler = weakref.ref(handler)


def token_callback(path: TokenPath) -> Callable[..., None]:
    """``on_llm_new_token`` for the handler's instance dict: a plain function over ``path``,
    which LangChain calls without binding a method (about 15 ns a token less than a bound
    method on 3.11).

    A text token of the run that streamed the last one, past its token events, takes one of
    the run's ticks (``RunState.ticks``): one C-level ``next()``, nothing stored, nothing that
    can raise. Every other token, and the one that finds the ticks used up, goes to the
    handler's ``_new_token``.
    """
    handler_of = path.handler

    def on_llm_new_token(token: Any, *, chunk: Any = None, run_id: Any, parent_run_id: Any = None,
                         tags: Any = None, **kwargs: Any) -> None:
        # ``parent_run_id`` and ``tags`` are named because LangChain passes them: a name costs
        # less than a key in ``kwargs``.
        state = path.streaming
        if (state.run_id is run_id and token.__class__ is str and token
                and next(state.ticks, None) is not None):
            return  # counted: one tick taken
        handler = handler_of()
        if handler is not None:
            handler._new_token(token, chunk, run_id)

    return on_llm_new_token
