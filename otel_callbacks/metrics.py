"""GenAI client metrics (token usage, operation duration, time to first chunk) and ours.

The three ``gen_ai.client.*`` instruments follow the GenAI conventions. The conventions have no
metric for tool calls or for prompt-cache tokens, so two instruments of ours fill the gaps:
``langchain.tool.duration`` (every tool run; its count is the number of calls, with
``error.type`` on failures) and ``langchain.llm.cache.token.usage`` (cache reads and writes,
a part of the input tokens, kept out of ``gen_ai.client.token.usage`` so no sum counts them
twice).

Created only when a real MeterProvider exists (passed in, or configured globally, even after
the handler was made); until then the handler holds None and makes no metrics calls at all.
Each measurement carries the run's span context, so exemplars point at the run's span.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider

from . import attributes as attr
from .content import utf8_safe_attributes
from .mapping import is_failure, qualified_name
from .version import __version__

try:  # metric names from the conventions package, as attributes.py does for attributes
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_ai_metrics
except ImportError:  # pragma: no cover - very old semconv
    _gen_ai_metrics = None  # type: ignore[assignment]


def _name(constant: str, fallback: str) -> str:
    return getattr(_gen_ai_metrics, constant, fallback)


TOKEN_USAGE = _name("GEN_AI_CLIENT_TOKEN_USAGE", "gen_ai.client.token.usage")
OPERATION_DURATION = _name("GEN_AI_CLIENT_OPERATION_DURATION", "gen_ai.client.operation.duration")
TIME_TO_FIRST_CHUNK = _name("GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK",
                            "gen_ai.client.operation.time_to_first_chunk")
TOOL_DURATION = "langchain.tool.duration"
CACHE_TOKEN_USAGE = "langchain.llm.cache.token.usage"
# gen_ai.token.type values of CACHE_TOKEN_USAGE: input tokens read from / written to the cache.
CACHE_READ = "cache_read"
CACHE_CREATION = "cache_creation"

_METRIC_KEYS = (attr.GEN_AI_OPERATION_NAME, attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_REQUEST_MODEL)
# Bucket boundaries the GenAI conventions advise for these histograms.
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92]
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864]


# The API module that holds the global MeterProvider. Reading its variable costs ~40 ns, where
# metrics.get_meter_provider() costs ~2 us (it looks up os.environ each call): a handler polls
# it on every model and tool run until a global provider is set. Private, hence the fallback.
_api_globals = sys.modules.get("opentelemetry.metrics._internal")
_CAN_PEEK = _api_globals is not None and hasattr(_api_globals, "_METER_PROVIDER")


def _always_ask() -> object:
    return True


# The global MeterProvider if one is set, else None (anything but None when it cannot tell):
# a C-level read, no Python frame, for the handler's check on each model and tool run.
peek_global_provider: Callable[[], object] = (
    functools.partial(getattr, _api_globals, "_METER_PROVIDER", None) if _CAN_PEEK
    else _always_ask)


def global_provider_set() -> bool:
    """Whether a global MeterProvider may have been set since the handler looked last."""
    return peek_global_provider() is not None


def is_configured(provider: MeterProvider) -> bool:
    """Whether ``provider`` records anything (the API's proxy and no-op providers do not)."""
    return not isinstance(provider, NoOpMeterProvider) and type(provider).__name__ != "_ProxyMeterProvider"


class GenAIMetrics:
    """The instruments, recorded when a model or tool run ends."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = metrics.get_meter("otel_callbacks", __version__, meter_provider=provider)
        self.token_usage = meter.create_histogram(
            TOKEN_USAGE, unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.duration = meter.create_histogram(
            OPERATION_DURATION, unit="s",
            description="GenAI operation duration", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.time_to_first_chunk = meter.create_histogram(
            TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.cache_token_usage = meter.create_histogram(
            CACHE_TOKEN_USAGE, unit="{token}",
            description="Input tokens read from or written to the provider's prompt cache",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS)
        self.tool_duration = meter.create_histogram(
            TOOL_DURATION, unit="s", description="Tool run duration (failed runs carry error.type)",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)

    @classmethod
    def create(cls, provider: MeterProvider | None) -> GenAIMetrics | None:
        """Instruments on ``provider`` (or the global one if set up); None means no metrics."""
        if provider is None:
            provider = metrics.get_meter_provider()
            if not is_configured(provider):
                return None
        return cls(provider)

    @staticmethod
    def base_attributes(model_attributes: dict[str, Any]) -> dict[str, Any]:
        return {k: model_attributes[k] for k in _METRIC_KEYS if k in model_attributes}

    @staticmethod
    def tool_attributes(tool_attributes: dict[str, Any]) -> dict[str, Any]:
        name = tool_attributes.get(attr.GEN_AI_TOOL_NAME)
        return {attr.GEN_AI_TOOL_NAME: name} if name else {}

    def record(self, state: Any, end_attributes: dict[str, Any] | None,
               error: BaseException | None) -> None:
        attributes = dict(state.metric_attributes)
        if error is not None and is_failure(error):  # the same rule and value as the span's
            attributes[attr.ERROR_TYPE] = qualified_name(error)
        context = state.context  # exemplars link to the run's own span
        duration = (time.time_ns() - state.start_ns) / 1e9
        if state.run_type == attr.TOOL:
            self.tool_duration.record(duration, utf8_safe_attributes(attributes), context=context)
            return
        end_attributes = end_attributes or {}
        model = end_attributes.get(attr.GEN_AI_RESPONSE_MODEL)
        if model:
            attributes[attr.GEN_AI_RESPONSE_MODEL] = model
        attributes = utf8_safe_attributes(attributes)
        self.duration.record(duration, attributes, context=context)
        if state.first_chunk_ns:
            self.time_to_first_chunk.record((state.first_chunk_ns - state.start_ns) / 1e9,
                                            attributes, context=context)
        for instrument, key, token_type in _TOKEN_COUNTS:
            count = end_attributes.get(key)
            if isinstance(count, int):
                getattr(self, instrument).record(
                    count, {**attributes, attr.GEN_AI_TOKEN_TYPE: token_type}, context=context)


# (instrument attribute, usage attribute on the span, gen_ai.token.type of the measurement)
_TOKEN_COUNTS = (
    ("token_usage", attr.GEN_AI_USAGE_INPUT_TOKENS, "input"),
    ("token_usage", attr.GEN_AI_USAGE_OUTPUT_TOKENS, "output"),
    ("cache_token_usage", attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, CACHE_READ),
    ("cache_token_usage", attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, CACHE_CREATION),
)
