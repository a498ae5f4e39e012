"""Token usage that a streamed model run's chunks report, and the totals its span gets from them.

LangChain's contract is that chunk usage adds up: the merged message at the end of a stream
holds the sum. That holds for providers whose stream reports usage once or in increments. The
counts in Anthropic's stream events are cumulative instead: message_start has the prompt
(input and cache tokens, first output token) and message_delta has the running totals (today
input and cache tokens too). langchain-anthropic 0.3.12 and earlier turn both events into
chunk usage, so the merged message counts the prompt and the cache twice and one output
token too many (later releases zero one side, or report message_delta only). For such a
provider each count's largest report is the total, whichever way the integration split the
events; with a single usage chunk that is the same number as the sum.

The tally does work only for chunks that carry usage (one or two per stream), never per token.
It also gives a run that never gets its own end (abandoned, orphaned, evicted) the usage seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import attributes as attr
from .mapping import usage_attributes

# gen_ai.provider.name values whose streamed usage counts are running totals, not increments.
CUMULATIVE_STREAM_USAGE = frozenset({"anthropic"})
_TOTALS = (attr.GEN_AI_USAGE_INPUT_TOKENS, attr.GEN_AI_USAGE_OUTPUT_TOKENS)


class StreamUsage:
    """Per usage attribute: the sum and the largest of the counts chunks reported."""

    __slots__ = ("sums", "peaks", "reports")

    def __init__(self) -> None:
        self.sums: dict[str, int] = {}
        self.peaks: dict[str, int] = {}
        self.reports = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        self.reports += 1
        sums, peaks = self.sums, self.peaks
        for key, count in usage_attributes(usage, {}).items():
            sums[key] = sums.get(key, 0) + count
            if count > peaks.get(key, -1):
                peaks[key] = count

    def settle(self, attributes: dict[str, Any] | None, state: Any) -> dict[str, Any] | None:
        """The run's end attributes with the usage the stream knows better: a cumulative
        provider's totals over LangChain's sum, or the sum where the end reported no usage."""
        if self.reports > 1 and _provider(state) in CUMULATIVE_STREAM_USAGE:
            return {**(attributes or {}), **self.peaks}
        if attributes is None or not any(key in attributes for key in _TOTALS):
            return {**(attributes or {}), **self.sums}
        return attributes


def _provider(state: Any) -> Any:
    """The run's gen_ai.provider.name: from its span, else (unsampled) its metric attributes."""
    for source in (getattr(state.span, "attributes", None), state.metric_attributes):
        if isinstance(source, Mapping):
            provider = source.get(attr.GEN_AI_PROVIDER_NAME)
            if provider:
                return provider
    return None
