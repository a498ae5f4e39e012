"""Streamed usage: the span's token counts are the provider's, whatever way the integration split
them into chunks. Chunks go through real langchain-core, which merges them (adding their usage
up) and hands the merged message to the callbacks, as it does for every streaming integration.

The chunk shapes are those of langchain-anthropic's releases, for the counts the Anthropic API
sends (its stream events carry running totals): 0.3.12 and earlier turn both message_start and
message_delta into chunk usage (the merged message counts the prompt twice); 0.3.13-0.3.18 zero
the output on the first and the input on the second; 0.3.19 and later report message_delta only.
The real client of the oldest supported line runs in test_providers.py's Anthropic tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Tracing
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from test_genai_conventions import FakeChat

from otel_callbacks import attributes as attr

PROMPT, CACHE_READ, CACHE_CREATION, OUTPUT = 12, 30, 7, 5
INPUT = PROMPT + CACHE_READ + CACHE_CREATION  # LangChain's input count includes cached tokens
CACHE = {"cache_read": CACHE_READ, "cache_creation": CACHE_CREATION}


def usage(input_tokens: int, output_tokens: int, cache: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                             "total_tokens": input_tokens + output_tokens}
    if cache:
        found["input_token_details"] = dict(CACHE)
    return found


# (name, usage of the opening chunk or None, usage of the closing chunk)
ANTHROPIC_SHAPES = [
    ("langchain-anthropic<=0.3.12", usage(INPUT, 1), usage(INPUT, OUTPUT)),
    ("langchain-anthropic 0.3.13-0.3.18", usage(INPUT, 0), usage(0, OUTPUT, cache=False)),
    ("langchain-anthropic>=0.3.19", None, usage(INPUT, OUTPUT)),
]
EXPECTED = {attr.GEN_AI_USAGE_INPUT_TOKENS: INPUT, attr.GEN_AI_USAGE_OUTPUT_TOKENS: OUTPUT,
            attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: CACHE_READ,
            attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: CACHE_CREATION}
USAGE_KEYS = tuple(EXPECTED) + (attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)


class UsageChunksChat(FakeChat):
    """Streams an opening chunk (usage only), text, then a closing chunk (usage, stop reason);
    langchain-core reports each chunk to the callbacks."""

    opening: Any = None
    closing: Any = None

    def _chunks(self) -> list[ChatGenerationChunk]:
        out = []
        if self.opening is not None:
            out.append(ChatGenerationChunk(message=AIMessageChunk(
                content="", usage_metadata=self.opening)))
        out += [ChatGenerationChunk(message=AIMessageChunk(content=t)) for t in self.chunks]
        out.append(ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=self.closing, response_metadata={"stop_reason": "end_turn"})))
        return out

    def _stream_chunks(self) -> list[ChatGenerationChunk]:
        return self._chunks()


def stream(model: Any, mode: str, tracing: Tracing) -> Any:
    """The merged message the caller gets (LangChain's own usage sum) and the model span."""
    config: Any = {"callbacks": [tracing.handler()]}
    if mode == "stream":
        chunks = list(model.stream("hi", config=config))
    else:
        async def collect() -> list[Any]:
            return [c async for c in model.astream("hi", config=config)]
        chunks = asyncio.run(collect())
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    [span] = tracing.spans()
    return merged, span


def usage_of(span: Any) -> dict[str, Any]:
    return {k: span.attributes[k] for k in USAGE_KEYS if k in span.attributes}


@pytest.mark.parametrize("mode", ["stream", "astream"])
@pytest.mark.parametrize(("shape", "opening", "closing"), ANTHROPIC_SHAPES,
                         ids=[s[0] for s in ANTHROPIC_SHAPES])
def test_anthropic_stream_usage_is_the_providers_on_every_release(
        mode: str, shape: str, opening: Any, closing: Any) -> None:
    tracing = Tracing()
    model = UsageChunksChat(provider="anthropic", opening=opening, closing=closing)
    merged, span = stream(model, mode, tracing)

    assert span.attributes[attr.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert usage_of(span) == EXPECTED
    if shape == "langchain-anthropic<=0.3.12":  # what LangChain's merge made of it
        assert (merged.usage_metadata["input_tokens"], merged.usage_metadata["output_tokens"]) == (
            2 * INPUT, OUTPUT + 1)


def test_an_abandoned_anthropic_stream_keeps_the_providers_usage() -> None:
    """The consumer leaves after the closing chunk: the run ends abandoned, with that usage."""
    tracing = Tracing()
    opening, closing = ANTHROPIC_SHAPES[0][1:]
    model = UsageChunksChat(provider="anthropic", opening=opening, closing=closing)
    for chunk in model.stream("hi", config={"callbacks": [tracing.handler()]}):
        if chunk.usage_metadata and chunk.usage_metadata["output_tokens"] == OUTPUT:
            break
    [span] = tracing.spans()
    assert span.attributes[attr.RUN_ABANDONED] is True
    assert usage_of(span) == EXPECTED


@pytest.mark.parametrize("provider", ["openai", "ollama", None])
def test_other_providers_stream_usage_adds_up_as_langchain_merges_it(provider: Any) -> None:
    """Chunk usage that is increments (LangChain's contract) keeps LangChain's sum, even when
    two chunks report the same count."""
    tracing = Tracing()
    model = UsageChunksChat(provider=provider, opening=usage(INPUT, 1),
                            closing=usage(INPUT, OUTPUT))
    merged, span = stream(model, "stream", tracing)

    summed = {attr.GEN_AI_USAGE_INPUT_TOKENS: 2 * INPUT, attr.GEN_AI_USAGE_OUTPUT_TOKENS: OUTPUT + 1,
              attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 2 * CACHE_READ,
              attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 2 * CACHE_CREATION}
    assert usage_of(span) == summed
    assert merged.usage_metadata["input_tokens"] == summed[attr.GEN_AI_USAGE_INPUT_TOKENS]


def test_unsampled_anthropic_stream_records_the_providers_usage_in_metrics() -> None:
    """A span that is not recorded has no attributes: the provider comes from the run's metric
    attributes, so the token usage histogram gets the provider's counts."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from otel_callbacks import OTelHandler

    reader = InMemoryMetricReader()
    handler = OTelHandler(tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
                          meter_provider=MeterProvider(metric_readers=[reader]))
    opening, closing = ANTHROPIC_SHAPES[0][1:]
    model = UsageChunksChat(provider="anthropic", opening=opening, closing=closing)
    list(model.stream("hi", config={"callbacks": [handler]}))

    sums = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "gen_ai.client.token.usage":
                    for point in metric.data.data_points:
                        sums[point.attributes["gen_ai.token.type"]] = point.sum
    assert sums == {"input": INPUT, "output": OUTPUT}
