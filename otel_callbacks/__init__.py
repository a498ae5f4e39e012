"""otel-callbacks: LangChain-style callbacks as OpenTelemetry traces.

Add ``callbacks=[OTelHandler()]`` to a chain, model, tool or agent call and every run becomes
a span, nested exactly as the runs nest. ``use_conversation`` names the conversation and user
of the runs inside it; ``record_evaluation`` adds feedback to a finished run's trace.
"""

from .context_bridge import run_context
from .conversation import use_conversation
from .evaluation import record_evaluation
from .handler import OTelHandler
from .handlers import AsyncCallbackHandler, BaseCallbackHandler
from .manager import (
    AsyncCallbackManager,
    AsyncCallbackManagerForChainRun,
    AsyncCallbackManagerForLLMRun,
    AsyncCallbackManagerForRetrieverRun,
    AsyncCallbackManagerForToolRun,
    AsyncRunManager,
    BaseCallbackManager,
    BaseRunManager,
    CallbackManager,
    CallbackManagerForChainRun,
    CallbackManagerForLLMRun,
    CallbackManagerForRetrieverRun,
    CallbackManagerForToolRun,
    RunManager,
)
from .version import __version__

__all__ = [
    "AsyncCallbackHandler", "AsyncCallbackManager", "AsyncCallbackManagerForChainRun",
    "AsyncCallbackManagerForLLMRun", "AsyncCallbackManagerForRetrieverRun",
    "AsyncCallbackManagerForToolRun", "AsyncRunManager", "BaseCallbackHandler",
    "BaseCallbackManager", "BaseRunManager", "CallbackManager", "CallbackManagerForChainRun",
    "CallbackManagerForLLMRun", "CallbackManagerForRetrieverRun", "CallbackManagerForToolRun",
    "OTelHandler", "RunManager", "__version__", "record_evaluation", "run_context",
    "use_conversation",
]
