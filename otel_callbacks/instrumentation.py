"""``OTelCallbacksInstrumentor``: trace every LangChain run without touching the app's code.

It adds one shared ``OTelHandler`` to every callback manager LangChain configures, so it works
with ``opentelemetry-instrument`` (entry point ``langchain_callbacks``) or one call at startup::

    OTelCallbacksInstrumentor().instrument(tracer_provider=provider)

Why a wrapper around ``langchain_core.callbacks.manager._configure`` rather than LangChain's
``register_configure_hook``: a hook reads a ``ContextVar``, and a value set at instrument time is
invisible to threads (they start with an empty context) and to contexts copied earlier, so
runs in a server's worker threads would go untraced. A hook can also only *add* a handler; it
cannot step aside for a user's own ``OTelHandler`` given as a constructor callback further
down the tree. The wrapper sees the finished manager and keeps exactly one ``OTelHandler`` on
it: the user's when there is one (one span per run, never two), else ours.

``uninstrument()`` restores the original function. The core context bridge installed by every
``OTelHandler`` stays: hand-made handlers keep relying on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from .handler import OTelHandler
from .package import _instruments

logger = logging.getLogger("otel_callbacks")

_MODULE = "langchain_core.callbacks.manager"
_FUNCTION = "_configure"


class OTelCallbacksInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """OpenTelemetry instrumentor for LangChain callbacks (a process-wide singleton).

    ``instrument()`` accepts ``tracer_provider``, ``meter_provider``, ``capture_content``,
    ``redact`` and ``model_metrics`` (the ``OTelHandler`` options); omitted providers mean the
    global ones.
    """

    _handler: OTelHandler | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    @property
    def handler(self) -> OTelHandler | None:
        """The handler injected into LangChain's managers while instrumented."""
        return self._handler

    def _instrument(self, **kwargs: Any) -> None:
        handler = OTelHandler(
            kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            capture_content=kwargs.get("capture_content"),
            redact=kwargs.get("redact"),
            model_metrics=kwargs.get("model_metrics", True),
        )
        self._handler = handler
        wrap_function_wrapper(_MODULE, _FUNCTION, _configure_wrapper(handler))

    def _uninstrument(self, **kwargs: Any) -> None:
        import langchain_core.callbacks.manager as manager_module

        unwrap(manager_module, _FUNCTION)
        # Runs already under way keep the handler on their managers and end their spans.
        self._handler = None


def _configure_wrapper(handler: OTelHandler) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        manager = wrapped(*args, **kwargs)
        try:
            ensure_one_handler(manager, handler)
        except Exception:  # tracing must never break LangChain's configuration
            logger.debug("otel-callbacks: could not add the instrumentor's handler", exc_info=True)
        return manager
    return wrapper


def ensure_one_handler(manager: Any, ours: OTelHandler) -> None:
    """Leave exactly one ``OTelHandler`` among the manager's handlers, preferring the user's.

    Ours stays *inheritable* even when it steps aside, so descendants the user's handler does
    not reach (it may be a constructor callback, local to one run) are still traced.
    """
    handlers = manager.handlers
    has_ours = any(h is ours for h in handlers)
    has_users = any(isinstance(h, OTelHandler) and h is not ours for h in handlers)
    if has_users:
        if has_ours:
            manager.handlers = [h for h in handlers if h is not ours]
    elif not has_ours:
        manager.add_handler(ours, inherit=True)
